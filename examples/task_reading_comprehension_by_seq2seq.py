"""Reading comprehension as UniLM seq2seq generation over all passages (kexue.fm/archives/7115).

    python examples/task_reading_comprehension_by_seq2seq.py --smoke --output-dir /tmp/rc_s2s
    python examples/task_reading_comprehension_by_seq2seq.py --demo --output-dir /tmp/rc_s2s_demo
    python examples/task_reading_comprehension_by_seq2seq.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --train WebQA.json --valid SogouQA.json

Input [CLS] passage [SEP] question [SEP] answer [SEP]; segments 0 for passage + question,
1 for answer + final [SEP]; UniLM loss on segment 1 (a no-answer passage learns answer = '').
Decoding: one beam search over all passages of a question. At step 0 passages whose most
likely first token is [SEP] are dropped as "no answer" ('' when all are); at every step the
per-passage next-token distributions p_j are merged as sum p_j^2 / (sum p_j + 1). In
extractive mode (default) tokens that do not continue an n-gram of a passage get p = 0
before merging. Metric: Accuracy, F1, Final (Sogou script).
"""

import keras
import numpy as np
from keras import ops
from reading_comprehension_common import (
    QuestionBatches,
    clean_passage,
    gold_answers,
    next_tokens,
    prepare_run,
    score_answers,
    train_and_evaluate,
)
from task_common import (
    common_parser,
    write_json_lines,
)

from bert4x.decoding import AutoRegressiveDecoder
from bert4x.models import build_transformer_model
from bert4x.optimizers import Adam
from bert4x.snippets import sequence_padding
from bert4x.tokenizers import Tokenizer

MAX_P_LEN, MAX_Q_LEN, MAX_A_LEN = 256, 64, 32
BATCH_SIZE, EPOCHS, LEARNING_RATE, TOPK = 32, 10, 1e-5, 1


class Encoder:
    """Ids of [CLS] p [SEP] q [SEP] (source) and answer [SEP] (target), one padded length."""

    def __init__(self, tokenizer, max_p_len, max_q_len, max_a_len):
        self.tokenizer, self.max_p_len, self.max_q_len, self.max_a_len = (
            tokenizer, max_p_len, max_q_len, max_a_len)  # fmt: skip
        self.end_id = tokenizer._token_end_id
        self.length = max_p_len + max_q_len + max_a_len + 3

    def pieces(self, text, maxlen):
        return self.tokenizer.encode(text)[0][1:-1][:maxlen]

    def source(self, question, passage):
        p_ids, q_ids = self.pieces(passage, self.max_p_len), self.pieces(question, self.max_q_len)
        return [self.tokenizer._token_start_id] + p_ids + [self.end_id] + q_ids + [self.end_id]

    def sample(self, question, passage, answer):
        """(token_ids, segment_ids) of one training sample; answer '' gives the target [SEP]."""
        source = self.source(question, passage)
        target = self.pieces(answer, self.max_a_len - 1) + [self.end_id]
        return source + target, [0] * len(source) + [1] * len(target)


class Batches(QuestionBatches):
    """One random passage per question per epoch; its first fitting alternative is the answer."""

    def __iter__(self, random=False):
        token_ids, segment_ids = [], []
        for is_end, question, passage, answer in self.examples(random):
            ids, segments = self.encoder.sample(question, passage, answer)
            token_ids.append(ids)
            segment_ids.append(segments)
            if len(token_ids) == self.batch_size or is_end:
                length = self.encoder.length  # fixed: XLA compiles the step once
                yield ((sequence_padding(token_ids, length=length),
                        sequence_padding(segment_ids, length=length)),)  # fmt: skip
                token_ids, segment_ids = [], []


def unilm_loss(token_ids, segment_ids, probas):
    """Next-token cross entropy where the target is in segment 1 (mask = segment_ids[:, 1:])."""
    mask = ops.cast(segment_ids[:, 1:], "float32")
    loss = ops.sparse_categorical_crossentropy(token_ids[:, 1:], probas[:, :-1])
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


class UnilmLoss(keras.layers.Layer):
    def call(self, token_ids, segment_ids, probas):
        self.add_loss(unilm_loss(token_ids, segment_ids, probas))
        return probas

    def compute_mask(self, *args, **kwargs):
        return None


class PositionProbas(keras.layers.Layer):
    """probas [b, L, V], positions [b] -> probas[i, positions[i]] [b, V] (inside the graph)."""

    def call(self, probas, positions):
        one_hot = ops.one_hot(positions, ops.shape(probas)[1], dtype=probas.dtype)
        return ops.einsum("blv,bl->bv", probas, one_hot)

    def compute_mask(self, *args, **kwargs):
        return None


def build_models(args):
    """(training model, next-token model [token_ids, segment_ids, position] -> [b, V])."""
    unilm = build_transformer_model(args.config, args.checkpoint, model=args.model,
                                    application="unilm", with_mlm=True)  # fmt: skip
    token_ids, segment_ids = unilm.inputs
    probas = UnilmLoss(name="UniLM-Loss")(token_ids, segment_ids, unilm.output)
    train_model = keras.Model(unilm.inputs, probas)
    train_model.compile(optimizer=Adam(learning_rate=args.learning_rate), jit_compile=True)
    positions = keras.Input((), dtype="int32", name="Input-Position")
    next_probas = PositionProbas(name="Next-Token")(unilm.output, positions)
    decoder_model = keras.Model([*unilm.inputs, positions], next_probas)
    decoder_model.compile(jit_compile=True)
    return train_model, decoder_model


