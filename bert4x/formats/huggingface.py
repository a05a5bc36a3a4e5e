"""Hugging Face safetensors <-> the original TF checkpoint names, and HF config.json keys.

Reading presents an HF `model.safetensors` under the ORIGINAL names (REFERENCE.md §3), so
the strict loader of bert4x.checkpoints works unchanged. Each family is a table of rules
(original scope, HF scope, kind), used in both directions; `{i}` is the layer index:

    dense   scope/kernel [in, out] <-> scope.weight [out, in] (transposed), scope/bias <-> .bias
    norm    scope/gamma <-> scope.weight, scope/beta <-> scope.bias
    table   scope (an embedding table [V, E]) <-> scope.weight (not transposed)
    param   name <-> name, as is (NSP output_weights [2, H], MLM output_bias [V])

Facts (transformers' modeling_{bert,albert,electra,roformer,roberta}.py and their TF
conversion code): prefixes `bert.`, `albert.`, `electra.`, `roformer.`, `roberta.`; BERT
MLM `cls.predictions.{transform.dense, transform.LayerNorm, bias}`; ALBERT blocks under
`albert.encoder.albert_layer_groups.0.albert_layers.0.` (attention.{query,key,value,dense,
LayerNorm}, ffn, ffn_output, full_layer_layer_norm), heads `predictions.*`,
`sop_classifier.classifier.*`; ELECTRA `discriminator_predictions.dense_prediction` (TF
dense_1), generator `electra.*` + `generator_predictions.*` + `generator_lm_head.bias`
(TF generator/..., sharing electra/embeddings); RoFormer has no position table (its
`encoder.embed_positions` sinusoid is not a weight: skipped on reading, written on export).
Skipped too: tied output matrices (`*.decoder.weight`/`.bias`, `generator_lm_head.weight`)
and `position_ids` buffers. Old files spelling LayerNorm `gamma`/`beta` are accepted.
RoBERTa (model_type 'roberta') positions start at pad_token_id + 1, so its table loses
those first rows. Weights are read with safetensors' numpy API: no pickle, no code.
"""

import json
import logging
import os
import re

import numpy as np

logger = logging.getLogger("bert4x")

