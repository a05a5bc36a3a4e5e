"""Hugging Face safetensors in and out, the TensorFlow-free checkpoint reader, HF vocabularies.

Oracles: HF names and layouts written here from transformers' modeling files (never from
bert4x's tables), tf.train.load_checkpoint for the reader, CRC-32C's published check value,
and round trips through the other format.
"""

import json
import os
import pickle
import shutil
import struct
import sys

import numpy as np
import pytest
import tensorflow as tf
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from bert4x import checkpoints
from bert4x.checkpoints import (
    load_weights_from_checkpoint,
    save_weights_as_checkpoint,
    save_weights_as_safetensors,
)
from bert4x.formats import TensorBundleReader
from bert4x.formats.tensor_bundle import crc32c, mask_crc, read_block, snappy_decompress
from bert4x.models import build_transformer_model
from bert4x.tokenizers import Tokenizer, load_vocab

from model_cases import CONFIGS, as_list, build_loaded, random_batch, write_random_checkpoint

pytestmark = pytest.mark.backend_agnostic

FULL = {"with_pool": True, "with_nsp": True, "with_mlm": True}
FAMILY_HEADS = {
    "bert": FULL,
    "roberta": {"with_mlm": True},
    "albert": FULL,
    "electra": {"with_discriminator": True},
    "electra_generator": {"with_mlm": True},
    "roformer": {"with_mlm": True},
}


def outputs(model, seed=5):
    token_ids, segment_ids = random_batch(np.random.default_rng(seed))
    return [np.asarray(o) for o in as_list(model([token_ids, segment_ids]))]


