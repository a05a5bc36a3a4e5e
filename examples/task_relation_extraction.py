"""Triple extraction, half pointer / half tagging (kexue.fm/archives/7161) on DuIE / SKE.

    python examples/task_relation_extraction.py --smoke --output-dir /tmp/re
    python examples/task_relation_extraction.py --demo --output-dir /tmp/re_demo
    python examples/task_relation_extraction.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --train train_data.json \
        --valid dev_data.json --schema all_50_schemas --output-dir re_output

Subject start/end pointers P_s = sigmoid(H W_s)^2; the sampled subject's start and
end vectors condition a fresh conditional LayerNorm on H; object pointers per
predicate P_o = sigmoid(Dense(2R))^4. EMA weights are evaluated (micro P/R/F1 over
SPO sets) and the best ones saved as best_model.weights.h5.
"""

import os
import random

import keras
import numpy as np
from keras import ops
from task_common import (
    DATASETS,
    DEMO_CONFIG,
    TINY_CONFIG,
    check_exists,
    check_model_arguments,
    common_parser,
    random_model_files,
    read_json_lines,
    write_json_lines,
)

from bert4x.layers import LayerNormalization
from bert4x.models import build_transformer_model
from bert4x.optimizers import Adam, extend_with_exponential_moving_average
from bert4x.snippets import DataGenerator, sequence_padding
from bert4x.tokenizers import Tokenizer

MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE = 128, 64, 20, 1e-5
EMA_MOMENTUM = 0.999
START_THRESHOLD, END_THRESHOLD = 0.6, 0.5
SUBJECT_POWER, OBJECT_POWER = 2, 4  # the "p^n trick" against label imbalance
SAMPLE = os.path.join(DATASETS, "duie_sample.json")
SAMPLE_SCHEMA = os.path.join(DATASETS, "duie_schemas.json")
DEMO_SIZES = dict(train=3000, valid=300, epochs=6, batch_size=32, learning_rate=1e-3)


def search(pattern, sequence):
    """First index of the sub-list `pattern` in `sequence`, -1 if absent."""
    n = len(pattern)
    for i in range(len(sequence) - n + 1):
        if sequence[i : i + n] == pattern:
            return i
    return -1


def decode_subjects(probas, start=START_THRESHOLD, end=END_THRESHOLD):
    """probas [n, 2] -> [(start, end)]: every start > threshold pairs with the nearest end >= it."""
    starts, ends = np.where(probas[:, 0] > start)[0], np.where(probas[:, 1] > end)[0]
    return [(i, ends[ends >= i][0]) for i in starts if (ends >= i).any()]


def decode_objects(probas, start=START_THRESHOLD, end=END_THRESHOLD):
    """probas [n, R, 2] -> [(start, end, predicate)]: first end with the same predicate >= start."""
    starts, ends = np.argwhere(probas[:, :, 0] > start), np.argwhere(probas[:, :, 1] > end)
    objects = []
    for i, p in starts:
        for j, q in ends:
            if j >= i and q == p:
                objects.append((int(i), int(j), int(p)))
                break
    return objects


def micro_f1(predictions, golds):
    """Micro (F1, precision, recall) over lists of sets: X = sum|R & T|, F1 = 2X / (Y + Z)."""
    x = sum(len(r & t) for r, t in zip(predictions, golds))
    y, z = sum(map(len, predictions)), sum(map(len, golds))
    return 2 * x / max(y + z, 1), x / max(y, 1), x / max(z, 1)


def load_data(path, predicate2id=None):
    records = read_json_lines(path, ("text", "spo_list"))
    for number, record in enumerate(records, 1):
        for spo in record["spo_list"]:
            if not {"subject", "predicate", "object"} <= set(spo):
                raise ValueError(f"{path}: record {number}: spo needs subject/predicate/object")
            if predicate2id is not None and spo["predicate"] not in predicate2id:
                raise ValueError(
                    f"{path}: record {number}: predicate {spo['predicate']!r} "
                    "is not in the schema file"
                )
    return records


