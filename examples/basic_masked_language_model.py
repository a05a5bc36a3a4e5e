"""Fill [MASK] tokens with BERT's MLM head.

    python examples/basic_masked_language_model.py --smoke       # tiny random model
    python examples/basic_masked_language_model.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --text "科学技术是第一生产力" --mask 0 1

The characters at the --mask positions (0-based, in the tokenized text without [CLS]) are
replaced by [MASK]; the script prints the top-k tokens and their probabilities for each.
"""

import numpy as np
from task_common import model_parser, require_model, smoke_or_given_files

from bert4x.models import build_transformer_model
from bert4x.tokenizers import Tokenizer

TEXT = "科学技术是第一生产力"
MASK = (0, 1)  # "科学"
TOP_K = 5


def parse_args():
    parser = model_parser(__doc__.split("\n")[0])
    add = parser.add_argument
    add("--text", default=TEXT)
    add("--mask", type=int, nargs="+", default=list(MASK), help="token positions to mask")
    add("--top-k", type=int, default=TOP_K)
    add("--output-dir", default="mlm_output", help="where --smoke writes its model")
    add("--smoke", action="store_true", help="tiny random model")
    args = parser.parse_args()
    require_model(parser, args)
    return args


def main():
    args = parse_args()
    config, checkpoint, vocab = smoke_or_given_files(args, [args.text])
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    model = build_transformer_model(config, checkpoint, model=args.model, with_mlm=True)
    token_ids, segment_ids = tokenizer.encode(args.text)
    positions = [p + 1 for p in args.mask]  # +1 for [CLS]
    if any(not 1 <= p < len(token_ids) - 1 for p in positions):
        raise ValueError(f"--mask positions must be in [0, {len(token_ids) - 3}]: {args.mask}")
    for p in positions:
        token_ids[p] = tokenizer.token_to_id("[MASK]")
    probas = np.asarray(model.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0))
    print("input:", " ".join(tokenizer.ids_to_tokens(token_ids)))
    for p in positions:
        top = np.argsort(-probas[0, p])[: args.top_k]
        candidates = ", ".join(
            f"{tokenizer.id_to_token(int(t))} {probas[0, p, t]:.4f}" for t in top
        )
        print(f"[MASK] at {p - 1}: {candidates}")
    best = probas[0, positions].argmax(axis=-1)
    print("filled:", "".join(tokenizer.decode([int(t) for t in best])))


if __name__ == "__main__":
    main()