def answering_passages(first_probas, end_id):
    """Indices of the passages whose most likely first answer token is not [SEP]."""
    return [j for j, p in enumerate(first_probas) if int(np.argmax(p)) != end_id]


def allowed_tokens(prefix, passages, end_id):
    """Tokens continuing `prefix` to an n-gram of any passage, plus [SEP]."""
    allowed = {end_id}
    for passage in passages:
        allowed |= next_tokens(prefix, passage)
    return sorted(allowed)


def merge_passages(probas, allowed=None):
    """probas [P, k, V] -> [k, V] = sum_j p_j^2 / (sum_j p_j + 1); allowed[b]: the tokens kept
    for beam b (all others zeroed in every passage first), None keeps all."""
    probas = np.asarray(probas, dtype="float64")
    if allowed is not None:
        keep = np.zeros(probas.shape[1:], dtype=bool)
        for b, tokens in enumerate(allowed):
            keep[b, list(tokens)] = True
        probas = np.where(keep[None], probas, 0.0)
    return (probas**2).sum(0) / (probas.sum(0) + 1)


class Reader(AutoRegressiveDecoder):
    """Joint beam search over a question's passages; `inputs` = one source per passage.

    states: None before step 0, then the indices of the passages that have an answer.
    """

    def __init__(self, model, encoder, rows, mode="extractive", **kwargs):
        super().__init__(start_id=None, end_id=encoder.end_id, maxlen=encoder.max_a_len, **kwargs)
        self.model, self.encoder, self.rows, self.mode = model, encoder, rows, mode

    def next_probas(self, sequences, sources):
        """Next-token probas [n, V] of each sequence; rows padded to a fixed count (one compile)."""
        length = self.encoder.length
        token_ids = sequence_padding(sequences, length=length)
        segment_ids = np.zeros_like(token_ids)
        for i, (sequence, source) in enumerate(zip(sequences, sources)):
            segment_ids[i, source : len(sequence)] = 1
        positions = np.array([len(s) - 1 for s in sequences])
        outputs = []
        for start in range(0, len(sequences), self.rows):
            chunk = slice(start, start + self.rows)
            pad = self.rows - len(positions[chunk])
            batch = [np.pad(a[chunk], [(0, pad)] + [(0, 0)] * (a.ndim - 1))
                     for a in (token_ids, segment_ids, positions)]  # fmt: skip
            outputs.append(keras.ops.convert_to_numpy(self.model.predict_on_batch(batch)))
        return np.concatenate(outputs)[: len(sequences)]

    @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
    def predict(self, inputs, output_ids, states):
        keep = list(range(len(inputs))) if states is None else states
        k = len(output_ids)
        sequences, sources = [], []
        for j in keep:
            for b in range(k):
                source = [int(t) for t in inputs[j][min(b, len(inputs[j]) - 1)]]
                sequences.append(source + [int(t) for t in output_ids[b]])
                sources.append(len(source))
        probas = self.next_probas(sequences, sources).reshape(len(keep), k, -1)
        if states is None:
            available = answering_passages(probas[:, 0], self.end_id)
            if not available:  # no passage answers: finish at once with ''
                scores = np.zeros_like(probas[0])
                scores[:, self.end_id] = 1
                return scores, []
            keep, probas = [keep[j] for j in available], probas[available]
        allowed = None
        if self.mode == "extractive":
            passages = [self.passage_ids(inputs[j][0]) for j in keep]
            allowed = [allowed_tokens(list(prefix), passages, self.end_id) for prefix in output_ids]
        return merge_passages(probas, allowed), keep

    def passage_ids(self, source):
        source = list(source)
        return source[1 : source.index(self.end_id)]

    def answer(self, question, passages, topk=TOPK):
        sources = [self.encoder.source(question, clean_passage(p)) for p in passages]
        return self.encoder.tokenizer.decode(self.beam_search(sources, topk=topk))


def evaluate(data, reader, topk, path):
    predictions = {r["id"]: reader.answer(r["question"], [p["passage"] for p in r["passages"]],
                                          topk) for r in data}  # fmt: skip
    golds = {r["id"]: gold_answers(r) for r in data}
    write_json_lines(path, [dict(id=r["id"], question=r["question"], answer=predictions[r["id"]],
                                 golds=golds[r["id"]]) for r in data])  # fmt: skip
    return score_answers(predictions, golds)


def main():
    parser = common_parser(__doc__.split("\n")[0], MAX_P_LEN, BATCH_SIZE, EPOCHS, LEARNING_RATE)
    parser.add_argument("--max-q-len", type=int, default=MAX_Q_LEN)
    parser.add_argument("--max-a-len", type=int, default=MAX_A_LEN)
    parser.add_argument("--topk", type=int, default=TOPK, help="beam width")
    parser.add_argument("--mode", choices=["extractive", "generative"], default="extractive")
    args = parser.parse_args()  # --maxlen is the passage length in tokens
    train, valid = prepare_run(parser, args)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    encoder = Encoder(tokenizer, args.maxlen, args.max_q_len, args.max_a_len)
    train_model, decoder_model = build_models(args)
    rows = args.topk * max(len(r["passages"]) for r in valid)
    reader = Reader(decoder_model, encoder, rows, args.mode)

    def evaluate_fn(path):
        return evaluate(valid, reader, args.topk, path)

    batches = Batches(train, encoder, batch_size=args.batch_size)
    train_and_evaluate(train_model, batches, valid, evaluate_fn, args)


if __name__ == "__main__":
    main()
