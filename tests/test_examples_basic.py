"""examples/basic_*.py: their --smoke runs print what they promise; the rank helper vs scipy."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import basic_whitening  # noqa: E402


def run_smoke(script, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", script), "--smoke",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40), rng.normal(size=40)
    assert basic_whitening.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])


def test_bundled_sts_sample_is_valid():
    a, b, scores = basic_whitening.load_pairs(basic_whitening.SAMPLE)
    assert len(a) == len(b) == len(scores) >= 40
    assert scores.min() >= 0 and scores.max() <= 5 and len(set(scores)) == 6


@pytest.mark.slow
def test_whitening_smoke_prints_spearman_before_and_after(tmp_path):
    stdout = run_smoke("basic_whitening.py", tmp_path)
    values = re.findall(r"^spearman \((no whitening|whitening, k=\d+)\): (-?[0-9.]+)$", stdout,
                        flags=re.MULTILINE)  # fmt: skip
    assert [v[0] for v in values][0] == "no whitening" and len(values) == 3, stdout
    assert all(-1 <= float(v[1]) <= 1 for v in values)


@pytest.mark.slow
def test_integrated_gradients_smoke_prints_complete_token_attributions(tmp_path):
    stdout = run_smoke("basic_integrated_gradients.py", tmp_path)
    match = re.search(r"sum IG = (-?[0-9.]+), F\(x\) - F\(x'\) = (-?[0-9.]+)", stdout)
    assert match, stdout
    total, difference = float(match.group(1)), float(match.group(2))
    assert abs(total - difference) <= 0.01 * abs(difference) + 1e-6
    rows = re.findall(r"^(\S+)\t([+-][0-9.]+)\t", stdout, flags=re.MULTILINE)
    assert rows[0][0] == "[CLS]" and rows[-1][0] == "[SEP]"
    assert sum(float(r[1]) for r in rows) == pytest.approx(total, abs=1e-4)


@pytest.mark.slow
def test_masked_language_model_smoke_prints_top_k(tmp_path):
    stdout = run_smoke("basic_masked_language_model.py", tmp_path)
    assert len(re.findall(r"^\[MASK\] at \d+: ", stdout, flags=re.MULTILINE)) == 2
    assert "filled: " in stdout


@pytest.mark.slow
def test_extract_features_smoke_prints_shape(tmp_path):
    stdout = run_smoke("basic_extract_features.py", tmp_path)
    assert "features shape: (1, 6, 32)" in stdout
