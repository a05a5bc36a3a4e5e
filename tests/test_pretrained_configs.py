"""Sanity checks for the bundled bert_config.json copies in ``pretrained_configs/``."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "pretrained_configs"
DOC = ROOT / "docs" / "pretrained_configs.md"

ALLOWED_MODELS = {"bert", "albert", "electra", "electra_generator", "roformer", "roformer_v2"}
SIZE_KEYS = [
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "type_vocab_size",
]
OPTIONAL_SIZE_KEYS = ["embedding_size", "max_position_embeddings"]
PROB_KEYS = ["hidden_dropout_prob", "attention_probs_dropout_prob"]

CONFIG_FILES = sorted(CONFIG_DIR.glob("*.json"))


def load(name):
    with open(CONFIG_DIR / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def is_pos_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def test_directory_is_populated():
    assert len(CONFIG_FILES) >= 14


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_is_well_formed(path):
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    assert isinstance(cfg, dict)
    assert isinstance(cfg.get("source"), str) and cfg["source"].strip()
    assert cfg.get("model") in ALLOWED_MODELS
    if "note" in cfg:
        assert isinstance(cfg["note"], str) and cfg["note"].strip()
    for key in SIZE_KEYS:
        assert is_pos_int(cfg.get(key)), f"{path.name}: {key}={cfg.get(key)!r}"
    for key in OPTIONAL_SIZE_KEYS:
        if key in cfg:
            assert is_pos_int(cfg[key]), f"{path.name}: {key}={cfg[key]!r}"
    for key in PROB_KEYS:
        assert isinstance(cfg[key], float) and 0.0 <= cfg[key] < 1.0
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0
    assert isinstance(cfg["hidden_act"], str)
    if "initializer_range" in cfg:
        assert 0.0 < cfg["initializer_range"] < 1.0


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_release_name_matches_shape(path):
    """Google-style release names spell out L(ayers), H(idden) and A(ttention heads)."""
    m = re.search(r"L-(\d+)_H-(\d+)_A-(\d+)", path.stem)
    if m is None:
        pytest.skip("release name carries no L/H/A triple")
    layers, hidden, heads = map(int, m.groups())
    cfg = json.loads(path.read_text(encoding="utf-8"))
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]) == (
        layers,
        hidden,
        heads,
    )


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_ffn_is_four_times_hidden(path):
    # Every release bundled here uses the standard 4x feed-forward width.
    cfg = json.loads(path.read_text(encoding="utf-8"))
    assert cfg["intermediate_size"] == 4 * cfg["hidden_size"]


@pytest.mark.parametrize(
    "name",
    [
        "chinese_L-12_H-768_A-12",
        "chinese_roberta_wwm_ext_L-12_H-768_A-12",
        "chinese_roberta_wwm_large_ext_L-24_H-1024_A-16",
        "albert_tiny_zh_google",
        "albert_base_zh",
        "chinese_electra_small_discriminator",
        "chinese_electra_small_generator",
        "chinese_electra_base_discriminator",
        "chinese_electra_base_generator",
    ],
)
def test_google_chinese_vocab_family(name):
    # All of these reuse Google's Chinese WordPiece vocab.txt (21128 entries).
    assert load(name)["vocab_size"] == 21128


def test_hfl_roberta_base_shares_google_chinese_config():
    google = load("chinese_L-12_H-768_A-12")
    hfl = load("chinese_roberta_wwm_ext_L-12_H-768_A-12")
    skip = {"source", "model", "note"}
    assert {k: v for k, v in hfl.items() if k not in skip} == {
        k: v for k, v in google.items() if k not in skip
    }


def test_simbert_uses_trimmed_google_vocab():
    simbert = load("chinese_simbert_L-12_H-768_A-12")
    google = load("chinese_L-12_H-768_A-12")
    assert simbert["vocab_size"] < google["vocab_size"]
    assert simbert["model"] == "bert"


@pytest.mark.parametrize("size", ["small", "base"])
def test_electra_generator_pairs_with_discriminator(size):
    disc = load(f"chinese_electra_{size}_discriminator")
    gen = load(f"chinese_electra_{size}_generator")
    assert disc["model"] == "electra"
    assert gen["model"] == "electra_generator"
    # generator and discriminator share the embedding matrix and depth
    for key in ("embedding_size", "vocab_size", "type_vocab_size", "num_hidden_layers"):
        assert gen[key] == disc[key]
    # ELECTRA's generators are 1/4 of the discriminator width
    assert gen["hidden_size"] * 4 == disc["hidden_size"]
    assert gen["num_attention_heads"] * 4 == disc["num_attention_heads"]


def test_albert_factorised_embeddings():
    for name in ("albert_tiny_zh_google", "albert_base_zh"):
        cfg = load(name)
        assert cfg["model"] == "albert"
        assert cfg["embedding_size"] == 128 < cfg["hidden_size"]


def test_roformer_vocabularies():
    # word-level RoFormer (jieba words) vs char-level RoFormer-V2 vocab
    assert load("chinese_roformer_L-12_H-768_A-12")["vocab_size"] == 50000
    for name in (
        "chinese_roformer-v2-char_L-6_H-384_A-6",
        "chinese_roformer-v2-char_L-12_H-768_A-12",
    ):
        cfg = load(name)
        assert cfg["model"] == "roformer_v2"
        assert cfg["vocab_size"] == 12000
        assert cfg["hidden_act"] == "relu"


def test_doc_lists_every_config():
    text = DOC.read_text(encoding="utf-8")
    for path in CONFIG_FILES:
        assert f"`{path.name}`" in text, path.name
