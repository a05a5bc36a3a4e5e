"""examples/task_reading_comprehension_by_seq2seq.py: joint-beam merge, no-answer drop, loss."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import task_reading_comprehension_by_seq2seq as s2s  # noqa: E402

END = 3


def test_merge_is_the_per_token_vote():
    # passage 1 and 2 agree on token 1 (0.6, 0.6), passage 3 is sure of token 2 (0.9)
    probas = np.array([[[0.1, 0.6, 0.3]], [[0.2, 0.6, 0.2]], [[0.1, 0.0, 0.9]]])
    merged = s2s.merge_passages(probas)
    assert merged.shape == (1, 3)
    expected = [(0.01 + 0.04 + 0.01) / 1.4, 0.72 / 2.2, (0.09 + 0.04 + 0.81) / 2.4]
    np.testing.assert_allclose(merged[0], expected)
    assert merged[0].argmax() == 2  # 0.392 > 0.327: one confident passage beats two at 0.6


def test_extractive_merge_zeroes_tokens_outside_passage_ngrams():
    passages = [[10, 11, 12], [11, 13]]
    assert s2s.allowed_tokens([], passages, END) == [END, 10, 11, 12, 13]
    assert s2s.allowed_tokens([11], passages, END) == [END, 12, 13]
    assert s2s.allowed_tokens([10, 12], passages, END) == [END]
    probas = np.full((2, 2, 15), 0.01)
    probas[:, 0, 14] = 0.8  # beam 0 ([11]): token 14 is in no passage
    probas[:, 0, 12] = 0.1
    probas[:, 1, 11] = 0.5  # beam 1 ([10, 12]): only [SEP] may follow
    probas[:, 1, END] = 0.2
    allowed = [s2s.allowed_tokens(p, passages, END) for p in ([11], [10, 12])]
    merged = s2s.merge_passages(probas, allowed)
    assert merged[0].argmax() == 12 and merged[0, 14] == 0 and merged[0, 11] == 0
    assert merged[0, 12] == pytest.approx(2 * 0.1**2 / (2 * 0.1 + 1))
    assert merged[1].argmax() == END and np.count_nonzero(merged[1]) == 1


def test_passages_whose_first_token_is_sep_are_dropped():
    first = np.array([[0.1, 0.2, 0.1, 0.6], [0.1, 0.7, 0.1, 0.1], [0.4, 0.1, 0.1, 0.4]])
    assert s2s.answering_passages(first, END) == [1, 2]  # ties: argmax is the first index
    assert s2s.answering_passages(first[:1], END) == []


class FakeModel:
    """Next-token probas fixed per passage (the token after [CLS]); records the rows it sees."""

    def __init__(self, table):
        self.table, self.batches = table, []

    def predict_on_batch(self, batch):
        token_ids, segment_ids, positions = batch
        self.batches.append(batch)
        uniform = np.full(len(next(iter(self.table.values()))), 0.1)
        return np.array([self.table.get(int(row[1]), uniform) for row in token_ids])


class FakeTokenizer:
    _token_start_id, _token_end_id = 2, END

    def decode(self, ids):
        return ",".join(str(int(i)) for i in ids if i != END)


def make_reader(table, max_a_len=4, mode="extractive"):
    encoder = s2s.Encoder.__new__(s2s.Encoder)
    encoder.tokenizer, encoder.end_id = FakeTokenizer(), END
    encoder.max_a_len, encoder.length = max_a_len, 16
    model = FakeModel(table)
    return s2s.Reader(model, encoder, rows=3, mode=mode), model


def test_joint_beam_search_drops_no_answer_passages_and_extracts():
    v = 16
    no_answer = np.full(v, 0.01)
    no_answer[END] = 0.9
    answer = np.full(v, 0.01)
    answer[9] = 0.5  # 9 is not in the passage: zeroed in extractive mode
    answer[10] = 0.3
    answer[END] = 0.05
    reader, model = make_reader({5: no_answer, 10: answer})
    sources = [[2, 5, 6, END, 7, END], [2, 10, END, 7, END]]  # [CLS] passage [SEP] q [SEP]
    ids = reader.beam_search(sources, topk=1)
    assert list(ids) == [10, END]  # 10 is followed by [SEP] only (passage [10])
    assert len(model.batches[0][0]) == 3  # rows padded to the fixed count
    # after step 0 only the answering passage is decoded; the answer is segment 1
    token_ids, segment_ids, positions = model.batches[1]
    assert token_ids[0, :6].tolist() == [2, 10, END, 7, END, 10]
    assert segment_ids[0, :7].tolist() == [0, 0, 0, 0, 0, 1, 0] and positions[0] == 5
    assert not token_ids[1:].any()  # padding rows
    generative, _ = make_reader({5: no_answer, 10: answer}, mode="generative")
    assert list(generative.beam_search(sources, topk=1))[0] == 9


def test_all_passages_without_answer_give_the_empty_answer():
    no_answer = np.full(8, 0.01)
    no_answer[END] = 0.9
    reader, model = make_reader({5: no_answer})
    assert list(reader.beam_search([[2, 5, END, 7, END]] * 2, topk=2)) == [END]
    assert len(model.batches) == 1


def test_unilm_loss_counts_segment_one_only():
    token_ids = np.array([[2, 5, 6, 3, 7, 3, 0]])
    segment_ids = np.array([[0, 0, 0, 0, 1, 1, 0]])
    probas = np.full((1, 7, 8), 1 / 8, dtype="float32")
    probas[0, 3] = np.where(np.arange(8) == 7, 0.25, 0.75 / 7)  # next token 7: p = 0.25
    probas[0, 4] = np.where(np.arange(8) == 3, 0.5, 0.5 / 7)  # next token [SEP]: p = 0.5
    expected = -(np.log(0.25) + np.log(0.5)) / 2
    loss = float(np.asarray(s2s.unilm_loss(token_ids, segment_ids, probas)))
    assert loss == pytest.approx(expected, rel=1e-5)
    probas[0, :3] = np.eye(8)[0]  # source positions do not count
    assert float(np.asarray(s2s.unilm_loss(token_ids, segment_ids, probas))) == pytest.approx(
        expected, rel=1e-5
    )


def test_training_sample_layout():
    from bert4x.tokenizers import Tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"北京是首都哪里"]
    encoder = s2s.Encoder(Tokenizer({t: i for i, t in enumerate(vocab)}), 4, 3, 3)
    ids, segments = encoder.sample("哪里", "北京是首都啊", "北京")
    assert ids == [2, 5, 6, 7, 8, 3, 10, 11, 3, 5, 6, 3]
    assert segments == [0] * 9 + [1] * 3
    ids, segments = encoder.sample("哪里", "北京", "")
    assert ids[-2:] == [3, 3] and segments[-1] == 1 and sum(segments) == 1
    assert len(encoder.sample("哪里", "北京是首都", "北京是首都")[0]) <= encoder.length


@pytest.mark.slow
def test_seq2seq_smoke_run_prints_the_metric_and_writes_files(tmp_path):
    result = subprocess.run(
        [sys.executable,
         os.path.join(ROOT, "examples", "task_reading_comprehension_by_seq2seq.py"),
         "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1: Accuracy: " in result.stdout and "Final: " in result.stdout
    for name in ("best_model.weights.h5", "valid_pred.json", "vocab.txt", "bert_model.ckpt.index"):
        assert (tmp_path / name).exists(), name
