"""Independent numpy oracle: BERT-family forward passes keyed by ORIGINAL checkpoint names.

Written from the architecture description (bert4keras semantics, post-LN), never from bert4x.
All math is float64. Shapes: b batch, n length, h heads, d head size, H hidden, E embedding,
I intermediate, V vocab.

    variables = random_variables("bert", config, with_mlm=True)
    write_checkpoint(variables, str(tmp_path / "model.ckpt"))
    expected = forward("bert", config, variables, token_ids, with_mlm=True)
"""

import math
import os

import numpy as np

MODELS = (
    "bert", "roberta", "albert", "albert_unshared", "electra", "electra_generator",
    "roformer", "roformer_v2", "gpt",
)  # fmt: skip
HEADS = {  # output heads each model supports
    "bert": {"pool", "nsp", "mlm"}, "roberta": {"pool", "nsp", "mlm"},
    "albert": {"pool", "nsp", "mlm"}, "albert_unshared": {"pool", "nsp", "mlm"},
    "roformer": {"pool", "nsp", "mlm"}, "roformer_v2": {"pool", "nsp", "mlm"},
    "electra": {"discriminator"}, "electra_generator": {"mlm"}, "gpt": {"mlm"},
}  # fmt: skip
_erf = np.vectorize(math.erf, otypes=[np.float64])
ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "relu": lambda x: np.maximum(x, 0.0),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "linear": lambda x: x,
}


# ----------------------------------------------------------------------------- config and names
def _config(model, config):
    """Normalised hyperparameters: H, L, h, d, I, E, V, P, S, act, eps."""
    if model not in MODELS:
        raise ValueError(f"Unknown model {model!r}; expected one of {MODELS}.")
    H, h = config["hidden_size"], config["num_attention_heads"]
    return dict(
        H=H, L=config["num_hidden_layers"], h=h, I=config["intermediate_size"],
        d=config.get("attention_head_size") or H // h, E=config.get("embedding_size") or H,
        V=config["vocab_size"], P=config.get("max_position_embeddings", 512),
        S=config.get("type_vocab_size", 2), act=ACTIVATIONS[config.get("hidden_act", "gelu")],
        eps=config.get("layer_norm_eps", 1e-7 if model.startswith("roformer") else 1e-12),
    )  # fmt: skip


def _embedding_names(model):
    """Names of token/segment/position tables, embedding norm and E->H mapping (None = absent)."""
    root = {"electra": "electra", "electra_generator": "electra", "gpt": "gpt"}.get(model, "bert")
    mapping = {
        "electra": "electra/embeddings_project",
        "electra_generator": "generator/embeddings_project",
        "gpt": "gpt/transformer/embedding_hidden_mapping_in",
    }.get(model, "bert/encoder/embedding_hidden_mapping_in")
    return dict(
        token=f"{root}/embeddings/word_embeddings",
        segment=f"{root}/embeddings/token_type_embeddings",
        position=None if model.startswith("roformer") else f"{root}/embeddings/position_embeddings",
        norm=None if model == "gpt" else f"{root}/embeddings/LayerNorm",
        mapping=mapping,
    )


def _block_names(model, i):
    """Variable-name prefixes of transformer block i (ALBERT: the one shared block)."""
    if model in ("albert", "albert_unshared"):
        p = "bert/encoder/transformer/group_0/inner_group_0/"
        attn, norm1, ffn_in, ffn_out, norm2 = (
            "attention_1/",
            "LayerNorm",
            "ffn_1/intermediate/dense",
            "ffn_1/intermediate/output/dense",
            "LayerNorm_1",
        )
    else:
        root = {
            "electra": "electra/encoder",
            "electra_generator": "generator/encoder",
            "gpt": "gpt/transformer",
        }.get(model, "bert/encoder")
        p = f"{root}/layer_{i}/"
        attn, norm1 = "attention/", "attention/output/LayerNorm"
        ffn_in, ffn_out, norm2 = "intermediate/dense", "output/dense", "output/LayerNorm"
    return dict(
        query=p + attn + "self/query",
        key=p + attn + "self/key",
        value=p + attn + "self/value",
        output=p + attn + "output/dense",
        norm1=p + norm1,
        ffn_in=p + ffn_in,
        ffn_out=p + ffn_out,
        norm2=p + norm2,
    )


