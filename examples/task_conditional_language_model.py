"""Class-conditional text generation with Conditional LayerNorm (kexue.fm/archives/7124).

    python examples/task_conditional_language_model.py --smoke --output-dir /tmp/clm
    python examples/task_conditional_language_model.py --demo --output-dir /tmp/clm_demo
    python examples/task_conditional_language_model.py --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --train train.tsv --valid valid.tsv

Data: `text<TAB>label` lines, label an int in [0, --num-labels), cut into pieces of at
most maxlen - 2 characters at sentence punctuation. The label goes through
Embedding(num_labels, 128) to a condition c [b, 128] that feeds a BERT built with
application='lm' and layer_norm_cond=128: every LayerNorm becomes conditional on c, its
deltas start at zero, no hidden projection. Loss: next-token cross entropy over
non-padding targets. After each epoch, --samples texts per label are sampled top-p from
[CLS] to [SEP] by `bert4x.generation.generate` (c as `condition_inputs`). A
bag-of-characters logistic regression, trained on the training pieces (accuracy printed
on the held-out ones: --valid, or 20% of the data with --smoke/--demo), classifies them;
the intended-class rate is how often a sample gets the label it was generated for. --demo
also trains the same model on shuffled labels (it learns the texts, not the condition):
its rate is the baseline.
"""

import functools
import os
import random

import keras
import numpy as np
from keras import ops
from task_common import (
    DATASETS,
    DEMO_CONFIG,
    SPECIAL_TOKENS,
    TINY_CONFIG,
    NextTokenLoss,
    check_exists,
    check_model_arguments,
    common_parser,
    random_model_files,
    write_json_lines,
)

from bert4x.generation import generate
from bert4x.models import build_transformer_model
from bert4x.optimizers import Adam
from bert4x.snippets import DataGenerator, sequence_padding, text_segmentate
from bert4x.tokenizers import Tokenizer, load_vocab

MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE = 128, 32, 20, 1e-5  # as in bert4keras
NUM_LABELS, COND_SIZE, TOP_P, SAMPLES = 2, 128, 0.95, 50
SEPS, STRIPS = "\n。！？!?；;，, ", "；;，, "
SAMPLE = os.path.join(DATASETS, "sentiment_sample.tsv")
SMOKE = dict(epochs=1, steps_per_epoch=3, batch_size=4, maxlen=32, samples=3, classifier_epochs=5)
DEMO_TEXTS = 3000
DEMO = dict(epochs=4, batch_size=32, learning_rate=1e-3, maxlen=32, samples=100)
SUBJECTS = "这家酒店 这部手机 这本书 这家餐厅 这件衣服 这款耳机 快递 客服 这部电影 房间".split()
WORDS = [  # label 0 (negative), label 1 (positive): adjectives, then closing phrases
    ("太差了 很失望 不值这个价 很糟糕 质量很差 让人生气".split(),
     "再也不会来了 已经申请退货 差评 千万别买 后悔了".split()),
    ("很好 非常满意 物超所值 很棒 质量不错 超出预期".split(),
     "下次还会再来 推荐给朋友 好评 值得购买 很开心".split()),
]  # fmt: skip


def load_tsv(path, num_labels):
    """`text<TAB>label` lines -> [(text, label)]; a bad line raises ValueError naming path:line."""
    check_exists(path, "TSV data")
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 2 or not fields[0].strip():
                raise ValueError(f"{path}:{number}: expected 'text<TAB>label', "
                                 f"got {line.strip()[:60]!r}")  # fmt: skip
            label = fields[1].strip()
            if not (label.isdigit() and int(label) < num_labels):  # '-1', '1.0', 'x' fail
                raise ValueError(f"{path}:{number}: the label must be an int in [0, "
                                 f"{num_labels}) (--num-labels), got {label!r}")  # fmt: skip
            records.append((fields[0].strip(), int(label)))
    return records


def segment(records, maxlen):
    """Each text cut into pieces of <= maxlen - 2 chars (room for [CLS] and [SEP])."""
    return [(p, label) for text, label in records
            for p in text_segmentate(text, maxlen - 2, SEPS, STRIPS)]  # fmt: skip


def demo_corpus(count, rng):
    """Template reviews: half per label, words drawn from the label's word lists."""
    records = []
    for i in range(count):
        label = i % 2
        adjectives, endings = WORDS[label]
        text = rng.choice(SUBJECTS) + rng.choice(adjectives)
        if rng.random() < 0.7:
            text += "，" + rng.choice(endings)
        records.append((text + rng.choice("。！"), label))
    rng.shuffle(records)
    return records


