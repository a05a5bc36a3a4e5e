"""Strict loading, keep_tokens/compound_tokens, and writing original checkpoints back."""

import numpy as np
import pytest
import tensorflow as tf

from bert4x.checkpoints import load_weights_from_checkpoint, save_weights_as_checkpoint
from bert4x.models import build_transformer_model

import reference_numpy as ref
from model_cases import (
    CONFIGS,
    MODEL_TYPES,
    as_list,
    build_loaded,
    random_batch,
    write_random_checkpoint,
)

pytestmark = pytest.mark.backend_agnostic


def test_missing_variable_is_named_with_a_hint(tmp_path):
    variables = ref.random_variables("bert", CONFIGS["bert"])
    model = build_transformer_model(CONFIGS["bert"], with_pool=True)
    with pytest.raises(ValueError) as error:
        load_weights_from_checkpoint(model, variables)
    message = str(error.value)
    assert "'bert/pooler/dense/kernel' for layer Pooler-Dense" in message
    assert "pass with_pool=False" in message
    assert "'bert/pooler/dense/bias'" in message


def test_every_problem_is_reported_in_one_error_and_nothing_is_assigned():
    variables = ref.random_variables("bert", CONFIGS["bert"])
    del variables["bert/encoder/layer_1/output/dense/bias"]
    variables["bert/embeddings/position_embeddings"] = np.zeros((7, 32), "float32")
    model = build_transformer_model(CONFIGS["bert"])
    before = [np.array(w) for w in model.weights]
    with pytest.raises(ValueError) as error:
        load_weights_from_checkpoint(model, variables)
    message = str(error.value)
    assert "'bert/encoder/layer_1/output/dense/bias'" in message
    assert "checkpoint (7, 32), model Embedding-Position/embeddings (40, 32)" in message
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(np.array(new), old)


@pytest.mark.parametrize(
    "checkpoint_model,model,family",
    [("albert", "bert", "model=albert"), ("bert", "electra", "model=bert"), ("gpt", "bert", "gpt")],
)
def test_wrong_model_type_is_recognised(tmp_path, checkpoint_model, model, family):
    prefix, _ = write_random_checkpoint(tmp_path, checkpoint_model)
    with pytest.raises(ValueError, match=family):
        build_transformer_model(CONFIGS[model], prefix, model=model)


def test_unused_variables_are_reported_and_training_state_ignored(tmp_path):
    variables = ref.random_variables("bert", CONFIGS["bert"], with_pool=True)
    variables["global_step"] = np.int64(1000)
    variables["bert/embeddings/word_embeddings/adam_m"] = np.zeros((60, 32), "float32")
    model = build_transformer_model(CONFIGS["bert"])  # no pooler: its variables stay unused
    prefix = ref.write_checkpoint(variables, str(tmp_path / "ckpt" / "bert_model.ckpt"))
    report = load_weights_from_checkpoint(model, prefix)
    assert report.unused == ["bert/pooler/dense/bias", "bert/pooler/dense/kernel"]
    assert len(report.loaded) == len(variables) - 4


def test_unreadable_checkpoint_path_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read a TensorFlow checkpoint"):
        build_transformer_model(CONFIGS["bert"], str(tmp_path / "nothing.ckpt"))


def test_directory_with_state_file_loads_like_the_prefix(tmp_path):
    prefix, variables = write_random_checkpoint(tmp_path, "bert")
    model = build_transformer_model(CONFIGS["bert"], str(tmp_path / "bert_0"))
    np.testing.assert_array_equal(
        np.array(model.get_layer("Embedding-Token").embeddings),
        variables["bert/embeddings/word_embeddings"],
    )


def test_keep_tokens_gathers_rows_of_embeddings_and_mlm_bias(tmp_path):
    prefix, variables = write_random_checkpoint(tmp_path, "bert", with_mlm=True)
    keep = [0, 1, 2, 3, 17, 30, 59, 8]
    full = build_transformer_model(CONFIGS["bert"], prefix, with_mlm="linear")
    small = build_transformer_model(CONFIGS["bert"], prefix, with_mlm="linear", keep_tokens=keep)
    small_ids = np.array([[2, 4, 5, 6, 7, 3, 0]], dtype="int32")
    full_ids = np.asarray(keep)[small_ids]
    segments = np.zeros_like(small_ids)
    small_logits = np.asarray(small([small_ids, segments]))
    full_logits = np.asarray(full([full_ids, segments]))
    np.testing.assert_allclose(small_logits, full_logits[..., keep], atol=1e-5)


def test_compound_tokens_are_weighted_means_of_rows(tmp_path):
    prefix, variables = write_random_checkpoint(tmp_path, "bert", with_mlm=True)
    compound = [[4, 5], ([6, 7, 8], [1.0, 2.0, 1.0])]
    model = build_transformer_model(
        CONFIGS["bert"], prefix, with_mlm=True, compound_tokens=compound
    )
    table = np.asarray(model.get_layer("Embedding-Token").embeddings)
    source = variables["bert/embeddings/word_embeddings"]
    assert table.shape == (62, 32)
    np.testing.assert_allclose(table[:60], source)
    np.testing.assert_allclose(table[60], (source[4] + source[5]) / 2, atol=1e-7)
    np.testing.assert_allclose(table[61], (source[6] + 2 * source[7] + source[8]) / 4, atol=1e-7)
    bias = np.asarray(model.get_layer("MLM-Bias").bias)
    np.testing.assert_allclose(bias[60], variables["cls/predictions/output_bias"][[4, 5]].mean())