def _head_names(model):
    """Names of the pooler, NSP and MLM head variables."""
    gen = model == "electra_generator"
    mlm, t = ("generator_predictions", "") if gen else ("cls/predictions", "transform/")
    return dict(
        pool="bert/pooler/dense",
        nsp="cls/seq_relationship",
        mlm_dense=f"{mlm}/{t}dense",
        mlm_norm=f"{mlm}/{t}LayerNorm",
        mlm_bias=f"{mlm}/output_bias",
        disc="discriminator_predictions/dense",
        disc_out="discriminator_predictions/dense_1",
    )


def _heads(model, with_pool, with_nsp, with_mlm, with_discriminator):
    """Requested heads; NSP implies the pooler. ValueError for heads the model lacks."""
    flags = {"pool": with_pool or with_nsp, "nsp": with_nsp, "mlm": with_mlm}
    wanted = {k for k, on in {**flags, "discriminator": with_discriminator}.items() if on}
    if wanted - HEADS[model]:
        raise ValueError(
            f"{model!r} has no head(s) {sorted(wanted - HEADS[model])}; "
            f"it supports {sorted(HEADS[model])}."
        )
    return wanted


def variable_shapes(
    model, config, *, with_pool=False, with_nsp=False, with_mlm=False, with_discriminator=False
):
    """Original checkpoint name -> shape for every variable the model reads."""
    c, emb = _config(model, config), _embedding_names(model)
    H, E, hd = c["H"], c["E"], c["h"] * c["d"]
    s = {emb["token"]: (c["V"], E)}
    if c["S"] > 0:
        s[emb["segment"]] = (c["S"], E)
    if emb["position"]:
        s[emb["position"]] = (c["P"], E)
    if emb["norm"]:
        s.update({emb["norm"] + "/beta": (E,), emb["norm"] + "/gamma": (E,)})
    if E != H:
        s.update({emb["mapping"] + "/kernel": (E, H), emb["mapping"] + "/bias": (H,)})

    def dense(name, n_in, n_out):
        s.update({name + "/kernel": (n_in, n_out), name + "/bias": (n_out,)})

    def norm(name, n):
        s.update({name + "/beta": (n,), name + "/gamma": (n,)})

    n_blocks = 1 if model in ("albert", "albert_unshared") else c["L"]
    for i in range(n_blocks):
        b = _block_names(model, i)
        for k in ("query", "key", "value"):
            dense(b[k], H, hd)
        dense(b["output"], hd, H)
        dense(b["ffn_in"], H, c["I"])
        dense(b["ffn_out"], c["I"], H)
        norm(b["norm1"], H)
        norm(b["norm2"], H)
    heads, n = _heads(model, with_pool, with_nsp, with_mlm, with_discriminator), _head_names(model)
    if "pool" in heads:
        dense(n["pool"], H, H)
    if "nsp" in heads:
        s.update({n["nsp"] + "/output_weights": (2, H), n["nsp"] + "/output_bias": (2,)})
    if "mlm" in heads and model not in ("gpt", "roformer_v2"):
        dense(n["mlm_dense"], H, E)
        norm(n["mlm_norm"], E)
        s[n["mlm_bias"]] = (c["V"],)
    if "discriminator" in heads:
        dense(n["disc"], H, H)
        dense(n["disc_out"], H, 1)
    if model == "roformer_v2":  # parameter-free norms, no biases
        s = {k: v for k, v in s.items() if not any(t in k for t in ("beta", "gamma", "bias"))}
    return s


# ----------------------------------------------------------------------------- checkpoint io
def random_variables(
    model,
    config,
    *,
    seed=0,
    with_pool=False,
    with_nsp=False,
    with_mlm=False,
    with_discriminator=False,
):
    """Random float32 variables under original names: kernels/tables N(0, 0.2),
    biases/beta N(0, 0.1), gamma 1 + N(0, 0.1) -- large enough that a missing bias shows."""
    rng = np.random.default_rng(seed)
    shapes = variable_shapes(
        model,
        config,
        with_pool=with_pool,
        with_nsp=with_nsp,
        with_mlm=with_mlm,
        with_discriminator=with_discriminator,
    )
    out = {}
    for name, shape in shapes.items():
        if name.endswith("gamma"):
            x = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(("beta", "bias")):
            x = 0.1 * rng.standard_normal(shape)
        else:
            x = 0.2 * rng.standard_normal(shape)
        out[name] = x.astype(np.float32)
    return out