def assert_same_outputs(model, other):
    for got, want in zip(outputs(model), outputs(other), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """exports(model, tmp_path=None) -> (keras model, original variables, HF directory).

    Each family (FAMILY_HEADS) is built and saved as safetensors once per module; with
    `tmp_path` the caller gets its own copy of the directory to modify.
    """
    cache = {}

    def export(model, tmp_path=None):
        if model not in cache:
            root = tmp_path_factory.mktemp(model)
            keras_model, variables = build_loaded(root, model, **FAMILY_HEADS[model])
            save_weights_as_safetensors(keras_model, root / "hf")
            cache[model] = (keras_model, variables, root / "hf")
        keras_model, variables, directory = cache[model]
        if tmp_path is not None:
            directory = shutil.copytree(directory, tmp_path / "hf")
        return keras_model, variables, directory

    return export


def reload(directory, model="bert", checkpoint=None, **heads):
    checkpoint = directory / "model.safetensors" if checkpoint is None else checkpoint
    return build_transformer_model(
        str(directory / "config.json"), str(checkpoint), model=model, **heads
    )


# ----------------------------------------------------------------------------- HF names
def test_bert_names_and_layouts_follow_transformers(exports):
    _, v, directory = exports("bert")
    hf = load_file(directory / "model.safetensors")
    L0 = "bert.encoder.layer.0."
    # nn.Linear weight is [out, in]: the TF kernel transposed; embeddings and LN are not
    q = hf[L0 + "attention.self.query.weight"]
    assert q.shape == (32, 32)
    np.testing.assert_array_equal(q, v["bert/encoder/layer_0/attention/self/query/kernel"].T)
    np.testing.assert_array_equal(
        hf[L0 + "intermediate.dense.weight"], v["bert/encoder/layer_0/intermediate/dense/kernel"].T
    )
    assert hf[L0 + "intermediate.dense.weight"].shape == (48, 32)
    np.testing.assert_array_equal(
        hf["bert.embeddings.word_embeddings.weight"], v["bert/embeddings/word_embeddings"]
    )
    np.testing.assert_array_equal(
        hf["bert.encoder.layer.1.output.LayerNorm.weight"],
        v["bert/encoder/layer_1/output/LayerNorm/gamma"],
    )
    np.testing.assert_array_equal(
        hf["bert.embeddings.LayerNorm.bias"], v["bert/embeddings/LayerNorm/beta"]
    )
    # NSP weight [2, H] is stored as is (TF output_weights is [2, H] already)
    np.testing.assert_array_equal(
        hf["cls.seq_relationship.weight"], v["cls/seq_relationship/output_weights"]
    )
    np.testing.assert_array_equal(hf["cls.predictions.bias"], v["cls/predictions/output_bias"])
    assert hf["bert.pooler.dense.weight"].shape == (32, 32)
    assert hf["cls.predictions.transform.LayerNorm.weight"].shape == (32,)
    assert "cls.predictions.decoder.weight" not in hf  # tied to the word embeddings
    assert len(hf) == len(v)
    with safe_open(directory / "model.safetensors", framework="np") as file:
        assert file.metadata() == {"format": "pt"}  # from_pretrained refuses other metadata
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    assert config["hidden_act"] == "gelu" and config["num_hidden_layers"] == 2
    assert config["max_position_embeddings"] == 40 and config["type_vocab_size"] == 2
    assert config["layer_norm_eps"] == 1e-12


def test_albert_electra_roformer_names_follow_transformers(exports):
    _, v, albert = exports("albert")
    hf = load_file(albert / "model.safetensors")
    block = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    tf_block = "bert/encoder/transformer/group_0/inner_group_0/"
    pairs = {
        "attention.query.weight": "attention_1/self/query/kernel",
        "attention.dense.weight": "attention_1/output/dense/kernel",
        "attention.LayerNorm.weight": "LayerNorm/gamma",
        "ffn.weight": "ffn_1/intermediate/dense/kernel",
        "ffn_output.bias": "ffn_1/intermediate/output/dense/bias",
        "full_layer_layer_norm.bias": "LayerNorm_1/beta",
    }
    for hf_name, tf_name in pairs.items():
        value = v[tf_block + tf_name]
        np.testing.assert_array_equal(hf[block + hf_name], value.T if value.ndim == 2 else value)
    assert hf["albert.encoder.embedding_hidden_mapping_in.weight"].shape == (32, 16)  # [H, E]
    assert hf["albert.pooler.weight"].shape == (32, 32)
    assert hf["sop_classifier.classifier.weight"].shape == (2, 32)
    assert hf["predictions.dense.weight"].shape == (16, 32)  # Linear(H, E)
    assert hf["predictions.bias"].shape == (60,)

    _, v, electra = exports("electra")
    hf = load_file(electra / "model.safetensors")
    assert hf["electra.embeddings_project.weight"].shape == (32, 16)
    np.testing.assert_array_equal(
        hf["discriminator_predictions.dense_prediction.weight"],
        v["discriminator_predictions/dense_1/kernel"].T,
    )
    assert hf["electra.encoder.layer.1.attention.output.dense.weight"].shape == (32, 32)

    _, v, generator = exports("electra_generator")
    hf = load_file(generator / "model.safetensors")
    np.testing.assert_array_equal(
        hf["generator_lm_head.bias"], v["generator_predictions/output_bias"]
    )
    assert hf["generator_predictions.dense.weight"].shape == (16, 24)  # Linear(H_gen, E)
    np.testing.assert_array_equal(
        hf["electra.encoder.layer.0.attention.self.key.weight"],
        v["generator/encoder/layer_0/attention/self/key/kernel"].T,
    )
    assert "generator_lm_head.weight" not in hf  # tied to the word embeddings

    _, _, roformer = exports("roformer")
    hf = load_file(roformer / "model.safetensors")
    assert not any("position_embeddings" in key for key in hf)
    # the non-interleaved sinusoid of modeling_roformer.py, shape [max_position, head size]
    table = hf["roformer.encoder.embed_positions.weight"]
    pos, j = np.arange(40)[:, None], np.arange(8)[None, :]
    angle = pos / 10000 ** (2 * (j // 2) / 8)
    np.testing.assert_allclose(table[:, :4], np.sin(angle[:, 0::2]), atol=1e-6)
    np.testing.assert_allclose(table[:, 4:], np.cos(angle[:, 1::2]), atol=1e-6)
    assert json.loads((roformer / "config.json").read_text())["rotary_value"] is False


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("model", list(FAMILY_HEADS))
def test_safetensors_and_tf_exports_reload_to_identical_outputs(tmp_path, exports, model):
    heads = FAMILY_HEADS[model]
    keras_model, _, directory = exports(model)
    assert_same_outputs(reload(directory, model, **heads), keras_model)
    prefix = save_weights_as_checkpoint(keras_model, str(tmp_path / "tf" / "model.ckpt"))
    from_tf = build_transformer_model(CONFIGS[model], prefix, model=model, **heads)
    assert_same_outputs(from_tf, keras_model)


def test_outputs_match_transformers_on_the_exported_files(exports):
    skipped = "not installed: no peer comparison (HF names/shapes are checked above instead)"
    torch = pytest.importorskip("torch", reason=f"torch {skipped}")
    transformers = pytest.importorskip("transformers", reason=f"transformers {skipped}")
    for model in ("bert", "albert", "electra", "electra_generator", "roformer"):
        _, _, directory = exports(model)
        bare = reload(directory, model)  # sequence output
        peer = transformers.AutoModel.from_pretrained(str(directory)).eval()
        token_ids, segment_ids = random_batch(np.random.default_rng(3))
        with torch.no_grad():
            expected = peer(
                input_ids=torch.tensor(token_ids, dtype=torch.long),
                token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
                attention_mask=torch.tensor(token_ids != 0, dtype=torch.long),
            ).last_hidden_state.numpy()
        got = np.asarray(bare([token_ids, segment_ids]))
        valid = token_ids != 0
        np.testing.assert_allclose(got[valid], expected[valid], atol=1e-4, err_msg=model)


def test_directory_is_detected_and_keep_tokens_apply(exports):
    keras_model, _, directory = exports("bert")
    from_dir = reload(directory, checkpoint=directory, **FULL)
    assert_same_outputs(from_dir, keras_model)
    keep = [0, 3, 7, 9]
    small = reload(directory, with_mlm=True, keep_tokens=keep)
    table = np.asarray(small.get_layer("Embedding-Token").embeddings)
    full = load_file(directory / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(table, full[keep])


def test_headless_electra_file_loads_as_the_generator(tmp_path):
    generator, _ = build_loaded(tmp_path, "electra_generator")
    directory = tmp_path / "gen"
    save_weights_as_safetensors(generator, directory)
    assert_same_outputs(reload(directory, "electra_generator"), generator)


# ----------------------------------------------------------------------------- HF variants
def rewrite(directory, tensors, config=None):
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config))


def test_bare_base_model_keys_and_old_layernorm_spelling_load(tmp_path, exports):
    keras_model, _, directory = exports("bert", tmp_path)
    hf = load_file(directory / "model.safetensors")
    renamed = {}
    for key, value in hf.items():
        key = key.removeprefix("bert.")  # as saved from BertModel itself
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma")
        renamed[key.replace("LayerNorm.bias", "LayerNorm.beta")] = value
    rewrite(directory, renamed)
    assert_same_outputs(reload(directory, **FULL), keras_model)


def test_roberta_layout_drops_the_padding_positions(tmp_path, exports):
    keras_model, _, directory = exports("roberta", tmp_path)
    names = {
        "cls.predictions.transform.dense": "lm_head.dense",
        "cls.predictions.transform.LayerNorm": "lm_head.layer_norm",
        "cls.predictions.bias": "lm_head.bias",
        "bert.": "roberta.",
    }
    roberta = {}
    for key, value in load_file(directory / "model.safetensors").items():
        for old, new in names.items():
            key = key.replace(old, new)
        roberta[key] = value
    table = roberta["roberta.embeddings.position_embeddings.weight"]  # positions start at pad + 1
    roberta["roberta.embeddings.position_embeddings.weight"] = np.concatenate(
        [np.full((2, 32), 9.0, "float32"), table]
    )
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type="roberta", pad_token_id=1, max_position_embeddings=42)
    rewrite(directory, roberta, config)
    assert_same_outputs(reload(directory, "roberta", with_mlm=True), keras_model)


def test_half_precision_and_sharded_files_load(tmp_path, exports):
    keras_model, _, directory = exports("bert", tmp_path)
    hf = load_file(directory / "model.safetensors")
    half = {k: v.astype(np.float16) for k, v in hf.items()}
    rewrite(directory, half)
    weights = reload(directory, **FULL).get_layer("Embedding-Token").embeddings
    expected = half["bert.embeddings.word_embeddings.weight"].astype("float32")
    np.testing.assert_array_equal(np.asarray(weights), expected)
    keys = sorted(hf)
    shards = {"a.safetensors": keys[::2], "b.safetensors": keys[1::2]}
    for file, file_keys in shards.items():
        save_file({k: hf[k] for k in file_keys}, str(directory / file), metadata={"format": "pt"})
    weight_map = {key: file for file, file_keys in shards.items() for key in file_keys}
    index = directory / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    os.remove(directory / "model.safetensors")
    assert_same_outputs(reload(directory, checkpoint=directory, **FULL), keras_model)


# ----------------------------------------------------------------------------- strictness
def test_missing_tensor_is_named_with_its_hugging_face_key(tmp_path, exports):
    _, _, directory = exports("bert", tmp_path)
    hf = load_file(directory / "model.safetensors")
    del hf["bert.pooler.dense.weight"]
    hf["classifier.weight"] = np.zeros((3, 32), "float32")
    rewrite(directory, hf)
    with pytest.raises(ValueError) as error:
        reload(directory, with_pool=True)
    message = str(error.value)
    assert "'bert/pooler/dense/kernel' (Hugging Face 'bert.pooler.dense.weight')" in message
    assert "pass with_pool=False" in message
    model = build_transformer_model(str(directory / "config.json"))
    report = load_weights_from_checkpoint(model, str(directory / "model.safetensors"))
    assert {"bert/pooler/dense/bias", "classifier.weight"} <= set(report.unused)
    assert "cls/predictions/output_bias" in report.unused  # heads the model was built without


def test_unreadable_or_unlabelled_safetensors_raise_value_error(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        build_transformer_model(CONFIGS["bert"], str(broken))
    save_file(
        {"encoder.layer.0.output.dense.weight": np.zeros((2, 2), "float32")},
        str(tmp_path / "bare.safetensors"),
    )
    with pytest.raises(ValueError, match="put its Hugging Face config.json"):
        build_transformer_model(CONFIGS["bert"], str(tmp_path / "bare.safetensors"))


def test_wrong_family_is_recognised(exports):
    _, _, directory = exports("albert")
    with pytest.raises(ValueError, match="looks like model=albert"):
        build_transformer_model(CONFIGS["bert"], str(directory / "model.safetensors"))


def test_pytorch_pickles_are_refused_without_unpickling(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    directory = tmp_path / "torch_model"
    directory.mkdir()
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **CONFIGS["bert"]}))

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    for path in (directory / "pytorch_model.bin", directory):
        with pytest.raises(ValueError, match="does not open: unpickling can run code"):
            build_transformer_model(str(directory / "config.json"), str(path))
    assert not marker.exists()


