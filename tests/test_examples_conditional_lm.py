"""examples/task_conditional_language_model.py: CLN oracles (ALGORITHMS.md 19), data, --smoke."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import task_conditional_language_model as clm  # noqa: E402

from bert4x.layers import LayerNormalization  # noqa: E402
from bert4x.models import build_transformer_model  # noqa: E402
from bert4x.tokenizers import Tokenizer  # noqa: E402

CHARS = "好坏很差棒贵便宜服务"
CONFIG = dict(
    vocab_size=5 + len(CHARS),
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_act="gelu",
    max_position_embeddings=32,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def tokenizer():
    return Tokenizer({t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                  *CHARS])})  # fmt: skip


def probas(lm, label_model, token_ids, label):
    condition = np.asarray(label_model(np.full((len(token_ids), 1), label, "int32")))
    return np.asarray(lm([token_ids, np.zeros_like(token_ids), condition]))


def test_labels_agree_at_initialisation_and_differ_after_one_step_on_label_0():
    keras.utils.set_random_seed(0)
    train_model, lm, label_model = clm.build_model(CONFIG, learning_rate=1e-2)
    train_model.run_eagerly = True  # one step: skip the XLA compile (--smoke runs it)
    token_ids = np.array([[2, 5, 7, 6, 3, 0], [2, 8, 9, 3, 0, 0]], "int32")
    p0, p1 = (probas(lm, label_model, token_ids, k) for k in (0, 1))
    np.testing.assert_array_equal(p0, p1)  # W_gamma = W_beta = 0: the label is ignored
    texts = [clm.sample_texts(lm, label_model, tokenizer(), [k] * 4, 8, seed=3) for k in (0, 1)]
    assert texts[0] == texts[1] and all(isinstance(t, str) for t in texts[0])
    # one step on label-0 data; the loss it reports is the masked next-token CE (numpy)
    targets = token_ids[:, 1:]
    chosen = np.take_along_axis(p0[:, :-1], targets[..., None], axis=-1)[..., 0]
    expected = -np.log(chosen)[targets > 0].mean()
    table = label_model.get_weights()[0].copy()
    loss = train_model.train_on_batch((token_ids, np.zeros_like(token_ids),
                                       np.zeros((2, 1), "int32")))  # fmt: skip
    assert float(np.ravel(loss)[0]) == pytest.approx(expected, rel=1e-5)
    # dL/dc = W^T(...) = 0 while W_gamma, W_beta are zero: Adam leaves the embedding alone
    np.testing.assert_array_equal(label_model.get_weights()[0], table)
    # each W starts at zero; one Adam step is -lr g / (|g| + eps) with g = c0^T s (rank one,
    # CLN gradient of ALGORITHMS.md 4): sign(W[i, j]) = -sign(c0[i]) sign(s[j])
    for layer in (layer for layer in lm.layers if isinstance(layer, LayerNormalization)):
        for kernel in (layer.gamma_kernel, layer.beta_kernel):
            w = np.asarray(kernel)  # [128, D]
            assert np.abs(w).max() <= 1e-2 * (1 + 1e-5)
            pattern = np.sign(w) * np.sign(table[0])[:, None]  # -sign(s[j]) in every row
            assert (pattern == pattern[:1]).all() and np.abs(pattern).sum() > 0
    q0, q1 = (probas(lm, label_model, token_ids, k) for k in (0, 1))
    assert np.abs(q0 - q1).max() > 1e-3
    chosen = np.take_along_axis(q0[:, :-1], targets[..., None], axis=-1)[..., 0]
    assert -np.log(chosen)[targets > 0].mean() < expected  # the step fits label-0 data


def test_new_trainable_weights_are_two_cond_by_hidden_matrices_per_layer_norm():
    train_model, lm, _ = clm.build_model(CONFIG)
    plain = build_transformer_model(CONFIG, application="lm")  # lm turns on the MLM head

    def count(model):
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)

    # Embedding-Norm, two per Transformer block, MLM-Norm of the LM head
    norms = 1 + 2 * CONFIG["num_hidden_layers"] + 1
    assert count(lm) - count(plain) == norms * 2 * clm.COND_SIZE * CONFIG["hidden_size"]
    assert count(train_model) - count(lm) == clm.NUM_LABELS * clm.COND_SIZE  # label embedding


def test_tsv_errors_name_file_and_line(tmp_path):
    records = clm.load_tsv(clm.SAMPLE, 2)
    assert len(records) == 60 and sorted({label for _, label in records}) == [0, 1]
    path = tmp_path / "train.tsv"
    cases = [
        ("好\t1\n坏\n", r"train.tsv:2: expected 'text<TAB>label'"),
        ("好\t1\n\n坏\t0\t1\n", r"train.tsv:3: expected 'text<TAB>label'"),
        ("好\t1\n坏\tx\n", r"train.tsv:2: the label must be an int in \[0, 2\)"),
        ("好\t-1\n", r"train.tsv:1: the label must be an int"),
        ("好\t2\n", r"train.tsv:1: the label must be an int in \[0, 2\).*'2'"),
    ]
    for body, match in cases:
        path.write_text(body, encoding="utf-8")
        with pytest.raises(ValueError, match=match):
            clm.load_tsv(str(path), 2)
    assert clm.load_tsv(str(path), 3) == [("好", 2)]  # the last body, fine with 3 labels
    with pytest.raises(ValueError, match="not found"):
        clm.load_tsv(str(tmp_path / "missing.tsv"), 2)


def test_texts_are_cut_at_punctuation_into_pieces_that_fit():
    text = "房间很干净，服务也很好。早餐一般，但是位置方便！下次还会再来，推荐。"
    pieces = clm.segment([(text, 1)], maxlen=14)
    assert len(pieces) > 1 and all(len(p) <= 12 and label == 1 for p, label in pieces)
    assert all(p in text for p, _ in pieces)
    assert re.sub("，", "", "".join(p for p, _ in pieces)) == re.sub("，", "", text)


def test_intended_rates_bag_of_chars_and_classifier():
    rate, per_label = clm.intended_rates([0, 0, 0, 1, 1], [0, 1, 0, 1, 0], 2)
    assert rate == pytest.approx(3 / 5) and per_label == pytest.approx([2 / 3, 1 / 2])
    assert np.isnan(clm.intended_rates([0, 0], [0, 0], 2)[1][1])
    tok = tokenizer()
    features = clm.bag_of_chars(tok, ["好好很", "坏"])
    expected = np.zeros((2, tok.vocab_size), "float32")
    expected[0, [5, 7]] = expected[1, 6] = 1
    np.testing.assert_array_equal(features, expected)
    keras.utils.set_random_seed(0)
    train = [("很好", 1), ("好棒", 1), ("服务好", 1), ("很坏", 0), ("坏很差", 0), ("服务差", 0)]
    predict, accuracy = clm.train_classifier(tok, train, [("好", 1), ("差", 0)], 2, epochs=30)
    assert accuracy == 1.0 and list(predict(["棒好", "很差坏"])) == [1, 0]


@pytest.mark.slow
def test_smoke_run_writes_labelled_samples(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "task_conditional_language_model.py"),
         "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "held-out classifier accuracy: " in result.stdout
    assert "epoch 1 (generated): intended-class rate: " in result.stdout
    lines = (tmp_path / "generated.json").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["label"] for r in records) == [0, 0, 0, 1, 1, 1]  # --smoke: 3 per label
    for record in records:
        assert set(record) == {"label", "text", "predicted"}
        assert isinstance(record["text"], str) and record["predicted"] in (0, 1)
    assert (tmp_path / "best_model.weights.h5").exists()
