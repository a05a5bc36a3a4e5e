"""A GPT-style Chinese-chess player: a causal LM over ICCS move strings (kexue.fm/archives/7877).

    python examples/task_language_model_chinese_chess.py --smoke --output-dir /tmp/chess
    python examples/task_language_model_chinese_chess.py --demo --output-dir /tmp/chess_demo
    python examples/task_language_model_chinese_chess.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --train qipu.json --valid qipu_dev.json
    python examples/task_language_model_chinese_chess.py --play --output-dir /tmp/chess_demo

A game is the string of its moves, 4 characters each ('h2e2' = 炮二平五), fed as
[start id 0] + one token per character to BERT with application='lm'. Evaluation:
the rate of greedy 4-token predictions that are legal moves on held-out positions.
Playing scores every legal move (from the `cchess` package, `pip install cchess`)
by the sum of the log-probabilities of its 4 characters and plays the best one.
"""

import os
import random

import keras
import numpy as np
from task_common import (
    DATASETS,
    DEMO_CONFIG,
    TINY_CONFIG,
    NextTokenLoss,
    check_model_arguments,
    common_parser,
    random_model_files,
    read_json_lines,
    write_json_lines,
)

from bert4x.models import build_transformer_model
from bert4x.optimizers import Adam
from bert4x.snippets import DataGenerator, sequence_padding
from bert4x.tokenizers import load_vocab

MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE = 512, 16, 10, 1e-5
CHARS = "0123456789abcdefghi"  # token i + 1 is CHARS[i]; 0 is [PAD] and the start token
SAMPLE = os.path.join(DATASETS, "cchess_sample.json")
EVAL_POSITIONS = 300  # held-out positions scored per epoch
DEMO_SIZES = dict(games=400, plies=40, epochs=10, batch_size=32, learning_rate=1e-3, maxlen=161)


def encode(iccs):
    """'h2e2h9g7' -> [0, ids...]: 4n + 1 ids, all < 20."""
    return [0] + [CHARS.index(c) + 1 for c in iccs]


def board_after(moves):
    """The cchess board after the ICCS moves `moves` from the initial position."""
    import cchess

    board = cchess.ChessBoard(cchess.FULL_INIT_FEN)
    for move in moves:
        if board.move_iccs(move) is None:
            raise ValueError(f"illegal move {move!r} after {moves}")
        board.next_turn()
    return board


def legal_moves(moves, board=None):
    """Legal ICCS moves after `moves` from the initial position (or on `board`), via cchess."""
    import cchess

    board = board or board_after(moves)
    return sorted(
        cchess.pos2iccs(a, b)
        for a, b in board.create_moves()
        if board.is_valid_move(a, b) and not board.is_checked_move(a, b)
    )


def random_game(rng, plies):
    board, moves = board_after([]), []
    for _ in range(plies):
        candidates = legal_moves(None, board)
        if not candidates:
            break
        moves.append(rng.choice(candidates))
        board.move_iccs(moves[-1])
        board.next_turn()
    return "".join(moves)


def load_games(path):
    """Games from the initial position (fen == ''), validated character by character."""
    games = []
    for number, record in enumerate(read_json_lines(path, ("iccs", "fen")), 1):
        iccs = record["iccs"]
        if len(iccs) % 4 or set(iccs) - set(CHARS):
            raise ValueError(f"{path}: record {number}: 'iccs' must be 4-character moves "
                             f"like 'h2e2h9g7', got {iccs[:40]!r}")  # fmt: skip
        if not record["fen"]:
            games.append(iccs)
    return games


def score_moves(predict, history, moves):
    """Sum of log p of each move's 4 characters given `history`; predict: ids -> probas."""
    ids = np.array([encode(history + move) for move in moves])  # [m, 4n + 5]
    probas = predict(ids)  # [m, 4n + 5, 20]
    steps = np.arange(ids.shape[1] - 5, ids.shape[1] - 1)  # outputs that predict the move
    chosen = probas[:, steps][np.arange(len(moves))[:, None], np.arange(4), ids[:, steps + 1]]
    return np.log(chosen + 1e-12).sum(axis=1)


def best_move(predict, history, moves):
    """The highest-scoring of the given (legal) moves."""
    return moves[int(np.argmax(score_moves(predict, history, moves)))]


def greedy_moves(predict, histories, length):
    """Greedy 4-token continuation of each history, all padded to `length` (one XLA shape)."""
    ids = sequence_padding([encode(h) for h in histories], length=length)
    ends = np.array([len(h) + 1 for h in histories])  # current lengths in tokens
    for step in range(4):
        probas = predict(ids)
        next_ids = probas[np.arange(len(ids)), ends + step - 1].argmax(-1)
        ids[np.arange(len(ids)), ends + step] = next_ids
    return ["".join(CHARS[max(i - 1, 0)] for i in row[e : e + 4]) for row, e in zip(ids, ends)]


def legal_rate(moves, positions):
    """Fraction of predicted moves that are legal at their position ([(history, legal set)])."""
    return float(np.mean([m in legal for m, (_, legal) in zip(moves, positions)]))


