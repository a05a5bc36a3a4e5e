"""Reading-comprehension pieces of the MLM script (kexue.fm/archives/7148, /7115).

WebQA / SogouQA data: a JSON list of {"id", "question", "passages": [{"passage", "answer"}]};
answer '' means no answer in that passage, a space separates accepted alternatives.
"""

import os
import random
import re
import unicodedata
from collections import Counter

import keras
import numpy as np
from task_common import (
    DATASETS,
    DEMO_CONFIG,
    TINY_CONFIG,
    check_model_arguments,
    random_model_files,
    read_json_list,
)

from bert4x.snippets import DataGenerator

SAMPLE = os.path.join(DATASETS, "webqa_sample.json")
DEMO_SIZES = dict(train=3000, valid=300, epochs=8, batch_size=32, learning_rate=1e-3,
                  maxlen=64, max_q_len=16, max_a_len=8)  # fmt: skip
PASSAGE_SEPARATORS = re.compile("[ 、；，]")


def load_data(path):
    records = read_json_list(path, ("id", "question", "passages"))
    for record in records:
        passages = record["passages"]
        if not isinstance(passages, list) or not all(
            isinstance(p, dict) and {"passage", "answer"} <= set(p) for p in passages
        ):
            raise ValueError(f"{path}: record id={record['id']!r}: 'passages' must be a list of "
                             "{'passage': ..., 'answer': ...}")  # fmt: skip
    return records


def clean_passage(passage):
    """' ', '、', '；', '，' -> ',' as in the original preprocessing."""
    return PASSAGE_SEPARATORS.sub(",", passage)


def gold_answers(record):
    """All accepted answers of a question: the alternatives of its non-empty passage answers."""
    return sorted({a for p in record["passages"] for a in p["answer"].split(" ") if a})


def training_answer(passage, answer, max_chars):
    """The first alternative of `answer` found in the (cleaned, truncated) passage, else ''."""
    for alternative in answer.split(" "):
        if alternative and alternative in passage[:max_chars]:
            return alternative
    return ""


class QuestionBatches(DataGenerator):
    """Base of the scripts' batches: one random passage per question per epoch."""

    def __init__(self, data, encoder, **kwargs):
        super().__init__(data, **kwargs)
        self.encoder = encoder

    def examples(self, random=False):
        """(is_end, question, passage, answer): the cleaned passage and the first answer
        alternative that fits in it (see `training_answer`)."""
        for is_end, record in self.sample(random):
            item = np.random.choice(record["passages"])
            passage = clean_passage(item["passage"])
            answer = training_answer(passage, item["answer"], self.encoder.max_p_len - 2)
            yield is_end, record["question"], passage, answer


def next_tokens(prefix, sequence):
    """Tokens t such that prefix + [t] is an n-gram of `sequence` (the extractive restriction)."""
    k, prefix = len(prefix), list(prefix)
    return {
        sequence[j + k] for j in range(len(sequence) - k) if list(sequence[j : j + k]) == prefix
    }


def vote(candidates):
    """[(answer, score)] over passages -> argmax_a sum s^2 / (sum s + 1); '' if no answer."""
    totals = {}
    for answer, score in candidates:
        if answer:
            squares, sums = totals.get(answer, (0.0, 0.0))
            totals[answer] = (squares + score**2, sums + score)
    if not totals:
        return ""
    return max(totals, key=lambda a: totals[a][0] / (totals[a][1] + 1))