DENSE, NORM, TABLE, PARAM = "dense", "norm", "table", "param"
SAFETENSORS_NAME, SAFETENSORS_INDEX, CONFIG_NAME = (
    "model.safetensors",
    "model.safetensors.index.json",
    "config.json",
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle")
#: HF keys that hold no weight of their own.
SKIPPED_SUFFIXES = (
    "position_ids",
    "token_type_ids",
    "decoder.weight",
    "decoder.bias",
    "generator_lm_head.weight",
    "encoder.embed_positions.weight",
)
#: first parts of the keys of a file saved from a bare base model (no `bert.`-style prefix).
BASE_ROOTS = ("embeddings", "encoder", "pooler", "embeddings_project")
#: the BERT block parts; the HF name is the TF one with '/' -> '.'.
BLOCK_PARTS = (
    ("attention/self/query", DENSE),
    ("attention/self/key", DENSE),
    ("attention/self/value", DENSE),
    ("attention/output/dense", DENSE),
    ("attention/output/LayerNorm", NORM),
    ("intermediate/dense", DENSE),
    ("output/dense", DENSE),
    ("output/LayerNorm", NORM),
)
ALBERT_PARTS = (
    ("attention_1/self/query", "attention.query", DENSE),
    ("attention_1/self/key", "attention.key", DENSE),
    ("attention_1/self/value", "attention.value", DENSE),
    ("attention_1/output/dense", "attention.dense", DENSE),
    ("LayerNorm", "attention.LayerNorm", NORM),
    ("ffn_1/intermediate/dense", "ffn", DENSE),
    ("ffn_1/intermediate/output/dense", "ffn_output", DENSE),
    ("LayerNorm_1", "full_layer_layer_norm", NORM),
)
BERT_HEADS = (
    ("bert/pooler/dense", "bert.pooler.dense", DENSE),
    ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", PARAM),
    ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", PARAM),
    ("cls/predictions/transform/dense", "cls.predictions.transform.dense", DENSE),
    ("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm", NORM),
    ("cls/predictions/output_bias", "cls.predictions.bias", PARAM),
)


def embedding_rules(tf_root, hf_root):
    """Token, segment and position tables and the embedding LayerNorm."""
    rules = [
        (f"{tf_root}/embeddings/{t}", f"{hf_root}.embeddings.{t}", TABLE)
        for t in ("word_embeddings", "token_type_embeddings", "position_embeddings")
    ]
    return rules + [(f"{tf_root}/embeddings/LayerNorm", f"{hf_root}.embeddings.LayerNorm", NORM)]


def block_rules(tf_scope, hf_scope):
    """The per-layer rules of BERT-style blocks tf_scope/layer_{i} <-> hf_scope.layer.{i}."""
    return [
        (f"{tf_scope}/layer_{{i}}/{part}", f"{hf_scope}.layer.{{i}}.{part.replace('/', '.')}", kind)
        for part, kind in BLOCK_PARTS
    ]


def albert_rules():
    """Original <-> Hugging Face name rules of ALBERT (one shared block)."""
    tf_block = "bert/encoder/transformer/group_0/inner_group_0"
    hf_block = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    return [
        *embedding_rules("bert", "albert"),
        ("bert/encoder/embedding_hidden_mapping_in", "albert.encoder.embedding_hidden_mapping_in",
         DENSE),
        *((f"{tf_block}/{t}", f"{hf_block}.{h}", kind) for t, h, kind in ALBERT_PARTS),
        ("bert/pooler/dense", "albert.pooler", DENSE),
        ("cls/seq_relationship/output_weights", "sop_classifier.classifier.weight", PARAM),
        ("cls/seq_relationship/output_bias", "sop_classifier.classifier.bias", PARAM),
        ("cls/predictions/transform/dense", "predictions.dense", DENSE),
        ("cls/predictions/transform/LayerNorm", "predictions.LayerNorm", NORM),
        ("cls/predictions/output_bias", "predictions.bias", PARAM),
    ]  # fmt: skip


def electra_rules(generator):
    """Discriminator (electra/...) or generator (generator/..., shared electra/embeddings)."""
    scope = "generator" if generator else "electra"
    rules = [
        *embedding_rules("electra", "electra"),
        (f"{scope}/embeddings_project", "electra.embeddings_project", DENSE),
        *block_rules(f"{scope}/encoder", "electra.encoder"),
    ]
    if generator:
        return rules + [
            ("generator_predictions/dense", "generator_predictions.dense", DENSE),
            ("generator_predictions/LayerNorm", "generator_predictions.LayerNorm", NORM),
            ("generator_predictions/output_bias", "generator_lm_head.bias", PARAM),
        ]
    return rules + [
        ("discriminator_predictions/dense", "discriminator_predictions.dense", DENSE),
        ("discriminator_predictions/dense_1", "discriminator_predictions.dense_prediction", DENSE),
    ]


def roberta_rules():
    """Original <-> Hugging Face name rules of RoBERTa (BERT names under `roberta.`)."""
    return [
        *embedding_rules("bert", "roberta"),
        *block_rules("bert/encoder", "roberta.encoder"),
        ("bert/pooler/dense", "roberta.pooler.dense", DENSE),
        ("cls/predictions/transform/dense", "lm_head.dense", DENSE),
        ("cls/predictions/transform/LayerNorm", "lm_head.layer_norm", NORM),
        ("cls/predictions/output_bias", "lm_head.bias", PARAM),
    ]


def expand(rules):
    """[(original regex, HF regex, original template, HF template, transposed)] per weight."""
    pairs = []
    for tf, hf, kind in rules:
        if kind == DENSE:
            pairs += [(f"{tf}/kernel", f"{hf}.weight", True), (f"{tf}/bias", f"{hf}.bias", False)]
        elif kind == NORM:
            pairs += [(f"{tf}/gamma", f"{hf}.weight", False), (f"{tf}/beta", f"{hf}.bias", False)]
        else:
            pairs.append((tf, f"{hf}.weight" if kind == TABLE else hf, False))
    return [(pattern(tf), pattern(hf), tf, hf, t) for tf, hf, t in pairs]


def pattern(template):
    """A regex that matches `template` with any layer number in place of {i}."""
    return re.compile(re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)"))


class Family:
    """One HF model_type: its base-model prefix and its two-way name map."""

    def __init__(self, name, model_type, stem, rules):
        self.name, self.model_type, self.prefix = name, model_type, model_type
        self.stem = stem  # of the transformers class names, e.g. Bert -> BertForMaskedLM
        self.pairs = expand(rules)

    def to_hf(self, name):
        """(HF key, transposed) of an original name, or None."""
        return self._convert(name, 0, 3)

    def to_original(self, key):
        """(original name, transposed) of an HF key, or None."""
        return self._convert(key, 1, 2)

    def _convert(self, name, source, target):
        for pair in self.pairs:
            match = pair[source].fullmatch(name)
            if match:
                return pair[target].format(**match.groupdict()), pair[4]
        return None


def roformer_rules():
    """Original <-> Hugging Face name rules of RoFormer (no position table)."""
    return [
        *embedding_rules("bert", "roformer"),
        ("bert/encoder/embedding_hidden_mapping_in", "roformer.embeddings_project", DENSE),
        *block_rules("bert/encoder", "roformer.encoder"),
        *BERT_HEADS[3:],  # no pooler, no NSP
    ]


def bert_rules():
    """Original <-> Hugging Face name rules of BERT."""
    return [
        *embedding_rules("bert", "bert"),
        *block_rules("bert/encoder", "bert.encoder"),
        *BERT_HEADS,
    ]


FAMILIES = {
    family.name: family
    for family in (
        Family("bert", "bert", "Bert", bert_rules()),
        Family("roberta", "roberta", "Roberta", roberta_rules()),
        Family("albert", "albert", "Albert", albert_rules()),
        Family("electra", "electra", "Electra", electra_rules(False)),
        Family("electra_generator", "electra", "Electra", electra_rules(True)),
        Family("roformer", "roformer", "RoFormer", roformer_rules()),
    )
}


# ----------------------------------------------------------------------------- reading
def refuse_pickle(path):
    """ValueError for PyTorch pickles: bert4x never unpickles (it could run code from the file)."""
    raise ValueError(
        f"{os.fspath(path)!r} is a PyTorch pickle, which bert4x does not open: unpickling can "
        "run code from the file. Convert it once to safetensors where torch is installed, "
        "e.g. `safetensors.torch.save_file(torch.load(path, weights_only=True), "
        "'model.safetensors')` (or save_pretrained(..., safe_serialization=True)), "
        "then pass the .safetensors file"
    )


def is_pickle(path):
    """True for PyTorch pickle files (.bin, .pt, ...), which bert4x refuses to open."""
    return os.fspath(path).endswith(PICKLE_SUFFIXES)


def safetensors_path(path):
    """The .safetensors file (or index.json) that `path` names, or None if it names none."""
    path = os.fspath(path)
    if path.endswith((".safetensors", ".safetensors.index.json")):
        return path
    if os.path.isdir(path):
        for name in (SAFETENSORS_NAME, SAFETENSORS_INDEX):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        for name in ("pytorch_model.bin", "pytorch_model.bin.index.json"):
            if os.path.isfile(os.path.join(path, name)):
                refuse_pickle(os.path.join(path, name))
    return None


def safetensors_files(path):
    """The files of `path`: itself, or the shards a model.safetensors.index.json names."""
    if not os.path.isfile(path):
        raise ValueError(f"no safetensors file at {path!r}")
    if not path.endswith(".json"):
        return [path]
    weight_map = read_json(path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{path!r} has no 'weight_map' of key -> shard file")
    return sorted({os.path.join(os.path.dirname(path), file) for file in weight_map.values()})


def read_safetensors(path, key=None):
    """{key: (file, shape)} of the file, or, with `key`, that tensor as a numpy array."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="np") as file:
            if key is not None:
                return file.get_tensor(key)
            return {k: (path, list(file.get_slice(k).get_shape())) for k in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path!r} is not a readable safetensors file: {error}") from error


def read_json(path):
    """The JSON content of `path`; ValueError naming the file when it is not JSON."""
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not valid JSON: {error}") from error


def detect_family(keys, model_type=None, generator=False):
    """The Family of HF `keys` from config.json's model_type or the key prefixes.

    ELECTRA files hold the generator when they have its heads, or when `generator` (the
    model being loaded is the generator tower) and they have no discriminator head.
    """
    if model_type is None:
        roots = {key.split(".", 1)[0] for key in keys}
        model_type = next(
            (f for f in ("albert", "electra", "roformer", "roberta") if f in roots), None
        )
        model_type = model_type or ("bert" if "bert" in roots or "cls" in roots else None)
    if model_type is None:
        raise ValueError(
            "cannot tell the model family of a safetensors file whose keys start with "
            f"{sorted({key.split('.', 1)[0] for key in keys})[:6]}: put its Hugging Face "
            "config.json (with model_type) beside it"
        )
    if model_type not in ("bert", "roberta", "albert", "electra", "roformer"):
        raise ValueError(
            f"cannot load Hugging Face model_type={model_type!r}: bert4x reads bert, roberta, "
            "albert, electra (discriminator and generator) and roformer safetensors"
        )
    if model_type == "electra":
        heads = {key.split(".", 1)[0] for key in keys}
        has_generator = bool(heads & {"generator_predictions", "generator_lm_head"})
        if has_generator or (generator and "discriminator_predictions" not in heads):
            return FAMILIES["electra_generator"]
    return FAMILIES[model_type]


class SafetensorsCheckpoint:
    """Hugging Face safetensors weights under the original TF names (the reader interface).

    HF keys with no original name keep their HF name, so the strict loader reports them
    as unused. `generator=True` reads a headless ELECTRA file as the generator tower.
    """

    def __init__(self, path, generator=False):
        self.path = os.fspath(path)
        self.tensors = {}  # HF key -> (file, shape)
        for file in safetensors_files(self.path):
            self.tensors.update(read_safetensors(file))
        config_path = os.path.join(os.path.dirname(self.path), CONFIG_NAME)
        self.config = read_json(config_path) if os.path.isfile(config_path) else {}
        self.family = detect_family(list(self.tensors), self.config.get("model_type"), generator)
        self.sources = self._map_names(list(self.tensors))  # original -> (HF key, transposed)
        self.shapes = {name: self._shape(name) for name in self.sources}

    def _map_names(self, keys):
        prefix = self.family.prefix + "."
        bare = not any(key.startswith(prefix) for key in keys)  # saved from the base model
        sources = {}
        for key in keys:
            if key.endswith(SKIPPED_SUFFIXES):
                continue
            name = prefix + key if bare and key.split(".", 1)[0] in BASE_ROOTS else key
            name = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", name))
            original = self.family.to_original(name)
            sources[original[0] if original else key] = (key, bool(original and original[1]))
        return sources

    def _shape(self, name):
        key, transposed = self.sources[name]
        shape = list(self.tensors[key][1])
        if self._position_offset(name):
            shape[0] -= self._position_offset(name)
        return shape[::-1] if transposed else shape

    def _position_offset(self, name):
        """RoBERTa tables skip pad_token_id + 1 leading rows (its positions start there)."""
        if self.family.name != "roberta" or not name.endswith("/position_embeddings"):
            return 0
        pad = self.config.get("pad_token_id")
        return (1 if pad is None else int(pad)) + 1

    def get_variable_to_shape_map(self):
        """{original name: shape} of every tensor the file provides."""
        return dict(self.shapes)

    def get_tensor(self, name):
        """The array stored for original name `name` (HF tensor, transposed where HF is)."""
        key, transposed = self.sources[name]
        value = read_safetensors(self.tensors[key][0], key)
        value = value[self._position_offset(name) :]
        return np.ascontiguousarray(value.T) if transposed else value

    def describe(self, name):
        """The original name with the HF key it comes (or would come) from."""
        key = (
            self.sources[name][0]
            if name in self.sources
            else (self.family.to_hf(name) or [None])[0]
        )
        return f"{name!r} (Hugging Face {key!r})" if key and key != name else repr(name)


# ----------------------------------------------------------------------------- configs
#: bert4x activation name (backend.serialize_activation) -> HF hidden_act.
HF_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_erf": "gelu",
    "gelu_tanh": "gelu_new",
    "gelu_new": "gelu_new",
    "swish": "silu",
    "silu": "silu",
    "relu": "relu",
    "tanh": "tanh",
}
#: HF hidden_act spellings bert4x's backend lacks: all exact erf or the tanh approximation.
BERT4X_ACTIVATIONS = {
    "gelu_python": "gelu",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}


def from_hf_config(configs):
    """A Hugging Face config.json dict in bert4x terms (the other keys already agree).

    hidden_act spellings are mapped; RoBERTa's max_position_embeddings loses the
    pad_token_id + 1 positions it never uses; configs bert4x cannot build raise.
    """
    configs = dict(configs)
    model_type = configs.pop("model_type")
    act = configs.get("hidden_act")
    configs["hidden_act"] = BERT4X_ACTIVATIONS.get(act, act)
    position_type = configs.get("position_embedding_type") or "absolute"
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type={position_type!r} (relative positions) has no bert4x "
            "equivalent; only 'absolute' BERT/ALBERT/ELECTRA configs load"
        )
    groups = (configs.get("num_hidden_groups", 1), configs.get("inner_group_num", 1))
    if model_type == "albert" and groups != (1, 1):
        raise ValueError(
            f"ALBERT with num_hidden_groups={groups[0]}, inner_group_num={groups[1]}: bert4x's "
            "ALBERT shares one block (1, 1)"
        )
    if model_type == "roformer" and configs.get("rotary_value"):
        raise ValueError("rotary_value=True (rotated values) is not bert4x's RoFormer; use False")
    if model_type == "roberta":
        pad = configs.get("pad_token_id")
        pad = 1 if pad is None else pad
        configs["max_position_embeddings"] = configs.get("max_position_embeddings", 514) - pad - 1
        if pad != 0:
            logger.warning(
                "bert4x: RoBERTa pads with id %d but bert4x masks id 0: pad batches with 0", pad
            )
    return configs


def hf_activation(activation):
    """The HF hidden_act name of a bert4x activation function."""
    from bert4x.backend import serialize_activation

    name = serialize_activation(activation)
    if name not in HF_ACTIVATIONS:
        raise ValueError(
            f"hidden_act {name!r} has no Hugging Face name; use one of {sorted(HF_ACTIVATIONS)}"
        )
    return HF_ACTIVATIONS[name]


def architecture(builder, family):
    """HF class name: the pre-training model (NSP or RTD head), the masked LM, or the bare one."""
    with_nsp = getattr(builder, "with_nsp", False) and family.name in ("bert", "albert")
    if with_nsp or getattr(builder, "with_discriminator", False):
        return family.stem + "ForPreTraining"
    return family.stem + ("ForMaskedLM" if getattr(builder, "with_mlm", False) else "Model")


def hf_config(builder, family):
    """config.json (HF spelling) of a bert4x builder."""
    config = {
        "architectures": [architecture(builder, family)],
        "model_type": family.model_type,
        "vocab_size": builder.vocab_size,
        "hidden_size": builder.hidden_size,
        "num_hidden_layers": builder.num_hidden_layers,
        "num_attention_heads": builder.num_attention_heads,
        "intermediate_size": builder.intermediate_size,
        "hidden_act": hf_activation(builder.hidden_act),
        "hidden_dropout_prob": builder.dropout_rate,
        "attention_probs_dropout_prob": builder.attention_dropout_rate,
        "max_position_embeddings": builder.max_position,
        "type_vocab_size": builder.segment_vocab_size,
        "initializer_range": float(getattr(builder.initializer, "stddev", 0.02)),
        "layer_norm_eps": builder.layer_norm_eps,
        "pad_token_id": 0,
    }
    if family.name in ("bert", "electra", "electra_generator"):
        config["position_embedding_type"] = "absolute"
    if family.name != "bert":
        config["embedding_size"] = builder.embedding_size
    if family.name == "albert":
        config.update(num_hidden_groups=1, inner_group_num=1)
    if family.name == "roformer":
        config["rotary_value"] = False
    return config


# ----------------------------------------------------------------------------- writing
def export_family(builder):
    """The HF Family a bert4x builder is saved as; ValueError for what HF cannot hold."""
    from bert4x.models import ALBERT, BERT, ELECTRA, GPT, ELECTRA_Generator, RoFormer, RoFormerV2

    for cls in (GPT, RoFormerV2):
        if isinstance(builder, cls):
            raise ValueError(
                f"model={cls.__name__} has no Hugging Face transformers architecture; save it "
                "with save_weights_as_checkpoint"
            )
    problems = unsupported_features(builder, isinstance(builder, ELECTRA_Generator))
    if problems:
        raise ValueError(
            "Hugging Face's model cannot express " + "; ".join(problems) + "; save this model "
            "with save_weights_as_checkpoint instead"
        )
    for cls, name in (
        (RoFormer, "roformer"),
        (ELECTRA_Generator, "electra_generator"),
        (ELECTRA, "electra"),
        (ALBERT, "albert"),
        (BERT, "bert"),
    ):
        if isinstance(builder, cls):
            return FAMILIES[name]
    raise ValueError(f"no Hugging Face family for {type(builder).__name__}")


def unsupported_features(builder, generator=False):
    """Options of a bert4x model that change its computation beyond what HF's model does."""
    options = builder.attention_options
    heads_size = builder.num_attention_heads * builder.attention_head_size
    checks = {
        "attention_key_size != attention_head_size": (
            builder.attention_key_size != builder.attention_head_size
        ),
        "num_attention_heads * attention_head_size != hidden_size": (
            heads_size != builder.hidden_size
        ),
        "residual_attention_scores": builder.residual_attention_scores,
        "attention_type='nystrom'": "num_landmarks" in options,
        "attention_scale='entropy_invariant'": options.get("attention_scale")
        == "entropy_invariant",
        "conditional layer norms (layer_norm_cond)": builder.layer_norm_conds[0] is not None,
        "hierarchical_position": bool(builder.hierarchical_position),
        "segment_vocab_size=0": builder.segment_vocab_size == 0,
        "shared_segment_embeddings": builder.shared_segment_embeddings,
        "an ELECTRA generator head activation other than gelu": (
            generator and hf_activation(builder.hidden_act) != "gelu"
        ),
    }
    return [problem for problem, found in checks.items() if found]


def roformer_sinusoid(positions, dim):
    """HF RoFormer's embed_positions table: angle(p, j) = p / 10000^(2 floor(j/2) / dim);
    sin of the even-j angles in the first ceil(dim/2) columns, cos of the odd ones after."""
    j = np.arange(dim)
    angle = np.arange(positions)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)  # [P, dim]
    return np.concatenate([np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])], axis=1).astype(
        "float32"
    )


