"""SimBERT / RoFormer-Sim: UniLM generation + in-batch contrastive loss (kexue.fm/archives/7427).

    python examples/task_sentence_similarity_simbert.py --smoke --output-dir /tmp/simbert
    python examples/task_sentence_similarity_simbert.py --demo --output-dir /tmp/simbert_demo
    python examples/task_sentence_similarity_simbert.py --model roformer --config bert_config.json \
        --checkpoint bert_model.ckpt --vocab vocab.txt --train train.json --valid dev.json

Data: JSON lines {"text": ..., "synonyms": [...]}, one group of similar questions per line.
Each sample draws two sentences (a, b) of a group and emits two adjacent rows
[CLS] a [SEP] b [SEP] and [CLS] b [SEP] a [SEP] (segments 0 / 1). Loss = UniLM CE on segment
1 + L_sim (cosine × scale over the pooled [CLS] vectors, row i's positive is row i XOR 1).
`--grad-accum-steps k` makes one update from k batches with the contrastive loss over all
k × batch rows (exact: bert4x.contrastive, kexue.fm/archives/8471), dropout masks replayed.
`--model bert`: SimBERT (scale 30, maxlen 32, batch 128, lr 2e-6); `--model roformer`:
RoFormer-Sim stage 1 (kexue.fm/archives/8454: scale 20, maxlen 64, batch 96, lr 1e-5,
dropout 0.2, MLM logits, half of the sources noised per token 15%: 80% [MASK], 10% kept,
10% random — the original masks whole jieba words). Metric: share of valid sentences whose
nearest other valid sentence (cosine of pooled vectors) is a paraphrase from its group.
Generation: top-k/top-p samples re-ranked by cosine to the input -> similar_sentences.json.
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
    check_model_arguments,
    common_parser,
    random_model_files,
    read_json_lines,
    write_json_lines,
)

from bert4x.contrastive import ContrastiveAccumulator, scaled_unit_vectors, seed_states
from bert4x.generation import generate
from bert4x.models import build_transformer_model
from bert4x.optimizers import AdamW
from bert4x.snippets import DataGenerator, sequence_padding
from bert4x.tokenizers import Tokenizer

SETTING_KEYS = ("scale", "maxlen", "batch_size", "learning_rate", "with_mlm", "dropout", "noise")
SETTINGS = {  # stage-1 settings of the originals; dropout None: the config's
    "bert": dict(zip(SETTING_KEYS, (30, 32, 128, 2e-6, True, None, 0.0))),
    "roformer": dict(zip(SETTING_KEYS, (20, 64, 96, 1e-5, "linear", 0.2, 0.5))),
}
EPOCHS, WEIGHT_DECAY, TOP_K, TOP_P, CANDIDATES, KEEP = 50, 0.01, 5, None, 20, 5
SAMPLE = os.path.join(DATASETS, "simbert_sample.json")
SMOKE = dict(epochs=1, steps_per_epoch=3, batch_size=8, maxlen=16, grad_accum_steps=2,
             candidates=4, generate_count=3)  # fmt: skip
DEMO = dict(epochs=5, steps_per_epoch=100, batch_size=32, maxlen=24, grad_accum_steps=2,
            learning_rate=5e-4, generate_count=20)  # fmt: skip
DEMO_DOCUMENTS = (
    "身份证 驾驶证 护照 社保卡 银行卡 信用卡 医保卡 学生证 港澳通行证 营业执照 "
    "房产证 户口本 居住证 结婚证 公交卡 就诊卡 工作证 出生证明 行驶证 老年证"
).split()
DEMO_QUESTIONS = [  # four phrasings of one question about document {}
    "{}怎么办理|如何办理{}|办{}需要哪些手续|想办{}应该怎么做",
    "{}丢了怎么办|{}丢失了如何补办|不小心把{}弄丢了怎么办|{}找不到了该怎么处理",
    "办{}要多少钱|{}的费用是多少|{}收费标准是什么|办理{}需要交多少钱",
    "{}多久能办好|办{}需要多长时间|{}几天可以拿到|{}一般要等多久",
    "怎么查询{}的办理进度|{}办理进度在哪查|如何查看{}的状态|{}的进度怎么查",
    "{}可以网上办理吗|{}能在手机上办吗|网上能办{}吗|{}支持线上申请吗",
    "办{}需要带什么材料|{}需要准备哪些资料|申请{}要什么证件|{}要提交哪些材料",
    "{}过期了怎么办|{}到期了如何续办|{}有效期过了怎么处理|{}失效了还能用吗",
    "{}可以在外地办吗|异地能办{}吗|不在户籍地怎么办{}|{}能跨省办理吗",
    "{}可以让别人代办吗|{}能委托家人办理吗|别人能帮我办{}吗|{}可以代领吗",
]
DEMO_PREFIXES, DEMO_SUFFIXES = ["", "", "请问", "你好，", "我想问一下"], ["", "？", "呢", "啊"]


def load_groups(path):
    """[[text, *synonyms]] of each line; groups with no synonym are dropped."""
    groups = []
    for number, record in enumerate(read_json_lines(path, ("text", "synonyms"), "groups"), 1):
        synonyms = record["synonyms"]
        if not (isinstance(synonyms, list) and all(isinstance(s, str) for s in synonyms)):
            raise ValueError(f"{path}: record {number}: 'synonyms' must be a list of strings")
        group = [t for t in dict.fromkeys([record["text"], *synonyms]) if t]
        if len(group) >= 2:
            groups.append(group)
    if not groups:
        raise ValueError(f"{path}: no group with >= 2 distinct sentences")
    return groups


def generate_groups(rng, valid_share=0.3):
    """Demo: one group per (document, question), its 4 phrasings with random prefix/suffix,
    shuffled; a random 30% of the 200 groups (unseen combinations) are held out."""
    phrase = lambda q, d: rng.choice(DEMO_PREFIXES) + q.format(d) + rng.choice(DEMO_SUFFIXES)  # noqa: E731
    groups = [[phrase(q, d) for q in question.split("|")]
              for d in DEMO_DOCUMENTS for question in DEMO_QUESTIONS]  # fmt: skip
    for group in groups:
        rng.shuffle(group)
    rng.shuffle(groups)
    held_out = int(len(groups) * valid_share)
    return groups[held_out:], groups[:held_out]


def pair_row(tokenizer, first, second, maxlen):
    """[CLS] first [SEP] second [SEP], segments 0...0 1...1; each text cut to maxlen - 2 tokens."""
    a, b = (tokenizer.encode(text)[0][1:-1][: maxlen - 2] for text in (first, second))
    start, end = tokenizer._token_start_id, tokenizer._token_end_id
    return [start, *a, end, *b, end], [0] * (len(a) + 2) + [1] * (len(b) + 1)


def add_noise(token_ids, segment_ids, tokenizer, rate=0.15):
    """Source tokens replaced with probability `rate`: 80% [MASK], 10% kept, 10% random."""
    ids = list(token_ids)
    for i in range(1, segment_ids.index(1) - 1):
        r = np.random.random() / rate  # < 1 with probability `rate`, then uniform in [0, 1)
        if r < 0.8:
            ids[i] = tokenizer._token_mask_id
        elif 0.9 <= r < 1:
            ids[i] = np.random.randint(5, tokenizer.vocab_size)
    return ids


class Batches(DataGenerator):
    """Rows 2i, 2i+1: (a, b) and (b, a) of one group; padded to 2 * maxlen (one XLA shape)."""

    def __init__(self, groups, tokenizer, maxlen, noise=0.0, **kwargs):
        super().__init__(groups, **kwargs)
        self.tokenizer, self.maxlen, self.noise = tokenizer, maxlen, noise

    def __iter__(self, random=False):
        tokens, segments = [], []
        for is_end, group in self.sample(random):
            a, b = np.random.choice(group, 2, replace=False) if random else group[:2]
            for first, second in [(a, b), (b, a)]:
                token_ids, segment_ids = pair_row(self.tokenizer, first, second, self.maxlen)
                if self.noise and np.random.random() < self.noise:
                    token_ids = add_noise(token_ids, segment_ids, self.tokenizer)
                tokens.append(token_ids)
                segments.append(segment_ids)
            if len(tokens) >= self.batch_size or is_end:
                length = 2 * self.maxlen
                yield sequence_padding(tokens, length), sequence_padding(segments, length)
                tokens, segments = [], []


def build_models(args, setting):
    """(UniLM model [pooled, MLM], sentence encoder -> pooled [CLS])."""
    extra = {} if setting["dropout"] is None else {"dropout_rate": setting["dropout"]}
    model = build_transformer_model(args.config, args.checkpoint, model=args.model,
                                    application="unilm", with_pool="linear",
                                    with_mlm=setting["with_mlm"], **extra)  # fmt: skip
    encoder = keras.Model(model.inputs, model.outputs[0])
    encoder.compile(jit_compile=True)
    return model, encoder


def loss_fn(model, scale, from_logits):
    """chunk (token_ids, segment_ids, n_targets) -> (√scale · unit pooled, Σ CE / n_targets)."""

    def encode(chunk):
        token_ids, segment_ids, n_targets = chunk
        pooled, outputs = model([token_ids, segment_ids], training=True)
        mask = ops.cast(segment_ids[:, 1:], "float32")
        ce = ops.sparse_categorical_crossentropy(token_ids[:, 1:], outputs[:, :-1], from_logits)
        return scaled_unit_vectors(pooled, scale), ops.sum(ce * mask) / n_targets

    return encode


def sentence_vectors(encoder, tokenizer, texts, maxlen):
    """Unit pooled vectors [N, D] of [CLS] text [SEP] (segment 0)."""
    ids = sequence_padding([tokenizer.encode(t, maxlen=maxlen)[0] for t in texts], maxlen)
    vectors = encoder.predict([ids, np.zeros_like(ids)], batch_size=64, verbose=0)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def retrieval_accuracy(encoder, tokenizer, groups, maxlen):
    """Share of the sentences whose nearest other sentence (cosine) is one of its group."""
    texts = [t for g in groups for t in g]
    group_ids = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    vectors = sentence_vectors(encoder, tokenizer, texts, maxlen)
    similarities = vectors @ vectors.T
    np.fill_diagonal(similarities, -np.inf)
    return float(np.mean(group_ids[np.argmax(similarities, axis=1)] == group_ids))


def similar_sentences(model, encoder, tokenizer, text, args):
    """Sample args.candidates continuations, keep the distinct ones, rank by cosine to text."""
    ids = tokenizer.encode(text, maxlen=args.maxlen)[0]
    prompts = sequence_padding([ids] * args.candidates, args.maxlen)  # one compiled shape
    new = generate(model, prompts, np.zeros_like(prompts), max_new_tokens=args.maxlen,
                   strategy="sample", top_k=args.topk, top_p=args.topp,
                   end_id=tokenizer._token_end_id, seed=args.seed)  # fmt: skip
    ends = (0, tokenizer._token_end_id)  # generate writes 0 after the end
    texts = [tokenizer.decode([t for t in row if t not in ends]) for row in new.tolist()]
    texts = [t for t in dict.fromkeys(texts) if t and t != text]
    if not texts:
        return []
    vectors = sentence_vectors(encoder, tokenizer, [text, *texts], args.maxlen)
    scores = vectors[1:] @ vectors[0]
    return [dict(text=texts[i], cosine=round(float(scores[i]), 4))
            for i in np.argsort(-scores)[: args.keep]]  # fmt: skip


def train(args, setting, model, encoder, tokenizer, train_groups, valid_groups):
    """Custom loop: k batches -> exact contrastive accumulation -> one AdamW update per step."""
    encode = loss_fn(model, setting["scale"], from_logits=setting["with_mlm"] == "linear")
    acc = ContrastiveAccumulator(encode, model.trainable_variables, seed_states(model),
                                 jit_compile=not args.smoke)  # smoke: XLA is slower  # fmt: skip
    optimizer = AdamW(learning_rate=args.learning_rate, weight_decay_rate=WEIGHT_DECAY,
                      exclude_from_weight_decay=["Norm", "bias"])  # fmt: skip
    batches = Batches(train_groups, tokenizer, args.maxlen, setting["noise"],
                      batch_size=args.batch_size)  # fmt: skip
    rows_per_update = args.batch_size * args.k  # 2 rows per group
    steps = args.steps_per_epoch or max(2 * len(train_groups) // rows_per_update, 1)
    stream = batches.forfit()
    best = retrieval_accuracy(encoder, tokenizer, valid_groups, args.maxlen)
    print(f"baseline (untrained model): retrieval top-1 {best:.4f}")
    path = os.path.join(args.output_dir, "best_model.weights.h5")
    model.save_weights(path)
    for epoch in range(args.epochs):
        losses = []
        for _ in range(steps):
            chunks = [next(stream) for _ in range(args.k)]
            n_targets = np.float32(sum(s[:, 1:].sum() for _, s in chunks))
            grads, sim, gen = acc([(t, s, n_targets) for t, s in chunks])
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            losses.append((float(gen), float(sim)))
        score = retrieval_accuracy(encoder, tokenizer, valid_groups, args.maxlen)
        if score >= best:  # ties: the later epoch (its generation is better trained)
            best = score
            model.save_weights(path)
        gen, sim = np.mean(losses, axis=0)
        print(f"epoch {epoch + 1}: gen loss {gen:.4f}, sim loss {sim:.4f}, "
              f"retrieval top-1 {score:.4f} (best {best:.4f})")  # fmt: skip
    model.load_weights(path)


def prepare(parser, args):
    """Settings, data and model files for the run; returns (setting, train, valid)."""
    check_model_arguments(parser, args)
    if args.model not in SETTINGS:
        parser.error(f"--model must be one of {sorted(SETTINGS)} (SimBERT or RoFormer-Sim)")
    setting = SETTINGS[args.model]
    for key in ("maxlen", "batch_size", "learning_rate"):
        if getattr(args, key) is None:
            setattr(args, key, setting[key])
    vars(args).update(SMOKE if args.smoke else DEMO if args.demo else {})
    args.k = args.grad_accum_steps
    if args.batch_size % 2 or args.k < 1:
        parser.error("--batch-size must be even (paired rows) and --grad-accum-steps >= 1")
    random.seed(args.seed)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.demo:
        train, valid = generate_groups(random.Random(args.seed))
    else:
        train = load_groups(args.train or SAMPLE)
        valid = load_groups(args.valid) if args.valid else train
    if not args.checkpoint:
        texts = [t for g in train + valid for t in g]
        config = TINY_CONFIG if args.smoke else DEMO_CONFIG
        args.config, args.checkpoint, args.vocab = random_model_files(
            args.output_dir, texts, config, args.model, with_pool=True, with_mlm=True)  # fmt: skip
    return setting, train, valid


def main():
    parser = common_parser(__doc__.split("\n")[0], None, None, EPOCHS, None)
    add = parser.add_argument
    add("--grad-accum-steps", type=int, default=1, help="batches per update (exact L_sim)")
    add("--topk", type=int, default=TOP_K, help="top-k of the random sampling")
    add("--topp", type=float, default=TOP_P, help="top-p of the random sampling")
    add("--candidates", type=int, default=CANDIDATES, help="samples per input sentence")
    add("--keep", type=int, default=KEEP, help="similar sentences kept per input")
    add("--generate-count", type=int, default=100, help="valid sentences to generate for")
    args = parser.parse_args()
    setting, train_groups, valid_groups = prepare(parser, args)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)
    model, encoder = build_models(args, setting)
    train(args, setting, model, encoder, tokenizer, train_groups, valid_groups)
    texts = [g[0] for g in valid_groups[: args.generate_count]]
    records = [dict(text=t, similar=similar_sentences(model, encoder, tokenizer, t, args))
               for t in texts]  # fmt: skip
    path = os.path.join(args.output_dir, "similar_sentences.json")
    write_json_lines(path, records)
    print(f"wrote {len(records)} inputs with similar sentences to {path}")
    for record in records[:3]:
        print(record["text"], "->", [s["text"] for s in record["similar"]])


if __name__ == "__main__":
    main()
