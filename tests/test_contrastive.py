"""bert4x.contrastive: SimBERT L_sim against numpy, exact accumulation against full-batch gradients.

ALGORITHMS.md §8 and §10. References: numpy losses and central finite differences (float64),
and direct autodiff of a full-batch loss written here with keras.ops (a second code path).
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from bert4x.contrastive import (
    ContrastiveAccumulator,
    scaled_unit_vectors,
    seed_states,
    simbert_labels,
    similarity_loss,
)
from bert4x.models import build_transformer_model

TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="reference gradients use tf.GradientTape"
)


@pytest.fixture
def x64():
    """float64 arrays stay float64 (JAX truncates them to float32 unless x64 is enabled)."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    with jax.enable_x64(True):
        yield


def np_info_nce(h, mask_diagonal=True):
    """mean_i −log softmax(h hᵀ)_{i, i XOR 1}, diagonal excluded."""
    s = h @ h.T
    if mask_diagonal:
        s = np.where(np.eye(len(h), dtype=bool), -np.inf, s)
    logp = s - s.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(h)), np.arange(len(h)) ^ 1].mean()


def np_simbert_loss(pooled, scale):
    z = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return np_info_nce(np.sqrt(scale) * z)


def finite_difference(f, w, eps=1e-6):
    grad = np.zeros_like(w)
    for index in np.ndindex(*w.shape):
        step = np.zeros_like(w)
        step[index] = eps
        grad[index] = (f(w + step) - f(w - step)) / (2 * eps)
    return grad


@pytest.mark.backend_agnostic
def test_labels_pair_adjacent_rows_and_reject_odd_batches():
    expected = np.zeros((6, 6))
    for row, column in [(0, 1), (1, 0), (2, 3), (3, 2), (4, 5), (5, 4)]:
        expected[row, column] = 1
    np.testing.assert_array_equal(ops.convert_to_numpy(simbert_labels(6)), expected)
    with pytest.raises(ValueError, match="even"):
        simbert_labels(5)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("batch", [2, 4, 10])
def test_equal_pooled_vectors_give_log_b_minus_one(batch):
    pooled = np.tile(np.array([[0.3, -1.2, 2.0]]), (batch, 1))
    loss = float(ops.convert_to_numpy(similarity_loss(pooled, scale=30)))
    np.testing.assert_allclose(loss, math.log(batch - 1), rtol=1e-6, atol=1e-6)
    half = ops.convert_to_numpy(similarity_loss(pooled.astype("float16")))  # −10¹² needs float32
    np.testing.assert_allclose(half, math.log(batch - 1), rtol=1e-5, atol=1e-6)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("scale", [30, 20, 1])
def test_similarity_loss_matches_numpy(x64, scale):
    pooled = np.random.default_rng(scale).normal(size=(8, 5))
    expected = np_simbert_loss(pooled, scale)
    loss = ops.convert_to_numpy(similarity_loss(ops.convert_to_tensor(pooled), scale=scale))
    np.testing.assert_allclose(loss, expected, rtol=1e-10)
    loss32 = ops.convert_to_numpy(similarity_loss(pooled.astype("float32"), scale=scale))
    np.testing.assert_allclose(loss32, expected, rtol=1e-5)