class Batches(DataGenerator):
    def __init__(self, records, tokenizer, maxlen, **kwargs):
        super().__init__(records, **kwargs)
        self.tokenizer, self.maxlen = tokenizer, maxlen

    def __iter__(self, random=False):
        tokens, labels = [], []
        for is_end, (text, label) in self.sample(random):
            tokens.append(self.tokenizer.encode(text, maxlen=self.maxlen)[0])
            labels.append([label])
            if len(tokens) == self.batch_size or is_end:
                token_ids = sequence_padding(tokens, length=self.maxlen)  # one XLA shape
                yield ((token_ids, np.zeros_like(token_ids), np.array(labels)),)
                tokens, labels = [], []


def build_model(config, checkpoint=None, num_labels=NUM_LABELS, learning_rate=LEARNING_RATE,
                model="bert", keep_tokens=None):  # fmt: skip
    """(train_model, lm, label_model): label_model: label [b, 1] -> c [b, 128]; lm: [token_ids,
    segment_ids, c] -> probas [b, n, V], every LayerNorm conditional on c."""
    lm = build_transformer_model(config, checkpoint, model=model, application="lm",
                                 keep_tokens=keep_tokens, layer_norm_cond=COND_SIZE)  # fmt: skip
    label = keras.Input(shape=(1,), dtype="int32", name="Input-Label")
    cond = keras.layers.Embedding(num_labels, COND_SIZE, name="Embedding-Label")(label)
    label_model = keras.Model(label, keras.layers.Reshape((COND_SIZE,))(cond))  # [b, 128]
    token_ids, segment_ids = (keras.Input((None,), dtype="int32") for _ in range(2))
    probas = lm([token_ids, segment_ids, label_model(label)])
    train_model = keras.Model([token_ids, segment_ids, label], NextTokenLoss()(token_ids, probas))
    train_model.compile(optimizer=Adam(learning_rate=learning_rate), jit_compile=True)
    return train_model, lm, label_model


def sample_texts(lm, label_model, tokenizer, labels, maxlen, top_p=TOP_P, seed=None):
    """One top-p sample per label, from [CLS] to [SEP] (at most maxlen tokens in all)."""
    start = np.full((len(labels), 1), tokenizer._token_start_id, "int32")
    condition = ops.convert_to_numpy(label_model(np.asarray(labels, "int32")[:, None]))
    end_id = tokenizer._token_end_id
    new = generate(lm, start, max_new_tokens=maxlen - 1, strategy="top_p", top_p=top_p,
                   end_id=end_id, condition_inputs=condition, seed=seed)  # fmt: skip
    return [tokenizer.decode([i for i in row if i > 0]) for row in new.tolist()]


def bag_of_chars(tokenizer, texts):
    """Multi-hot [n, V] of the token ids of each text ([CLS]/[SEP] not counted)."""
    features = np.zeros((len(texts), tokenizer.vocab_size), "float32")
    for row, text in enumerate(texts):
        features[row, tokenizer.encode(text)[0][1:-1]] = 1.0
    return features


def train_classifier(tokenizer, train, held_out, num_labels, epochs):
    """Logistic regression on bag-of-chars; returns (texts -> predicted labels, held-out acc)."""
    dense = keras.layers.Dense(num_labels, activation="softmax")
    classifier = keras.Sequential([keras.Input((tokenizer.vocab_size,)), dense])
    classifier.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = bag_of_chars(tokenizer, [t for t, _ in train]), np.array([lb for _, lb in train])
    classifier.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    predict = lambda texts: classifier.predict(  # noqa: E731
        bag_of_chars(tokenizer, texts), verbose=0).argmax(-1)  # fmt: skip
    accuracy = np.mean(predict([t for t, _ in held_out]) == [lb for _, lb in held_out])
    return predict, float(accuracy)


def intended_rates(labels, predicted, num_labels):
    """(overall rate of predicted == label, [rate per label]); nan for a label not sampled."""
    labels, hits = np.asarray(labels), np.asarray(predicted) == np.asarray(labels)
    per_label = [float(hits[labels == k].mean()) if (labels == k).any() else float("nan")
                 for k in range(num_labels)]  # fmt: skip
    return float(hits.mean()), per_label