def test_export_refuses_what_hugging_face_cannot_hold(tmp_path):
    for model in ("gpt", "roformer_v2"):
        keras_model, _ = build_loaded(tmp_path, model)
        with pytest.raises(ValueError, match="no Hugging Face transformers architecture"):
            save_weights_as_safetensors(keras_model, tmp_path / model)
    keras_model, _ = build_loaded(tmp_path, "roformer", with_pool=True)
    with pytest.raises(ValueError, match="has no place for.*bert/pooler/dense/kernel"):
        save_weights_as_safetensors(keras_model, tmp_path / "roformer")
    residual = build_transformer_model(CONFIGS["bert"], residual_attention_scores=True)
    with pytest.raises(ValueError, match="residual_attention_scores"):
        save_weights_as_safetensors(residual, tmp_path / "residual")


def test_hugging_face_config_keys_are_translated_and_checked():
    hf = {"model_type": "bert", **CONFIGS["bert"], "hidden_act": "gelu_pytorch_tanh"}
    builder = build_transformer_model(hf, return_keras_model=False)
    assert builder.hidden_act.__name__ == "gelu_tanh"
    with pytest.raises(ValueError, match="relative positions"):
        build_transformer_model({**hf, "position_embedding_type": "relative_key"})
    albert = {**CONFIGS["albert"], "model_type": "albert", "num_hidden_groups": 2}
    with pytest.raises(ValueError, match="num_hidden_groups=2"):
        build_transformer_model(albert, model="albert")
    with pytest.raises(ValueError, match="model_type='distilbert'"):
        from bert4x.formats.huggingface import detect_family

        detect_family(["transformer.layer.0.ffn.lin1.weight"], "distilbert")


