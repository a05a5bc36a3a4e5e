"""Layers and backend ops against numpy formulas; config round trips of every layer."""

import math

import keras
import numpy as np
import pytest

from bert4x import backend, layers

pytestmark = pytest.mark.backend_agnostic

RNG = np.random.default_rng(0)


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def test_gelu_variants_match_their_formulas():
    x = np.linspace(-5, 5, 101).astype("float32")
    erf = np.vectorize(math.erf)
    np.testing.assert_allclose(
        numpy(backend.gelu_erf(x)), 0.5 * x * (1 + erf(x / 2**0.5)), atol=1e-6
    )
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(numpy(backend.gelu_tanh(x)), tanh, atol=1e-6)
    assert backend.get_activation("gelu") is backend.gelu_erf
    with pytest.raises(ValueError, match="unknown activation 'gleu'"):
        backend.get_activation("gleu")


def test_masks_match_their_formulas():
    token_ids = np.array([[0, 4, 5, 0], [3, 0, 2, 0]])
    np.testing.assert_array_equal(
        numpy(backend.padding_mask(token_ids)), [[1, 1, 1, 0], [1, 0, 1, 0]]
    )
    np.testing.assert_array_equal(numpy(backend.causal_mask(4)), np.tril(np.ones((4, 4), bool)))
    segment_ids = np.array([[0, 0, 1, 1, 0, 0, 1]])
    c = np.cumsum(segment_ids, axis=1)
    np.testing.assert_array_equal(
        numpy(backend.unilm_mask(segment_ids)), c[:, None, :] <= c[:, :, None]
    )
    table = numpy(backend.unilm_mask(np.array([[0, 0, 0, 1, 1, 1]])))[0]
    assert table[:3, :3].all() and not table[:3, 3:].any()
    assert table[3, :4].all() and not table[3, 4:].any() and table[5].all()


