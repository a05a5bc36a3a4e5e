"""Mask mixins, the model registry and `build_transformer_model`."""

from bert4x.model_config import load_config, split_arguments
from bert4x.models.bert import BERT
from bert4x.models.variants import (
    ALBERT,
    ELECTRA,
    GPT,
    ALBERT_Unshared,
    ELECTRA_Generator,
    RoFormer,
    RoFormerV2,
)


class LM_Mask:
    """Causal attention: Allowed(i, j) = j <= i (application='lm', kexue.fm/archives/6933)."""

    attention_mode = "lm"


class UniLM_Mask:
    """Seq2seq attention (application='unilm'): Allowed(i, j) = c_j <= c_i, c = cumsum(s)."""

    attention_mode = "unilm"


MODELS = {
    "bert": BERT,
    "roberta": BERT,
    "albert": ALBERT,
    "albert_unshared": ALBERT_Unshared,
    "electra": ELECTRA,
    "electra_generator": ELECTRA_Generator,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
    "gpt": GPT,
}

APPLICATIONS = {"encoder": None, "lm": LM_Mask, "unilm": UniLM_Mask}


def model_class(model, application):
    """The builder class for `model` with the mask mixin of `application`."""
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
        model = MODELS[key]
    if application not in APPLICATIONS:
        raise ValueError(f"unknown application {application!r}; choose encoder, lm or unilm")
    if application == "encoder" or issubclass(model, GPT) and application == "lm":
        return model
    if issubclass(model, (ELECTRA, GPT)):
        raise ValueError(f"application={application!r} is not available for {model.__name__}")
    mixin = APPLICATIONS[application]
    return type(f"{model.__name__}_{mixin.__name__}", (mixin, model), {})


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    return_keras_model=True,
    **kwargs,
):
    """Build a model from bert_config.json (path, dict or pretrained_configs name) and load weights.

    `kwargs` use bert4keras spelling (with_pool, with_mlm, keep_tokens, ...) and
    override the config. application='lm'/'unilm' turns on the MLM head as
    bert4keras does. Returns the Keras model, or the builder when
    return_keras_model=False.
    """
    cls = model_class(model, application)
    configs = load_config(config_path)
    configs.update(kwargs)
    if application in ("lm", "unilm") and not issubclass(cls, GPT):
        configs["with_mlm"] = configs.get("with_mlm") or True
    init_kwargs, build_kwargs = split_arguments(cls, configs, explicit=kwargs)
    transformer = cls(**init_kwargs)
    transformer.build(**build_kwargs)
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
