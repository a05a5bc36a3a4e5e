"""bert4x.whitening against numpy formulas: moments, PCA directions, affine invariance."""

import numpy as np
import pytest

from bert4x.whitening import compute_kernel_bias, transform_and_normalize


def correlated(n=400, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 3


def test_whitened_vectors_have_zero_mean_and_identity_covariance():
    x = correlated()
    kernel, bias = compute_kernel_bias(x)
    y = (x - bias) @ kernel
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y.T), np.eye(8), atol=1e-4)  # same ddof = 1


def test_truncation_keeps_the_top_k_eigenvectors_with_identity_covariance():
    x = correlated()
    kernel, bias = compute_kernel_bias(x, n_components=3)
    assert kernel.shape == (8, 3) and bias.shape == (1, 8)
    y = (x - bias) @ kernel
    np.testing.assert_allclose(np.cov(y.T), np.eye(3), atol=1e-4)
    values, vectors = np.linalg.eigh(np.cov(x.T))  # ascending: an independent decomposition
    top = vectors[:, ::-1][:, :3]
    directions = kernel / np.linalg.norm(kernel, axis=0)
    np.testing.assert_allclose(np.abs(np.sum(directions * top, axis=0)), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), values[::-1][:3] ** -0.5)


def whitened_cosines(x, n_components=None):
    y = transform_and_normalize(x, *compute_kernel_bias(x, n_components))
    return y @ y.T


def test_full_whitening_cosines_are_invariant_under_an_invertible_affine_map():
    x = correlated(n=100, d=6)
    rng = np.random.default_rng(1)
    a, c = rng.normal(size=(6, 6)), rng.normal(size=6) * 10
    np.testing.assert_allclose(whitened_cosines(x @ a + c), whitened_cosines(x), atol=1e-6)


def test_cosine_ranking_is_kept_under_reparametrisation_with_k_equal_d():
    """Our reading of 'keeps cosine ranking under k = d': the ranking by whitened cosine does
    not depend on the affine parametrisation of the inputs (x -> xA + c)."""
    x = correlated(n=60, d=5, seed=2)
    rng = np.random.default_rng(3)
    a, c = rng.normal(size=(5, 5)), rng.normal(size=5)
    before, after = whitened_cosines(x), whitened_cosines(x @ a + c)
    for row in range(10):
        np.testing.assert_array_equal(np.argsort(-before[row])[:20], np.argsort(-after[row])[:20])


def test_transform_without_kernel_is_plain_l2_normalisation():
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(transform_and_normalize(x), [[0.6, 0.8], [0.0, 1.0]])


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="n_components"):
        compute_kernel_bias(correlated(), n_components=9)
    with pytest.raises(ValueError, match="N >= 2"):
        compute_kernel_bias(np.ones((1, 3)))
    with pytest.raises(ValueError, match="singular"):
        compute_kernel_bias(np.ones((5, 3)))
