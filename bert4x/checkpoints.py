"""Original checkpoints: strict loading by original variable name, and writing back.

Readers: TensorFlow checkpoints (with or without TensorFlow), {name: array} dicts, and
Hugging Face safetensors presented under the original names (bert4x.formats).

A builder's `variable_mapping()` maps each Keras weight path (e.g.
`Transformer-0-MultiHeadSelfAttention/q_dense/kernel`) to the original name
(`bert/encoder/layer_0/attention/self/query/kernel`). Loading checks every
weight before assigning any: all missing names and shape mismatches are
reported in one ValueError. Checkpoint variables left unused are returned and
logged (optimizer slots and step counters are ignored).
"""

import collections
import logging
import os

import numpy as np

from bert4x.formats import huggingface
from bert4x.formats.huggingface import save_weights_as_safetensors  # noqa: F401 (public here)
from bert4x.formats.tensor_bundle import TensorBundleReader

logger = logging.getLogger("bert4x")

#: variables of training state that no model weight maps to.
TRAINING_STATE = ("global_step", "bad_steps", "good_steps", "loss_scale")
TRAINING_SLOTS = ("/adam_m", "/adam_v", "/Adam", "/Adam_1", "/lamb_m", "/lamb_v", "/Momentum")

#: hints for missing head variables: checkpoint name prefix -> what to do.
HEAD_HINTS = {
    "pooler/dense": "pass with_pool=False or use a checkpoint with a pooler",
    "cls/seq_relationship": "pass with_nsp=False or use a checkpoint with an NSP head",
    "cls/predictions": "pass with_mlm=False or use a checkpoint with an MLM head",
    "generator_predictions": "pass with_mlm=False or use a checkpoint with the generator",
    "discriminator_predictions": "pass with_discriminator=False or use a full ELECTRA checkpoint",
}

#: name fragments that identify a checkpoint family, most specific first.
FAMILY_MARKERS = (
    ("bert/encoder/transformer/group_0", "albert"),
    ("generator/encoder", "electra_generator (it also holds the electra discriminator)"),
    ("electra/encoder", "electra"),
    ("gpt/transformer", "gpt"),
    ("bert/encoder/layer_", "bert, roberta, roformer or roformer_v2"),
)

LoadReport = collections.namedtuple("LoadReport", ["loaded", "unused"])
"""What `load_weights_from_checkpoint` did: the names it `loaded` and the `unused` ones."""


class DictCheckpoint:
    """A {name: array} dict with the reader interface of tf.train.load_checkpoint."""

    def __init__(self, variables):
        self.variables = variables

    def get_variable_to_shape_map(self):
        """{name: shape} of every array."""
        return {name: list(np.shape(value)) for name, value in self.variables.items()}

    def get_tensor(self, name):
        """The array called `name`."""
        return np.asarray(self.variables[name])


def open_checkpoint(checkpoint, generator=False):
    """A reader (get_variable_to_shape_map, get_tensor) for any checkpoint bert4x loads.

    Dispatch: a {name: array} dict; a Hugging Face `.safetensors` file, its
    `model.safetensors.index.json` or a directory holding either (HF names presented
    as original names; `generator` reads a headless ELECTRA file as the generator);
    otherwise a TensorFlow prefix or directory, read by TensorFlow when it imports and
    by bert4x.formats.TensorBundleReader when it does not. PyTorch pickles are refused.
    """
    if isinstance(checkpoint, dict):
        return DictCheckpoint(checkpoint)
    path = os.fspath(checkpoint)
    if huggingface.is_pickle(path):
        huggingface.refuse_pickle(path)
    hf_path = huggingface.safetensors_path(path)
    if hf_path is not None:
        return huggingface.SafetensorsCheckpoint(hf_path, generator=generator)
    try:
        import tensorflow as tf
    except ImportError:
        return TensorBundleReader(path)
    try:
        return tf.train.load_checkpoint(path)
    except (ValueError, tf.errors.OpError) as error:
        raise ValueError(
            f"cannot read a TensorFlow checkpoint at {path!r}: pass the prefix "
            "(e.g. '.../bert_model.ckpt') or the directory that holds it"
        ) from error


def get_builder(model):
    """The bert4x builder of a model from build_transformer_model (Keras model or builder)."""
    builder = getattr(model, "bert4x_builder", model)
    if not hasattr(builder, "variable_mapping"):
        raise ValueError(
            f"{type(model).__name__} was not built by bert4x.build_transformer_model; pass the "
            "model it returned (or its builder, return_keras_model=False)"
        )
    return builder


def model_weights(builder):
    """(path without the builder's prefix, variable) for every weight of the builder's layers.

    Layers the user built outside the builder (e.g. a label embedding feeding
    `layer_norm_cond`) are not the checkpoint's business, as in bert4keras.
    """
    pairs = []
    for variable in builder.model.weights:
        path = variable.path
        if "seed_generator" in path or path.split("/")[0] not in builder.layers:
            continue
        if builder.prefix and path.startswith(builder.prefix):
            path = path[len(builder.prefix) :]
        pairs.append((path, variable))
    return pairs


def is_training_state(name):
    """True for optimizer slots and step counters stored beside the weights."""
    return name in TRAINING_STATE or name.endswith(TRAINING_SLOTS)


def checkpoint_family(names):
    """The model family a set of checkpoint names looks like, or None."""
    for marker, family in FAMILY_MARKERS:
        if any(marker in name for name in names):
            return family
    return None