def test_sinusoid_and_rotary_match_formulas():
    d, n = 8, 5
    positions = np.arange(n)
    theta = 10000.0 ** (-2 * np.arange(d // 2) / d)
    angles = positions[:, None] * theta
    expected = np.stack([np.sin(angles), np.cos(angles)], -1).reshape(n, d)
    table = numpy(backend.sinusoidal_embeddings(positions[None], d))
    np.testing.assert_allclose(table[0], expected, atol=1e-6)
    x = RNG.normal(size=(1, n, 2, d)).astype("float32")
    rotated = numpy(backend.apply_rotary(x, table))
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = np.cos(angles)[None, :, None], np.sin(angles)[None, :, None]
    want = np.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).reshape(x.shape)
    np.testing.assert_allclose(rotated, want, atol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5
    )


def test_rotary_scores_depend_only_on_relative_position():
    d = 16
    q, k = RNG.normal(size=(2, d)).astype("float32")

    def score(m, n):
        table = backend.sinusoidal_embeddings(np.array([[m, n]]), d)
        pair = np.stack([q, k])[None, :, None, :]  # [1, 2, 1, d]
        r = numpy(backend.apply_rotary(pair, table))[0, :, 0]
        return float(r[0] @ r[1])

    for shift in (1, 7, 30):
        assert abs(score(3, 9) - score(3 + shift, 9 + shift)) < 1e-4
    assert abs(score(3, 9) - score(3, 4)) > 1e-3


def layer_norm_reference(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta


def test_conditional_layer_norm_matches_formula():
    x = RNG.normal(size=(2, 3, 6)).astype("float32")
    c = RNG.normal(size=(2, 4)).astype("float32")
    layer = layers.LayerNormalization(
        conditional=True, hidden_units=5, hidden_activation="tanh", epsilon=1e-6
    )
    plain = numpy(layer([x, c]))
    np.testing.assert_allclose(plain, layer_norm_reference(x, 1.0, 0.0, 1e-6), atol=1e-5)
    for weight in layer.weights:
        weight.assign(RNG.normal(size=weight.shape).astype("float32"))
    h = np.tanh(c @ numpy(layer.hidden_kernel))
    gamma = numpy(layer.gamma) + h @ numpy(layer.gamma_kernel)
    beta = numpy(layer.beta) + h @ numpy(layer.beta_kernel)
    want = layer_norm_reference(x, gamma[:, None], beta[:, None], 1e-6)
    np.testing.assert_allclose(numpy(layer([x, c])), want, atol=1e-4)


def test_conditional_layer_norm_gets_gradient_at_zero_init():
    x = keras.Input((3, 6))
    c = keras.Input((4,))
    layer = layers.LayerNormalization(conditional=True)
    model = keras.Model([x, c], layer([x, c]))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(
        [RNG.normal(size=(8, 3, 6)), RNG.normal(size=(8, 4))], RNG.normal(size=(8, 3, 6)), verbose=0
    )
    assert np.abs(numpy(layer.gamma_kernel)).max() > 0


def test_rms_norm_matches_formula_and_has_no_weights():
    x = RNG.normal(size=(2, 3, 6)).astype("float32")
    layer = layers.LayerNormalization(zero_mean=False, scale=False, offset=False, epsilon=1e-7)
    want = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-7)
    np.testing.assert_allclose(numpy(layer(x)), want, atol=1e-5)
    assert layer.weights == []


def test_condition_of_wrong_rank_is_refused():
    layer = layers.LayerNormalization(conditional=True)
    with pytest.raises(ValueError, match=r"\[batch, size\]"):
        layer([np.zeros((2, 3, 6), "float32"), np.zeros((2, 3, 4), "float32")])


def test_multi_head_attention_matches_keras_builtin():
    q = RNG.normal(size=(2, 5, 12)).astype("float32")
    ours = layers.MultiHeadAttention(heads=3, head_size=4, out_dim=12)
    theirs = keras.layers.MultiHeadAttention(num_heads=3, key_dim=4)
    bias = np.zeros((2, 1, 1, 5), "float32")
    bias[1, ..., 3:] = backend.MASK_BIAS
    ours([q, q, q, bias], a_bias=True)
    theirs(q, q)
    for short, dense in zip("qkvo", ("query", "key", "value", "output"), strict=True):
        layer = getattr(theirs, f"_{dense}_dense")
        kernel, b = (numpy(w) for w in layer.weights)
        getattr(ours, f"{short}_dense").kernel.assign(
            kernel.reshape(-1, kernel.shape[-1])
            if short == "o"
            else kernel.reshape(kernel.shape[0], -1)
        )
        getattr(ours, f"{short}_dense").bias.assign(b.reshape(-1))
    mask = np.ones((2, 5, 5), bool)
    mask[1, :, 3:] = False
    np.testing.assert_allclose(
        numpy(ours([q, q, q, bias], a_bias=True)),
        numpy(theirs(q, q, attention_mask=mask)),
        atol=1e-5,
    )


def test_embedding_dense_mode_is_the_transposed_table():
    layer = layers.Embedding(7, 4, mask_zero=True)
    ids = np.array([[0, 3, 0]])
    vectors = numpy(layer(ids))
    table = numpy(layer.embeddings)
    np.testing.assert_allclose(vectors[0], table[[0, 3, 0]])
    np.testing.assert_allclose(numpy(layer(vectors, mode="dense")), vectors @ table.T, atol=1e-6)
    np.testing.assert_array_equal(numpy(layer.compute_mask(ids)), [[True, True, False]])
    with pytest.raises(ValueError, match="mode"):
        layer(ids, mode="decode")


def test_hierarchical_positions_keep_the_table_and_extend_it():
    layer = layers.PositionEmbedding(4, 3, hierarchical=True, embeddings_initializer="normal")
    x = np.zeros((1, 11, 3), "float32")
    out = numpy(layer(x))[0]
    table = numpy(layer.embeddings)
    np.testing.assert_allclose(out[:4], table, atol=1e-6)
    u = (table - 0.4 * table[:1]) / 0.6
    np.testing.assert_allclose(out[9], 0.4 * u[2] + 0.6 * u[1], atol=1e-6)


LAYER_FACTORIES = {
    "Embedding": lambda: (layers.Embedding(9, 4, mask_zero=True), np.array([[1, 2, 0]])),
    "PositionEmbedding": lambda: (
        layers.PositionEmbedding(6, 4, merge_mode="add", hierarchical=0.3),
        RNG.normal(size=(1, 3, 4)),
    ),
    "SinusoidalPositionEmbedding": lambda: (
        layers.SinusoidalPositionEmbedding(4, merge_mode="add"),
        RNG.normal(size=(1, 3, 4)),
    ),
    "AttentionBias": lambda: (layers.AttentionBias(mode="lm"), np.array([[3, 4, 0]])),
    "LayerNormalization": lambda: (
        layers.LayerNormalization(zero_mean=False, epsilon=1e-5, hidden_activation="gelu"),
        RNG.normal(size=(1, 3, 4)),
    ),
    "FeedForward": lambda: (
        layers.FeedForward(8, activation="gelu_tanh", use_bias=False),
        RNG.normal(size=(1, 3, 4)),
    ),
    "BiasAdd": lambda: (layers.BiasAdd(), RNG.normal(size=(1, 3, 4))),
    "TakeFirst": lambda: (layers.TakeFirst(), RNG.normal(size=(1, 3, 4))),
}


@pytest.mark.parametrize("name", sorted(LAYER_FACTORIES))
def test_layer_config_round_trip_reproduces_outputs(name):
    layer, x = LAYER_FACTORIES[name]()
    out = numpy(layer(x))
    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(numpy(clone(x)), out)


def test_attention_config_round_trip():
    layer = layers.MultiHeadAttention(
        2, 3, out_dim=5, key_size=4, use_bias=False, attention_dropout=0.1
    )
    clone = layers.MultiHeadAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.out_dim, clone.key_size, clone.use_bias) == (5, 4, False)


