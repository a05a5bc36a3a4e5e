"""Model builders against an independent numpy forward pass, and the mask properties."""

import keras
import numpy as np
import pytest

from bert4x.models import build_transformer_model

import reference_numpy as ref
from model_cases import (
    CONFIGS,
    FULL_HEADS,
    MODEL_TYPES,
    as_list,
    build_loaded,
    random_batch,
    reference_name,
)

pytestmark = pytest.mark.backend_agnostic

#: (model, application, heads) compared with the numpy reference.
REFERENCE_CASES = [
    ("bert", "encoder", {"with_pool": True, "with_mlm": True}),
    ("bert", "encoder", {"with_nsp": True}),
    ("bert", "lm", {"with_mlm": True}),
    ("bert", "unilm", {"with_mlm": True}),
    ("roberta", "encoder", {}),
    ("albert", "encoder", {"with_pool": True, "with_mlm": True}),
    ("albert_unshared", "encoder", {"with_mlm": True}),
    ("electra", "encoder", {}),
    ("electra", "encoder", {"with_discriminator": True}),
    ("electra_generator", "encoder", {"with_mlm": True}),
    ("roformer", "encoder", {"with_pool": True, "with_mlm": True}),
    ("roformer", "unilm", {"with_mlm": True}),
    ("roformer_v2", "encoder", {"with_mlm": True}),
    ("roformer_v2", "lm", {"with_mlm": True}),
    ("gpt", "lm", {}),
]

#: output names of the reference for the heads requested, in bert4keras order.
HEAD_ORDER = (("with_nsp", "nsp"), ("with_pool", "pool"), ("with_mlm", "mlm"))


def expected_outputs(model, heads, reference):
    """The reference arrays in the order the Keras model returns its outputs."""
    if model == "gpt":
        return [reference["mlm"]]
    if heads.get("with_discriminator"):
        return [reference["discriminator"]]
    names = []
    if heads.get("with_nsp"):
        names.append("nsp")
    elif heads.get("with_pool"):
        names.append("pool")
    if heads.get("with_mlm"):
        names.append("mlm")
    return [reference[n] for n in names] or [reference["sequence"]]


@pytest.mark.parametrize(
    "model,application,heads",
    REFERENCE_CASES,
    ids=[f"{m}-{a}-{'+'.join(h) or 'seq'}" for m, a, h in REFERENCE_CASES],
)
def test_outputs_match_numpy_reference(tmp_path, model, application, heads):
    keras_model, variables = build_loaded(tmp_path, model, application, **heads)
    token_ids, segment_ids = random_batch(np.random.default_rng(1))
    outputs = as_list(keras_model([token_ids, segment_ids]))
    reference = ref.forward(
        reference_name(model),
        CONFIGS[model],
        variables,
        token_ids,
        segment_ids,
        application="lm" if model == "gpt" else application,
        **({"with_mlm": True} if model == "gpt" else heads),
    )
    expected = expected_outputs(model, heads, reference)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model", MODEL_TYPES)
def test_padding_never_changes_unpadded_outputs(tmp_path, model):
    keras_model, _ = build_loaded(tmp_path, model, **FULL_HEADS[model])
    rng = np.random.default_rng(2)
    token_ids = rng.integers(1, 60, size=(2, 6)).astype("int32")
    segment_ids = np.array([[0, 0, 0, 1, 1, 1]] * 2, dtype="int32")
    padded_ids = np.pad(token_ids, [(0, 0), (0, 5)])
    padded_segments = np.pad(segment_ids, [(0, 0), (0, 5)])
    short = np.asarray(keras_model([token_ids, segment_ids]))
    long = np.asarray(keras_model([padded_ids, padded_segments]))
    np.testing.assert_allclose(long[:, :6], short, atol=1e-6, rtol=1e-5)


def changed_after(token_ids, position, rng):
    """A copy of token_ids with every token after `position` replaced by another id."""
    changed = token_ids.copy()
    changed[:, position + 1 :] = (changed[:, position + 1 :] + rng.integers(1, 50)) % 59 + 1
    return changed


@pytest.mark.parametrize("model", ["bert", "roformer", "roformer_v2", "gpt"])
def test_lm_output_ignores_later_tokens(tmp_path, model):
    keras_model, _ = build_loaded(tmp_path, model, "lm", **FULL_HEADS[model])
    rng = np.random.default_rng(3)
    token_ids, segment_ids = random_batch(rng, pad=(0, 0, 0))
    base = np.asarray(keras_model([token_ids, segment_ids]))
    for position in (0, 3, 6):
        changed = np.asarray(keras_model([changed_after(token_ids, position, rng), segment_ids]))
        np.testing.assert_allclose(changed[:, : position + 1], base[:, : position + 1], atol=1e-6)
        assert np.abs(changed[:, position + 1 :] - base[:, position + 1 :]).max() > 1e-4


