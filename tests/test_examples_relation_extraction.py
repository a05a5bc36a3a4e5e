"""examples/task_relation_extraction.py: span decoding, F1, labels, data errors, --smoke."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import task_relation_extraction as re_task  # noqa: E402
from task_common import read_json_lines, read_json_list  # noqa: E402

from bert4x.tokenizers import Tokenizer  # noqa: E402


def test_subjects_pair_each_start_with_the_nearest_end():
    probas = np.zeros((8, 2))
    probas[[1, 4], 0] = 0.9  # starts
    probas[[2, 3, 6], 1] = 0.8  # ends
    probas[5, 0] = 0.55  # below the start threshold 0.6
    probas[7, 0] = 0.9  # a start with no end after it
    assert re_task.decode_subjects(probas) == [(1, 2), (4, 6)]


def test_objects_need_the_same_predicate_and_an_end_at_or_after_the_start():
    probas = np.zeros((6, 3, 2))
    probas[1, 2, 0] = 0.7
    probas[2, 0, 1] = 0.9  # other predicate: ignored
    probas[3, 2, 1] = 0.51
    probas[4, 1, 0] = probas[4, 1, 1] = 0.99  # one-token object
    probas[0, 1, 1] = 0.9  # end before the start: ignored
    assert re_task.decode_objects(probas) == [(1, 3, 2), (4, 4, 1)]


def test_micro_f1_by_hand():
    assert re_task.micro_f1([{"a", "b"}], [{"b", "c"}]) == (0.5, 0.5, 0.5)
    f1, precision, recall = re_task.micro_f1([{"a"}, set()], [{"a"}, {"b", "c"}])
    assert (precision, recall) == (1.0, 1 / 3) and f1 == pytest.approx(0.5)
    assert re_task.micro_f1([set()], [set()]) == (0.0, 0.0, 0.0)


def test_search_finds_the_first_occurrence():
    assert re_task.search([2, 3], [1, 2, 3, 2, 3]) == 1
    assert re_task.search([4], [1, 2]) == -1


def test_labels_are_one_exactly_at_the_searched_spans():
    text = "李白出生于碎叶城"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(dict.fromkeys(text))
    tokenizer = Tokenizer({t: i for i, t in enumerate(vocab)})
    record = dict(text=text, spo_list=[dict(subject="李白", predicate="出生地", object="碎叶城")])
    batches = re_task.Batches([record], tokenizer, {"国籍": 0, "出生地": 1}, 32, batch_size=1)
    token_ids, _, subject_ids, subject_labels, object_labels = batches.example(record)
    assert subject_ids == [1, 2]
    assert np.argwhere(subject_labels).tolist() == [[1, 0], [2, 1]]
    assert np.argwhere(object_labels).tolist() == [[6, 1, 0], [8, 1, 1]]
    (arrays,) = next(iter(batches))
    assert [a.shape for a in arrays] == [(1, 32), (1, 32), (1, 2), (1, 32, 2), (1, 32, 2, 2)]


def test_demo_data_triples_occur_in_their_text():
    import random

    for record in re_task.generate_demo_data(50, random.Random(0)):
        for spo in record["spo_list"]:
            assert spo["subject"] in record["text"] and spo["object"] in record["text"]


def test_bad_data_names_file_and_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"text": "a", "spo_list": []}\n{"text": "b"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.json:2: malformed JSON"):
        read_json_lines(str(path), ("text", "spo_list"))
    path.write_text('{"text": "a", "spo_list": []}\n\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.json:3: missing field\(s\) \['spo_list'\]"):
        read_json_lines(str(path), ("text", "spo_list"))
    with pytest.raises(ValueError, match="not found"):
        read_json_lines(str(tmp_path / "absent.json"))
    path.write_text('[\n {"id": 1},\n {"question": 2}\n]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.json:3: missing field\(s\) \['id'\]"):
        read_json_list(str(path), ("id",))


def test_bundled_sample_is_valid():
    schema = os.path.join(ROOT, "examples", "datasets", "duie_schemas.json")
    predicates = {r["predicate"]: i for i, r in enumerate(read_json_lines(schema, ("predicate",)))}
    data = re_task.load_data(re_task.SAMPLE, predicates)
    assert len(data) >= 20
    assert all(
        s["subject"] in d["text"] and s["object"] in d["text"] for d in data for s in d["spo_list"]
    )


@pytest.mark.slow
def test_smoke_run_prints_f1_and_writes_files(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "task_relation_extraction.py"), "--smoke",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1: f1: " in result.stdout
    for name in ("best_model.weights.h5", "dev_pred.json", "vocab.txt", "bert_model.ckpt.index"):
        assert (tmp_path / name).exists(), name
    first = json.loads((tmp_path / "dev_pred.json").read_text(encoding="utf-8").splitlines()[0])
    assert {"text", "spo_list", "spo_list_pred", "new", "lack"} <= set(first)
