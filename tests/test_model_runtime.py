"""Every model type under XLA (fit and predict), `.keras` round trips, bfloat16, conditional LN."""

import keras
import numpy as np
import pytest

from bert4x.layers import LayerNormalization
from bert4x.models import build_transformer_model

from model_cases import CONFIGS, FULL_HEADS, MODEL_TYPES, build_loaded, random_batch

pytestmark = pytest.mark.backend_agnostic


def loss_and_targets(model, token_ids, rng):
    """A loss that fits the model's output and targets for it."""
    if model == "electra":
        return "binary_crossentropy", rng.integers(0, 2, size=token_ids.shape + (1,))
    return "sparse_categorical_crossentropy", token_ids


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_TYPES)
def test_trains_and_predicts_under_xla(tmp_path, model):
    keras_model, _ = build_loaded(tmp_path, model, **FULL_HEADS[model])
    rng = np.random.default_rng(10)
    token_ids, segment_ids = random_batch(rng)
    eager = np.asarray(keras_model([token_ids, segment_ids]))
    loss, targets = loss_and_targets(model, token_ids, rng)
    keras_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, jit_compile=True)
    assert keras_model.jit_compile is True
    compiled = keras_model.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(compiled, eager, atol=2e-5, rtol=1e-4)
    before = [np.array(w) for w in keras_model.trainable_weights]
    history = keras_model.fit(
        [token_ids, segment_ids], targets, batch_size=3, epochs=2, shuffle=False, verbose=0
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[1] < losses[0]
    changed = [
        not np.array_equal(old, np.array(new))
        for old, new in zip(before, keras_model.trainable_weights, strict=True)
    ]
    assert sum(changed) > 0.9 * len(changed)


@pytest.mark.parametrize("model", MODEL_TYPES)
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, model):
    keras_model, _ = build_loaded(tmp_path, model, **FULL_HEADS[model])
    path = str(tmp_path / f"{model}.keras")
    keras_model.save(path)
    reloaded = keras.saving.load_model(path)
    token_ids, segment_ids = random_batch(np.random.default_rng(11))
    np.testing.assert_array_equal(
        np.asarray(reloaded([token_ids, segment_ids])),
        np.asarray(keras_model([token_ids, segment_ids])),
    )


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("model", MODEL_TYPES)
def test_mixed_bfloat16_stays_close_to_float32(tmp_path, model, request):
    reference, _ = build_loaded(tmp_path, model, **FULL_HEADS[model])
    token_ids, segment_ids = random_batch(np.random.default_rng(12))
    want = np.asarray(reference([token_ids, segment_ids]))
    request.getfixturevalue("bfloat16_policy")
    mixed, _ = build_loaded(tmp_path, model, seed=0, **FULL_HEADS[model])
    got = np.asarray(keras.ops.convert_to_numpy(mixed([token_ids, segment_ids])), "float32")
    assert not np.isnan(got).any()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2


def conditional_bert(tmp_path, cond_size=5, hidden_size=None):
    from model_cases import write_random_checkpoint

    prefix, _ = write_random_checkpoint(tmp_path, "bert", with_mlm=True)
    return build_transformer_model(
        CONFIGS["bert"],
        prefix,
        with_mlm=True,
        layer_norm_cond=cond_size,
        layer_norm_cond_hidden_size=hidden_size,
        layer_norm_cond_hidden_act="swish" if hidden_size else None,
    ), prefix


def test_conditional_model_equals_plain_model_at_initialisation(tmp_path):
    conditional, prefix = conditional_bert(tmp_path)
    plain = build_transformer_model(CONFIGS["bert"], prefix, with_mlm=True)
    token_ids, segment_ids = random_batch(np.random.default_rng(13))
    condition = np.random.default_rng(14).normal(size=(3, 5)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(conditional([token_ids, segment_ids, condition])),
        np.asarray(plain([token_ids, segment_ids])),
    )
    norms = [layer for layer in conditional.layers if isinstance(layer, LayerNormalization)]
    for layer in norms:
        layer.gamma_kernel.assign(np.full(layer.gamma_kernel.shape, 0.1, "float32"))
    other = np.asarray(conditional([token_ids, segment_ids, -condition]))
    first = np.asarray(conditional([token_ids, segment_ids, condition]))
    assert np.abs(other - first).max() > 1e-3


@pytest.mark.parametrize("hidden_size", [None, 7])
def test_conditional_weight_count_matches_formula(tmp_path, hidden_size):
    conditional, _ = conditional_bert(tmp_path, cond_size=5, hidden_size=hidden_size)
    plain = build_transformer_model(CONFIGS["bert"], with_mlm=True)
    norms = 1 + 2 * CONFIGS["bert"]["num_hidden_layers"] + 1  # embedding, 2 per block, MLM
    hidden = CONFIGS["bert"]["hidden_size"]
    per_norm = 2 * 5 * hidden if hidden_size is None else 5 * hidden_size + 2 * hidden_size * hidden
    assert conditional.count_params() - plain.count_params() == norms * per_norm


def test_condition_tensor_needs_its_inputs():
    condition_input = keras.Input(shape=(), dtype="int32", name="Input-Label")
    condition = keras.layers.Embedding(2, 6)(condition_input)
    with pytest.raises(ValueError, match="additional_input_layers"):
        build_transformer_model(CONFIGS["bert"], layer_norm_cond=condition)
    model = build_transformer_model(
        CONFIGS["bert"], layer_norm_cond=condition, additional_input_layers=condition_input
    )
    assert [t.name for t in model.inputs][-1] == "Input-Label"
    token_ids, segment_ids = random_batch(np.random.default_rng(15))
    output = np.asarray(model([token_ids, segment_ids, np.array([0, 1, 1])]))
    assert output.shape == (3, 9, 32)
