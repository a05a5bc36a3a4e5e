"""BERT-whitening: x̃ = (x − μ) W with W = U Λ^{-1/2} from Σ = U Λ U^T (kexue.fm/archives/8069).

Shapes: N sentences, d vector size, k kept components (k ≤ d).

Convention: Σ is the unbiased sample covariance ``np.cov(x.T)`` (ddof = 1, divisor N − 1), as
in the post's code (its text writes 1/N). The two differ by the global factor
sqrt(N / (N − 1)) in W, so cosine similarities after whitening are identical either way; with
ddof = 1 the whitened vectors have covariance exactly I under ``np.cov``.
"""

import numpy as np


def compute_kernel_bias(vecs, n_components=None):
    """W = U[:, :k] Λ[:k]^{-1/2}, μ = mean(x), Σ = cov(x) = U Λ U^T; returns (W [d, k], μ [1, d]).

    Eigenvalues are sorted in decreasing order, so truncation to k keeps the top-k principal
    directions (PCA). Needs N > 1 rows and a full-rank covariance in the kept directions.
    """
    vecs = np.asarray(vecs, dtype=np.float64)
    if vecs.ndim != 2 or vecs.shape[0] < 2:
        raise ValueError(
            f"vecs must be a [N, d] array with N >= 2 rows. Received: shape={vecs.shape}. "
            "Pass one sentence vector per row."
        )
    d = vecs.shape[1]
    k = d if n_components is None else int(n_components)
    if not 1 <= k <= d:
        raise ValueError(f"n_components must be in [1, {d}]. Received: n_components={n_components}")
    mu = vecs.mean(axis=0, keepdims=True)  # [1, d]
    cov = np.cov(vecs.T)  # [d, d], ddof = 1
    u, s, _ = np.linalg.svd(cov)  # symmetric PSD: singular values = eigenvalues, descending
    if s[k - 1] <= 1e-12 * max(s[0], 1e-300):
        raise ValueError(
            f"the covariance is singular in the top {k} directions (eigenvalue {s[k - 1]:.3g}). "
            "Use more sentences than dimensions or a smaller n_components."
        )
    kernel = u[:, :k] / np.sqrt(s[:k])  # [d, k] = U Λ^{-1/2}
    return kernel, mu


def transform_and_normalize(vecs, kernel=None, bias=None):
    """y = (x − μ) W / ‖(x − μ) W‖₂ ; without kernel/bias just the L2 normalisation of x."""
    vecs = np.asarray(vecs, dtype=np.float64)
    if bias is not None:
        vecs = vecs - bias
    if kernel is not None:
        vecs = vecs @ kernel  # [N, k]
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)
