"""Sanity checks of the numpy oracle itself against facts that do not depend on it."""

import math

import numpy as np
import pytest

import reference_numpy as ref  # tests/ is on sys.path (rootdir-less test dir)

CONFIG = dict(
    vocab_size=23, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=24, hidden_act="gelu", max_position_embeddings=32, type_vocab_size=2,
)  # fmt: skip
IDS = np.array([[5, 7, 9, 3, 11, 2, 0, 0], [0, 4, 4, 8, 6, 13, 17, 1]])  # second starts with id 0


def _run(model, variables=None, ids=IDS, config=CONFIG, **kw):
    heads = {k: kw.pop(k) for k in list(kw) if k.startswith("with_")}
    variables = variables or ref.random_variables(model, config, **heads)
    return ref.forward(model, config, variables, ids, **heads, **kw)


def test_bert_names_match_reference_section_3_3():
    names = set(ref.random_variables("bert", {**CONFIG, "num_hidden_layers": 1}, with_nsp=True,
                                     with_mlm=True))  # fmt: skip
    p = "bert/encoder/layer_0/"
    expected = {"bert/embeddings/word_embeddings", "bert/embeddings/token_type_embeddings",
                "bert/embeddings/position_embeddings", "cls/seq_relationship/output_weights",
                "cls/seq_relationship/output_bias", "cls/predictions/output_bias"}  # fmt: skip
    for dense in ["attention/self/query", "attention/self/key", "attention/self/value",
                  "attention/output/dense", "intermediate/dense", "output/dense"]:  # fmt: skip
        expected |= {p + dense + "/kernel", p + dense + "/bias"}
    for dense in ["bert/pooler/dense", "cls/predictions/transform/dense"]:
        expected |= {dense + "/kernel", dense + "/bias"}
    for ln in ["bert/embeddings/", p + "attention/output/", p + "output/",
               "cls/predictions/transform/"]:  # fmt: skip
        expected |= {ln + "LayerNorm/beta", ln + "LayerNorm/gamma"}
    assert names == expected


def test_model_specific_names():
    small = {**CONFIG, "embedding_size": 8}
    albert = ref.random_variables("albert", small)
    assert (
        "bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/output/dense/bias"
        in albert
    )
    assert "bert/encoder/embedding_hidden_mapping_in/kernel" in albert
    assert not any("layer_" in k for k in albert)
    electra = ref.random_variables("electra", small, with_discriminator=True)
    assert electra["electra/embeddings_project/kernel"].shape == (8, 16)
    assert electra["discriminator_predictions/dense_1/kernel"].shape == (16, 1)
    gen = ref.random_variables("electra_generator", small, with_mlm=True)
    assert {"generator/embeddings_project/bias", "generator_predictions/output_bias",
            "generator/encoder/layer_1/output/LayerNorm/gamma"} <= set(gen)  # fmt: skip
    assert gen["electra/embeddings/word_embeddings"].shape == (23, 8)
    gpt = ref.random_variables("gpt", CONFIG)
    assert "gpt/transformer/layer_1/attention/self/query/kernel" in gpt
    assert not any("LayerNorm" in k and "embeddings" in k for k in gpt)
    assert "bert/embeddings/position_embeddings" not in ref.random_variables("roformer", CONFIG)
    v2 = ref.random_variables("roformer_v2", CONFIG, with_mlm=True, with_pool=True)
    assert "bert/pooler/dense/kernel" in v2
    assert not any(t in k for k in v2 for t in ("bias", "beta", "gamma"))


def test_write_checkpoint_round_trips(tmp_path):
    import tensorflow as tf

    variables = ref.random_variables("albert", {**CONFIG, "embedding_size": 8}, with_mlm=True)
    variables["global_step"] = np.int64(1234)
    prefix = ref.write_checkpoint(variables, str(tmp_path / "model.ckpt"))
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_variable_to_shape_map().keys() == variables.keys()
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix
    for name, value in variables.items():
        got = reader.get_tensor(name)
        assert got.dtype == value.dtype and got.shape == np.shape(value), name
        np.testing.assert_array_equal(got, value)
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64


