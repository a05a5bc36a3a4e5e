"""Reading bert_config.json-style configs and routing their keys to a builder.

Config keys keep the original spelling; the bert4keras renames apply when the
target key is absent: max_position_embeddings -> max_position,
hidden_dropout_prob -> dropout_rate, attention_probs_dropout_prob ->
attention_dropout_rate, type_vocab_size -> segment_vocab_size. Hugging Face
config.json files use the same keys (plus model_type, checked on loading).
"""

import inspect
import json
import os
from importlib import resources

RENAMES = {
    "max_position_embeddings": "max_position",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "type_vocab_size": "segment_vocab_size",
}

#: keys of our pretrained_configs files that describe the release, not the model.
METADATA_KEYS = ("source", "model", "note")


def pretrained_config_names():
    """Names usable as `config_path`: the files of pretrained_configs/ without '.json'."""
    folder = resources.files("bert4x.pretrained_configs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def read_json_config(config_path):
    """The dict of a config given as a dict, a JSON file path or a pretrained config name."""
    if config_path is None:
        return {}
    if isinstance(config_path, dict):
        return dict(config_path)
    if not isinstance(config_path, (str, os.PathLike)):
        raise TypeError(
            f"config_path must be a dict, a path or a pretrained config name, "
            f"received {type(config_path).__name__}"
        )
    path = os.fspath(config_path)
    if not os.path.exists(path):
        name = path[:-5] if path.endswith(".json") else path
        if name not in pretrained_config_names():
            raise ValueError(
                f"config {path!r} is neither a file nor a pretrained config; known names: "
                f"{', '.join(pretrained_config_names())}"
            )
        path = resources.files("bert4x.pretrained_configs") / f"{name}.json"
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"config {os.fspath(path)!r} is not valid JSON: {error}") from error


def load_config(config_path):
    """Config dict with bert4keras renames applied and release metadata dropped.

    A Hugging Face config.json (it has `model_type`) is translated first
    (bert4x.formats.huggingface.from_hf_config).
    """
    configs = read_json_config(config_path)
    if "model_type" in configs:
        from bert4x.formats.huggingface import from_hf_config

        configs = from_hf_config(configs)
    for key in METADATA_KEYS:
        configs.pop(key, None)
    for old, new in RENAMES.items():
        if old in configs and new not in configs:
            configs[new] = configs.pop(old)
    return configs


def accepted_arguments(function_or_class):
    """Names of the keyword arguments accepted along a class's `__init__` chain (or a function)."""
    functions = (
        [c.__init__ for c in function_or_class.__mro__ if "__init__" in vars(c)]
        if inspect.isclass(function_or_class)
        else [function_or_class]
    )
    names = set()
    for function in functions:
        for parameter in inspect.signature(function).parameters.values():
            if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                names.add(parameter.name)
    return names - {"self"}


def required_arguments(cls):
    """Constructor arguments without a default along the class chain."""
    return {
        p.name
        for c in cls.__mro__
        if "__init__" in vars(c) and c is not object
        for p in inspect.signature(c.__init__).parameters.values()
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
    }


def split_arguments(cls, configs, explicit=()):
    """(constructor kwargs, build kwargs) for builder class `cls`.

    Unknown config-file keys are ignored (configs carry many unrelated fields);
    an unknown key passed explicitly in `explicit` raises, naming the choices.
    """
    init_names = accepted_arguments(cls)
    build_names = accepted_arguments(cls.build)
    unknown = sorted(k for k in explicit if k not in init_names | build_names)
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for {cls.__name__}; accepted: "
            f"{sorted(init_names | build_names)}"
        )
    missing = sorted(required_arguments(cls) - set(configs))
    if missing:
        raise ValueError(f"the config lacks {missing}, required by {cls.__name__}")
    init_kwargs = {k: v for k, v in configs.items() if k in init_names}
    build_kwargs = {k: v for k, v in configs.items() if k in build_names}
    return init_kwargs, build_kwargs