# ----------------------------------------------------------------------------- TF-free reader
def save_v2(prefix, arrays):
    names = sorted(arrays)
    tensors = [tf.constant(arrays[name]) for name in names]
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )


def sharded_checkpoint(tmp_path):
    """A two-shard bundle (SaveV2 twice, then MergeV2Checkpoints) of every dtype used."""
    rng = np.random.default_rng(0)
    first = {
        "bert/encoder/layer_0/output/dense/kernel": rng.standard_normal((6, 5)).astype("float32"),
        "bert/embeddings/LayerNorm/gamma": rng.standard_normal(5).astype("float16"),
        "global_step": np.int64(123456789012),
        "loss_scale/good_steps": np.int32(-7),
    }
    second = {
        "bert/pooler/dense/kernel": tf.constant(rng.standard_normal((4, 3)), tf.bfloat16).numpy(),
        "cls/predictions/output_bias": rng.standard_normal(7),
        "flags": np.array([True, False, True]),
        "notes": np.array([b"", b"bert", b"x" * 300], dtype=object),
    }
    save_v2(str(tmp_path / "part_a"), first)
    save_v2(str(tmp_path / "part_b"), second)
    prefix = str(tmp_path / "merged" / "model.ckpt")
    tf.raw_ops.MergeV2Checkpoints(
        checkpoint_prefixes=[str(tmp_path / "part_a"), str(tmp_path / "part_b")],
        destination_prefix=prefix,
    )
    assert os.path.exists(prefix + ".data-00001-of-00002")
    return prefix


