"""Extract token features and a sentence vector with a pretrained BERT.

    python examples/basic_extract_features.py --smoke            # tiny random model
    python examples/basic_extract_features.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --text "语言模型"

Prints the shape of the last hidden states [1, n, d], the first values of each token's vector,
and --output saves them as .npy.
"""

import numpy as np
from task_common import model_parser, require_model, smoke_or_given_files

from bert4x.models import build_transformer_model
from bert4x.tokenizers import Tokenizer

TEXT = "语言模型"
SHOW = 4  # values printed per token


def parse_args():
    parser = model_parser(__doc__.split("\n")[0])
    add = parser.add_argument
    add("--text", default=TEXT)
    add("--output", help="save the [n, d] features as this .npy file")
    add("--output-dir", default="features_output", help="where --smoke writes its model")
    add("--smoke", action="store_true", help="tiny random model")
    args = parser.parse_args()
    require_model(parser, args)
    return args


def main():
    args = parse_args()
    config, checkpoint, vocab = smoke_or_given_files(args, [args.text])
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    model = build_transformer_model(config, checkpoint, model=args.model)
    token_ids, segment_ids = tokenizer.encode(args.text)
    features = np.asarray(
        model.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0)
    )
    print(f"features shape: {features.shape}")  # [1, n, d]
    for token, vector in zip(tokenizer.ids_to_tokens(token_ids), features[0]):
        print(f"{token}\t" + " ".join(f"{v:+.4f}" for v in vector[:SHOW]) + " ...")
    print(f"sentence vector (mean over tokens) norm: {np.linalg.norm(features[0].mean(0)):.4f}")
    if args.output:
        np.save(args.output, features[0])
        print(f"saved {args.output}")


if __name__ == "__main__":
    main()
