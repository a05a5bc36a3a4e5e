"""examples/task_sentence_similarity_simbert.py: SimBERT rows, source noise, data, --smoke run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import task_sentence_similarity_simbert as simbert  # noqa: E402

from bert4x.tokenizers import Tokenizer  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer_for(text):
    vocab = SPECIAL + list(dict.fromkeys(text))
    return Tokenizer({t: i for i, t in enumerate(vocab)})


def test_each_pair_gives_two_adjacent_rows_with_swapped_source_and_target():
    tokenizer = tokenizer_for("你好吗在哪")  # ids: 你 5, 好 6, 吗 7, 在 8, 哪 9
    groups = [["你好吗", "你好"], ["在哪", "哪"]]
    batches = simbert.Batches(groups, tokenizer, maxlen=6, batch_size=4)
    (token_ids, segment_ids), = list(batches)  # fmt: skip
    cls, sep = 2, 3
    rows = [
        ([cls, 5, 6, 7, sep, 5, 6, sep], [0, 0, 0, 0, 0, 1, 1, 1]),  # [CLS] a [SEP] b [SEP]
        ([cls, 5, 6, sep, 5, 6, 7, sep], [0, 0, 0, 0, 1, 1, 1, 1]),  # [CLS] b [SEP] a [SEP]
        ([cls, 8, 9, sep, 9, sep], [0, 0, 0, 0, 1, 1]),
        ([cls, 9, sep, 8, 9, sep], [0, 0, 0, 1, 1, 1]),
    ]
    assert token_ids.shape == segment_ids.shape == (4, 12)  # padded to 2 * maxlen
    for row, (ids, segments) in enumerate(rows):
        np.testing.assert_array_equal(token_ids[row], ids + [0] * (12 - len(ids)))
        np.testing.assert_array_equal(segment_ids[row], segments + [0] * (12 - len(ids)))
    ids, segments = simbert.pair_row(tokenizer, "你好吗在哪", "哪在", maxlen=4)  # 2 tokens each
    assert ids == [cls, 5, 6, sep, 9, 8, sep] and segments == [0, 0, 0, 0, 1, 1, 1]


def test_random_pairs_come_from_one_group_and_batches_split_on_batch_size():
    tokenizer = tokenizer_for("甲乙丙丁戊己")
    groups = [["甲", "乙", "丙"], ["丁", "戊", "己"]] * 3
    batches = list(simbert.Batches(groups, tokenizer, maxlen=4, batch_size=4).__iter__(True))
    assert [len(t) for t, _ in batches] == [4, 4, 4]
    group_of = {5: 0, 6: 0, 7: 0, 8: 1, 9: 1, 10: 1}
    for token_ids, _ in batches:
        a, b = token_ids[:, 1], token_ids[:, 3]  # one-token sentences: [CLS] a [SEP] b [SEP]
        assert all(group_of[x] == group_of[y] and x != y for x, y in zip(a, b))
        np.testing.assert_array_equal(a[0::2], b[1::2])  # row 2i+1 swaps row 2i
        np.testing.assert_array_equal(b[0::2], a[1::2])


def test_source_noise_touches_only_source_tokens():
    tokenizer = tokenizer_for("一二三四五六七八九十")
    ids, segments = simbert.pair_row(tokenizer, "一二三四五六七八", "九十", maxlen=10)
    np.random.seed(0)
    noisy = [simbert.add_noise(ids, segments, tokenizer, rate=1.0) for _ in range(200)]
    source = slice(1, segments.index(1) - 1)
    for row in noisy:
        assert row[0] == 2 and row[segments.index(1) - 1 :] == ids[segments.index(1) - 1 :]
    changed = np.array([r[source] for r in noisy]) != np.array(ids[source])
    masked = np.array([r[source] for r in noisy]) == 4
    assert 0.75 < masked.mean() < 0.85 and 0.85 < changed.mean() < 0.95  # 80% + 10% random


def test_groups_load_and_bad_records_raise(tmp_path):
    groups = simbert.load_groups(simbert.SAMPLE)
    assert len(groups) >= 20 and all(2 <= len(g) <= 4 for g in groups)
    path = tmp_path / "groups.json"
    path.write_text('{"text": "a", "synonyms": ["b"]}\n{"text": "c", "synonyms": "d"}\n', "utf-8")
    with pytest.raises(ValueError, match="record 2: 'synonyms' must be a list"):
        simbert.load_groups(str(path))
    path.write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"groups.json:1: missing field"):
        simbert.load_groups(str(path))


def test_demo_groups_hold_out_unseen_combinations():
    import random

    train, valid = simbert.generate_groups(random.Random(0))
    assert len(train) == 140 and len(valid) == 60 and all(len(g) == 4 for g in train + valid)
    assert not {s for g in train for s in g} & {s for g in valid for s in g}


@pytest.mark.parametrize(
    "extra, message",
    [(["--model", "albert"], "--model must be one of"), (["--batch-size", "7"], "must be even")],
)
def test_bad_arguments_exit_with_a_message(monkeypatch, capsys, tmp_path, extra, message):
    argv = ["simbert", "--train", simbert.SAMPLE, "--valid", simbert.SAMPLE, *extra]
    monkeypatch.setattr(sys, "argv", argv + ["--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        simbert.main()
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_writes_ranked_similar_sentences(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "task_sentence_similarity_simbert.py"),
         "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline (untrained model): retrieval top-1" in result.stdout
    assert "epoch 1: gen loss" in result.stdout
    assert (tmp_path / "best_model.weights.h5").exists()
    lines = (tmp_path / "similar_sentences.json").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    texts = [g[0] for g in simbert.load_groups(simbert.SAMPLE)[:3]]
    assert [r["text"] for r in records] == texts
    for record in records:
        cosines = [s["cosine"] for s in record["similar"]]
        assert 1 <= len(cosines) <= simbert.KEEP and cosines == sorted(cosines, reverse=True)
        assert all(-1 <= c <= 1 for c in cosines) and all(s["text"] for s in record["similar"])
