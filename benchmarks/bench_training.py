"""Training throughput of bert4x vs KerasHub, XLA full/fused/off, float32 vs bf16, and MFU.

    python benchmarks/bench_training.py [--configs small base] [--steps 7]

Every row is the median of `--steps` train steps of a BERT masked-LM (loss over
every position, the MLM head tied to the token embedding), measured in its own
process: tokens/s and peak RSS growth. The machine's matrix-multiply peak (float32 and bfloat16;
on TensorFlow the faster of oneDNN and XLA) is measured first; MFU = model
FLOPs/s / the peak of the row's compute dtype, with forward FLOPs
2·(matmul parameters)·tokens + 4·L·n²·D per sequence, training = 3x forward.
XLA modes: `full` is `jit_compile=True`; `fused` is `jit_compile=False` after
`bert4x.xla.fuse_elementwise()` (XLA compiles the elementwise clusters, TensorFlow's
kernels run the matmuls; TensorFlow only); `off` is `jit_compile=False`.
`--backend jax` runs every row on JAX (`jit_compile` = `jax.jit`); see gpu_jax.sh.
"""

import argparse
import functools
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "small": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    ),
    "base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
}
COMMON = dict(vocab_size=21128, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu")
SEQUENCE_LENGTH = 128
BATCH = {"small": 32, "base": 8}
# Untimed steps: the first traces and compiles; the second still pays one-time costs on
# TensorFlow without XLA (base, mixed_bfloat16: 319 tokens/s, then about 720 steadily).
WARMUP_STEPS = 2
XLA_MODES = ("full", "fused", "off")


def model_flops(config, batch, length):
    """Forward FLOPs of one batch: dense matmuls, attention products, tied MLM output."""
    d, layers, ffn, vocab = (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["intermediate_size"],
        config["vocab_size"],
    )
    per_token = layers * (4 * d * d + 2 * d * ffn) + d * d + d * vocab  # + MLM dense, output
    return batch * (2 * per_token * length + 4 * layers * length * length * d)


def build_bert4x(config):
    from bert4x.models import build_transformer_model

    return build_transformer_model(config, with_mlm="linear")


def build_kerashub(config):
    """KerasHub BertBackbone plus its MaskedLMHead over every position (same loss as bert4x)."""
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        max_sequence_length=config["max_position_embeddings"],
        num_segments=config["type_vocab_size"],
        dropout=0.0,
    )
    head = keras_hub.layers.MaskedLMHead(
        vocabulary_size=config["vocab_size"],
        token_embedding=backbone.token_embedding,
        activation=None,
    )
    token_ids = keras.Input((None,), dtype="int32")
    segment_ids = keras.Input((None,), dtype="int32")
    positions = keras.Input((None,), dtype="int32")  # every position: the same loss as bert4x
    outputs = backbone(
        {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": token_ids != 0}
    )["sequence_output"]
    return keras.Model([token_ids, segment_ids, positions], head(outputs, mask_positions=positions))


def measure_training(library, name, xla, policy, steps, batch):
    """(tokens/s, peak RSS growth MB): median of `steps` train steps after the warm-up."""
    if xla == "fused":
        from bert4x.xla import fuse_elementwise

        fuse_elementwise()  # before anything runs on TensorFlow
    import keras
    import numpy as np

    keras.mixed_precision.set_dtype_policy(policy)
    config = {**COMMON, **CONFIGS[name]}
    model = build_bert4x(config) if library == "bert4x" else build_kerashub(config)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=xla == "full",
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config["vocab_size"], size=(batch, SEQUENCE_LENGTH)).astype("int32")
    inputs = [ids, np.zeros_like(ids)]
    if library == "kerashub":
        inputs.append(np.tile(np.arange(SEQUENCE_LENGTH, dtype="int32"), (batch, 1)))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(inputs, ids)
    seconds = median_seconds(lambda: model.train_on_batch(inputs, ids), steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    return batch * SEQUENCE_LENGTH / seconds, peak


def median_seconds(step, steps):
    """Median wall time of `steps` calls: robust to a slow call on a shared machine."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_forward(name, policy, steps, batch):
    """Seconds per forward pass of bert4x under XLA."""
    import keras
    import numpy as np

    keras.mixed_precision.set_dtype_policy(policy)
    config = {**COMMON, **CONFIGS[name]}
    model = build_bert4x(config)
    model.compile(jit_compile=True)
    ids = np.random.default_rng(0).integers(1, config["vocab_size"], size=(batch, SEQUENCE_LENGTH))
    inputs = [ids.astype("int32"), np.zeros_like(ids, dtype="int32")]
    for _ in range(WARMUP_STEPS):
        model.predict_on_batch(inputs)
    return median_seconds(lambda: model.predict_on_batch(inputs), steps)


def measure_peak(dtype, size, repeats=10):
    """Best matrix-multiply FLOP/s for `dtype` (the MFU denominator).

    TensorFlow: the faster of its own kernel (oneDNN on CPU) and XLA; JAX: `jax.jit`.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.ones((size, size), dtype)
        candidates = [jax.jit(lambda x: x @ x)]
        run_once = lambda f: f(a).block_until_ready()  # noqa: E731
    else:
        import tensorflow as tf

        a = tf.cast(tf.random.normal((size, size)), dtype)
        candidates = [tf.function(lambda x: x @ x, jit_compile=xla) for xla in (False, True)]
        run_once = lambda f: f(a).numpy()  # noqa: E731
    best = float("inf")
    for matmul in candidates:
        run_once(matmul)
        for _ in range(repeats):
            start = time.perf_counter()
            run_once(matmul)
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def worker(job):
    """Run one measurement named by a JSON job; print a JSON result line."""
    kind = job["kind"]
    if kind == "train":
        tokens, mb = measure_training(
            job["library"], job["config"], job["xla"], job["policy"], job["steps"], job["batch"]
        )
        return {"tokens_per_s": tokens, "mb": mb}
    if kind == "forward":
        seconds = measure_forward(job["config"], job["policy"], job["steps"], job["batch"])
        return {"seconds": seconds}
    return {"flops": measure_peak(job["dtype"], job["size"])}


def run(job, backend):
    """`worker(job)` in a fresh process on `backend`: each row gets a clean memory peak."""
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        print(f"# {job} failed: {result.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(lines[-1])


def header(args):
    import keras

    try:
        import keras_hub

        hub = keras_hub.__version__
    except ImportError:
        hub = "not installed"
    print(
        f"# bench_training: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, keras {keras.__version__} ({args.backend}), "
        f"keras-hub {hub}"
    )
    print(f"# sequence length {SEQUENCE_LENGTH}, batch {args.batch}, {args.steps} timed steps/row")


def training_table(args, peak):
    """One train-step row per (config, library, XLA, policy); MFU against the policy's peak."""
    print("\n| config | library | XLA | policy | tokens/s | peak +MB | MFU |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for name in args.configs:
        config = {**COMMON, **CONFIGS[name]}
        flops_per_token = 3 * model_flops(config, 1, SEQUENCE_LENGTH) / SEQUENCE_LENGTH
        for library, xla, policy in itertools.product(args.libraries, args.xla, args.policies):
            job = dict(kind="train", library=library, config=name, xla=xla, policy=policy)
            result = run({**job, "steps": args.steps, "batch": args.batch[name]}, args.backend)
            results[(name, library, xla, policy)] = result and result["tokens_per_s"]
            if result:
                rate = result["tokens_per_s"]
                mfu = (
                    rate * flops_per_token / peak["float32" if policy == "float32" else "bfloat16"]
                )
                print(
                    f"| {name} | {library} | {xla} | {policy} | {rate:.0f} "
                    f"| {result['mb']:.0f} | {mfu:.1%} |",
                    flush=True,
                )
    return results


def best_rate(results, name, library, policy=None, modes=XLA_MODES):
    """The highest tokens/s of `library` on config `name` over XLA `modes` (and any policy)."""
    values = [
        v
        for (n, lib, xla, pol), v in results.items()
        if (n, lib) == (name, library) and policy in (None, pol) and xla in modes and v
    ]
    return max(values) if values else float("nan")


def ratio_table(args, results):
    """The issue's ratios: against KerasHub, XLA (full or fused) against none, bf16 against fp32."""
    print(
        "\n| config | bert4x best / KerasHub best | bert4x XLA best / no XLA (fp32) "
        "| bert4x XLA best / no XLA (bf16) | bf16 best / fp32 best |"
    )
    print("|---|---|---|---|---|")
    for name in args.configs:
        rate = functools.partial(best_rate, results, name, "bert4x")
        xla = [
            rate(policy=policy, modes=("full", "fused")) / rate(policy=policy, modes=("off",))
            for policy in ("float32", "mixed_bfloat16")
        ]
        print(
            f"| {name} | {rate() / best_rate(results, name, 'kerashub'):.2f} "
            f"| {xla[0]:.2f} | {xla[1]:.2f} "
            f"| {rate(policy='mixed_bfloat16') / rate(policy='float32'):.2f} |"
        )


def parse_batch(values):
    """['base=64'] -> {'small': 32, 'base': 64} (defaults for the others)."""
    batch = dict(BATCH)
    for value in values:
        name, _, size = value.partition("=")
        if name not in CONFIGS or not size.isdigit():
            raise SystemExit(f"--batch takes NAME=SIZE with NAME in {sorted(CONFIGS)}: {value!r}")
        batch[name] = int(size)
    return batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "base"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=7, help="timed steps per row (median)")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--batch", nargs="*", default=[], help="NAME=SIZE, e.g. base=64")
    parser.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peak")
    parser.add_argument("--libraries", nargs="+", default=["bert4x", "kerashub"])
    parser.add_argument(
        "--xla", nargs="+", choices=XLA_MODES, help="XLA modes (default: all; JAX: full off)"
    )
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    args.batch = parse_batch(args.batch)
    if not args.xla:
        args.xla = [mode for mode in XLA_MODES if args.backend == "tensorflow" or mode != "fused"]
    elif args.backend != "tensorflow" and "fused" in args.xla:
        raise SystemExit("--xla fused is TensorFlow's auto-clustering; JAX has full and off")
    header(args)
    peak = {
        dtype: run({"kind": "peak", "dtype": dtype, "size": args.peak_size}, args.backend)["flops"]
        for dtype in ("float32", "bfloat16")
    }
    print(
        f"# matmul peak ({args.peak_size}^3, best of the backend's kernels): float32 "
        f"{peak['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s"
    )
    results = training_table(args, peak)
    ratio_table(args, results)
    for name in args.configs:
        job = dict(kind="forward", config=name, policy="float32", steps=args.steps)
        seconds = run({**job, "batch": args.batch[name]}, args.backend)
        if seconds:
            flops = model_flops({**COMMON, **CONFIGS[name]}, args.batch[name], SEQUENCE_LENGTH)
            rate = flops / seconds["seconds"]
            print(
                f"# {name} forward (XLA, fp32): {rate / 1e9:.0f} GFLOP/s = "
                f"{rate / peak['float32']:.1%} of the fp32 matmul peak"
            )


if __name__ == "__main__":
    main()