def generate_demo_data(count, rng):
    """Template sentences about random names: the model must read the context, not the names."""
    chars = "明华建国伟芳秀英杰志强军平红云海涛晓丽静宏文斌博雪梅鹏飞宇轩浩然思远嘉"
    surnames, places = (
        "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗",
        ["北京", "上海", "杭州", "成都", "武汉", "南京", "西安", "长沙", "广州"],
    )

    def name():
        return rng.choice(surnames) + "".join(rng.choices(chars, k=rng.randint(1, 2)))

    def work():
        return "".join(rng.choices(chars, k=rng.randint(2, 4)))

    templates = [
        ("{a}出生于{p}，毕业于{u}。", [("a", "出生地", "p"), ("a", "毕业院校", "u")]),
        ("《{w}》是{a}创作的长篇小说。", [("w", "作者", "a")]),
        ("电影《{w}》由{a}执导，{b}主演。", [("w", "导演", "a"), ("w", "主演", "b")]),
        ("{a}和妻子{b}定居在{p}。", [("a", "妻子", "b"), ("b", "丈夫", "a")]),
        ("{b}是{a}的父亲，{a}出生于{p}。", [("a", "父亲", "b"), ("a", "出生地", "p")]),
    ]
    data = []
    for _ in range(count):
        template, triples = rng.choice(templates)
        slots = dict(a=name(), b=name(), w=work(), p=rng.choice(places))
        slots["u"] = rng.choice(places) + rng.choice(["大学", "师范大学", "理工大学"])
        spo = [dict(subject=slots[s], predicate=p, object=slots[o]) for s, p, o in triples]
        data.append(dict(text=template.format(**slots), spo_list=spo))
    return data


class TotalLoss(keras.layers.Layer):
    """Padding-masked BCE: subject mean over 2 pointers, object sum over predicates of the mean."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        token_ids, subject_labels, object_labels, subject_preds, object_preds = inputs
        mask = ops.cast(token_ids > 0, "float32")  # [b, n]
        subject_loss = ops.mean(ops.binary_crossentropy(subject_labels, subject_preds), -1)
        object_loss = ops.binary_crossentropy(object_labels, object_preds)  # [b, n, R, 2]
        object_loss = ops.sum(ops.mean(object_loss, -1), -1)
        total = ops.sum((subject_loss + object_loss) * mask) / ops.sum(mask)
        self.add_loss(total)
        return subject_preds

    def compute_mask(self, inputs, mask=None):
        return None


class Power(keras.layers.Layer):
    """y = x ** power (sharpens sigmoid pointers); keeps the padding mask."""

    def __init__(self, power, **kwargs):
        super().__init__(**kwargs)
        self.power, self.supports_masking = power, True

    def call(self, x):
        return x**self.power

    def get_config(self):
        return {**super().get_config(), "power": self.power}


class MaskedReshape(keras.layers.Reshape):
    """Reshape of the trailing axes that keeps the [b, n] padding mask."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True


class GatherSubject(keras.layers.Layer):
    """c = [H[start], H[end]]: hidden [b, n, D], ids [b, 2] -> [b, 2D]."""

    def call(self, hidden, subject_ids):
        vectors = ops.take_along_axis(hidden, ops.cast(subject_ids, "int32")[:, :, None], axis=1)
        return ops.reshape(vectors, (-1, 2 * hidden.shape[-1]))

    def compute_mask(self, hidden, subject_ids, mask=None):
        return None


def build_models(args, num_predicates):
    """-> (train_model, subject_model, object_model, optimizer)."""
    encoder = build_transformer_model(args.config, args.checkpoint, model=args.model)
    token_ids, segment_ids = encoder.inputs
    hidden = encoder.output  # [b, n, D]
    subject_preds = keras.layers.Dense(2, activation="sigmoid", name="Subject-Pointer")(hidden)
    subject_preds = Power(SUBJECT_POWER, name="Subject-Power")(subject_preds)
    subject_ids = keras.Input((2,), dtype="int32", name="Input-Subject-Ids")
    condition = GatherSubject(name="Subject-Vector")(hidden, subject_ids)  # [b, 2D]
    normed = LayerNormalization(conditional=True, name="Subject-Condition-Norm")(
        [hidden, condition]
    )
    object_preds = keras.layers.Dense(2 * num_predicates, activation="sigmoid", name="Object")(
        normed
    )
    object_preds = Power(OBJECT_POWER, name="Object-Power")(object_preds)
    object_preds = MaskedReshape((-1, num_predicates, 2))(object_preds)  # [b, n, R, 2]
    subject_model = keras.Model([token_ids, segment_ids], subject_preds)
    object_model = keras.Model([token_ids, segment_ids, subject_ids], object_preds)
    subject_labels = keras.Input((None, 2), name="Input-Subject-Labels")
    object_labels = keras.Input((None, num_predicates, 2), name="Input-Object-Labels")
    output = TotalLoss()([token_ids, subject_labels, object_labels, subject_preds, object_preds])
    train_model = keras.Model(
        [token_ids, segment_ids, subject_ids, subject_labels, object_labels], output
    )
    optimizer = extend_with_exponential_moving_average(Adam)(
        learning_rate=args.learning_rate, ema_momentum=args.ema_momentum
    )
    train_model.compile(optimizer=optimizer, jit_compile=True)
    for model in (subject_model, object_model):
        model.compile(jit_compile=True)
    return train_model, subject_model, object_model, optimizer