SAVABLE = [m for m in MODEL_TYPES if m != "albert_unshared"]
SAVE_HEADS = {
    "bert": {"with_pool": True, "with_nsp": True, "with_mlm": True},
    "electra": {"with_discriminator": True},
    "gpt": {},
}


@pytest.mark.parametrize("model", SAVABLE)
def test_save_then_load_reproduces_names_values_and_outputs(tmp_path, model):
    heads = SAVE_HEADS.get(model, {"with_mlm": True})
    keras_model, variables = build_loaded(tmp_path, model, **heads)
    prefix = save_weights_as_checkpoint(keras_model, str(tmp_path / "saved" / "model.ckpt"))
    reader = tf.train.load_checkpoint(prefix)
    saved_names = set(reader.get_variable_to_shape_map())
    assert saved_names == set(variables)
    for name, value in variables.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
    reloaded = build_transformer_model(CONFIGS[model], prefix, model=model, **heads)
    token_ids, segment_ids = random_batch(np.random.default_rng(8))
    for got, want in zip(
        as_list(reloaded([token_ids, segment_ids])),
        as_list(keras_model([token_ids, segment_ids])),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_keep_tokens_round_trip_writes_the_reduced_vocabulary(tmp_path):
    prefix, variables = write_random_checkpoint(tmp_path, "bert", with_mlm=True)
    keep = [0, 5, 9, 11]
    model = build_transformer_model(CONFIGS["bert"], prefix, with_mlm=True, keep_tokens=keep)
    saved = save_weights_as_checkpoint(model, str(tmp_path / "small" / "model.ckpt"))
    table = tf.train.load_checkpoint(saved).get_tensor("bert/embeddings/word_embeddings")
    np.testing.assert_array_equal(table, variables["bert/embeddings/word_embeddings"][keep])
    small_config = {**CONFIGS["bert"], "vocab_size": len(keep)}
    reloaded = build_transformer_model(small_config, saved, with_mlm=True)
    ids = np.array([[1, 2, 3, 0]], dtype="int32")
    np.testing.assert_array_equal(
        np.asarray(reloaded([ids, np.zeros_like(ids)])),
        np.asarray(model([ids, np.zeros_like(ids)])),
    )


def test_unshared_albert_refuses_to_be_written_as_shared(tmp_path):
    model, _ = build_loaded(tmp_path, "albert_unshared")
    with pytest.raises(ValueError, match="untied layers"):
        save_weights_as_checkpoint(model, str(tmp_path / "x" / "model.ckpt"))


def test_electra_generator_and_discriminator_load_from_one_combined_checkpoint(tmp_path):
    discriminator = ref.random_variables("electra", CONFIGS["electra"], with_discriminator=True)
    generator = ref.random_variables(
        "electra_generator", CONFIGS["electra_generator"], seed=1, with_mlm=True
    )
    generator.update(discriminator)  # shared electra/embeddings/* come from the discriminator
    prefix = ref.write_checkpoint(generator, str(tmp_path / "electra" / "model.ckpt"))
    ids, segments = random_batch(np.random.default_rng(9))
    for model, heads in (
        ("electra", {"with_discriminator": True}),
        ("electra_generator", {"with_mlm": True}),
    ):
        keras_model = build_transformer_model(CONFIGS[model], prefix, model=model, **heads)
        reference = ref.forward(model, CONFIGS[model], generator, ids, segments, **heads)
        key = "discriminator" if model == "electra" else "mlm"
        np.testing.assert_allclose(
            np.asarray(keras_model([ids, segments])), reference[key], atol=1e-5
        )


def test_mapping_covers_every_weight_of_every_model(tmp_path):
    for model in MODEL_TYPES:
        heads = {"with_pool": True, "with_nsp": True, "with_mlm": True}
        if model == "electra":
            heads = {"with_discriminator": True}
        elif model == "electra_generator" or model == "roformer_v2":
            heads = {"with_mlm": True}
        elif model == "gpt":
            heads = {}
        builder = build_transformer_model(
            CONFIGS[model], model=model, return_keras_model=False, **heads
        )
        mapping = builder.variable_mapping()
        paths = [w.path for w in builder.model.weights if "seed_generator" not in w.path]
        assert [p for p in paths if p not in mapping] == [], model
        expected = set(ref.variable_shapes(ref_name(model), CONFIGS[model], **heads))
        assert {mapping[p] for p in paths} == expected, model


def ref_name(model):
    return "bert" if model == "roberta" else model


def test_layers_built_outside_the_builder_are_left_alone():
    """A label embedding feeding layer_norm_cond (bert4keras §19 wiring) keeps its weights."""
    import keras

    variables = ref.random_variables("bert", CONFIGS["bert"])
    label = keras.Input(shape=(), dtype="int32", name="Input-Label")
    embedding = keras.layers.Embedding(2, 6, name="Embedding-Label")
    model = build_transformer_model(
        CONFIGS["bert"], layer_norm_cond=embedding(label), additional_input_layers=label
    )
    before = embedding.get_weights()[0].copy()
    report = load_weights_from_checkpoint(model, variables)
    np.testing.assert_array_equal(embedding.get_weights()[0], before)
    assert "bert/embeddings/word_embeddings" in report.loaded
    np.testing.assert_array_equal(
        model.get_layer("Embedding-Token").get_weights()[0],
        variables["bert/embeddings/word_embeddings"],
    )