def assert_reader_matches_tensorflow(prefix, **options):
    ours, theirs = TensorBundleReader(prefix, **options), tf.train.load_checkpoint(prefix)
    assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
    dtypes = theirs.get_variable_to_dtype_map()
    for name in theirs.get_variable_to_shape_map():
        got, want = ours.get_tensor(name), theirs.get_tensor(name)
        assert type(got) is type(want), name
        if isinstance(want, bytes):
            assert got == want
            continue
        assert got.dtype == want.dtype == ours.get_variable_to_dtype_map()[name], name
        assert got.dtype == dtypes[name].as_numpy_dtype or dtypes[name] == tf.string
        np.testing.assert_array_equal(got, want)


def test_reader_equals_tensorflow_on_a_sharded_checkpoint_of_every_dtype(tmp_path):
    assert_reader_matches_tensorflow(sharded_checkpoint(tmp_path), max_checksum_bytes=None)


def test_reader_equals_tensorflow_on_an_object_based_checkpoint(tmp_path):
    step = tf.Variable(3, dtype=tf.int64)
    kernel = tf.Variable(np.arange(12, dtype="float32").reshape(3, 4))
    half = tf.Variable(tf.constant([1.5, -2.25], tf.bfloat16))
    checkpoint = tf.train.Checkpoint(step=step, kernel=kernel, half=half)
    prefix = checkpoint.write(str(tmp_path / "object" / "ckpt"))
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" in TensorBundleReader(prefix).get_variable_to_shape_map()
    assert_reader_matches_tensorflow(prefix)


def test_reader_follows_the_directory_state_file(tmp_path):
    prefix, variables = write_random_checkpoint(tmp_path, "bert")
    reader = TensorBundleReader(os.path.dirname(prefix))
    assert reader.prefix == prefix
    for name, value in variables.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)


def test_models_load_when_tensorflow_cannot_be_imported(tmp_path, monkeypatch):
    prefix, _ = write_random_checkpoint(tmp_path, "albert", with_mlm=True)
    with_tf = build_transformer_model(CONFIGS["albert"], prefix, model="albert", with_mlm=True)
    without_tf = build_transformer_model(CONFIGS["albert"], model="albert", with_mlm=True)
    opened = []

    class Spy(TensorBundleReader):
        def __init__(self, path):
            opened.append(path)
            super().__init__(path)

    monkeypatch.setattr(checkpoints, "TensorBundleReader", Spy)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    report = load_weights_from_checkpoint(without_tf, prefix)
    monkeypatch.undo()
    assert opened == [prefix] and report.unused == []
    assert_same_outputs(without_tf, with_tf)


