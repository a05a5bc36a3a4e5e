"""Random sentences from a BERT MLM by Gibbs sampling (kexue.fm/archives/8119; Wang & Cho 2019).

    python examples/basic_gibbs_sampling_via_mlm.py --smoke --output-dir /tmp/gibbs
    python examples/basic_gibbs_sampling_via_mlm.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --steps 10000 --burn-in 1000

Start from [CLS] + [MASK]*L + [SEP] (L uniform in [--minlen, --maxlen]) or from --init;
each step masks one uniformly chosen content position and samples it from the MLM's
softmax there (`bert4x.sampling.gibbs_sample`). The length never changes. The MLM's
conditionals need not come from one joint distribution, so this is pseudo-Gibbs; with
a pretrained Chinese BERT it still gives fluent sentences (and can repeat training text).
Without --checkpoint a random checkpoint is written to --output-dir: the text is noise.
"""

import os
import random

import keras
from task_common import (
    DATASETS,
    TINY_CONFIG,
    model_parser,
    random_model_files,
    require_config_and_vocab,
)

from bert4x.models import build_transformer_model
from bert4x.sampling import gibbs_sample
from bert4x.tokenizers import Tokenizer

STEPS, BURN_IN = 10000, 1000  # the post's settings
MINLEN, MAXLEN = 8, 32  # content length of the initial all-[MASK] sentence
PRINT_EVERY = 1000  # print one sampled sentence per this many kept states
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SAMPLE = os.path.join(DATASETS, "dialogue_sample.json")  # vocabulary of the random model
SMOKE = dict(steps=12, burn_in=2, print_every=5, minlen=6, maxlen=10)


def parse_args():
    parser = model_parser(__doc__.split("\n")[0])
    add = parser.add_argument
    add("--init", help="start from this sentence instead of [MASK]s (its length is kept)")
    add("--steps", type=int, default=STEPS)
    add("--burn-in", type=int, default=BURN_IN, help="states dropped at the start")
    add("--minlen", type=int, default=MINLEN)
    add("--maxlen", type=int, default=MAXLEN)
    add("--temperature", type=float, default=1.0)
    add(
        "--exclude-special",
        action="store_true",
        help="never sample [PAD] [UNK] [CLS] [SEP] [MASK] (the original does not exclude them)",
    )
    add("--print-every", type=int, default=PRINT_EVERY)
    add("--output-dir", default="output", help="samples (and the random checkpoint) go here")
    add("--seed", type=int, default=42)
    add("--smoke", action="store_true", help="tiny random model, a few steps")
    args = parser.parse_args()
    require_config_and_vocab(parser, args)
    if not 1 <= args.minlen <= args.maxlen:
        parser.error(f"need 1 <= --minlen <= --maxlen, got {args.minlen}, {args.maxlen}")
    if args.smoke:
        vars(args).update(SMOKE)
    return args


def load_model(args):
    if not args.checkpoint:
        with open(SAMPLE, encoding="utf-8") as file:
            texts = [file.read()]
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, texts, TINY_CONFIG
        )
    mlm = build_transformer_model(args.config, args.checkpoint, model=args.model, with_mlm=True)
    return mlm, Tokenizer(args.vocab, do_lower_case=True)


def initial_ids(tokenizer, args, rng):
    if args.init:
        return tokenizer.encode(args.init)[0]
    length = rng.randint(args.minlen, args.maxlen)
    mask = tokenizer._token_mask_id
    return [tokenizer._token_start_id] + [mask] * length + [tokenizer._token_end_id]


def main():
    args = parse_args()
    random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    mlm, tokenizer = load_model(args)
    token_ids = initial_ids(tokenizer, args, random.Random(args.seed))
    exclude = [tokenizer.token_to_id(t) for t in SPECIAL] if args.exclude_special else []
    print(f"sampling {args.steps} steps ({args.burn_in} burn-in), length {len(token_ids) - 2}")
    samples = gibbs_sample(mlm, token_ids, args.steps, burn_in=args.burn_in,
                           temperature=args.temperature, exclude_ids=exclude, seed=args.seed,
                           mask_id=tokenizer._token_mask_id)  # fmt: skip
    texts = [tokenizer.decode(s[1:-1].tolist()) for s in samples]
    path = os.path.join(args.output_dir, "gibbs_samples.txt")
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(texts) + "\n")
    for number in range(0, len(texts), args.print_every):
        print(f"sample {number + args.burn_in + 1}: {texts[number]}")
    print(f"wrote {len(texts)} samples to {path}")


if __name__ == "__main__":
    main()
