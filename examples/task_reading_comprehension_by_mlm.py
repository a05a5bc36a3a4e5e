"""Extractive reading comprehension as non-autoregressive MLM generation (kexue.fm/archives/7148).

    python examples/task_reading_comprehension_by_mlm.py --smoke --output-dir /tmp/rc
    python examples/task_reading_comprehension_by_mlm.py --demo --output-dir /tmp/rc_demo
    python examples/task_reading_comprehension_by_mlm.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --train WebQA.json --valid SogouQA.json

Input [CLS] [MASK]*max_a_len [SEP] question [SEP] passage [SEP] (all segment 0); the MLM
fills the masks with answer + [SEP]. Decoding is greedy per position, restricted to
tokens that extend the prefix to a passage n-gram; score = mean chosen probability;
passages vote with sum s^2 / (sum s + 1). Metric: Accuracy, F1, Final (Sogou script).
"""

import keras
import numpy as np
from keras import ops
from reading_comprehension_common import (
    QuestionBatches,
    clean_passage,
    gold_answers,
    mean_or_zero,
    next_tokens,
    prepare_run,
    score_answers,
    train_and_evaluate,
    vote,
)
from task_common import (
    common_parser,
    write_json_lines,
)

from bert4x.models import build_transformer_model
from bert4x.optimizers import Adam
from bert4x.snippets import sequence_padding
from bert4x.tokenizers import Tokenizer

MAX_P_LEN, MAX_Q_LEN, MAX_A_LEN = 256, 64, 32
BATCH_SIZE, EPOCHS, LEARNING_RATE = 32, 10, 1e-5


def mlm_decode(probas, passage_ids, end_id):
    """probas [A, V] -> (answer ids, mean chosen probability): greedy over passage n-grams + end."""
    answer, scores = [], []
    for p in probas:
        allowed = sorted(next_tokens(answer, passage_ids) | {end_id})
        token = allowed[int(np.argmax(p[allowed]))]
        if token == end_id:
            break
        answer.append(token)
        scores.append(p[token])
    return answer, mean_or_zero(scores)


class Encoder:
    """Token ids of [CLS] [MASK]*A [SEP] q [SEP] p [SEP], all padded to one length."""

    def __init__(self, tokenizer, max_p_len, max_q_len, max_a_len):
        self.tokenizer, self.max_p_len, self.max_q_len, self.max_a_len = (
            tokenizer, max_p_len, max_q_len, max_a_len)  # fmt: skip
        self.length = max_a_len + max_q_len + max_p_len + 4

    def pieces(self, text, maxlen):
        return self.tokenizer.encode(text)[0][1:-1][:maxlen]

    def inputs(self, question, passage):
        t = self.tokenizer
        q_ids, p_ids = self.pieces(question, self.max_q_len), self.pieces(passage, self.max_p_len)
        ids = [t._token_start_id] + [t._token_mask_id] * self.max_a_len + [t._token_end_id]
        return ids + q_ids + [t._token_end_id] + p_ids + [t._token_end_id], p_ids

    def target(self, answer):
        ids = self.pieces(answer, self.max_a_len - 1) + [self.tokenizer._token_end_id]
        return ids + [0] * (self.max_a_len - len(ids))


class Batches(QuestionBatches):
    """One random passage per question per epoch; its first fitting alternative is the target."""

    def __iter__(self, random=False):
        token_ids, targets = [], []
        for is_end, question, passage, answer in self.examples(random):
            token_ids.append(self.encoder.inputs(question, passage)[0])
            targets.append(self.encoder.target(answer))
            if len(token_ids) == self.batch_size or is_end:
                token_ids = sequence_padding(token_ids, length=self.encoder.length)
                yield ((token_ids, np.zeros_like(token_ids), np.array(targets)),)
                token_ids, targets = [], []


class AnswerLoss(keras.layers.Layer):
    """Cross entropy of the answer positions 1..A, averaged over non-zero targets."""

    def call(self, targets, probas):
        probas = probas[:, 1 : targets.shape[1] + 1]  # [b, A, V]
        mask = ops.cast(targets > 0, "float32")
        loss = ops.sparse_categorical_crossentropy(targets, probas)
        self.add_loss(ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0))
        return probas

    def compute_mask(self, targets, probas, mask=None):
        return None


def build_models(args):
    mlm = build_transformer_model(args.config, args.checkpoint, model=args.model, with_mlm=True)
    targets = keras.Input((args.max_a_len,), dtype="int32", name="Input-Answer")
    answer_probas = AnswerLoss(name="Answer-Loss")(targets, mlm.output)
    train_model = keras.Model([*mlm.inputs, targets], answer_probas)
    train_model.compile(optimizer=Adam(learning_rate=args.learning_rate), jit_compile=True)
    mlm.compile(jit_compile=True)
    return train_model, mlm


def predict_answers(data, encoder, model, batch_size):
    """{id: answer}: every passage decoded on its own, then the passages vote."""
    rows, passage_ids = [], []
    for record in data:
        for item in record["passages"]:
            ids, p_ids = encoder.inputs(record["question"], clean_passage(item["passage"]))
            rows.append(ids)
            passage_ids.append(p_ids)
    token_ids = sequence_padding(rows, length=encoder.length)
    probas = model.predict([token_ids, np.zeros_like(token_ids)], batch_size=batch_size, verbose=0)
    probas = probas[:, 1 : encoder.max_a_len + 1]
    predictions, row = {}, 0
    for record in data:
        candidates = []
        for _ in record["passages"]:
            ids, score = mlm_decode(probas[row], passage_ids[row], encoder.tokenizer._token_end_id)
            candidates.append((encoder.tokenizer.decode(ids), score))
            row += 1
        predictions[record["id"]] = vote(candidates)
    return predictions


def evaluate(data, encoder, model, batch_size, path):
    predictions = predict_answers(data, encoder, model, batch_size)
    golds = {r["id"]: gold_answers(r) for r in data}
    write_json_lines(path, [dict(id=r["id"], question=r["question"], answer=predictions[r["id"]],
                                 golds=golds[r["id"]]) for r in data])  # fmt: skip
    return score_answers(predictions, golds)


def main():
    parser = common_parser(__doc__.split("\n")[0], MAX_P_LEN, BATCH_SIZE, EPOCHS, LEARNING_RATE)
    parser.add_argument("--max-q-len", type=int, default=MAX_Q_LEN)
    parser.add_argument("--max-a-len", type=int, default=MAX_A_LEN)
    args = parser.parse_args()  # --maxlen is the passage length in tokens
    train, valid = prepare_run(parser, args)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    encoder = Encoder(tokenizer, args.maxlen, args.max_q_len, args.max_a_len)
    train_model, mlm = build_models(args)

    def evaluate_fn(path):
        return evaluate(valid, encoder, mlm, 64, path)

    batches = Batches(train, encoder, batch_size=args.batch_size)
    train_and_evaluate(train_model, batches, valid, evaluate_fn, args)


if __name__ == "__main__":
    main()