def linear_case(normalise):
    """x [8, 5], W [5, 4] float64; h = x W, or √20 · normalise(x W) (SimBERT-style)."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(8, 5)), rng.normal(size=(5, 4)) * 0.7

    def encode(x, w):
        return scaled_unit_vectors(ops.matmul(x, w), 20.0) if normalise else ops.matmul(x, w)

    def np_loss(w, rows=slice(None)):
        h = ops.convert_to_numpy(encode(ops.convert_to_tensor(x[rows]), ops.convert_to_tensor(w)))
        return np_info_nce(h)

    return x, w, encode, np_loss


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_equals_full_batch_gradient_on_a_linear_encoder(x64, normalise, k):
    x, w0, encode, np_loss = linear_case(normalise)
    w = keras.Variable(w0, dtype="float64")
    acc = ContrastiveAccumulator(lambda chunk: encode(chunk, w), [w])
    grads, loss, _ = acc(np.split(x, k))
    full = finite_difference(np_loss, w0)  # the full-batch gradient, numpy only
    grad = ops.convert_to_numpy(grads[0])
    np.testing.assert_allclose(float(loss), np_loss(w0), rtol=1e-12)
    np.testing.assert_allclose(grad, full, rtol=1e-6, atol=1e-7 * np.abs(full).max())
    chunks = np.split(np.arange(8), k)  # naive: InfoNCE inside each chunk, averaged
    naive = np.mean([finite_difference(lambda v, c=c: np_loss(v, c), w0) for c in chunks], 0)
    assert np.abs(naive - full).max() > 0.05 * np.abs(full).max()  # the test can tell


TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, type_vocab_size=2, max_position_embeddings=32)  # fmt: skip


def unilm_batch(rows=8, length=10, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(5, TINY["vocab_size"], size=(rows, length))
    segment_ids = np.zeros_like(token_ids)
    for i in range(rows):
        split, pad = rng.integers(3, 6), rng.integers(0, 3)
        segment_ids[i, split : length - pad] = 1
        token_ids[i, length - pad :] = 0
    return token_ids, segment_ids


def generation_sum(model_output, token_ids, segment_ids):
    """Σ over target tokens of −log p(token_{t+1}) (UniLM loss, mask = segment_ids[:, 1:])."""
    probas = model_output[:, :-1]
    picked = ops.take_along_axis(probas, ops.cast(token_ids[:, 1:, None], "int32"), axis=2)
    return -ops.sum(ops.log(picked[..., 0]) * ops.cast(segment_ids[:, 1:], picked.dtype))


def reference_loss(model, token_ids, segment_ids, scale=30.0):
    """L_sim + mean generation CE over all rows at once, written independently with keras.ops."""
    pooled, probas = model([token_ids, segment_ids], training=True)
    z = pooled / ops.norm(pooled, axis=1, keepdims=True)
    n = ops.shape(z)[0]
    logits = scale * ops.matmul(z, ops.transpose(z)) - 1e12 * ops.eye(n, dtype=z.dtype)
    labels = np.arange(len(token_ids)) ^ 1
    sim = ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    gen = generation_sum(probas, token_ids, segment_ids) / float(segment_ids[:, 1:].sum())
    return ops.cast(sim, "float32") + gen


def autodiff(loss_fn, variables):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, variables)  # None: unused by the loss (the MLM head for L_sim)
    return [np.zeros(v.shape) if g is None else ops.convert_to_numpy(g).astype("float64")
            for v, g in zip(variables, grads)]  # fmt: skip


def encode_fn(model, total_tokens, scale=30.0):
    def encode(chunk):
        token_ids, segment_ids = chunk
        pooled, probas = model([token_ids, segment_ids], training=True)
        gen = generation_sum(probas, token_ids, segment_ids) / total_tokens
        return scaled_unit_vectors(pooled, scale), gen

    return encode


def assert_gradients_close(actual, expected, rtol=1e-5):
    """Max error <= rtol · max |gradient|, over all weights and per weight (weights whose
    gradient is 0 in exact arithmetic, such as attention key biases, only count globally)."""
    actual = [ops.convert_to_numpy(a).astype("float64") for a in actual]
    scale = max(np.abs(e).max() for e in expected)
    for a, e in zip(actual, expected):
        assert np.abs(a - e).max() <= rtol * max(np.abs(e).max(), 1e-6 * scale)


@pytest.fixture
def float64():
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


@TF_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_equals_full_batch_gradient_on_a_unilm_model(float64, k):
    model = build_transformer_model(TINY, application="unilm", with_pool="linear")
    token_ids, segment_ids = unilm_batch()
    variables = model.trainable_variables
    expected = autodiff(lambda: reference_loss(model, token_ids, segment_ids), variables)
    total = float(segment_ids[:, 1:].sum())
    acc = ContrastiveAccumulator(encode_fn(model, total), variables, jit_compile=False)
    chunks = list(zip(np.split(token_ids, k), np.split(segment_ids, k)))
    grads, sim, gen = acc(chunks)
    assert len(grads) == len(variables) == 44  # every trainable weight of 2 layers
    assert_gradients_close(grads, expected)
    loss = float(ops.convert_to_numpy(reference_loss(model, token_ids, segment_ids)))
    np.testing.assert_allclose(float(sim) + float(gen), loss, rtol=1e-6)
    naive = [acc([c])[0] for c in chunks]  # one chunk at a time: in-chunk negatives only
    naive = [sum(ops.convert_to_numpy(g[i]) for g in naive) for i in range(len(variables))]
    pooler = [i for i, v in enumerate(variables) if "Pooler" in v.path][0]
    error = np.abs(naive[pooler] - expected[pooler]).max() / np.abs(expected[pooler]).max()
    assert error > 1e-2


@TF_ONLY
@pytest.mark.slow
@pytest.mark.parametrize("replay", [True, False])
def test_dropout_replay_reproduces_the_first_forward(float64, replay):
    """With dropout, the accumulated gradient equals the full-loss gradient under the same masks
    (each chunk run from the same seed state) only when the seed states are replayed."""
    config = dict(TINY, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    model = build_transformer_model(config, application="unilm", with_pool="linear")
    token_ids, segment_ids = unilm_batch()
    seeds = seed_states(model)
    assert len(seeds) >= 4
    start = [ops.convert_to_numpy(v.value) for v in seeds]
    chunks = list(zip(np.split(token_ids, 2), np.split(segment_ids, 2)))

    def chunked_full_loss():  # the masks the first forward draws, one loss over all rows
        pooled = [model([t, s], training=True)[0] for t, s in chunks]
        return similarity_loss(ops.concatenate(pooled), scale=30.0)

    expected = autodiff(chunked_full_loss, model.trainable_variables)
    for variable, value in zip(seeds, start):
        variable.assign(value)
    encode = encode_fn(model, 1.0)
    acc = ContrastiveAccumulator(lambda c: encode(c)[0], model.trainable_variables,
                                 replay_variables=seeds if replay else ())  # fmt: skip
    grads = acc(chunks)[0]
    if replay:
        assert_gradients_close(grads, expected)
    else:
        with pytest.raises(AssertionError):
            assert_gradients_close(grads, expected)