class Evaluator(keras.callbacks.Callback):
    """Intended-class rate of sampled texts; the best weights go to best_model.weights.h5."""

    def __init__(self, sample, classify, args, name="generated"):
        super().__init__()
        self.sample, self.classify, self.args = sample, classify, args  # labels -> texts
        self.name, self.best, self.rates = name, -1.0, []
        self.labels = [k for k in range(args.num_labels) for _ in range(args.samples)]

    def evaluate(self, epoch):
        texts = self.sample(self.labels, self.args.maxlen, self.args.top_p, self.args.seed + epoch)
        predicted = self.classify(texts)
        records = zip(self.labels, texts, predicted)
        write_json_lines(
            os.path.join(self.args.output_dir, f"{self.name}.json"),
            [dict(label=k, text=t, predicted=int(p)) for k, t, p in records],
        )
        return *intended_rates(self.labels, predicted, self.args.num_labels), texts

    def on_epoch_end(self, epoch, logs=None):
        rate, per_label, texts = self.evaluate(epoch)
        self.rates.append(rate)
        if rate >= self.best and self.name == "generated":  # not for the baseline
            self.model.save_weights(os.path.join(self.args.output_dir, "best_model.weights.h5"))
        self.best = max(self.best, rate)
        labels = ", ".join(f"label {k}: {r:.3f}" for k, r in enumerate(per_label))
        print(f"\nepoch {epoch + 1} ({self.name}): intended-class rate: {rate:.3f} "
              f"({labels}), best: {self.best:.3f}")  # fmt: skip
        for k in range(self.args.num_labels):  # the first sample of each label
            print(f"  label {k}: {texts[k * self.args.samples]}")


def prepare_data(args, rng):
    """(train, held-out) pieces: --demo generates them, else --train and --valid (or 20%)."""
    if args.demo:
        records = demo_corpus(DEMO_TEXTS, rng)
        write_json_lines(os.path.join(args.output_dir, "demo_corpus.json"),
                         [dict(text=t, label=lb) for t, lb in records])  # fmt: skip
        held_out = None
    else:
        records = load_tsv(args.train or SAMPLE, args.num_labels)
        held_out = args.valid and load_tsv(args.valid, args.num_labels)
    if not held_out:
        records = rng.sample(records, len(records))
        held_out, records = records[: len(records) // 5], records[len(records) // 5 :]
    return segment(records, args.maxlen), segment(held_out, args.maxlen)


def fit(train_model, records, tokenizer, evaluator):
    """Train on (text, label) records, sampling and scoring after every epoch."""
    args = evaluator.args
    batches = Batches(records, tokenizer, args.maxlen, batch_size=args.batch_size)
    train_model.fit(batches.forfit(), steps_per_epoch=args.steps_per_epoch or len(batches),
                    epochs=args.epochs, callbacks=[evaluator], verbose=2)  # fmt: skip
    return evaluator


def main():
    parser = common_parser(__doc__.split("\n")[0], MAXLEN, BATCH_SIZE, EPOCHS, LEARNING_RATE)
    add = parser.add_argument
    add("--num-labels", type=int, default=NUM_LABELS)
    add("--samples", type=int, default=SAMPLES, help="generated samples per label and epoch")
    add("--top-p", type=float, default=TOP_P)
    add("--classifier-epochs", type=int, default=20)
    add("--shuffled-baseline", action="store_true", help="also train on shuffled labels "
        "(on with --demo): an LM that learns the texts but not the condition")  # fmt: skip
    args = parser.parse_args()
    check_model_arguments(parser, args)
    if args.num_labels < 2:
        parser.error(f"--num-labels must be at least 2, got {args.num_labels}")
    vars(args).update(SMOKE if args.smoke else (DEMO if args.demo else {}))
    random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    rng = random.Random(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    train, held_out = prepare_data(args, rng)
    print(f"{len(train)} training pieces, {len(held_out)} held-out pieces")
    if not args.checkpoint:
        config = TINY_CONFIG if args.smoke else DEMO_CONFIG
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, [t for t, _ in train + held_out], config, args.model)  # fmt: skip
    token_dict, keep_tokens = load_vocab(args.vocab, simplified=True, startswith=SPECIAL_TOKENS)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    classify, accuracy = train_classifier(
        tokenizer, train, held_out, args.num_labels, args.classifier_epochs
    )
    print(f"held-out classifier accuracy: {accuracy:.3f} ({len(held_out)} pieces)")
    train_model, lm, label_model = build_model(
        args.config, args.checkpoint, args.num_labels, args.learning_rate, args.model, keep_tokens
    )
    sample = functools.partial(sample_texts, lm, label_model, tokenizer)
    initial = train_model.get_weights() if args.shuffled_baseline or args.demo else None
    result = fit(train_model, train, tokenizer, Evaluator(sample, classify, args))
    if initial is None:
        return
    train_model.set_weights(initial)  # the same model and steps, labels shuffled
    train_model.compile(optimizer=Adam(learning_rate=args.learning_rate), jit_compile=True)
    labels = rng.sample([lb for _, lb in train], len(train))
    shuffled = [(t, lb) for (t, _), lb in zip(train, labels)]
    base = fit(train_model, shuffled, tokenizer, Evaluator(sample, classify, args, "shuffled"))
    print(f"intended-class rate: best {result.best:.3f}, last {result.rates[-1]:.3f}; "
          f"label-shuffled baseline: best {base.best:.3f}, last {base.rates[-1]:.3f}; "
          f"classifier held-out accuracy {accuracy:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