def hf_tensors(arrays, family, builder):
    """{HF key: array} of {original name: array}, plus the tensors HF needs and bert4x lacks."""
    tensors, unnamed = {}, []
    for name, value in arrays.items():
        converted = family.to_hf(name)
        if converted is None:
            unnamed.append(name)
            continue
        key, transposed = converted
        tensors[key] = np.ascontiguousarray(value.T if transposed else value)
    if unnamed:
        raise ValueError(
            f"Hugging Face model_type={family.model_type!r} has no place for {sorted(unnamed)}; "
            "build the model without those heads/layers or use save_weights_as_checkpoint"
        )
    if family.name == "roformer":
        table = roformer_sinusoid(builder.max_position, builder.attention_head_size)
        tensors["roformer.encoder.embed_positions.weight"] = table
    if family.name == "albert" and builder.embedding_size == builder.hidden_size:
        # HF ALBERT always projects E -> H; bert4x skips it when E == H: write the identity
        tensors["albert.encoder.embedding_hidden_mapping_in.weight"] = np.eye(
            builder.hidden_size, dtype="float32"
        )
        tensors["albert.encoder.embedding_hidden_mapping_in.bias"] = np.zeros(
            builder.hidden_size, "float32"
        )
    return tensors


def save_weights_as_safetensors(model, path):
    """Write `model`'s weights under Hugging Face names as safetensors, and config.json beside.

    `path` is a .safetensors file or a directory (then `model.safetensors` in it). The
    result loads with transformers' from_pretrained(directory) and back into bert4x with
    build_transformer_model(directory/config.json, path). Returns the file path.
    """
    from safetensors.numpy import save_file

    from bert4x.checkpoints import checkpoint_arrays, get_builder

    builder = get_builder(model)
    family = export_family(builder)
    tensors = hf_tensors(checkpoint_arrays(model), family, builder)
    path = os.fspath(path)
    if not path.endswith(".safetensors"):
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, SAFETENSORS_NAME)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, path, metadata={"format": "pt"})
    with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as file:
        json.dump(hf_config(builder, family), file, indent=2)
    return path