def held_out_positions(games, count, rng, maxlen):
    positions = []
    for _ in range(count):
        game = rng.choice(games)
        plies = rng.randint(0, min(len(game), maxlen - 5) // 4)
        history = game[: 4 * plies]
        moves = [history[i : i + 4] for i in range(0, len(history), 4)]
        positions.append((history, set(legal_moves(moves))))
    return [p for p in positions if p[1]]


class Batches(DataGenerator):
    def __init__(self, games, maxlen, **kwargs):
        super().__init__(games, **kwargs)
        self.maxlen = maxlen

    def __iter__(self, random=False):
        batch = []
        for is_end, game in self.sample(random):
            batch.append(encode(game)[: self.maxlen])  # truncation keeps the opening
            if len(batch) == self.batch_size or is_end:
                yield (sequence_padding(batch, length=self.maxlen),)
                batch = []


def build_model(args):
    vocab = load_vocab(args.vocab)
    missing = [c for c in ["[PAD]", *CHARS] if c not in vocab]
    if missing:
        raise ValueError(f"{args.vocab} lacks the tokens {missing}; a BERT vocab has them all")
    keep_tokens = [vocab[c] for c in ["[PAD]", *CHARS]]
    lm = build_transformer_model(args.config, args.checkpoint, model=args.model, application="lm",
                                 keep_tokens=keep_tokens, segment_vocab_size=0)  # fmt: skip
    train_model = keras.Model(lm.inputs, NextTokenLoss()(lm.inputs[0], lm.output))
    train_model.compile(optimizer=Adam(learning_rate=args.learning_rate), jit_compile=True)
    lm.compile(jit_compile=True)
    return train_model, lm


class Evaluator(keras.callbacks.Callback):
    """Legal-move rate of greedy predictions; the best weights go to best_model.weights.h5."""

    def __init__(self, lm, positions, maxlen, output_dir):
        super().__init__()
        self.lm, self.positions, self.maxlen, self.output_dir = lm, positions, maxlen, output_dir
        self.best = -1.0

    def evaluate(self):
        predict = lambda ids: self.lm.predict(ids, batch_size=64, verbose=0)  # noqa: E731
        moves = greedy_moves(predict, [h for h, _ in self.positions], self.maxlen)
        write_json_lines(os.path.join(self.output_dir, "valid_pred.json"), [
            dict(history=h, predicted=m, legal=m in ok) for m, (h, ok) in zip(moves, self.positions)
        ])  # fmt: skip
        return legal_rate(moves, self.positions)

    def on_epoch_end(self, epoch, logs=None):
        rate = self.evaluate()
        if rate >= self.best:
            self.best = rate
            self.lm.save_weights(os.path.join(self.output_dir, "best_model.weights.h5"))
        print(f"\nepoch {epoch + 1}: legal-move rate: {rate:.5f}, best: {self.best:.5f}")


def baselines(positions, train_games, rng):
    """Uniformly random ICCS strings, and moves drawn from the training games' move frequencies."""
    uniform = ["".join(rng.choice(s) for s in ("abcdefghi", CHARS[:10]) * 2) for _ in positions]
    moves = [g[i : i + 4] for g in train_games for i in range(0, len(g), 4)]
    return legal_rate(uniform, positions), legal_rate(
        rng.choices(moves, k=len(positions)), positions
    )


def play(lm):
    """Human is red (types ICCS moves like h2e2), the model answers as black."""
    predict = lambda ids: lm.predict(ids, verbose=0)  # noqa: E731
    history = ""
    while True:
        moves = [history[i : i + 4] for i in range(0, len(history), 4)]
        legal = legal_moves(moves)
        if not legal:
            print("no legal moves: game over")
            return
        move = input("your move (ICCS, q quits): ").strip()
        if move == "q":
            return
        if move not in legal:
            print(f"illegal; legal moves: {' '.join(legal)}")
            continue
        history += move
        answers = legal_moves(moves + [move])
        if not answers:
            print("checkmate or stalemate: you win")
            return
        history += best_move(predict, history, answers)
        print(f"model plays {history[-4:]}")


def main():
    parser = common_parser(__doc__.split("\n")[0], MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE)
    parser.add_argument("--play", action="store_true", help="play against best_model.weights.h5")
    args = parser.parse_args()
    if not args.play:
        check_model_arguments(parser, args)
    random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    rng = random.Random(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.demo:
        for key in ("epochs", "batch_size", "learning_rate", "maxlen"):
            setattr(args, key, DEMO_SIZES[key])
        games = [random_game(rng, DEMO_SIZES["plies"]) for _ in range(DEMO_SIZES["games"])]
        train, valid = games[: -DEMO_SIZES["games"] // 10], games[-DEMO_SIZES["games"] // 10 :]
        write_json_lines(os.path.join(args.output_dir, "demo_games.json"),
                         [dict(iccs=g, fen="", items={}) for g in games])  # fmt: skip
    elif not args.play:
        train, valid = load_games(args.train or SAMPLE), load_games(args.valid or SAMPLE)
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size, args.maxlen = 1, 3, 4, 81
    if args.play:
        paths = [os.path.join(args.output_dir, n) for n in ("bert_config.json", "vocab.txt")]
        args.config, args.vocab = args.config or paths[0], args.vocab or paths[1]
    elif not args.checkpoint:
        config = TINY_CONFIG if args.smoke else DEMO_CONFIG
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, [CHARS], config, args.model)  # fmt: skip
    train_model, lm = build_model(args)
    if args.play:
        lm.load_weights(os.path.join(args.output_dir, "best_model.weights.h5"))
        return play(lm)
    positions = held_out_positions(valid, 20 if args.smoke else EVAL_POSITIONS, rng, args.maxlen)
    uniform, frequency = baselines(positions, train, rng)
    print(f"baselines: random ICCS string: {uniform:.5f}, training-move frequency: {frequency:.5f}")
    batches = Batches(train, args.maxlen, batch_size=args.batch_size)
    train_model.fit(
        batches.forfit(),
        steps_per_epoch=args.steps_per_epoch or len(batches),
        epochs=args.epochs,
        callbacks=[Evaluator(lm, positions, args.maxlen, args.output_dir)],
    )


if __name__ == "__main__":
    main()
