"""The README's demo command runs from a clean directory and prints what it promises."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_writes_a_checkpoint_and_prints_similarity_and_predictions(tmp_path):
    output_dir = str(tmp_path / "demo")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "quickstart.py"),
            "--output-dir",
            output_dir,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote a random bert checkpoint" in result.stdout
    match = re.search(r"cosine\(.*\) = (-?[0-9.]+)", result.stdout)
    assert match and -1.0 <= float(match.group(1)) <= 1.0
    predictions = re.findall(r"^  (\S+)\t([0-9.]+)$", result.stdout, flags=re.MULTILINE)
    assert len(predictions) == 5
    probabilities = [float(p) for _, p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert os.path.exists(os.path.join(output_dir, "bert_model.ckpt.index"))
    assert os.path.exists(os.path.join(output_dir, "vocab.txt"))
