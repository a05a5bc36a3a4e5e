"""Training throughput of bert4x vs KerasHub, XLA on/off, float32 vs mixed_bfloat16, and MFU.

    python benchmarks/bench_training.py [--configs small base] [--steps 5]

Every row is one train step of a BERT masked-LM (loss over every position, the
MLM head tied to the token embedding) measured in its own process: tokens/s
and peak RSS growth. The machine's matrix-multiply peak (float32 and bfloat16,
XLA) is measured first; MFU = model FLOPs/s / peak, with forward FLOPs
2·(matmul parameters)·tokens + 4·L·n²·D per sequence, training = 3x forward.
"""

import argparse
import json
import os
import platform
import resource
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


def measure_training(library, name, jit_compile, policy, steps):
    """(tokens/s, peak RSS growth MB) of `steps` train steps after one compiling step."""
    import keras
    import numpy as np

    keras.mixed_precision.set_dtype_policy(policy)
    config = {**COMMON, **CONFIGS[name]}
    model = build_bert4x(config) if library == "bert4x" else build_kerashub(config)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    batch = BATCH[name]
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config["vocab_size"], size=(batch, SEQUENCE_LENGTH)).astype("int32")
    inputs = [ids, np.zeros_like(ids)]
    if library == "kerashub":
        inputs.append(np.tile(np.arange(SEQUENCE_LENGTH, dtype="int32"), (batch, 1)))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model.train_on_batch(inputs, ids)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(inputs, ids)
    seconds = (time.perf_counter() - start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    return batch * SEQUENCE_LENGTH / seconds, peak


def measure_forward(name, policy, steps):
    """Seconds per forward pass of bert4x under XLA."""
    import keras
    import numpy as np

    keras.mixed_precision.set_dtype_policy(policy)
    config = {**COMMON, **CONFIGS[name]}
    model = build_bert4x(config)
    model.compile(jit_compile=True)
    ids = np.random.default_rng(0).integers(
        1, config["vocab_size"], size=(BATCH[name], SEQUENCE_LENGTH)
    )
    inputs = [ids.astype("int32"), np.zeros_like(ids, dtype="int32")]
    model.predict_on_batch(inputs)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(inputs)
    return (time.perf_counter() - start) / steps


def measure_peak(dtype, size=2048, repeats=10):
    """Matrix-multiply FLOP/s under XLA for `dtype` (the MFU denominator)."""
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype="float32")
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
    matmul(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul(a).numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def worker(job):
    """Run one measurement named by a JSON job; print a JSON result line."""
    kind = job["kind"]
    if kind == "train":
        tokens, mb = measure_training(
            job["library"], job["config"], job["xla"], job["policy"], job["steps"]
        )
        return {"tokens_per_s": tokens, "mb": mb}
    if kind == "forward":
        return {"seconds": measure_forward(job["config"], job["policy"], job["steps"])}
    return {"flops": measure_peak(job["dtype"])}


def run(job):
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
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
        f"python {platform.python_version()}, keras {keras.__version__}, keras-hub {hub}"
    )
    print(f"# sequence length {SEQUENCE_LENGTH}, batch {BATCH}, {args.steps} timed steps per row")


def training_table(args, peak):
    print("\n| config | library | XLA | policy | tokens/s | peak +MB | MFU (vs fp32 peak) |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for name in args.configs:
        flops_per_token = (
            3 * model_flops({**COMMON, **CONFIGS[name]}, 1, SEQUENCE_LENGTH) / SEQUENCE_LENGTH
        )
        for library in ("bert4x", "kerashub"):
            for xla in (True, False):
                for policy in ("float32", "mixed_bfloat16"):
                    job = dict(
                        kind="train",
                        library=library,
                        config=name,
                        xla=xla,
                        policy=policy,
                        steps=args.steps,
                    )
                    result = run(job)
                    results[(name, library, xla, policy)] = result and result["tokens_per_s"]
                    if result:
                        mfu = result["tokens_per_s"] * flops_per_token / peak["float32"]
                        rate = result["tokens_per_s"]
                        print(
                            f"| {name} | {library} | {xla} | {policy} | {rate:.0f} "
                            f"| {result['mb']:.0f} | {mfu:.1%} |",
                            flush=True,
                        )
    return results


def best_rate(results, name, library):
    """The highest tokens/s of `library` on config `name` over XLA and precision settings."""
    values = [v for (n, lib, _, _), v in results.items() if n == name and lib == library and v]
    return max(values) if values else float("nan")


def ratio_table(args, results):
    print("\n| config | bert4x best / KerasHub best | bert4x XLA / no XLA | bf16 / fp32 (XLA) |")
    print("|---|---|---|---|")
    for name in args.configs:
        xla = results.get((name, "bert4x", True, "float32")) or float("nan")
        no_xla = results.get((name, "bert4x", False, "float32")) or float("nan")
        bf16 = results.get((name, "bert4x", True, "mixed_bfloat16")) or float("nan")
        hub = best_rate(results, name, "bert4x") / best_rate(results, name, "kerashub")
        print(f"| {name} | {hub:.2f} | {xla / no_xla:.2f} | {bf16 / xla:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "base"], choices=sorted(CONFIGS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    header(args)
    peak = {
        dtype: run({"kind": "peak", "dtype": dtype})["flops"] for dtype in ("float32", "bfloat16")
    }
    print(
        f"# XLA matmul peak: float32 {peak['float32'] / 1e9:.0f} GFLOP/s, "
        f"bfloat16 {peak['bfloat16'] / 1e9:.0f} GFLOP/s"
    )
    results = training_table(args, peak)
    ratio_table(args, results)
    if "base" in args.configs:
        seconds = run(
            {"kind": "forward", "config": "base", "policy": "float32", "steps": args.steps}
        )
        if seconds:
            flops = model_flops({**COMMON, **CONFIGS["base"]}, BATCH["base"], SEQUENCE_LENGTH)
            print(
                f"\n# base forward (XLA, fp32): {flops / seconds['seconds'] / 1e9:.0f} GFLOP/s = "
                f"{flops / seconds['seconds'] / peak['float32']:.1%} of the fp32 matmul peak"
            )


if __name__ == "__main__":
    main()
