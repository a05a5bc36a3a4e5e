"""Decoding speed: host loop without cache vs compiled cached `generate` vs KerasHub GPT-2.

Greedy decoding of `--new-tokens` tokens (no early stop) after a random
`--prompt`-token prompt, at batch 1 and 8, on random weights:
- host loop: the whole sequence through the Keras model each step, argmax in
  numpy; what an `AutoRegressiveDecoder.predict` does (eager `model(...)` on
  TensorFlow, fixed-shape `predict_on_batch` on JAX, see `host_loop`);
- bert4x `generate`: key/value cache, the whole loop one XLA program;
- KerasHub `GPT2CausalLM.generate` (greedy sampler, jit_compile=True) on the
  same GPT size (GPT only: KerasHub has no UniLM).
Compilation is excluded (one warm-up call; the first generate call is shown as
'compile'); generate and KerasHub then alternate `--repeats` times and the
fastest run counts. Prints a table of tokens/s and ratios.

    python benchmarks/bench_generation.py            # TensorFlow (default backend)
    KERAS_BACKEND=jax python benchmarks/bench_generation.py
    python benchmarks/bench_generation.py --smoke    # tiny sizes, seconds
"""

import argparse
import os
import platform
import time

import keras
import numpy as np

from bert4x.generation import generate
from bert4x.models import build_transformer_model

SIZES = {
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "vocab_size": 8000,
}
SMOKE_SIZES = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-keras-hub", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 8 tokens, 1 repeat")
    args = parser.parse_args()
    if args.smoke:
        args.new_tokens, args.prompt, args.batches, args.repeats = 8, 4, [1, 2], 1
    return args


def config(sizes, max_length):
    return {
        **sizes,
        "hidden_act": "gelu",
        "max_position_embeddings": max_length,
        "type_vocab_size": 2,
    }


def seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def host_loop(model, token_ids, new_tokens, unilm):
    """Greedy decoding re-running the whole sequence every step (no cache).

    TensorFlow: eager `model(...)` on the growing sequence. JAX: eager calls
    would compile every op again for each new length, so the sequence is
    right-padded to its final length (padding is masked) and run through
    `model.predict_on_batch`, one compiled forward pass of fixed shape.
    """
    batch, prompt = token_ids.shape
    padded = keras.backend.backend() == "jax"
    tokens = np.pad(token_ids, [(0, 0), (0, new_tokens)]) if padded else token_ids
    segments = np.zeros_like(tokens)
    for step in range(new_tokens):
        length = prompt + step
        if padded:
            probas = model.predict_on_batch([tokens, segments])[:, length - 1]
        else:
            probas = keras.ops.convert_to_numpy(model([tokens, segments]))[:, -1]
        next_ids = probas.argmax(axis=-1).astype("int32")
        if padded:
            tokens[:, length], segments[:, length] = next_ids, int(unilm)
        else:
            tokens = np.concatenate([tokens, next_ids[:, None]], axis=1)
            segments = np.concatenate([segments, np.full_like(tokens[:, :1], int(unilm))], axis=1)
    return tokens[:, prompt : prompt + new_tokens]


def keras_hub_gpt2(sizes, max_length):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=sizes["vocab_size"],
        num_layers=sizes["num_hidden_layers"],
        num_heads=sizes["num_attention_heads"],
        hidden_dim=sizes["hidden_size"],
        intermediate_dim=sizes["intermediate_size"],
        max_sequence_length=max_length,
    )
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy", jit_compile=True)
    return causal_lm


def keras_hub_generate(causal_lm, token_ids, new_tokens):
    batch, prompt = token_ids.shape
    padded = np.pad(token_ids, [(0, 0), (0, new_tokens)])
    inputs = {"token_ids": padded, "padding_mask": padded != 0}
    outputs = causal_lm.generate(inputs, stop_token_ids=None)
    return np.asarray(outputs["token_ids"])[:, prompt:]


def header(args):
    versions = [f"keras {keras.__version__}", f"backend {keras.backend.backend()}"]
    for name in ("tensorflow", "jax", "keras_hub"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    print(
        f"# {platform.node()} {platform.machine()} {platform.processor() or ''} "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    print("# " + ", ".join(versions))
    print(
        f"# greedy, prompt {args.prompt} tokens, {args.new_tokens} new tokens, random weights, "
        f"best of {args.repeats} interleaved runs, compile time excluded"
    )


def measure(name, model, unilm, hub, token_ids, args):
    """One table row: (name, batch, host tok/s, generate tok/s, compile s, KerasHub tok/s).

    After one warm-up call each, generate and KerasHub run alternately
    `repeats` times and the fastest run counts, so load from other processes
    affects both sides alike and as little as possible.
    """
    count = len(token_ids) * args.new_tokens
    functions = {
        "host": lambda: host_loop(model, token_ids, args.new_tokens, unilm),
        "generate": lambda: generate(model, token_ids, max_new_tokens=args.new_tokens),
    }
    if hub is not None:
        functions["hub"] = lambda: keras_hub_generate(hub, token_ids, args.new_tokens)
    first = {key: seconds(function) for key, function in functions.items()}
    best = {key: [] for key in functions}
    for _ in range(args.repeats):
        for key, function in functions.items():
            if key != "host" or not best["host"]:  # the slow host loop runs once more
                best[key].append(seconds(function))
    rate = {key: count / min(times) for key, times in best.items()}
    return name, len(token_ids), rate["host"], rate["generate"], first["generate"], rate.get("hub")


def print_table(rows):
    print(
        "| model | batch | host loop, no cache (tok/s) | bert4x generate (tok/s) | compile (s) "
        "| KerasHub generate (tok/s) | generate / host | generate / KerasHub |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch, host, cached, compile_s, hub in rows:
        hub_text = "-" if hub is None else f"{hub:.0f}"
        ratio = "-" if hub is None else f"{cached / hub:.2f}x"
        print(
            f"| {name} | {batch} | {host:.1f} | {cached:.0f} | {compile_s:.1f} | {hub_text} "
            f"| {cached / host:.1f}x | {ratio} |"
        )


def main():
    args = parse_args()
    sizes = SMOKE_SIZES if args.smoke else SIZES
    max_length = max(512, args.prompt + args.new_tokens)
    rng = np.random.default_rng(0)
    header(args)
    print(f"# sizes: {sizes}")
    rows = []
    for name, model_type, application in [("GPT", "gpt", "lm"), ("UniLM", "bert", "unilm")]:
        model = build_transformer_model(
            config(sizes, max_length), model=model_type, application=application
        )
        hub = None
        if model_type == "gpt" and not args.no_keras_hub:
            hub = keras_hub_gpt2(sizes, max_length)
        for batch in args.batches:
            token_ids = rng.integers(1, sizes["vocab_size"], (batch, args.prompt)).astype("int32")
            rows.append(measure(name, model, application == "unilm", hub, token_ids, args))
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