def write_checkpoint(variables, prefix):
    """Write a TF1-style name-based checkpoint (prefix.index + prefix.data-*) plus the
    directory's `checkpoint` state file; dtypes kept (python ints become int64)."""
    import tensorflow as tf

    names = sorted(variables)
    tensors = []
    for k in names:
        v = variables[k]
        v = np.asarray(v, np.int64) if isinstance(v, int) else np.asarray(v)
        tensors.append(tf.constant(v))
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )
    tf.compat.v1.train.update_checkpoint_state(os.path.dirname(os.path.abspath(prefix)), prefix)
    return prefix


# ----------------------------------------------------------------------------- building blocks
def layer_norm(x, gamma=None, beta=None, eps=1e-12, rms=False):
    """LN(x) = (x - mean)/sqrt(var + eps) * gamma + beta; rms: x / sqrt(mean(x^2) + eps)."""
    x = np.asarray(x, np.float64)
    if rms:
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps)
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return y * gamma + beta


def softmax(x, axis=-1):
    """exp(x - max) / sum exp(x - max)."""
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def rotary(x, positions):
    """RoPE, interleaved pairs: (x_2i, x_2i+1) at position m rotated by m * 10000^(-2i/d).

    x: [b, n, h, d]; positions: [b, n].
    """
    d = x.shape[-1]
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)  # [d/2]
    angle = np.asarray(positions, np.float64)[:, :, None, None] * theta  # [b, n, 1, d/2]
    cos, sin = np.cos(angle), np.sin(angle)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return np.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).reshape(x.shape)


def attention_allowed(token_ids, segment_ids=None, application="encoder"):
    """Boolean [b, n(query i), n(key j)]: key valid (id != 0 or j == 0) AND
    lm: j <= i; unilm: c_j <= c_i with c = cumsum(segment_ids)."""
    ids = np.asarray(token_ids)
    b, n = ids.shape
    valid = (ids != 0) | (np.arange(n) == 0)  # [b, n]
    allowed = np.broadcast_to(valid[:, None, :], (b, n, n))
    if application == "lm":
        allowed = allowed & np.tril(np.ones((n, n), bool))
    elif application == "unilm":
        c = np.cumsum(np.asarray(segment_ids), axis=1)
        allowed = allowed & (c[:, None, :] <= c[:, :, None])
    elif application != "encoder":
        raise ValueError(f"application must be encoder, lm or unilm. Received: {application!r}")
    return allowed


def _dense(v, name, x, bias=True, act=None):
    """act(x W + b) with W [in, out] = v[name/kernel], b = v[name/bias]."""
    y = x @ np.asarray(v[name + "/kernel"], np.float64)
    if bias:
        y = y + np.asarray(v[name + "/bias"], np.float64)
    return y if act is None else act(y)


def _norm(v, name, x, c, rms):
    """Post-LN with gamma/beta under name, or parameter-free RMS norm."""
    if rms:
        return layer_norm(x, eps=c["eps"], rms=True)
    g, b = (np.asarray(v[f"{name}/{k}"], np.float64) for k in ("gamma", "beta"))
    return layer_norm(x, g, b, c["eps"])


def _attention(v, names, x, allowed, c, positions, bias, prev=None):
    """o = concat_h softmax(A | masked -> -1e9) v, then W_o; rotary if positions.

    A = s_i q k^T / sqrt(d) + prev (RealFormer), s_i = 1 or log(max(n_i, floor)) / log(L_train)
    with n_i the keys row i may see (entropy-invariant). Returns (o, A).
    """
    b, n, _ = x.shape
    q, k, w = (
        _dense(v, names[t], x, bias).reshape(b, n, c["h"], c["d"])
        for t in ("query", "key", "value")
    )
    if positions is not None:
        q, k = rotary(q, positions), rotary(k, positions)
    a = np.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(c["d"])  # [b, h, n, n]
    if c.get("entropy_invariant"):
        visible = np.maximum(allowed.sum(-1), c["entropy_floor"])  # [b, n]
        a = a * (np.log(visible) / np.log(c["training_length"]))[:, None, :, None]
    if prev is not None:
        a = a + prev
    p = softmax(np.where(allowed[:, None], a, -1e9))
    o = np.einsum("bhij,bjhd->bihd", p, w).reshape(b, n, c["h"] * c["d"])
    return _dense(v, names["output"], o, bias), a


