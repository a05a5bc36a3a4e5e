"""bert4x.attribution: completeness, the linear closed form, the zero path."""

import keras
import numpy as np
import pytest

from bert4x.attribution import integrated_gradients, quadrature
from bert4x.models import build_transformer_model

CONFIG = dict(
    vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32, hidden_act="gelu", max_position_embeddings=32, type_vocab_size=2,
)  # fmt: skip
TOKENS, SEGMENTS = [2, 5, 7, 9, 11, 3], [0, 0, 0, 1, 1, 1]


def classifier(seed=0):
    keras.utils.set_random_seed(seed)
    bert = build_transformer_model(CONFIG, with_pool=True)
    output = keras.layers.Dense(2, activation="softmax", name="Classifier")(bert.output)
    return keras.Model(bert.inputs, output)


def score(model, embeddings):
    """F at given token embeddings, through the full model with a second code path."""
    sub = keras.Model([*model.inputs, model.get_layer("Embedding-Token").output], model.output)
    ids = [np.array([TOKENS]), np.array([SEGMENTS]), embeddings[None].astype("float32")]
    return float(np.asarray(sub([keras.ops.convert_to_tensor(i) for i in ids]))[0, 1])


def test_quadrature_weights_integrate_linear_functions_exactly():
    for method in ("riemann_right", "trapezoid"):
        alphas, weights = quadrature(7, method)
        assert weights.sum() == pytest.approx(1.0)
    alphas, weights = quadrature(7, "trapezoid")
    assert weights @ alphas == pytest.approx(0.5)
    with pytest.raises(ValueError, match="method"):
        quadrature(5, "simpson")


def test_completeness_on_a_tiny_bert_classifier():
    model = classifier()
    x = np.asarray(model.get_layer("Embedding-Token")(np.array([TOKENS])))[0]
    difference = score(model, x) - score(model, np.zeros_like(x))
    ig, per_token = integrated_gradients(model, TOKENS, SEGMENTS, 1, steps=50, method="trapezoid")
    assert ig.shape == x.shape and per_token.shape == (len(TOKENS),)
    np.testing.assert_allclose(per_token, ig.sum(axis=1))
    assert abs(difference) > 1e-4
    assert abs(ig.sum() - difference) < 0.01 * abs(difference)


def test_identical_input_and_baseline_give_zero():
    model = classifier()
    x = np.asarray(model.get_layer("Embedding-Token")(np.array([TOKENS])))[0]
    ig, per_token = integrated_gradients(model, TOKENS, SEGMENTS, 0, steps=5, baseline=x)
    np.testing.assert_array_equal(ig, 0)
    np.testing.assert_array_equal(per_token, 0)


def test_linear_score_gives_difference_times_weight_exactly():
    n, d = len(TOKENS), 4
    tokens = keras.Input((n,), dtype="int32", name="Input-Token")
    segments = keras.Input((n,), dtype="int32", name="Input-Segment")
    x = keras.layers.Embedding(20, d, name="Embedding-Token")(tokens)
    s = keras.layers.Embedding(2, d, name="Embedding-Segment")(segments)
    h = keras.layers.Flatten()(keras.layers.Add()([x, s]))
    output = keras.layers.Dense(3, name="Linear")(h)
    model = keras.Model([tokens, segments], output)
    rng = np.random.default_rng(0)
    baseline = rng.normal(size=(n, d))
    for method, steps in (("riemann_right", 1), ("trapezoid", 3), ("riemann_right", 50)):
        ig, _ = integrated_gradients(model, TOKENS, SEGMENTS, 2, steps, method, baseline)
        w = model.get_layer("Linear").kernel.numpy()[:, 2].reshape(n, d)
        e = model.get_layer("Embedding-Token").embeddings.numpy()[TOKENS]
        np.testing.assert_allclose(ig, (e - baseline) * w, rtol=1e-5, atol=1e-6)