def test_sequence_masking_sets_masked_positions():
    x = np.ones((2, 3, 2), "float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    out = numpy(backend.sequence_masking(x, mask, value=-5.0))
    np.testing.assert_array_equal(out[..., 0], np.where(mask, 1.0, -5.0))


class MaskedMeanSquare(layers.Loss):
    """mean((y - p)^2 * w) / mean(w): integer weights must arrive as floats."""

    def compute_loss(self, inputs, mask=None):
        y, w, p = inputs
        return backend.K.sum((y - p) ** 2 * w) / backend.K.sum(w)


def test_loss_layer_adds_its_loss_and_returns_the_selected_inputs():
    y, w, p = (keras.Input((3,)), keras.Input((3,), dtype="int32"), keras.Input((3,)))
    model = keras.Model([y, w, p], MaskedMeanSquare(output_axis=2)([y, w, p]))
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(2, 3)), np.array([[1, 0, 1], [0, 1, 1]]), rng.normal(size=(2, 3))]
    output = model(values)
    expected = ((values[0] - values[2]) ** 2 * values[1]).sum() / values[1].sum()
    np.testing.assert_allclose(np.asarray(output), values[2], rtol=1e-6)
    np.testing.assert_allclose(float(model.losses[0]), expected, rtol=1e-5)
    both = MaskedMeanSquare(output_axis=[0, 2], name="both")
    assert both.compute_output_shape([(2, 3), (2, 4), (2, 5)]) == [(2, 3), (2, 5)]
    assert MaskedMeanSquare.from_config(both.get_config()).output_axis == [0, 2]
    with pytest.raises(NotImplementedError, match="compute_loss"):
        layers.Loss()([keras.ops.ones((1, 2))])


def test_k_resolves_keras_2_backend_calls_and_names_missing_ones():
    K = backend.K
    np.testing.assert_allclose(float(K.sum(np.arange(4.0))), 6.0)
    assert K.epsilon() == keras.backend.epsilon() and K.floatx() == "float32"
    loss = K.sparse_categorical_crossentropy(np.array([1]), np.array([[0.25, 0.75]]))
    np.testing.assert_allclose(np.asarray(loss), [-math.log(0.75)], rtol=1e-6)
    with pytest.raises(AttributeError, match="K.batch_dot .*docs/migration.md"):
        _ = K.batch_dot
