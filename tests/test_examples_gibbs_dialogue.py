"""examples/basic_gibbs_sampling_via_mlm.py and basic_language_model_dialogue.py."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import basic_language_model_dialogue as dialogue  # noqa: E402

from bert4x.tokenizers import Tokenizer  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def tokenizer_for(text):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(dict.fromkeys(text))
    return Tokenizer({t: i for i, t in enumerate(vocab)})


def test_segments_alternate_per_turn_and_truncation_keeps_the_first_turns():
    turns = ["你好", "早上好啊", "吃了吗", "吃过了"]
    tokenizer = tokenizer_for("".join(turns))
    token_ids, segment_ids = dialogue.build_sample(tokenizer, turns, maxlen=100)
    # [CLS] 你 好 [SEP] | 早 上 好 啊 [SEP] | 吃 了 吗 [SEP] | 吃 过 了 [SEP]
    assert segment_ids == [0] + [0] * 3 + [1] * 5 + [0] * 4 + [1] * 4
    assert [i for i, t in enumerate(token_ids) if t == 3] == [3, 8, 12, 16]
    assert tokenizer.decode(token_ids) == "".join(turns)
    for maxlen, kept in [(16, 3), (13, 3), (12, 2), (9, 2), (8, 1)]:
        ids, segments = dialogue.build_sample(tokenizer, turns, maxlen)
        assert len(ids) == len(segments) <= maxlen
        assert ids == token_ids[: len(ids)] and ids.count(3) == kept, (maxlen, kept)
    ids, segments = dialogue.build_sample(tokenizer, ["早上好啊"] + turns, maxlen=4)
    assert ids == [2, 7, 8, 3] and segments == [0, 0, 0, 0]  # an over-long first turn is cut


def test_bundled_dialogues_load_and_bad_lines_name_file_and_line(tmp_path):
    dialogues = dialogue.load_dialogues(dialogue.SAMPLE)
    assert len(dialogues) >= 40 and all(len(d) >= 2 for d in dialogues)
    path = tmp_path / "train.json"
    path.write_text('["a", "b"]\n["a"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.json:2: expected a list of >= 2"):
        dialogue.load_dialogues(str(path))
    path.write_text('["a", "b"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.json:1: malformed JSON"):
        dialogue.load_dialogues(str(path))


def run_script(name, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name), "--smoke", "--output-dir",
         str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_gibbs_smoke_run_prints_samples(tmp_path):
    stdout = run_script("basic_gibbs_sampling_via_mlm.py", tmp_path)
    assert "sample 3: " in stdout and "wrote 10 samples" in stdout
    assert len((tmp_path / "gibbs_samples.txt").read_text(encoding="utf-8").splitlines()) == 10


@pytest.mark.slow
def test_dialogue_smoke_run_trains_and_prints_a_reply(tmp_path):
    stdout = run_script("basic_language_model_dialogue.py", tmp_path)
    assert "epoch 1: 你好，最近怎么样？ -> reply: " in stdout
    assert (tmp_path / "latest_model.weights.h5").exists()
