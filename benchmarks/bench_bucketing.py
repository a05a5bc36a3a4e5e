"""Length buckets under XLA: compile count and real-token throughput of a variable-length corpus.

    python benchmarks/bench_bucketing.py [--examples 2000] [--epochs 2]

A BERT masked-LM (hidden 128, 2 layers) trains under `jit_compile=True` on a corpus of
random lengths (log-normal, 8..256 tokens), batched four ways:

    batch max      each batch padded to its longest example (no buckets)
    fixed 256      every batch padded to the longest possible length
    buckets        `DataGenerator(bucket_boundaries=...)`: padded to the bucket boundary
    buckets+group  `DataGenerator.to_dataset` with buckets: similar lengths share a batch

XLA compiles one program per distinct input shape, so "shapes" is the compile count.
Throughput counts real (non-padding) tokens per second of wall time, compiles
included; epoch 1 pays for the compiles, later epochs show the padding cost.
"""

import argparse
import os
import platform
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BOUNDARIES = [32, 64, 128, 256]
CONFIG = dict(
    vocab_size=5000,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=512,
    hidden_act="gelu",
    max_position_embeddings=512,
    type_vocab_size=2,
)


def random_corpus(examples, seed):
    """Token-id lists with log-normal lengths in [8, 256] (median ~ 60)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(60), 0.7, examples), 8, BOUNDARIES[-1]).astype(int)
    return [rng.integers(5, CONFIG["vocab_size"], n).tolist() for n in lengths]


def generator_batches(corpus, batch_size, mode, seed):
    """One epoch of padded id batches from a DataGenerator, shuffled with `seed`."""
    from bert4x.snippets import DataGenerator

    class Batches(DataGenerator):
        def __iter__(self, random=False):
            batch = []
            for is_end, ids in self.sample(random):
                batch.append(ids)
                if len(batch) == self.batch_size or is_end:
                    yield self.sequence_padding(batch)
                    batch = []

    boundaries = BOUNDARIES if mode == "buckets" else None
    if mode == "fixed 256":
        boundaries = BOUNDARIES[-1:]
    np.random.seed(seed)
    return list(Batches(corpus, batch_size, bucket_boundaries=boundaries).__iter__(True))


def grouped_batches(corpus, batch_size, seed):
    """One epoch's worth of batches from `to_dataset` with buckets (length-grouped)."""
    from bert4x.snippets import DataGenerator

    class Examples(DataGenerator):
        def __iter__(self, random=False):
            for _, ids in self.sample(random):
                yield ids

    np.random.seed(seed)
    data = Examples(corpus, batch_size, bucket_boundaries=BOUNDARIES)
    dataset = data.to_dataset("int32", [None])
    return [batch.numpy() for batch in dataset.take(len(data))]


def train(batches_per_epoch):
    """Wall seconds of each epoch of XLA train steps (compiles included)."""
    import keras

    from bert4x.models import build_transformer_model

    keras.utils.set_random_seed(0)
    model = build_transformer_model(CONFIG, with_mlm="linear")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    seconds = []
    for batches in batches_per_epoch:
        start = time.perf_counter()
        for ids in batches:
            model.train_on_batch([ids, np.zeros_like(ids)], ids)
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    print(
        f"# bench_bucketing: {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores, tensorflow {tf.__version__}, keras {keras.__version__}; {args.examples} "
        f"examples, batch {args.batch_size}, buckets {BOUNDARIES}"
    )
    corpus = random_corpus(args.examples, seed=0)
    header = "| batching | shapes (XLA compiles) | padding | " + " | ".join(
        f"epoch {e + 1} real tokens/s" for e in range(args.epochs)
    )
    print(f"\n{header} |\n|{'---|' * (3 + args.epochs)}")
    for mode in ("batch max", "fixed 256", "buckets", "buckets+group"):
        epochs = [
            grouped_batches(corpus, args.batch_size, seed)
            if mode == "buckets+group"
            else generator_batches(corpus, args.batch_size, mode, seed)
            for seed in range(args.epochs)
        ]
        shapes = {batch.shape for batches in epochs for batch in batches}
        real = [sum(np.count_nonzero(batch) for batch in batches) for batches in epochs]
        padding = 1 - real[0] / sum(batch.size for batch in epochs[0])
        rates = [f"{n / s:,.0f}" for n, s in zip(real, train(epochs), strict=True)]
        print(f"| {mode} | {len(shapes)} | {padding:.0%} | {' | '.join(rates)} |")


if __name__ == "__main__":
    main()
