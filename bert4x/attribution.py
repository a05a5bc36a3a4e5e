"""Integrated gradients over the token embeddings (arXiv 1703.01365; kexue.fm/archives/7533).

`IG_{t,d} = (x − x')_{t,d} ∫_0^1 ∂F(x' + α(x − x'))/∂x_{t,d} dα`, with x the output of the
`Embedding-Token` layer [n, D], x' a baseline (zeros by default) and F = model output[target].
Segment and position embeddings are added after `Embedding-Token` and stay fixed, so their
contribution is not attributed. Completeness: `Σ_{t,d} IG_{t,d} = F(x) − F(x')` up to the
quadrature error of the m-step sum (all m or m + 1 points go through the model in one batch).

Shapes: m steps, n length, D embedding size, C outputs.
TensorFlow backend only (the gradient uses tf.GradientTape).
"""

import keras
import numpy as np

METHODS = ("riemann_right", "trapezoid")


def quadrature(steps, method="trapezoid"):
    """(α, w) with ∫_0^1 g(α) dα ≈ Σ_k w_k g(α_k): right Riemann α_k = k/m, k = 1..m, w = 1/m;
    trapezoid α_k = k/m, k = 0..m, w = 1/m with halved end weights."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int. Received: steps={steps!r}")
    if method == "riemann_right":
        return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    if method == "trapezoid":
        weights = np.full(steps + 1, 1.0 / steps)
        weights[[0, -1]] /= 2
        return np.arange(steps + 1) / steps, weights
    raise ValueError(f"method must be one of {METHODS}. Received: method={method!r}")


def embedding_model(model, layer_name="Embedding-Token"):
    """model(inputs) rewired as (inputs..., x) -> output, x replacing the output of `layer_name`."""
    x = model.get_layer(layer_name).output
    return keras.Model([*model.inputs, x], model.output)


def integrated_gradients(
    model, token_ids, segment_ids, target_index, steps=50, method="riemann_right", baseline=None
):
    """IG of F = model([token_ids, segment_ids])[0, target_index] w.r.t. the token embeddings.

    token_ids, segment_ids: one sequence [n] (or [1, n]). baseline: [n, D], default zeros.
    Returns (ig [n, D], per-token Σ_d IG [n]); their total approximates F(x) − F(x').
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"integrated_gradients needs the TensorFlow backend. Received: "
            f"backend={keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow."
        )
    import tensorflow as tf

    alphas, weights = quadrature(steps, method)
    token_ids = np.asarray(token_ids, dtype="int32").reshape(1, -1)  # [1, n]
    segment_ids = np.asarray(segment_ids, dtype="int32").reshape(1, -1)
    x = np.asarray(model.get_layer("Embedding-Token")(token_ids))[0]  # [n, D]
    baseline = np.zeros_like(x) if baseline is None else np.asarray(baseline, x.dtype)
    if baseline.shape != x.shape:
        raise ValueError(
            f"baseline must have the embedding shape {x.shape}. Received: shape={baseline.shape}"
        )
    m = len(alphas)
    path = baseline + alphas[:, None, None].astype(x.dtype) * (x - baseline)  # [m, n, D]
    inputs = [np.repeat(token_ids, m, axis=0), np.repeat(segment_ids, m, axis=0)]
    inputs = [tf.constant(i) for i in inputs[: len(model.inputs)]]
    path = tf.constant(path)
    with tf.GradientTape() as tape:
        tape.watch(path)
        outputs = embedding_model(model)([*inputs, path])  # [m, C]
        score = tf.reduce_sum(tf.reshape(outputs, [m, -1])[:, target_index])
    grads = tape.gradient(score, path).numpy().astype(np.float64)  # [m, n, D]
    average = np.tensordot(weights, grads, axes=1)  # [n, D] ≈ ∫ ∂F/∂x dα
    ig = (x - baseline).astype(np.float64) * average
    return ig, ig.sum(axis=-1)
