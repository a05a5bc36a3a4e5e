"""examples/task_reading_comprehension_by_mlm.py and its shared pieces: n-grams, voting, metric."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import reading_comprehension_common as rc  # noqa: E402
import task_reading_comprehension_by_mlm as mlm_task  # noqa: E402


def test_next_tokens_extend_the_prefix_to_a_passage_ngram():
    passage = [5, 6, 7, 5, 6, 8]
    assert rc.next_tokens([], passage) == {5, 6, 7, 8}
    assert rc.next_tokens([5, 6], passage) == {7, 8}
    assert rc.next_tokens([6, 8], passage) == set()
    assert rc.next_tokens([9], passage) == set()


def test_vote_prefers_agreeing_passages():
    # [0.9, 0.9] -> 1.62 / 2.8 = 0.579 beats [0.95] -> 0.9025 / 1.95 = 0.463
    assert rc.vote([("a", 0.9), ("b", 0.95), ("a", 0.9), ("", 0.99)]) == "a"
    assert rc.vote([("b", 0.95), ("a", 0.3)]) == "b"
    assert rc.vote([("", 0.9)]) == ""


def test_metric_by_hand():
    assert rc.normalize("Ｂｅｉｊｉｎｇ，北京！ ") == "beijing北京"
    assert rc.char_f1("北京市", "北京") == pytest.approx(0.8)
    golds = {"q1": ["北京"], "q2": ["曹雪芹"], "q3": ["100摄氏度"]}
    predictions = {"q1": "北京。", "q2": "曹雪", "q3": ""}
    accuracy, f1, final = rc.score_answers(predictions, golds)
    assert accuracy == pytest.approx(1 / 3)
    assert f1 == pytest.approx((1 + 0.8) / 3)
    assert final == pytest.approx((accuracy + f1) / 2)


def test_gold_answers_and_training_target():
    record = dict(
        passages=[dict(passage="x", answer="周树人 周樟寿"), dict(passage="y", answer="")]
    )
    assert rc.gold_answers(record) == sorted(["周树人", "周樟寿"])
    assert rc.training_answer("鲁迅原名周樟寿", "周树人 周樟寿", 10) == "周樟寿"
    assert rc.training_answer("鲁迅原名周樟寿", "周樟寿", 4) == ""
    assert rc.clean_passage("a b、c；d，e") == "a,b,c,d,e"


def test_mlm_decode_is_greedy_within_passage_ngrams():
    end = 3
    passage = [10, 11, 12, 10, 13]
    probas = np.full((4, 20), 0.01)
    probas[0, 19] = 0.9  # not in the passage: never chosen
    probas[0, 10] = 0.5
    probas[1, 12] = 0.8  # 10 -> 12 is no bigram of the passage
    probas[1, 13] = 0.4
    probas[2, end] = 0.7
    ids, score = mlm_task.mlm_decode(probas, passage, end)
    assert ids == [10, 13] and score == pytest.approx(0.45)


def test_mlm_decode_always_yields_a_passage_substring():
    rng = np.random.default_rng(0)
    for _ in range(50):
        passage = list(rng.integers(5, 12, size=rng.integers(1, 12)))
        ids, _ = mlm_task.mlm_decode(rng.random((6, 12)), passage, 3)
        text, seq = ",".join(map(str, ids)), "," + ",".join(map(str, passage)) + ","
        assert not ids or f",{text}," in seq


def test_bundled_sample_and_demo_data_are_consistent():
    for record in rc.load_data(rc.SAMPLE) + rc.generate_demo_data(50, random.Random(0)):
        for item in record["passages"]:
            assert all(a in item["passage"] for a in item["answer"].split(" ") if a)


def test_malformed_passages_are_reported(tmp_path):
    path = tmp_path / "qa.json"
    path.write_text('[{"id": "q", "question": "?", "passages": [{"passage": "p"}]}]', "utf-8")
    with pytest.raises(ValueError, match=r"qa.json: record id='q'"):
        rc.load_data(str(path))


@pytest.mark.slow
def test_mlm_smoke_run_prints_the_metric_and_writes_files(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "task_reading_comprehension_by_mlm.py"),
         "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1: Accuracy: " in result.stdout and "Final: " in result.stdout
    for name in ("best_model.weights.h5", "valid_pred.json", "vocab.txt", "bert_model.ckpt.index"):
        assert (tmp_path / name).exists(), name