class Batches(DataGenerator):
    """One random subject per text per epoch; everything padded to maxlen (one XLA shape)."""

    def __init__(self, data, tokenizer, predicate2id, maxlen, **kwargs):
        super().__init__(data, **kwargs)
        self.tokenizer, self.predicate2id, self.maxlen = tokenizer, predicate2id, maxlen

    def example(self, record):
        token_ids, segment_ids = self.tokenizer.encode(record["text"], maxlen=self.maxlen)
        spoes = {}
        for spo in record["spo_list"]:
            s = self.tokenizer.encode(spo["subject"])[0][1:-1]
            o = self.tokenizer.encode(spo["object"])[0][1:-1]
            si, oi = search(s, token_ids), search(o, token_ids)
            if si >= 0 and oi >= 0:
                key = (si, si + len(s) - 1)
                spoes.setdefault(key, []).append(
                    (oi, oi + len(o) - 1, self.predicate2id[spo["predicate"]])
                )
        if not spoes:
            return None
        subject_labels = np.zeros((len(token_ids), 2))
        for s in spoes:
            subject_labels[s[0], 0] = subject_labels[s[1], 1] = 1
        start = random.choice([s[0] for s in spoes])
        end = random.choice([s[1] for s in spoes if s[1] >= start])
        object_labels = np.zeros((len(token_ids), len(self.predicate2id), 2))
        for o in spoes.get((start, end), []):
            object_labels[o[0], o[2], 0] = object_labels[o[1], o[2], 1] = 1
        return token_ids, segment_ids, [start, end], subject_labels, object_labels

    def __iter__(self, random=False):
        batch = []
        for is_end, record in self.sample(random):
            example = self.example(record)
            if example is not None:
                batch.append(example)
            if batch and (len(batch) == self.batch_size or is_end):
                columns = list(zip(*batch))
                arrays = [sequence_padding(c, length=self.maxlen) for c in columns[:2]]
                arrays.append(np.array(columns[2]))
                arrays += [sequence_padding(c, length=self.maxlen) for c in columns[3:]]
                yield (tuple(arrays),)
                batch = []


def extract_spoes(texts, tokenizer, subject_model, object_model, id2predicate, maxlen):
    """texts -> list of sets of (subject, predicate, object) strings, spans mapped by rematch."""
    tokens = [tokenizer.tokenize(t, maxlen=maxlen) for t in texts]
    token_ids = sequence_padding([tokenizer.tokens_to_ids(t) for t in tokens], length=maxlen)
    segment_ids = np.zeros_like(token_ids)
    subject_probas = subject_model.predict([token_ids, segment_ids], verbose=0, batch_size=64)
    subject_probas[:, 0] = 0  # [CLS]
    jobs = []  # (text index, subject span)
    for i, t in enumerate(tokens):
        subject_probas[i, len(t) - 1 :] = 0  # [SEP] and padding
        jobs += [(i, s) for s in decode_subjects(subject_probas[i])]
    results = [set() for _ in texts]
    if not jobs:
        return results
    rows = np.array([i for i, _ in jobs])
    object_probas = object_model.predict(
        [token_ids[rows], segment_ids[rows], np.array([s for _, s in jobs])],
        verbose=0,
        batch_size=64,
    )
    for (i, (s0, s1)), probas in zip(jobs, object_probas):
        mapping = tokenizer.rematch(texts[i], tokens[i])
        text = texts[i]
        for o0, o1, p in decode_objects(probas[: len(tokens[i])]):
            if mapping[s0] and mapping[s1] and mapping[o0] and mapping[o1]:
                subject = text[mapping[s0][0] : mapping[s1][-1] + 1]
                results[i].add(
                    (subject, id2predicate[p], text[mapping[o0][0] : mapping[o1][-1] + 1])
                )
    return results


def normalised(spoes, tokenizer):
    """Compare triples after tokenisation, so case and spacing do not count."""
    return {(tuple(tokenizer.tokenize(s)), p, tuple(tokenizer.tokenize(o))) for s, p, o in spoes}