@pytest.mark.parametrize("model", ["bert", "roformer"])
def test_unilm_source_ignores_target_and_target_is_causal(tmp_path, model):
    keras_model, _ = build_loaded(tmp_path, model, "unilm", with_mlm=True)
    rng = np.random.default_rng(4)
    token_ids = rng.integers(1, 60, size=(2, 8)).astype("int32")
    segment_ids = np.array([[0, 0, 0, 0, 1, 1, 1, 1]] * 2, dtype="int32")
    base = np.asarray(keras_model([token_ids, segment_ids]))
    # any target change leaves every source position unchanged
    changed = np.asarray(keras_model([changed_after(token_ids, 3, rng), segment_ids]))
    np.testing.assert_allclose(changed[:, :4], base[:, :4], atol=1e-6)
    assert np.abs(changed[:, 4:] - base[:, 4:]).max() > 1e-4
    # target position i sees no later target token
    changed = np.asarray(keras_model([changed_after(token_ids, 5, rng), segment_ids]))
    np.testing.assert_allclose(changed[:, :6], base[:, :6], atol=1e-6)


def test_albert_and_unshared_agree_after_loading(tmp_path):
    shared, _ = build_loaded(tmp_path, "albert", with_mlm=True)
    unshared, _ = build_loaded(tmp_path, "albert_unshared", with_mlm=True)
    token_ids, segment_ids = random_batch(np.random.default_rng(5))
    np.testing.assert_allclose(
        np.asarray(unshared([token_ids, segment_ids])),
        np.asarray(shared([token_ids, segment_ids])),
        atol=1e-6,
    )
    block = sum(int(np.prod(w.shape)) for w in shared.weights if w.path.startswith("Transformer-"))
    extra = (CONFIGS["albert"]["num_hidden_layers"] - 1) * block
    assert unshared.count_params() - shared.count_params() == extra


def test_rotary_model_is_shift_invariant_in_position_ids(tmp_path):
    """RoFormer with custom_position_ids: positions p and p + 7 give the same outputs."""
    from model_cases import write_random_checkpoint

    prefix, _ = write_random_checkpoint(tmp_path, "roformer")
    keras_model = build_transformer_model(
        CONFIGS["roformer"], prefix, model="roformer", custom_position_ids=True
    )
    token_ids, segment_ids = random_batch(np.random.default_rng(6), pad=(0, 0, 0))
    positions = np.tile(np.arange(token_ids.shape[1]), (3, 1)).astype("int32")
    base = np.asarray(keras_model([token_ids, segment_ids, positions]))
    shifted = np.asarray(keras_model([token_ids, segment_ids, positions + 7]))
    np.testing.assert_allclose(shifted, base, atol=2e-5)
    reversed_positions = np.asarray(keras_model([token_ids, segment_ids, positions[:, ::-1]]))
    assert np.abs(reversed_positions - base).max() > 1e-3


def test_no_segment_input_when_segment_vocab_size_is_zero(tmp_path):
    config = {**CONFIGS["bert"], "type_vocab_size": 0}
    variables = ref.random_variables("bert", config, with_mlm=True)
    keras_model = build_transformer_model(config, model="bert", with_mlm=True)
    keras_model.bert4x_builder.load_weights_from_checkpoint(variables)
    token_ids, _ = random_batch(np.random.default_rng(7))
    assert len(keras_model.inputs) == 1
    np.testing.assert_allclose(
        np.asarray(keras_model([token_ids])),
        ref.forward("bert", config, variables, token_ids, with_mlm=True)["mlm"],
        atol=1e-5,
    )


def test_sequence_output_carries_the_padding_mask():
    """A masked average downstream of the model skips the padding positions."""
    builder = build_transformer_model(CONFIGS["bert"], return_keras_model=False)
    pooled = keras.layers.GlobalAveragePooling1D()(builder.model.output)
    pooling_model = keras.Model(builder.model.inputs, pooled)
    token_ids = np.array([[7, 5, 6, 0, 0]], dtype="int32")
    inputs = [token_ids, np.zeros_like(token_ids)]
    sequence = np.asarray(builder.model(inputs))
    np.testing.assert_allclose(
        np.asarray(pooling_model(inputs)), sequence[:, :3].mean(axis=1), atol=1e-6
    )


def test_prefix_names_every_layer(tmp_path):
    from model_cases import write_random_checkpoint

    prefix, _ = write_random_checkpoint(tmp_path, "bert", with_mlm=True)
    keras_model = build_transformer_model(CONFIGS["bert"], prefix, with_mlm=True, prefix="Teacher-")
    names = [layer.name for layer in keras_model.layers]
    assert "Teacher-Embedding-Token" in names
    assert all(name.startswith("Teacher-") for name in names)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"model": "bort"}, "unknown model 'bort'"),
        ({"with_poll": True}, "unknown argument"),
        ({"application": "seq2seq"}, "unknown application"),
        ({"model": "electra", "with_mlm": True}, "electra_generator"),
        ({"model": "gpt", "application": "unilm"}, "not available"),
        ({"model": "electra", "application": "lm"}, "not available"),
        ({"segment_vocab_size": 0, "application": "unilm"}, "segment"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_transformer_model(CONFIGS["bert"], **kwargs)


def test_config_without_required_keys_names_them():
    config = {k: v for k, v in CONFIGS["bert"].items() if k != "vocab_size"}
    with pytest.raises(ValueError, match="vocab_size"):
        build_transformer_model(config)


def test_config_by_pretrained_name_builds_the_release_shape():
    builder = build_transformer_model(
        "albert_tiny_zh_google", model="albert", return_keras_model=False
    )
    assert (builder.vocab_size, builder.hidden_size, builder.embedding_size) == (21128, 312, 128)
    with pytest.raises(ValueError, match="known names"):
        build_transformer_model("no_such_release")
