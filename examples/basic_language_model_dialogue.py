"""DialoGPT-style multi-turn dialogue LM with BERT application='lm' (kexue.fm/archives/7718).

    python examples/basic_language_model_dialogue.py --smoke --output-dir /tmp/dialogue
    python examples/basic_language_model_dialogue.py --model nezha --config bert_config.json \
        --checkpoint model.ckpt --vocab vocab.txt --train lccc_train.json --epochs 10

A dialogue (one JSON list of utterances per line) becomes [CLS] u_0 [SEP] u_1 [SEP] ...;
the tokens of utterance i (and its [SEP]) get segment id i mod 2 (the speaker), and
utterances are added while the sample fits in --maxlen (the first turns are kept). The
loss is next-token cross entropy over every non-padding position, context included. A
reply is sampled top-k (k = 5) with `bert4x.generation.generate`; its tokens get segment
1 − (segment of the last utterance). `generate` gives new tokens the segment of the last
prompt token, so the prompt's final [SEP] carries the reply's segment (bojone's
nezha_gpt_dialog keeps it on the speaker's segment; this is the only difference).
"""

import os
import random

import keras
import numpy as np
from task_common import (
    DATASETS,
    DEMO_CONFIG,
    TINY_CONFIG,
    NextTokenLoss,
    common_parser,
    random_model_files,
    read_json_lines,
    require_config_and_vocab,
)

from bert4x.generation import generate
from bert4x.models import build_transformer_model
from bert4x.optimizers import AdamW, extend_with_gradient_accumulation
from bert4x.snippets import DataGenerator, sequence_padding
from bert4x.tokenizers import Tokenizer

MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE = 512, 16, 10, 2e-5  # bojone/nezha_gpt_dialog
GRAD_ACCUM_STEPS, WEIGHT_DECAY = 16, 0.01
TOP_K, REPLY_MAXLEN = 5, 32
SAMPLE = os.path.join(DATASETS, "dialogue_sample.json")
SMOKE = dict(epochs=1, steps_per_epoch=3, batch_size=4, maxlen=64, grad_accum_steps=1)
AdamWGA = extend_with_gradient_accumulation(AdamW)


def check_dialogue(record, where):
    """A dialogue is a list of >= 2 non-empty utterance strings."""
    if not (isinstance(record, list) and len(record) >= 2
            and all(isinstance(u, str) and u for u in record)):  # fmt: skip
        raise ValueError(f"{where}: expected a list of >= 2 non-empty "
                         f"utterance strings, got {str(record)[:60]!r}")  # fmt: skip


def load_dialogues(path):
    """JSON lines, each a list of >= 2 utterance strings; a bad line raises naming path:line."""
    return read_json_lines(path, what="dialogue", check=check_dialogue)


def build_sample(tokenizer, utterances, maxlen):
    """[CLS] u_0 [SEP] u_1 [SEP] ... with segment i mod 2; whole turns while <= maxlen.

    A first utterance longer than maxlen alone is cut to fit (so no sample is empty).
    """
    token_ids, segment_ids = [tokenizer._token_start_id], [0]
    for i, text in enumerate(utterances):
        ids = tokenizer.encode(text)[0][1:]  # tokens + [SEP]
        if len(token_ids) + len(ids) > maxlen:
            if i > 0:
                break
            ids = ids[: maxlen - 2] + ids[-1:]
        token_ids += ids
        segment_ids += [i % 2] * len(ids)
    return token_ids, segment_ids


class Batches(DataGenerator):
    def __init__(self, dialogues, tokenizer, maxlen, **kwargs):
        super().__init__(dialogues, **kwargs)
        self.tokenizer, self.maxlen = tokenizer, maxlen

    def __iter__(self, random=False):
        tokens, segments = [], []
        for is_end, dialogue in self.sample(random):
            token_ids, segment_ids = build_sample(self.tokenizer, dialogue, self.maxlen)
            tokens.append(token_ids)
            segments.append(segment_ids)
            if len(tokens) == self.batch_size or is_end:
                pad = lambda x: sequence_padding(x, length=self.maxlen)  # noqa: E731
                yield ((pad(tokens), pad(segments)),)  # one shape: XLA compiles once
                tokens, segments = [], []


def build_model(args):
    lm = build_transformer_model(args.config, args.checkpoint, model=args.model, application="lm")
    train_model = keras.Model(lm.inputs, NextTokenLoss()(lm.inputs[0], lm.output))
    optimizer = AdamWGA(learning_rate=args.learning_rate, weight_decay_rate=WEIGHT_DECAY,
                        exclude_from_weight_decay=["Norm", "bias"],
                        grad_accum_steps=args.grad_accum_steps)  # fmt: skip
    train_model.compile(optimizer=optimizer, jit_compile=True)
    return train_model, lm


def reply(lm, tokenizer, utterances, maxlen, seed=None):
    """One top-k sampled reply to the dialogue so far."""
    token_ids, segment_ids = build_sample(tokenizer, utterances, maxlen - REPLY_MAXLEN)
    segment_ids[-1] = 1 - segment_ids[-1]  # new tokens take the last prompt token's segment
    new = generate(lm, np.array([token_ids]), np.array([segment_ids]),
                   max_new_tokens=REPLY_MAXLEN, strategy="top_k", top_k=TOP_K,
                   end_id=tokenizer._token_end_id, seed=seed)[0].tolist()  # fmt: skip
    if tokenizer._token_end_id in new:
        new = new[: new.index(tokenizer._token_end_id)]
    return tokenizer.decode(new)


class Evaluator(keras.callbacks.Callback):
    """Saves the weights and prints a reply to a fixed context after every epoch."""

    def __init__(self, lm, tokenizer, context, args):
        super().__init__()
        self.lm, self.tokenizer, self.context, self.args = lm, tokenizer, context, args

    def on_epoch_end(self, epoch, logs=None):
        self.lm.save_weights(os.path.join(self.args.output_dir, "latest_model.weights.h5"))
        text = reply(self.lm, self.tokenizer, self.context, self.args.maxlen, self.args.seed)
        print(f"\nepoch {epoch + 1}: {' / '.join(self.context)} -> reply: {text}")


def main():
    parser = common_parser(__doc__.split("\n")[0], MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE)
    parser.add_argument("--grad-accum-steps", type=int, default=GRAD_ACCUM_STEPS)
    parser.add_argument("--context", nargs="+", help="utterances to reply to after training")
    args = parser.parse_args()
    require_config_and_vocab(parser, args)
    if not (args.smoke or args.demo or args.train):
        parser.error("give --train (or --smoke / --demo to train on the bundled sample)")
    if args.smoke:
        vars(args).update(SMOKE)
    random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    dialogues = load_dialogues(args.train or SAMPLE)
    if not args.checkpoint:
        config = TINY_CONFIG if args.smoke else DEMO_CONFIG
        texts = [u for d in dialogues for u in d]
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, texts, config, args.model)  # fmt: skip
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    train_model, lm = build_model(args)
    context = args.context or dialogues[0][:1]
    batches = Batches(dialogues, tokenizer, args.maxlen, batch_size=args.batch_size)
    train_model.fit(
        batches.forfit(),
        steps_per_epoch=args.steps_per_epoch or len(batches),
        epochs=args.epochs,
        callbacks=[Evaluator(lm, tokenizer, context, args)],
    )


if __name__ == "__main__":
    main()