def evaluate(data, tokenizer, models, id2predicate, maxlen, path):
    predictions = extract_spoes([d["text"] for d in data], tokenizer, *models, id2predicate, maxlen)
    golds = [{(s["subject"], s["predicate"], s["object"]) for s in d["spo_list"]} for d in data]
    f1, precision, recall = micro_f1(
        [normalised(r, tokenizer) for r in predictions], [normalised(t, tokenizer) for t in golds]
    )
    as_list = lambda spoes: [dict(subject=s, predicate=p, object=o) for s, p, o in sorted(spoes)]  # noqa: E731
    write_json_lines(path, [
        dict(text=d["text"], spo_list=as_list(t), spo_list_pred=as_list(r),
             new=as_list(r - t), lack=as_list(t - r))
        for d, r, t in zip(data, predictions, golds)
    ])  # fmt: skip
    return f1, precision, recall


class Evaluator(keras.callbacks.Callback):
    """Evaluate the EMA weights each epoch; keep the best as best_model.weights.h5."""

    def __init__(self, optimizer, evaluate_fn, output_dir):
        super().__init__()
        self.optimizer, self.evaluate_fn, self.output_dir = optimizer, evaluate_fn, output_dir
        self.best_f1 = -1.0

    def on_epoch_end(self, epoch, logs=None):
        self.optimizer.apply_ema_weights()
        f1, precision, recall = self.evaluate_fn(os.path.join(self.output_dir, "dev_pred.json"))
        if f1 >= self.best_f1:
            self.best_f1 = f1
            self.model.save_weights(os.path.join(self.output_dir, "best_model.weights.h5"))
        self.optimizer.reset_old_weights()
        print(f"\nepoch {epoch + 1}: f1: {f1:.5f}, precision: {precision:.5f}, "
              f"recall: {recall:.5f}, best f1: {self.best_f1:.5f}")  # fmt: skip


def main():
    parser = common_parser(__doc__.split("\n")[0], MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE)
    parser.add_argument("--schema", help="all_50_schemas: JSON lines with 'predicate'")
    parser.add_argument("--ema-momentum", type=float, default=EMA_MOMENTUM)
    args = parser.parse_args()
    check_model_arguments(parser, args)
    random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.demo:
        rng = random.Random(args.seed)
        train, valid = (
            generate_demo_data(DEMO_SIZES["train"], rng),
            generate_demo_data(DEMO_SIZES["valid"], rng),
        )
        predicates = sorted({s["predicate"] for d in train for s in d["spo_list"]})
        for key in ("epochs", "batch_size", "learning_rate"):
            setattr(args, key, DEMO_SIZES[key])
        args.maxlen, args.ema_momentum = min(args.maxlen, 48), 0.99
    else:
        schema = args.schema or (SAMPLE_SCHEMA if args.smoke else None)
        check_exists(schema, "--schema")
        predicates = [r["predicate"] for r in read_json_lines(schema, ("predicate",), "schema")]
        predicate2id = {p: i for i, p in enumerate(predicates)}
        train = load_data(args.train or SAMPLE, predicate2id)
        valid = load_data(args.valid or SAMPLE, predicate2id)
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size, args.maxlen = 1, 3, 8, 64
        args.ema_momentum = 0.9
    if not args.checkpoint:
        texts = [d["text"] for d in train + valid]
        config = TINY_CONFIG if args.smoke else DEMO_CONFIG
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, texts, config, args.model
        )
    predicate2id = {p: i for i, p in enumerate(predicates)}
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    models = build_models(args, len(predicates))
    batches = Batches(train, tokenizer, predicate2id, args.maxlen, batch_size=args.batch_size)

    def evaluate_fn(path):
        return evaluate(valid, tokenizer, models[1:3], predicates, args.maxlen, path)

    if args.demo:
        f1, precision, recall = evaluate_fn(
            os.path.join(args.output_dir, "dev_pred_untrained.json")
        )
        print(f"baseline (untrained model): f1: {f1:.5f}, precision: {precision:.5f}, "
              f"recall: {recall:.5f}")  # fmt: skip
    models[0].fit(
        batches.forfit(),
        steps_per_epoch=args.steps_per_epoch or len(batches),
        epochs=args.epochs,
        callbacks=[Evaluator(models[3], evaluate_fn, args.output_dir)],
    )


if __name__ == "__main__":
    main()
