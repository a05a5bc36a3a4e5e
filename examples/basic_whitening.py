"""BERT-whitening on an STS-style sample: Spearman of cosine before and after whitening.

    python examples/basic_whitening.py --smoke                  # tiny random model, no download
    python examples/basic_whitening.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --data STS-B.test.tsv --n-components 256

Sentence vectors are first-last-avg (mean of the first and last transformer layer's masked
mean-pooled outputs) or last-avg; whitening x̃ = (x − μ) W, W = U Λ^{-1/2} (kexue.fm/archives/8069)
is fitted on all sentences of the data file, then truncated to --n-components. Data: one pair
per line, `text1<TAB>text2<TAB>score`. With a random --smoke model the numbers only show wiring.
"""

import json
import os

import keras
import numpy as np
from task_common import (
    DATASETS,
    TINY_CONFIG,
    check_exists,
    model_parser,
    random_model_files,
    require_model,
)

from bert4x.models import build_transformer_model
from bert4x.snippets import sequence_padding
from bert4x.tokenizers import Tokenizer
from bert4x.whitening import compute_kernel_bias, transform_and_normalize

SAMPLE = os.path.join(DATASETS, "sts_sample.tsv")
MAXLEN = 64
BATCH_SIZE = 32
N_COMPONENTS = 256  # 768 -> 256 was the post's best truncation for BERT-base on STS-B
SMOKE_N_COMPONENTS = 8
POOLINGS = ("first-last-avg", "last-avg")


def parse_args():
    parser = model_parser(__doc__.split("\n")[0])
    add = parser.add_argument
    add("--data", default=SAMPLE, help="text1<TAB>text2<TAB>score lines")
    add("--pooling", default="first-last-avg", choices=POOLINGS)
    add("--n-components", type=int, default=N_COMPONENTS, help="k of the truncated whitening")
    add("--maxlen", type=int, default=MAXLEN)
    add("--batch-size", type=int, default=BATCH_SIZE)
    add("--output-dir", default="whitening_output", help="where --smoke writes its model")
    add("--smoke", action="store_true", help="tiny random model on the bundled sample")
    args = parser.parse_args()
    require_model(parser, args)
    return args


def load_pairs(path):
    """text1<TAB>text2<TAB>score lines -> (texts1, texts2, scores); a bad line names path:line."""
    check_exists(path, "STS data")
    a, b, scores = [], [], []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            try:
                score = float(fields[2])
            except (IndexError, ValueError):
                raise ValueError(
                    f"{path}:{number}: expected text1<TAB>text2<TAB>score, got {line.strip()!r}"
                ) from None
            a.append(fields[0])
            b.append(fields[1])
            scores.append(score)
    return a, b, np.array(scores)


def rankdata(values):
    """Ranks 1..N, ties get the mean of their ranks (as scipy.stats.rankdata)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x, y):
    """Pearson correlation of the ranks."""
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float(rx @ ry / np.sqrt((rx @ rx) * (ry @ ry)))


def build_encoder(config, checkpoint, model, pooling):
    """Keras model: (token_ids, segment_ids) -> the hidden states to pool, a list of [b, n, d]."""
    bert = build_transformer_model(config, checkpoint, model=model)
    with open(config, encoding="utf-8") as file:
        layers = json.load(file)["num_hidden_layers"]
    names = [f"Transformer-{layers - 1}-FeedForward-Norm"]
    if pooling == "first-last-avg":
        names.insert(0, "Transformer-0-FeedForward-Norm")
    return keras.Model(bert.inputs, [bert.get_layer(name).output for name in names])


def sentence_vectors(encoder, tokenizer, texts, maxlen, batch_size):
    """Masked mean over tokens of each pooled layer, then the mean over layers: [N, d]."""
    vectors = []
    for start in range(0, len(texts), batch_size):
        encoded = [tokenizer.encode(t, maxlen=maxlen) for t in texts[start : start + batch_size]]
        token_ids = sequence_padding([e[0] for e in encoded])  # [b, n]
        segment_ids = sequence_padding([e[1] for e in encoded])
        outputs = encoder.predict([token_ids, segment_ids], verbose=0)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        mask = (token_ids > 0)[:, :, None].astype("float64")  # [b, n, 1]
        pooled = [(np.asarray(h) * mask).sum(axis=1) / mask.sum(axis=1) for h in outputs]
        vectors.append(np.mean(pooled, axis=0))  # [b, d]
    return np.concatenate(vectors)


def evaluate(a_vecs, b_vecs, scores, kernel=None, bias=None):
    """Spearman between the gold scores and cos(a, b) after the optional whitening."""
    a = transform_and_normalize(a_vecs, kernel, bias)
    b = transform_and_normalize(b_vecs, kernel, bias)
    return spearman((a * b).sum(axis=1), scores)


def main():
    args = parse_args()
    texts1, texts2, scores = load_pairs(args.data)
    n_components = args.n_components
    if args.smoke:
        keras.utils.set_random_seed(42)
        config, checkpoint, vocab = random_model_files(
            args.output_dir, texts1 + texts2, TINY_CONFIG, args.model
        )
        n_components = SMOKE_N_COMPONENTS
    else:
        config, checkpoint, vocab = args.config, args.checkpoint, args.vocab
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    encoder = build_encoder(config, checkpoint, args.model, args.pooling)
    a_vecs = sentence_vectors(encoder, tokenizer, texts1, args.maxlen, args.batch_size)
    b_vecs = sentence_vectors(encoder, tokenizer, texts2, args.maxlen, args.batch_size)
    all_vecs = np.concatenate([a_vecs, b_vecs])  # [2N, d]
    d = all_vecs.shape[1]
    print(f"{len(scores)} pairs, {args.pooling} vectors of size {d}")
    print(f"spearman (no whitening): {evaluate(a_vecs, b_vecs, scores):.4f}")
    rank = int(np.linalg.matrix_rank(np.cov(all_vecs.T)))  # LayerNorm outputs may lose one
    if rank < d:
        print(f"the covariance has rank {rank} < {d}: full whitening keeps k={rank}")
    kernel, bias = compute_kernel_bias(all_vecs, rank)
    print(f"spearman (whitening, k={rank}): {evaluate(a_vecs, b_vecs, scores, kernel, bias):.4f}")
    k = min(n_components, rank)
    kernel, bias = compute_kernel_bias(all_vecs, k)
    print(f"spearman (whitening, k={k}): {evaluate(a_vecs, b_vecs, scores, kernel, bias):.4f}")


if __name__ == "__main__":
    main()