def checkpoint_value(builder, reader, path, name):
    """The checkpoint array for weight `path`, with vocab gathering and transposes applied."""
    value = reader.get_tensor(name)
    if path in builder.transposed_weight_paths:
        value = value.T
    if path in builder.vocab_weight_paths:
        value = gather_vocab_rows(value, builder.keep_tokens, builder.compound_tokens)
    return value


def gather_vocab_rows(value, keep_tokens=None, compound_tokens=None):
    """Rows keep_tokens of a vocab-sized array, plus one (weighted) mean row per compound token.

    compound_tokens items are lists of row ids (after keep_tokens) or (ids, weights) pairs.
    """
    value = np.asarray(value, dtype="float32")
    if keep_tokens is not None:
        value = value[np.asarray(keep_tokens)]
    if compound_tokens:
        rows = []
        for item in compound_tokens:
            ids, weights = (item, None) if isinstance(item, list) else item
            rows.append(np.average(value[np.asarray(ids)], axis=0, weights=weights))
        value = np.concatenate([value, np.stack(rows).astype(value.dtype)], axis=0)
    return value


def mismatch_message(builder, checkpoint, missing, mismatched, unmapped, names, describe=repr):
    """One readable error that lists every problem found while planning a load.

    `describe(name)` quotes a checkpoint name (a Hugging Face reader adds the HF key).
    """
    lines = [f"checkpoint {checkpoint!r} does not fit this {type(builder).__name__} model:"]
    for name, path in missing:
        hint = next((h for key, h in HEAD_HINTS.items() if key in name), None)
        lines.append(
            f"  checkpoint has no variable {describe(name)} for layer {path.split('/')[0]}"
            + (f"; {hint}" if hint else "")
        )
    for name, path, saved, wanted in mismatched:
        lines.append(
            f"  shape mismatch for {describe(name)}: checkpoint {saved}, model {path} {wanted}"
        )
    for path in unmapped:
        lines.append(f"  model weight {path!r} has no checkpoint name")
    family = checkpoint_family(names)
    if family:
        lines.append(f"  (the checkpoint looks like model={family})")
    return "\n".join(lines)


def load_weights_from_checkpoint(model, checkpoint):
    """Strictly load an original checkpoint (prefix, directory or {name: array}) into `model`.

    Returns LoadReport(loaded, unused): the checkpoint names assigned and the
    ones no weight used (training state excluded). Nothing is assigned unless
    every weight fits.
    """
    from bert4x.models import ELECTRA_Generator

    builder = get_builder(model)
    reader = open_checkpoint(checkpoint, generator=isinstance(builder, ELECTRA_Generator))
    shapes = reader.get_variable_to_shape_map()
    mapping = builder.variable_mapping()
    plan, missing, mismatched, unmapped = [], [], [], []
    for path, variable in model_weights(builder):
        name = mapping.get(path)
        if name is None:
            if not builder.is_new_weight(path):
                unmapped.append(path)
            continue
        if name not in shapes:
            missing.append((name, path))
            continue
        value = checkpoint_value(builder, reader, path, name)
        if tuple(value.shape) != tuple(variable.shape):
            mismatched.append((name, path, tuple(value.shape), tuple(variable.shape)))
            continue
        plan.append((variable, value, name))
    if missing or mismatched or unmapped:
        label = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else "dict"
        describe = getattr(reader, "describe", repr)
        raise ValueError(
            mismatch_message(builder, label, missing, mismatched, unmapped, shapes, describe)
        )
    for variable, value, _ in plan:
        variable.assign(value.astype(variable.dtype))
    loaded = sorted({name for _, _, name in plan})
    unused = sorted(n for n in shapes if n not in set(loaded) and not is_training_state(n))
    if unused:
        logger.warning(
            "bert4x: %d checkpoint variables unused, e.g. %s", len(unused), ", ".join(unused[:5])
        )
    return LoadReport(loaded, unused)


def checkpoint_arrays(model):
    """{original name: array} of a model's weights, the inverse of loading."""
    from bert4x.models import ALBERT_Unshared

    builder = get_builder(model)
    if isinstance(builder, ALBERT_Unshared):
        raise ValueError(
            "an albert_unshared model has untied layers that ALBERT's one shared block cannot "
            "hold; build the same weights as model='bert' to save them in BERT's layout"
        )
    mapping = builder.variable_mapping()
    arrays = {}
    for path, variable in model_weights(builder):
        name = mapping.get(path)
        if name is None:
            continue
        value = keras_to_numpy(variable)
        arrays[name] = value.T if path in builder.transposed_weight_paths else value
    return arrays


def keras_to_numpy(variable):
    """The float32 numpy value of a Keras variable."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float32")


def save_weights_as_checkpoint(model, path, extra_variables=None):
    """Write the model's weights under the original names as a TF checkpoint at prefix `path`.

    The result loads with `tf.train.load_checkpoint(path)`, into the original
    code, and back into bert4x. `extra_variables` ({name: array}) are written too.
    """
    arrays = {**checkpoint_arrays(model), **(extra_variables or {})}
    write_checkpoint(arrays, path)
    return path


def write_checkpoint(arrays, path):
    """Write {name: array} as a name-based TF checkpoint (.index + .data) plus its state file."""
    import tensorflow as tf

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    names = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=path,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(arrays[name]) for name in names],
    )
    with open(os.path.join(directory, "checkpoint"), "w", encoding="utf-8") as file:
        file.write(f'model_checkpoint_path: "{os.path.basename(path)}"\n')