def test_layer_norm_and_rms_norm_statistics():
    x = np.random.default_rng(0).normal(3.0, 5.0, (4, 7, 32))
    y = ref.layer_norm(x, np.ones(32), np.zeros(32), eps=1e-12)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-9)
    r = ref.layer_norm(x, eps=1e-12, rms=True)
    np.testing.assert_allclose((r**2).mean(-1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(r / x, (r / x)[..., :1] * np.ones(32))  # a pure rescale


def test_activations_match_tensorflow():
    import tensorflow as tf

    x = np.linspace(-5, 5, 41)  # tf's float64 erf-gelu is only ~1e-9 accurate; erf vs tanh ~1e-3
    np.testing.assert_allclose(ref.ACTIVATIONS["gelu"](x), tf.nn.gelu(x, approximate=False),
                               atol=1e-8, rtol=0)  # fmt: skip
    np.testing.assert_allclose(ref.ACTIVATIONS["gelu_tanh"](x), tf.nn.gelu(x, approximate=True),
                               atol=1e-8, rtol=0)  # fmt: skip
    np.testing.assert_allclose(ref.ACTIVATIONS["swish"](x), tf.nn.silu(x), atol=1e-12)


def test_rotary_matches_complex_rotation_and_is_relative():
    rng = np.random.default_rng(1)
    d = 8
    q, k = rng.standard_normal((2, 1, 1, 1, d))
    rq = ref.rotary(q, [[3.0]])
    z = (q[..., 0::2] + 1j * q[..., 1::2]) * np.exp(1j * 3.0 * 10000.0 ** (-np.arange(4) / 4))
    np.testing.assert_allclose(rq[..., 0::2] + 1j * rq[..., 1::2], z, atol=1e-12)
    np.testing.assert_allclose(ref.rotary(q, [[0.0]]), q)
    np.testing.assert_allclose(np.linalg.norm(rq), np.linalg.norm(q))

    def score(m, n):
        return float(np.sum(ref.rotary(q, [[m]]) * ref.rotary(k, [[n]])))

    for s in (1, 5, 17):
        assert score(2, 7) == pytest.approx(score(2 + s, 7 + s), abs=1e-10)
    assert abs(score(2, 7) - score(2, 8)) > 1e-6


def test_attention_allowed_tables():
    ids = np.array([[1, 2, 3, 4, 5, 6]])
    seg = np.array([[0, 0, 0, 1, 1, 1]])
    a = ref.attention_allowed(ids, seg, "unilm")[0]
    assert a[:3, :3].all() and not a[:3, 3:].any()
    np.testing.assert_array_equal(a[3], [1, 1, 1, 1, 0, 0])
    assert a[5].all()
    lm = ref.attention_allowed(np.array([[0, 2, 0, 4]]), None, "lm")[0]
    np.testing.assert_array_equal(lm, [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 1]])


def test_gpt_is_causal():
    variables = ref.random_variables("gpt", CONFIG)
    changed = IDS.copy()
    changed[:, 4] = 19
    a, b = _run("gpt", variables, with_mlm=True), _run("gpt", variables, changed, with_mlm=True)
    np.testing.assert_allclose(a["sequence"][:, :4], b["sequence"][:, :4], atol=1e-12)
    assert np.abs(a["sequence"][:, 4:] - b["sequence"][:, 4:]).min(-1).max() > 1e-3
    np.testing.assert_allclose(a["mlm"].sum(-1), 1.0)


def test_unilm_source_ignores_target():
    variables = ref.random_variables("bert", CONFIG, with_mlm=True)
    ids, seg = IDS[:1], np.array([[0, 0, 0, 1, 1, 1, 1, 1]])
    changed = ids.copy()
    changed[0, 5] = 21
    a = _run("bert", variables, ids, segment_ids=seg, application="unilm")["sequence"]
    b = _run("bert", variables, changed, segment_ids=seg, application="unilm")["sequence"]
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-12)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3
    enc = _run("bert", variables, changed, segment_ids=seg)["sequence"]
    assert np.abs(enc[:, :3] - b[:, :3]).max() > 1e-3  # plain encoder does see the target


def test_padding_keys_are_ignored():
    variables = ref.random_variables("bert", CONFIG)
    short = _run("bert", variables, IDS[:, :6])["sequence"]
    long = _run("bert", variables, np.pad(IDS[:, :6], ((0, 0), (0, 3))))["sequence"]
    np.testing.assert_allclose(long[:, :6], short, atol=1e-12)


def test_roformer_is_shift_invariant():
    for model in ("roformer", "roformer_v2"):
        variables = ref.random_variables(model, CONFIG)
        pos = np.arange(8)
        a = _run(model, variables, position_ids=pos)["sequence"]
        np.testing.assert_allclose(_run(model, variables, position_ids=pos + 7)["sequence"], a)
        assert np.abs(_run(model, variables, position_ids=pos[::-1])["sequence"] - a).max() > 1e-3


