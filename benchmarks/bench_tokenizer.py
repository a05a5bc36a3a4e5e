"""Batch-encode throughput of bert4x.tokenizers.Tokenizer against a pure-Python BERT tokenizer.

The reference is a straightforward Python BasicTokenizer + WordPiece written here: one pass
per step of the published algorithm (google-research/bert `tokenization.py`), as the
pure-Python bert4keras tokenizer ran it. Both encode the same texts with the same
vocabulary; the ids are checked to be identical. Rows: single corpus lines (sentences)
and `--passage` lines joined (passages), each through the reference, `encode` one text a
call and `encode_batch`. The speed-up is wall time; the CPU-time ratio counts the CPU
seconds of all threads, so it ignores parallelism and varies less on a shared host.

    python benchmarks/bench_tokenizer.py                  # tests/data/corpus.txt, built vocab
    python benchmarks/bench_tokenizer.py --vocab vocab.txt --corpus my.txt --lines 50000
"""

import argparse
import gc
import os
import time
import unicodedata
from collections import Counter
from pathlib import Path

from bert4x.tokenizers import Tokenizer, load_vocab

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus.txt"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_cjk(code):
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B820 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def is_punctuation(ch):
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class PythonBertTokenizer:
    """Straightforward BasicTokenizer + WordPiece: the published steps, one pass each."""

    def __init__(self, vocab, lower):
        self.vocab, self.lower = vocab, lower

    def clean(self, text):
        out = []
        for ch in text:
            if ord(ch) in (0, 0xFFFD) or is_control(ch):
                continue
            out.append(" " if is_whitespace(ch) else ch)
        return "".join(out)

    def space_cjk(self, text):
        return "".join(f" {ch} " if is_cjk(ord(ch)) else ch for ch in text)

    def strip_accents(self, word):
        word = unicodedata.normalize("NFD", word)
        return "".join(ch for ch in word if unicodedata.category(ch) != "Mn")

    def split_punctuation(self, word):
        parts, new_part = [], True
        for ch in word:
            if is_punctuation(ch):
                parts.append([ch])
                new_part = True
            else:
                if new_part:
                    parts.append([])
                    new_part = False
                parts[-1].append(ch)
        return ["".join(part) for part in parts]

    def words(self, text):
        split = []
        for word in self.space_cjk(self.clean(text)).split():
            if self.lower:
                word = self.strip_accents(word.lower())
            split.extend(self.split_punctuation(word))
        return " ".join(split).split()

    def wordpiece(self, word):
        chars = list(word)
        if len(chars) > 100:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(chars):
            end, piece = len(chars), None
            while start < end:
                candidate = ("##" if start > 0 else "") + "".join(chars[start:end])
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def encode(self, text):
        pieces = [p for w in self.words(text) for p in self.wordpiece(w)]
        return [self.vocab[t] for t in ["[CLS]", *pieces, "[SEP]"]]


def build_vocab(lines, lower):
    """Specials, every character (and its '##' form), words seen twice, 4-char prefixes."""
    reference = PythonBertTokenizer({}, lower)
    words = Counter(w for line in lines for w in reference.words(line))
    chars = sorted({c for w in words for c in w})
    tokens = SPECIALS + chars + ["##" + c for c in chars]
    tokens += sorted(w for w, n in words.items() if n >= 2 and len(w) > 1)
    tokens += sorted({p for w in words if len(w) >= 6 for p in (w[:4], "##" + w[4:])})
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def timed(function, repeats):
    """(wall seconds, CPU seconds of all threads) of the fastest of `repeats` runs; result."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        gc.collect()
        gc.disable()  # as timeit does: collections of earlier results would be timed too
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
        gc.enable()
    return best, result


def measure(texts, reference, tokenizer):
    """Rows (method, wall s, CPU s) on `texts`, after checking that all ids agree."""
    ref_time, expected = timed(lambda: [reference.encode(t) for t in texts], 1)
    loop_time, looped = timed(lambda: [tokenizer.encode(t)[0] for t in texts], 3)
    batch_time, (batched, _) = timed(lambda: tokenizer.encode_batch(texts), 3)
    if looped != expected or batched != expected:
        raise SystemExit("bert4x and the reference disagree on some ids")
    tokens = sum(len(ids) for ids in expected)
    rows = [
        ("pure-Python BasicTokenizer+WordPiece", *ref_time),
        ("Tokenizer.encode, one text a call", *loop_time),
        ("Tokenizer.encode_batch", *batch_time),
    ]
    return tokens, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(CORPUS), help="one text per line")
    parser.add_argument("--vocab", help="a BERT vocab.txt (default: built from the corpus)")
    parser.add_argument("--lines", type=int, default=16000, help="corpus lines per run (cycled)")
    parser.add_argument("--passage", type=int, default=8, help="lines joined into a passage")
    parser.add_argument("--uncased", action="store_true", help="do_lower_case=True")
    args = parser.parse_args()

    corpus = Path(args.corpus).read_text(encoding="utf-8").split("\n")
    corpus = [line for line in corpus if line.strip()]
    lines = [corpus[i % len(corpus)] for i in range(args.lines)]
    passages = [" ".join(lines[i : i + args.passage]) for i in range(0, len(lines), args.passage)]
    vocab = load_vocab(args.vocab) if args.vocab else build_vocab(corpus, args.uncased)
    reference = PythonBertTokenizer(vocab, args.uncased)
    tokenizer = Tokenizer(vocab, do_lower_case=args.uncased)
    tokenizer.encode_batch(lines[:100])  # warm up

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    case = "uncased" if args.uncased else "cased"
    print(f"vocab {len(vocab)} ({case}), {cores} cores, ids identical to the reference")
    print(
        f"| {'texts':<20} | {'method':<36} | {'texts/s':>8} | {'tokens/s':>9} "
        f"| {'speed-up':>8} | {'CPU-time ratio':>14} |"
    )
    print(f"|{'-' * 22}|{'-' * 38}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 16}|")
    for texts in (lines, passages):
        tokens, rows = measure(texts, reference, tokenizer)
        label = f"{len(texts)} x {tokens // len(texts)} tokens"
        for name, wall, cpu in rows:
            print(
                f"| {label:<20} | {name:<36} | {len(texts) / wall:>8,.0f} "
                f"| {tokens / wall:>9,.0f} | {rows[0][1] / wall:>7.1f}x "
                f"| {rows[0][2] / cpu:>13.1f}x |"
            )
            label = ""
    print("speed-up: wall-clock ratio to the reference. CPU-time ratio: the same with CPU")
    print("seconds of all threads (no credit for parallelism; steadier on a busy host).")


if __name__ == "__main__":
    main()