def normalize(text):
    """Full-width -> half-width (NFKC), lowercase, drop punctuation and blanks."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not (c.isspace() or unicodedata.category(c)[0] in "PS"))


def char_f1(prediction, gold):
    common = sum((Counter(prediction) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def score_answers(predictions, golds):
    """{id: answer}, {id: [accepted]} -> (Accuracy, F1, Final = (Accuracy + F1) / 2)."""
    accuracy = f1 = 0.0
    for qid, accepted in golds.items():
        prediction = normalize(predictions.get(qid, ""))
        accepted = [normalize(a) for a in accepted]
        if prediction:
            accuracy += prediction in accepted
            f1 += max((char_f1(prediction, a) for a in accepted), default=0.0)
    n = max(len(golds), 1)
    return accuracy / n, f1 / n, (accuracy + f1) / n / 2


def generate_demo_data(count, rng):
    """Questions about made-up people: 1-2 passages with the answer, 30% one without."""
    given = "明华建国伟芳秀英杰志强军平红云海涛晓丽静宏文斌博雪梅鹏飞宇轩浩然思远嘉"
    places = ["北京", "上海", "杭州", "成都", "武汉", "南京", "西安", "长沙", "广州", "昆明"]
    companies = ["华星科技", "远航集团", "青松医药", "长城电子", "蓝海物流", "天宇传媒"]

    def person():
        name = rng.choice("王李张刘陈杨黄赵吴周徐孙马朱胡郭") + "".join(rng.choices(given, k=2))
        return dict(name=name, place=rng.choice(places), year=str(rng.randint(1950, 2000)) + "年",
                    school=rng.choice(places) + rng.choice(["大学", "理工大学", "师范大学"]),
                    company=rng.choice(companies))  # fmt: skip

    templates = [
        "{name}，{year}出生于{place}，毕业于{school}，现在{company}工作。",
        "{name}毕业于{school}后加入{company}，他的家乡是{place}，生于{year}。",
        "据报道，{company}的员工{name}来自{place}，{year}生人，{school}毕业。",
    ]
    questions = [("{name}出生于哪里", "place"), ("{name}毕业于哪所大学", "school"),
                 ("{name}在哪家公司工作", "company"), ("{name}是哪一年出生的", "year")]  # fmt: skip
    data = []
    for i in range(count):
        subject, (question, field) = person(), rng.choice(questions)
        passages = [dict(passage=rng.choice(templates).format(**subject), answer=subject[field])
                    for _ in range(rng.randint(1, 2))]  # fmt: skip
        passages += [dict(passage=rng.choice(templates).format(**person()), answer="")
                     for _ in range(rng.random() < 0.3)]  # fmt: skip
        rng.shuffle(passages)
        data.append(dict(id=f"D{i}", question=question.format(**subject), passages=passages))
    return data


def trivial_baseline(data, rng):
    """Score of answering with a random passage's random span of the gold answer's length."""
    predictions = {}
    for record in data:
        passage = rng.choice(record["passages"])["passage"]
        n = len((gold_answers(record) or [""])[0])
        start = rng.randint(0, max(len(passage) - n, 0))
        predictions[record["id"]] = passage[start : start + n]
    return score_answers(predictions, {r["id"]: gold_answers(r) for r in data})


def mean_or_zero(values):
    return float(np.mean(values)) if len(values) else 0.0


def prepare_run(parser, args):
    """Seed, make --output-dir and return (train, valid) for both reading-comprehension scripts.

    --demo generates questions (DEMO_SIZES), otherwise --train/--valid or the bundled
    sample are read; --smoke shrinks every size; without --checkpoint a random model
    and a character vocabulary are written to --output-dir.
    """
    check_model_arguments(parser, args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.demo:
        rng = random.Random(args.seed)
        train = generate_demo_data(DEMO_SIZES["train"], rng)
        valid = generate_demo_data(DEMO_SIZES["valid"], rng)
        for key in ("epochs", "batch_size", "learning_rate", "maxlen", "max_q_len", "max_a_len"):
            setattr(args, key, DEMO_SIZES[key])
    else:
        train, valid = load_data(args.train or SAMPLE), load_data(args.valid or SAMPLE)
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.batch_size = 1, 3, 8
        args.maxlen, args.max_q_len, args.max_a_len = 48, 16, 8
    if not args.checkpoint:
        texts = [r["question"] + p["passage"] for r in train + valid for p in r["passages"]]
        config = TINY_CONFIG if args.smoke else DEMO_CONFIG
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, texts, config, args.model
        )
    return train, valid


class Evaluator(keras.callbacks.Callback):
    """Accuracy/F1/Final on --valid each epoch; the best Final is saved as best_model.weights.h5."""

    def __init__(self, evaluate_fn, output_dir):
        super().__init__()
        self.evaluate_fn, self.output_dir, self.best = evaluate_fn, output_dir, -1.0

    def on_epoch_end(self, epoch, logs=None):
        accuracy, f1, final = self.evaluate_fn(os.path.join(self.output_dir, "valid_pred.json"))
        if final >= self.best:
            self.best = final
            self.model.save_weights(os.path.join(self.output_dir, "best_model.weights.h5"))
        print(f"\nepoch {epoch + 1}: Accuracy: {accuracy:.5f}, F1: {f1:.5f}, "
              f"Final: {final:.5f}, best Final: {self.best:.5f}")  # fmt: skip


def train_and_evaluate(train_model, batches, valid, evaluate_fn, args):
    """Fit on `batches`, scoring --valid every epoch; --demo first prints the baseline."""
    if args.demo:
        accuracy, f1, final = trivial_baseline(valid, random.Random(0))
        print(f"baseline (random span of the answer's length): Accuracy: {accuracy:.5f}, "
              f"F1: {f1:.5f}, Final: {final:.5f}")  # fmt: skip
    train_model.fit(
        batches.forfit(),
        steps_per_epoch=args.steps_per_epoch or len(batches),
        epochs=args.epochs,
        callbacks=[Evaluator(evaluate_fn, args.output_dir)],
    )
