"""Pieces shared by the task scripts: common arguments, data reading that names the bad line,
and a tiny random original-format checkpoint for `--smoke` and `--demo` runs.
"""

import argparse
import json
import os

import keras
from keras import ops

from bert4x.checkpoints import save_weights_as_checkpoint
from bert4x.models import build_transformer_model

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_CONFIG = dict(  # --smoke: as small as a transformer gets
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    hidden_act="gelu",
    max_position_embeddings=512,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
DEMO_CONFIG = dict(TINY_CONFIG, hidden_size=128, num_hidden_layers=2, intermediate_size=256)
DEMO_CONFIG.update(num_attention_heads=4, hidden_dropout_prob=0.1)
DATASETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets")


class NextTokenLoss(keras.layers.Layer):
    """Language-model loss: cross entropy of token t+1 given tokens <= t, over non-padding
    targets; `call(token_ids, probas)` adds it and returns probas[:, :-1]."""

    def call(self, token_ids, probas):
        targets, probas = token_ids[:, 1:], probas[:, :-1]
        mask = ops.cast(targets > 0, "float32")
        loss = ops.sparse_categorical_crossentropy(targets, probas)
        self.add_loss(ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0))
        return probas

    def compute_mask(self, token_ids, probas, mask=None):
        return None


def model_parser(description):
    """argparse with the pretrained-model arguments: --config, --checkpoint, --vocab, --model."""
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--config", help="bert_config.json of the pretrained model")
    add("--checkpoint", help="original TF checkpoint prefix (bert_model.ckpt)")
    add("--vocab", help="vocab.txt of the checkpoint")
    add("--model", default="bert", help="bert, roberta, albert, roformer, ...")
    return parser


def common_parser(description, maxlen, batch_size, epochs, learning_rate):
    """argparse with the arguments every task script takes."""
    parser = model_parser(description)
    add = parser.add_argument
    add("--train", help="training data file")
    add("--valid", help="validation data file")
    add("--epochs", type=int, default=epochs)
    add("--steps-per-epoch", type=int, default=None, help="default: one pass over --train")
    add("--batch-size", type=int, default=batch_size)
    add("--maxlen", type=int, default=maxlen)
    add("--learning-rate", type=float, default=learning_rate)
    add("--output-dir", default="output", help="weights, predictions and generated files")
    add("--seed", type=int, default=42)
    add("--smoke", action="store_true", help="tiny random model, a few steps on the sample")
    add("--demo", action="store_true", help="train a small model from scratch on generated data")
    return parser


def require_config_and_vocab(parser, args):
    """A --checkpoint is only readable with its --config and --vocab."""
    if args.checkpoint and not (args.config and args.vocab):
        parser.error("--checkpoint needs --config and --vocab")


def require_model(parser, args):
    """The basic examples need a real checkpoint (with config and vocab) or --smoke."""
    require_config_and_vocab(parser, args)
    if not (args.smoke or args.checkpoint):
        parser.error("give --config --checkpoint --vocab (or --smoke)")


def check_model_arguments(parser, args):
    """Task scripts: a readable checkpoint, and --train/--valid unless --smoke or --demo."""
    require_config_and_vocab(parser, args)
    if not (args.smoke or args.demo) and not (args.train and args.valid):
        parser.error("give --train and --valid (or --smoke / --demo)")


def check_exists(path, what):
    if not path or not os.path.isfile(path):
        raise ValueError(f"{what} file not found: {path!r}. Pass an existing file (see --help).")


def _check_fields(record, fields, where):
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}; expected {list(fields)}")


def read_json_lines(path, fields=(), what="data", check=None):
    """One JSON object per line -> list of dicts; a bad line raises ValueError naming path:line.

    check(record, where): validates a record instead of the `fields` check (other formats).
    """
    check = check or (lambda record, where: _check_fields(record, fields, where))
    check_exists(path, what)
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: malformed JSON ({error.msg})") from None
            check(record, f"{path}:{number}")
            records.append(record)
    return records


def read_json_list(path, fields=(), what="data"):
    """A JSON list of objects (WebQA/SogouQA) -> list; errors name path:line of the record."""
    check_exists(path, what)
    with open(path, encoding="utf-8") as file:
        text = file.read()
    decoder, records = json.JSONDecoder(), []
    position = text.find("[")
    if position < 0:
        raise ValueError(f"{path}:1: expected a JSON list of records")
    position += 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        line = text.count("\n", 0, position) + 1
        if position >= len(text):
            raise ValueError(f"{path}:{line}: the JSON list is not closed with ']'")
        if text[position] == "]":
            return records
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
        _check_fields(record, fields, f"{path}:{line}")
        records.append(record)


def write_json_lines(path, records):
    with open(path, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def smoke_or_given_files(args, texts):
    """(config, checkpoint, vocab): a tiny random model of `texts` under --smoke, else args'."""
    if args.smoke:
        return random_model_files(args.output_dir, texts, TINY_CONFIG)
    return args.config, args.checkpoint, args.vocab


def random_model_files(output_dir, texts, config, model="bert", tokens=(), **heads):
    """Write a char vocab of `texts`, config.json and a random checkpoint; return their paths.

    heads: the checkpoint's heads as `build_transformer_model` arguments (default: the MLM).
    """
    os.makedirs(output_dir, exist_ok=True)
    chars = sorted({c for text in texts for c in text.lower() if not c.isspace()})
    vocab = SPECIAL_TOKENS + [t for t in tokens if t not in SPECIAL_TOKENS]
    vocab += [c for c in chars if c not in vocab]
    vocab += ["##" + c for c in chars if c.isascii() and c.isalnum()]  # WordPiece continuations
    vocab_path = os.path.join(output_dir, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as file:
        file.write("\n".join(vocab) + "\n")
    config = {**config, "vocab_size": len(vocab)}
    config_path = os.path.join(output_dir, "bert_config.json")
    with open(config_path, "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2)
    checkpoint = os.path.join(output_dir, "bert_model.ckpt")
    save_weights_as_checkpoint(
        build_transformer_model(config, model=model, **(heads or {"with_mlm": True})), checkpoint
    )
    keras.backend.clear_session()
    print(f"wrote a random {model} checkpoint ({len(vocab)} tokens) to {checkpoint}")
    return config_path, checkpoint, vocab_path
