"""Full vs Nystrom attention: forward+backward time and peak memory as the length grows.

    python benchmarks/bench_attention.py [--lengths 512 1024 ...] [--landmarks 64]

One train step (XLA, batch 1) of a small BERT encoder per length and attention
type, each in its own process so that its peak RSS is its own. Prints the
table with full/Nystrom ratios and the exponent k of a fit time ~ n^k.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CONFIG = dict(
    vocab_size=1000,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=256,
    hidden_act="gelu",
    max_position_embeddings=128,
    type_vocab_size=0,
)
REPEATS = 3
MEMORY_LIMIT_GB = 14  # skip full attention where its score matrices alone would pass this


def measure(attention_type, length, landmarks):
    """(milliseconds per train step, peak RSS growth over the built model, in MB)."""
    import keras
    import numpy as np

    from bert4x.models import build_transformer_model

    kwargs = (
        dict(attention_type="nystrom", num_landmarks=landmarks)
        if attention_type == "nystrom"
        else {}
    )
    model = build_transformer_model(CONFIG, with_mlm="linear", hierarchical_position=True, **kwargs)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    ids = (
        np.random.default_rng(0).integers(1, CONFIG["vocab_size"], size=(1, length)).astype("int32")
    )
    model.train_on_batch(ids, ids)  # compile
    start = time.perf_counter()
    for _ in range(REPEATS):
        model.train_on_batch(ids, ids)
    milliseconds = (time.perf_counter() - start) / REPEATS * 1000
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return milliseconds, peak_mb - baseline_mb


def run_worker(attention_type, length, landmarks):
    """Measure in a fresh process; None when it fails (e.g. out of memory)."""
    command = [sys.executable, __file__, "--worker", attention_type, str(length), str(landmarks)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if result.returncode == 0 and lines else None


def full_scores_gb(length):
    """Bytes of the float32 score, probability and gradient matrices of one layer, in GB."""
    return 4 * CONFIG["num_attention_heads"] * length * length * 4 / 1e9


def fitted_exponent(lengths, times):
    import numpy as np

    return float(np.polyfit(np.log(lengths), np.log(times), 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384]
    )
    parser.add_argument("--landmarks", type=int, default=64)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, length, landmarks = args.worker
        ms, mb = measure(kind, int(length), int(landmarks))
        print(json.dumps({"ms": ms, "mb": mb}))
        return
    import keras

    print(
        f"# bench_attention: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"keras {keras.__version__} ({keras.backend.backend()}), python {platform.python_version()}"
    )
    print(f"# config {CONFIG}, batch 1, XLA train step, Nystrom landmarks {args.landmarks}")
    print(
        "| n | full ms | nystrom ms | full/nystrom time | full peak +MB | nystrom peak +MB "
        "| full/nystrom memory |"
    )
    print("|---|---|---|---|---|---|---|")
    nystrom_points = []
    for length in args.lengths:
        nystrom = run_worker("nystrom", length, args.landmarks)
        full = (
            run_worker("full", length, args.landmarks)
            if full_scores_gb(length) < MEMORY_LIMIT_GB
            else None
        )
        if nystrom:
            nystrom_points.append((length, nystrom["ms"]))

        def cell(result, key):
            return f"{result[key]:.0f}" if result else "skipped"

        time_ratio = f"{full['ms'] / nystrom['ms']:.2f}" if full and nystrom else "-"
        memory_ratio = f"{full['mb'] / nystrom['mb']:.2f}" if full and nystrom else "-"
        print(
            f"| {length} | {cell(full, 'ms')} | {cell(nystrom, 'ms')} | {time_ratio} | "
            f"{cell(full, 'mb')} | {cell(nystrom, 'mb')} | {memory_ratio} |",
            flush=True,
        )
    if len(nystrom_points) >= 3:
        tail = nystrom_points[len(nystrom_points) // 2 :]
        exponent = fitted_exponent(*zip(*tail))
        print(
            f"# Nystrom time ~ n^{exponent:.2f} over n = {tail[0][0]}..{tail[-1][0]} (1 = linear)"
        )


if __name__ == "__main__":
    main()
