"""examples/task_language_model_chinese_chess.py: tokenisation, move scoring, legality, --smoke."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("cchess")  # the script's move generator: pip install cchess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import task_language_model_chinese_chess as chess  # noqa: E402


def test_an_n_move_game_is_4n_plus_1_ids_below_20():
    ids = chess.encode("h2e2h9g7")
    assert len(ids) == 9 and ids[0] == 0 and max(ids) < 20
    assert ids[1:5] == [1 + "0123456789abcdefghi".index(c) for c in "h2e2"]


def test_initial_position_has_44_legal_moves():
    moves = chess.legal_moves([])
    assert len(moves) == 44 and {"h2e2", "b0c2", "h2h9"} <= set(moves)  # h2h9: 炮打马
    assert "h2h8" not in moves  # a cannon cannot pass a piece without capturing
    assert "h9g7" in chess.legal_moves(["h2e2"])  # black's knight after 炮二平五
    with pytest.raises(ValueError, match="illegal move"):
        chess.board_after(["h2h8"])


def test_move_score_is_the_sum_of_four_log_probs():
    rng = np.random.default_rng(0)
    table = rng.random((20, 20)) + 0.1
    table /= table.sum(1, keepdims=True)

    def predict(ids):  # a bigram "model": p(next | current) = table[current]
        return table[ids]

    history, moves = "h2e2", ["h9g7", "b9c7"]
    scores = chess.score_moves(predict, history, moves)
    for move, score in zip(moves, scores):
        ids = chess.encode(history + move)
        expected = sum(np.log(table[ids[i - 1], ids[i]]) for i in range(5, 9))
        assert score == pytest.approx(expected)
    assert chess.best_move(predict, history, moves) == moves[int(np.argmax(scores))]


def test_greedy_moves_and_legal_rate():
    def predict(ids):  # always predicts 'h', '2', 'e', '2' in turn
        probas = np.zeros(ids.shape + (20,))
        for position in range(ids.shape[1]):
            probas[:, position, 1 + "0123456789abcdefghi".index("h2e2"[position % 4])] = 1
        return probas

    moves = chess.greedy_moves(predict, ["", "h2e2"], 16)
    assert moves == ["h2e2", "h2e2"]
    positions = [("", set(chess.legal_moves([]))), ("h2e2", set(chess.legal_moves(["h2e2"])))]
    assert chess.legal_rate(moves, positions) == 0.5


def test_random_games_are_legal_and_bad_records_are_reported(tmp_path):
    game = chess.random_game(random.Random(0), 12)
    chess.board_after([game[i : i + 4] for i in range(0, len(game), 4)])
    path = tmp_path / "games.json"
    path.write_text('{"iccs": "h2e2", "fen": ""}\n{"iccs": "h2e", "fen": ""}\n', "utf-8")
    with pytest.raises(ValueError, match="record 2: 'iccs' must be 4-character moves"):
        chess.load_games(str(path))
    assert len(chess.load_games(chess.SAMPLE)) == 30  # the one FEN record is skipped


@pytest.mark.slow
def test_smoke_run_prints_the_legal_rate_and_writes_files(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "task_language_model_chinese_chess.py"),
         "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baselines: random ICCS string: " in result.stdout
    assert "epoch 1: legal-move rate: " in result.stdout
    for name in ("best_model.weights.h5", "valid_pred.json", "vocab.txt", "bert_model.ckpt.index"):
        assert (tmp_path / name).exists(), name