def test_albert_equals_bert_with_copied_block():
    cfg = {**CONFIG, "embedding_size": 8}
    albert = ref.random_variables("albert", cfg, with_nsp=True, with_mlm=True)
    src = "bert/encoder/transformer/group_0/inner_group_0/"
    rename = {"attention_1/": "attention/", "LayerNorm_1/": "output/LayerNorm/",
              "LayerNorm/": "attention/output/LayerNorm/", "ffn_1/intermediate/output/": "output/",
              "ffn_1/intermediate/dense": "intermediate/dense"}  # fmt: skip
    bert = {k: v for k, v in albert.items() if not k.startswith(src)}
    for k, v in albert.items():
        if k.startswith(src):
            rest = k[len(src) :]
            old = next(o for o in rename if rest.startswith(o))
            for i in range(2):
                bert[f"bert/encoder/layer_{i}/" + rename[old] + rest[len(old) :]] = v
    kw = dict(with_nsp=True, with_mlm=True)
    a, b = _run("albert", albert, config=cfg, **kw), _run("bert", bert, config=cfg, **kw)
    assert a.keys() == {"sequence", "pool", "nsp", "mlm"}
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-12)
    one = _run("albert", albert, config={**cfg, "num_hidden_layers": 1})["sequence"]
    assert np.abs(one - a["sequence"]).max() > 1e-3  # the block really is applied twice
    np.testing.assert_allclose(a["nsp"].sum(-1), 1.0)
    np.testing.assert_allclose(a["mlm"].sum(-1), 1.0)
    assert _run("albert_unshared", albert, config=cfg)["sequence"] == pytest.approx(a["sequence"])


def test_every_variable_matters():
    """Randomly perturbing any single variable changes the outputs (none is ignored)."""
    rng = np.random.default_rng(2)
    cfg = {**CONFIG, "embedding_size": 8, "num_hidden_layers": 1}
    for model, kw in [("bert", dict(with_nsp=True, with_mlm=True)),
                      ("electra", dict(with_discriminator=True)),
                      ("electra_generator", dict(with_mlm=True))]:  # fmt: skip
        variables = ref.random_variables(model, cfg, **kw)
        base = ref.forward(model, cfg, variables, IDS, **kw)
        for name in (n for n in variables if not n.endswith("key/bias")):  # q.b_k cancels
            bumped = {
                **variables,
                name: variables[name] + rng.normal(0, 0.5, variables[name].shape),
            }
            out = ref.forward(model, cfg, bumped, IDS, **kw)
            assert max(np.abs(out[k] - base[k]).max() for k in base) > 1e-6, (model, name)


def test_heads_shapes_and_errors():
    d = _run("electra", with_discriminator=True)["discriminator"]
    assert d.shape == (2, 8, 1) and ((d > 0) & (d < 1)).all()
    with pytest.raises(ValueError, match="no head"):
        _run("gpt", with_pool=True)
    with pytest.raises(ValueError, match="embedding_size"):
        _run("roformer_v2", config={**CONFIG, "embedding_size": 8}, with_mlm=True)
    out = _run("roformer_v2", with_nsp=True, with_mlm=True)
    assert out["pool"].shape == (2, 16) and out["mlm"].shape == (2, 8, 23)
    np.testing.assert_allclose(out["nsp"].sum(-1), 1.0)
    assert math.isclose(float(out["mlm"][0, 0].sum()), 1.0)


def test_attention_matches_keras_multi_head_attention():
    import keras

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 16))
    v = {f"{t}/{k}": rng.standard_normal(s) for t in ("q", "k", "v", "o")
         for k, s in (("kernel", (16, 16)), ("bias", (16,)))}  # fmt: skip
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, dtype="float64")
    mha.build(x.shape, x.shape)
    mha.set_weights([v[f"{t}/{k}"].reshape((16, 2, 8) if k == "kernel" else (2, 8))
                     for t in "qkv" for k in ("kernel", "bias")]
                    + [v["o/kernel"].reshape(2, 8, 16), v["o/bias"]])  # fmt: skip
    allowed = ref.attention_allowed(IDS, None, "lm")
    names = dict(query="q", key="k", value="v", output="o")
    ours, _ = ref._attention(v, names, x, allowed, dict(h=2, d=8), None, True)
    np.testing.assert_allclose(ours, mha(x, x, attention_mask=allowed), rtol=1e-6, atol=1e-6)


def test_pool_and_nsp_read_the_first_token():
    v = ref.random_variables("bert", CONFIG, with_nsp=True)
    out = _run("bert", v, with_nsp=True)
    pool = np.tanh(
        out["sequence"][:, 0] @ v["bert/pooler/dense/kernel"] + v["bert/pooler/dense/bias"]
    )
    np.testing.assert_allclose(out["pool"], pool, rtol=1e-6)
    logits = (
        pool @ v["cls/seq_relationship/output_weights"].T + v["cls/seq_relationship/output_bias"]
    )
    np.testing.assert_allclose(out["nsp"], np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
