"""Tiny configs of every model type and helpers to build them from a written checkpoint.

The weights come from `reference_numpy.random_variables` under the original
names and travel through a real TF checkpoint, so a test exercises the same
path as loading a released model.
"""

import numpy as np

from bert4x.models import build_transformer_model

import reference_numpy as ref

BASE = dict(
    vocab_size=60,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    hidden_act="gelu",
    max_position_embeddings=40,
    type_vocab_size=2,
)

CONFIGS = {
    "bert": BASE,
    "roberta": BASE,
    "albert": {**BASE, "embedding_size": 16},
    "albert_unshared": {**BASE, "embedding_size": 16},
    "electra": {**BASE, "embedding_size": 16},
    "electra_generator": {
        **BASE,
        "embedding_size": 16,
        "hidden_size": 24,
        "num_attention_heads": 2,
        "intermediate_size": 40,
    },
    "roformer": BASE,
    "roformer_v2": {**BASE, "hidden_act": "relu"},
    "gpt": {**BASE, "hidden_act": "gelu_tanh"},
}

#: the head that makes each model's output cover the whole sequence.
FULL_HEADS = {
    "bert": {"with_mlm": True},
    "roberta": {"with_mlm": True},
    "albert": {"with_mlm": True},
    "albert_unshared": {"with_mlm": True},
    "electra": {"with_discriminator": True},
    "electra_generator": {"with_mlm": True},
    "roformer": {"with_mlm": True},
    "roformer_v2": {"with_mlm": True},
    "gpt": {},
}

MODEL_TYPES = list(CONFIGS)


def reference_name(model):
    """The reference_numpy model name (roberta is BERT)."""
    return "bert" if model == "roberta" else model


def write_random_checkpoint(tmp_path, model, seed=0, **heads):
    """(prefix, variables) of a random checkpoint with the original names."""
    variables = ref.random_variables(reference_name(model), CONFIGS[model], seed=seed, **heads)
    prefix = str(tmp_path / f"{model}_{seed}" / "model.ckpt")
    ref.write_checkpoint(variables, prefix)
    return prefix, variables


def build_loaded(tmp_path, model, application="encoder", seed=0, **heads):
    """(keras model, variables) with weights loaded from a freshly written checkpoint."""
    prefix, variables = write_random_checkpoint(tmp_path, model, seed=seed, **heads)
    keras_model = build_transformer_model(
        CONFIGS[model], prefix, model=model, application=application, **heads
    )
    return keras_model, variables


def random_batch(rng, vocab_size=60, batch=3, length=9, pad=(0, 2, 4), target_from=(5, 4, 3)):
    """(token_ids, segment_ids): rows padded by `pad` zeros, target segment from `target_from`."""
    token_ids = rng.integers(1, vocab_size, size=(batch, length))
    segment_ids = np.zeros((batch, length), dtype="int32")
    for row, (p, t) in enumerate(zip(pad, target_from)):
        segment_ids[row, t : length - p] = 1
        if p:
            token_ids[row, length - p :] = 0
    return token_ids.astype("int32"), segment_ids


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
