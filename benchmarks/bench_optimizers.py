"""Step time and memory of each bert4x optimizer extension relative to plain Adam, under XLA.

Every optimizer trains the same embedding + MLP model (a few million parameters) with
`jit_compile=True`. Step times are taken in one process, round-robin over the optimizers (in a
new random order) for each repeat, so that load changes on a shared machine hit all of them
alike; a second, identical Adam model is the control row for the noise. Step ms is the
fastest repeat (wall clock), CPU ms the median process CPU time per step. One call is one
micro-batch under gradient accumulation. Optimizer variable bytes and peak RSS come from a
separate subprocess per optimizer (build, compile, two steps), so that each RSS is its own.

    python benchmarks/bench_optimizers.py                  # all optimizers
    python benchmarks/bench_optimizers.py --steps 20 --repeats 2 --only AdamW AdamEG
"""

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

VOCAB = 20_000  # Embedding-Token rows: 20k x 128 = 2.56M parameters
HIDDEN = 128
FEED_FORWARD = 512
LENGTH = 32
CLASSES = 16
BATCH = 64
LEARNING_RATE = 1e-3


def optimizer_factories():
    import keras

    from bert4x import optimizers as B

    lr = LEARNING_RATE
    return {
        "Adam": lambda: B.Adam(lr),
        "Adam (control: 2nd copy)": lambda: B.Adam(lr),
        "keras.optimizers.Adam": lambda: keras.optimizers.Adam(lr),
        "AdamW": lambda: B.AdamW(lr, exclude_from_weight_decay=["Norm", "bias"]),
        "AdamLA": lambda: B.AdamLA(lr),
        "AdamLAMB": lambda: B.AdamLAMB(lr, exclude_from_weight_decay=["bias"]),
        "AdamLR": lambda: B.AdamLR(lr, lr_schedule={1000: 1.0, 10000: 0.1}),
        "AdamParamwiseLR": lambda: B.AdamParamwiseLR(lr, paramwise_lr_schedule={"Embed": 0.1}),
        "AdamLazy": lambda: B.AdamLazy(lr, include_in_lazy_optimization=["Embedding"]),
        "AdamGA (buffer, k=4)": lambda: B.AdamGA(lr, grad_accum_steps=4),
        "AdamGA (momentum, k=4)": lambda: B.AdamGA(
            lr, grad_accum_steps=4, grad_accum_mode="momentum"
        ),
        "AdamLookahead": lambda: B.AdamLookahead(lr),
        "AdamEMA": lambda: B.AdamEMA(lr),
        "AdamEG": lambda: B.AdamEG(lr),
        "AdamEG (per-tensor)": lambda: B.AdamEG(lr, per_coordinate=False),
    }


def data(steps):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, size=(steps * BATCH, LENGTH)).astype("int32")
    return x, rng.integers(0, CLASSES, size=(steps * BATCH,))


def compiled_model(name, x, y):
    """The benchmark model compiled with optimizer `name`, after one warm-up (XLA) fit."""
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((LENGTH,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, HIDDEN, name="Embedding-Token")(tokens)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(FEED_FORWARD, activation="gelu", name="FeedForward-0")(h)
    h = keras.layers.Dense(HIDDEN, name="FeedForward-1")(h)
    h = keras.layers.LayerNormalization(name="FeedForward-Norm")(h)
    model = keras.Model(tokens, keras.layers.Dense(CLASSES, name="Output")(h))
    optimizer = optimizer_factories()[name]()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=True)
    model.fit(x[: 2 * BATCH], y[: 2 * BATCH], batch_size=BATCH, verbose=0)
    return model


def memory_worker(name):
    """Subprocess: optimizer variable bytes and peak RSS after two compiled steps."""
    import numpy as np

    model = compiled_model(name, *data(2))
    variables = model.optimizer.variables
    return {
        "optimizer_bytes": sum(
            int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables
        ),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": model.count_params(),
    }


def step_times(names, steps, repeats):
    """{name: (fastest wall ms, median CPU ms)} per step, round-robin in a shuffled order."""
    x, y = data(steps)
    models = {name: compiled_model(name, x, y) for name in names}
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(names, len(names)):
            model = models[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
            wall[name].append(1000 * (time.perf_counter() - start) / steps)
            cpu[name].append(1000 * (time.process_time() - start_cpu) / steps)
    return {name: (min(wall[name]), statistics.median(cpu[name])) for name in names}


def header(args, params):
    import keras

    backend = keras.backend.backend()
    module = __import__("tensorflow" if backend == "tensorflow" else backend)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return [
        f"# bert4x optimizer overhead vs Adam, jit_compile=True, backend {backend}",
        f"# {platform.platform()}; {platform.processor() or platform.machine()}; "
        f"{os.cpu_count()} CPUs; load average {load}",
        f"# Python {platform.python_version()}, keras {keras.__version__}, "
        f"{backend} {module.__version__}",
        f"# model: Embedding {VOCAB}x{HIDDEN} + MLP {HIDDEN}-{FEED_FORWARD}-{HIDDEN}-"
        f"{CLASSES}, {params / 1e6:.2f}M params; batch {BATCH}x{LENGTH}; {args.steps} steps "
        f"x {args.repeats} shuffled round-robin repeats; step ms = fastest repeat (wall), "
        "CPU ms = median process CPU time per step",
    ]


def table(results, args):
    base = results["Adam"]
    columns = [  # (header, key, scale, format)
        ("step ms", "step_ms", 1, "{:.2f}"),
        ("CPU ms", "cpu_ms", 1, "{:.1f}"),
        ("opt. vars MiB", "optimizer_bytes", 2**-20, "{:.1f}"),
        ("peak RSS MiB", "peak_rss_mib", 1, "{:.0f}"),
    ]
    head = ["optimizer"] + [h for column in columns for h in (column[0], "x Adam")]
    rows = []
    for name, r in results.items():
        cells = [name]
        for _, key, scale, fmt in columns:
            cells += [fmt.format(r[key] * scale), f"{r[key] / base[key]:.2f}"]
        rows.append(cells)
    widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
    rule = ["-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)]
    lines = header(args, base["params"])
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    lines.append("|" + "|".join(rule) + "|")
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="*", help="optimizer names (the Adams always run)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker)))
        return
    always = ("Adam", "Adam (control: 2nd copy)")
    names = [n for n in optimizer_factories() if n in always or not args.only or n in args.only]
    results = {}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in names:
        command = [sys.executable, __file__, "--memory-worker", name]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    for name, (wall, cpu) in step_times(names, args.steps, args.repeats).items():
        results[name].update(step_ms=wall, cpu_ms=cpu)
    print(table(results, args))


if __name__ == "__main__":
    main()
