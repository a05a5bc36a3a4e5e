"""bert4x quickstart: build a model, load an original checkpoint, encode, fill a [MASK].

    python examples/quickstart.py                       # tiny random checkpoint, no download
    python examples/quickstart.py --config chinese_L-12_H-768_A-12 \
        --checkpoint /path/to/bert_model.ckpt --vocab /path/to/vocab.txt

Without --checkpoint the script writes a small random checkpoint in Google's
original format (and a matching vocabulary) to --output-dir and says so: the
numbers then only show that everything is wired up.
"""

import argparse
import os

import numpy as np

from bert4x.checkpoints import save_weights_as_checkpoint
from bert4x.models import build_transformer_model
from bert4x.tokenizers import Tokenizer

FIRST = "今天天气很好。"
SECOND = "今天天气不错。"
MASKED_WORD = "好"  # the token of FIRST that the MLM has to fill in
TOP_K = 5
TINY_CONFIG = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_act="gelu",
    max_position_embeddings=64,
    type_vocab_size=2,
)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="bert_config.json path or a pretrained_configs name")
    parser.add_argument("--checkpoint", help="original TF checkpoint prefix (bert_model.ckpt)")
    parser.add_argument("--vocab", help="vocab.txt of the checkpoint")
    parser.add_argument("--model", default="bert", help="bert, roberta, albert, roformer, ...")
    parser.add_argument("--output-dir", default="quickstart_output", help="where the demo writes")
    args = parser.parse_args()
    if args.checkpoint and not (args.config and args.vocab):
        parser.error("--checkpoint needs --config and --vocab")
    return args


def write_demo_checkpoint(output_dir, model_type):
    """Write a random tiny model as an original-format checkpoint plus its vocab; return paths."""
    characters = sorted(set(FIRST + SECOND + "好坏明天雨"))
    vocab = SPECIAL + characters
    os.makedirs(output_dir, exist_ok=True)
    vocab_path = os.path.join(output_dir, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as file:
        file.write("\n".join(vocab) + "\n")
    config = {**TINY_CONFIG, "vocab_size": len(vocab)}
    model = build_transformer_model(config, model=model_type, with_mlm=True)
    checkpoint = os.path.join(output_dir, "bert_model.ckpt")
    save_weights_as_checkpoint(model, checkpoint)
    print(f"No --checkpoint given: wrote a random {model_type} checkpoint to {checkpoint}")
    print("(its similarities and predictions are random; pass a real checkpoint for real ones)")
    return config, checkpoint, vocab_path


def sentence_vectors(encoder, tokenizer, texts):
    """Mean of the last hidden states over each sentence's tokens."""
    vectors = []
    for text in texts:
        token_ids, segment_ids = tokenizer.encode(text)
        hidden = np.asarray(
            encoder.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0)
        )
        vectors.append(hidden[0].mean(axis=0))
    return np.stack(vectors)


def main():
    args = parse_args()
    if args.checkpoint:
        config, checkpoint, vocab = args.config, args.checkpoint, args.vocab
    else:
        config, checkpoint, vocab = write_demo_checkpoint(args.output_dir, args.model)
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    encoder = build_transformer_model(config, checkpoint, model=args.model)
    mlm = build_transformer_model(config, checkpoint, model=args.model, with_mlm=True)

    a, b = sentence_vectors(encoder, tokenizer, [FIRST, SECOND])
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"cosine({FIRST!r}, {SECOND!r}) = {cosine:.4f}")

    token_ids, segment_ids = tokenizer.encode(FIRST)
    position = tokenizer.tokenize(FIRST).index(MASKED_WORD)
    token_ids[position] = tokenizer.token_to_id("[MASK]")
    probas = np.asarray(mlm.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0))
    top = np.argsort(-probas[0, position])[:TOP_K]
    masked = FIRST.replace(MASKED_WORD, "[MASK]", 1)
    print(f"top {TOP_K} for [MASK] in {masked!r}:")
    for token_id in top:
        print(f"  {tokenizer.id_to_token(int(token_id))}\t{probas[0, position, token_id]:.4f}")


if __name__ == "__main__":
    main()