def _block(v, names, x, allowed, c, positions, v2, prev=None):
    """x = LN(x + Attn(x)); x = LN(x + W2 act(W1 x + b1) + b2). Returns (x, scores)."""
    y, scores = _attention(v, names, x, allowed, c, positions, not v2, prev)
    x = _norm(v, names["norm1"], x + y, c, v2)
    f = _dense(v, names["ffn_out"], _dense(v, names["ffn_in"], x, not v2, c["act"]), not v2)
    return _norm(v, names["norm2"], x + f, c, v2), scores


def _embeddings(model, v, c, ids, segment_ids, positions):
    """tok + seg (if S > 0) + pos (not roformer) -> LN (not gpt; RMS for v2) -> E->H mapping."""
    n, v2 = _embedding_names(model), model == "roformer_v2"
    x = np.asarray(v[n["token"]], np.float64)[ids]
    if c["S"] > 0:
        x = x + np.asarray(v[n["segment"]], np.float64)[segment_ids]
    if n["position"]:
        x = x + np.asarray(v[n["position"]], np.float64)[positions]
    if n["norm"]:
        x = _norm(v, n["norm"], x, c, v2)
    return _dense(v, n["mapping"], x, not v2) if c["E"] != c["H"] else x


# ----------------------------------------------------------------------------- forward
def forward(
    model,
    config,
    variables,
    token_ids,
    segment_ids=None,
    *,
    application="encoder",
    with_pool=False,
    with_nsp=False,
    with_mlm=False,
    with_discriminator=False,
    position_ids=None,
    residual_attention_scores=False,
    attention_scale="default",
    training_length=512,
    entropy_floor=16,
):
    """Full forward pass; returns float64 'sequence' [b, n, H] and the requested heads:
    'pool' [b, H], 'nsp' [b, 2], 'mlm' [b, n, V], 'discriminator' [b, n, 1] (probabilities).

    position_ids ([n] or [b, n], default 0..n-1) feed both rotary and learned position tables.
    residual_attention_scores carries each layer's pre-softmax scores into the next (RealFormer);
    attention_scale='entropy_invariant' scales row i by log(max(n_i, floor)) / log(L_train).
    gpt is always causal ('lm'); its 'mlm' (the LM probs) is returned when with_mlm=True.
    """
    c, v = _config(model, config), variables
    c.update(
        entropy_invariant=attention_scale == "entropy_invariant",
        training_length=training_length,
        entropy_floor=entropy_floor,
    )
    heads = _heads(model, with_pool, with_nsp, with_mlm, with_discriminator)
    ids = np.asarray(token_ids)
    b, n = ids.shape
    seg = np.zeros_like(ids) if segment_ids is None else np.asarray(segment_ids)
    pos = np.arange(n) if position_ids is None else np.asarray(position_ids)
    pos = np.broadcast_to(pos, (b, n))
    v2 = model == "roformer_v2"
    allowed = attention_allowed(ids, seg, "lm" if model == "gpt" else application)
    x = _embeddings(model, v, c, ids, seg, pos)
    rot = pos if model.startswith("roformer") else None
    scores = None
    for i in range(c["L"]):
        x, a = _block(v, _block_names(model, i), x, allowed, c, rot, v2, scores)
        scores = a if residual_attention_scores else None
    out, hn = {"sequence": x}, _head_names(model)
    table = np.asarray(v[_embedding_names(model)["token"]], np.float64)  # [V, E]
    if "pool" in heads:
        out["pool"] = _dense(v, hn["pool"], x[:, 0], not v2, np.tanh)
    if "nsp" in heads:
        logits = out["pool"] @ np.asarray(v[hn["nsp"] + "/output_weights"], np.float64).T
        out["nsp"] = softmax(logits if v2 else logits + v[hn["nsp"] + "/output_bias"])
    if "mlm" in heads and model in ("gpt", "roformer_v2"):
        if c["E"] != c["H"]:
            raise ValueError(
                f"{model!r}: the tied LM head needs embedding_size == hidden_size (its "
                f"Output-Mapping has no checkpoint name). Received: embedding_size={c['E']}"
            )
        out["mlm"] = softmax(x @ table.T)
    elif "mlm" in heads:
        t = _norm(v, hn["mlm_norm"], _dense(v, hn["mlm_dense"], x, True, c["act"]), c, False)
        out["mlm"] = softmax(t @ table.T + np.asarray(v[hn["mlm_bias"]], np.float64))
    if "discriminator" in heads:
        d = _dense(v, hn["disc"], x, True, c["act"])
        out["discriminator"] = 1.0 / (1.0 + np.exp(-_dense(v, hn["disc_out"], d)))
    return out
