"""Transformer builders in the bert4keras shape, and `build_transformer_model`.

A builder runs get_inputs -> apply_embeddings -> apply_main_layers(i) ->
apply_final_layers; every layer goes through `self.apply(...)` keyed by its
bert4keras name, so ALBERT's sharing and prefixes live in one place. Each
family also knows its original checkpoint names (`variable_mapping`).

The package splits by concept and re-exports everything, so `from bert4x.models
import X` works for every name: `transformer` (the builder base), `bert`,
`variants` (ALBERT, ELECTRA, RoFormer, GPT) and `build` (mask mixins, registry,
`build_transformer_model`).
"""

from bert4x.models.bert import BERT
from bert4x.models.build import (
    APPLICATIONS,
    MODELS,
    LM_Mask,
    UniLM_Mask,
    build_transformer_model,
    model_class,
)
from bert4x.models.transformer import (
    Transformer,
    attention_names,
    attention_options,
    dense_names,
    norm_names,
)
from bert4x.models.variants import (
    ALBERT,
    ELECTRA,
    GPT,
    ALBERT_Unshared,
    ELECTRA_Generator,
    RoFormer,
    RoFormerV2,
)

__all__ = [
    "ALBERT",
    "ALBERT_Unshared",
    "APPLICATIONS",
    "BERT",
    "ELECTRA",
    "ELECTRA_Generator",
    "GPT",
    "LM_Mask",
    "MODELS",
    "RoFormer",
    "RoFormerV2",
    "Transformer",
    "UniLM_Mask",
    "attention_names",
    "attention_options",
    "build_transformer_model",
    "dense_names",
    "model_class",
    "norm_names",
]