def test_truncated_or_missing_files_raise_clear_errors(tmp_path):
    prefix = sharded_checkpoint(tmp_path)
    index = open(prefix + ".index", "rb").read()
    with pytest.raises(ValueError, match="cannot read a TensorFlow checkpoint"):
        TensorBundleReader(str(tmp_path / "absent"))
    open(prefix + ".index", "wb").write(index[:-3])
    with pytest.raises(ValueError, match="index .* is truncated or corrupted: bad magic"):
        TensorBundleReader(prefix)
    open(prefix + ".index", "wb").write(index)
    os.truncate(prefix + ".data-00000-of-00002", 10)
    reader = TensorBundleReader(prefix)
    with pytest.raises(ValueError, match=r"'global_step' .* is corrupted: .* is truncated"):
        reader.get_tensor("global_step")


def test_corrupted_checkpoints_raise_value_error_or_return_arrays(tmp_path):
    """A few hundred seeded byte flips and truncations: ValueError or arrays, nothing else."""
    prefix = sharded_checkpoint(tmp_path)
    files = [prefix + ".index", prefix + ".data-00000-of-00002", prefix + ".data-00001-of-00002"]
    originals = {path: open(path, "rb").read() for path in files}
    rng = np.random.default_rng(2024)
    outcomes = {"error": 0, "arrays": 0}
    for trial in range(300):
        path = files[0] if trial % 2 else files[rng.integers(3)]
        data = bytearray(originals[path])
        if rng.random() < 0.3:
            data = data[: rng.integers(len(data))]
        else:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        open(path, "wb").write(bytes(data))
        for limit in (0, None):  # parse without checksums too, so corrupt fields get parsed
            try:
                reader = TensorBundleReader(prefix, max_checksum_bytes=limit)
                for name in reader.get_variable_to_shape_map():
                    reader.get_tensor(name)
                outcomes["arrays"] += 1
            except ValueError:
                outcomes["error"] += 1
        open(path, "wb").write(originals[path])
    assert outcomes["error"] > 100 and outcomes["arrays"] > 10, outcomes


def test_crc32c_snappy_and_block_trailers_follow_their_specs():
    assert crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283
    # varint length 9; literal 'abc' (tag (3-1)<<2); copy length 6 at offset 3 (tag (6-4)<<2|1)
    compressed = bytes([9, 0x08]) + b"abc" + bytes([0x09, 0x03])
    assert snappy_decompress(compressed) == b"abcabcabc"
    for bad in (bytes([9, 0x08]) + b"abc" + bytes([0x09, 0x04]), bytes([2, 0x08]) + b"abc"):
        with pytest.raises(ValueError, match="snappy"):
            snappy_decompress(bad)
    restarts = struct.pack("<II", 0, 1)
    raw = bytes([0, 1, 2]) + b"k" + b"vv" + restarts  # one entry 'k' -> 'vv', restart at 0
    block = as_snappy_literal(raw)
    trailer = bytes([1]) + struct.pack("<I", mask_crc(crc32c(block + bytes([1]))))
    assert read_block(block + trailer, (0, len(block)), verify=True) == raw


def as_snappy_literal(raw):
    """`raw` as a snappy stream of one literal (valid for up to 60 bytes)."""
    return bytes([len(raw), (len(raw) - 1) << 2]) + raw


# ----------------------------------------------------------------------------- vocabularies
def test_tokenizer_json_and_directories_give_the_vocab_txt_vocabulary(tmp_path):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import models

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "你", "好"]
    (tmp_path / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    vocab = {token: i for i, token in enumerate(tokens)}
    RustTokenizer(models.WordPiece(vocab, unk_token="[UNK]")).save(str(hf_dir / "tokenizer.json"))
    expected = load_vocab(str(tmp_path / "vocab.txt"))
    assert load_vocab(str(hf_dir / "tokenizer.json")) == expected == vocab
    assert load_vocab(str(hf_dir)) == load_vocab(str(tmp_path)) == expected
    text = "hello worlds 你好"
    assert Tokenizer(str(hf_dir)).encode(text) == Tokenizer(str(tmp_path / "vocab.txt")).encode(
        text
    )
    RustTokenizer(models.BPE({"a": 0}, [])).save(str(tmp_path / "bpe.json"))
    with pytest.raises(ValueError, match="'BPE' tokenizer, not WordPiece"):
        load_vocab(str(tmp_path / "bpe.json"))
