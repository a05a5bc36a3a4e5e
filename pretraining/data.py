"""Raw text -> TFRecord pretraining examples: MLM with whole-word masking, UniLM and LM.

A corpus is a UTF-8 text file: one paragraph per line, a blank line between documents.
Lines are split into sentences, sentences into words, words into WordPiece tokens; examples
pack consecutive sentences of one document into at most `sequence_length` tokens:

    mlm    [CLS] w1 w2 ... [SEP]            segments 0...0; 15% of the *words* selected
    unilm  [CLS] source [SEP] target [SEP]  segments 0...0 1...1 (split at a sentence)
    lm     [CLS] w1 w2 ... [SEP]            segments 0...0

Whole-word masking (arXiv 1906.08101): a word is what the segmenter returns (e.g.
`jieba.lcut` for Chinese, whose vocabularies hold single characters) or, without one, a
WordPiece token with its '##' continuations. Each word is selected with probability
`mask_rate`; every token of a selected word gets its original id as label and becomes [MASK]
(80%), a random token (10%) or stays (10%), decided per token. Labels are 0 elsewhere
(0 = [PAD] is never a target).

Records hold int64 lists `token_ids`, `segment_ids` (and `labels` for mlm), unpadded;
`load_dataset` pads them to a fixed length and batches them for training.

    python pretraining/data.py --task mlm --corpus corpus.txt --vocab vocab.txt \
        --output train.tfrecord --segmenter jieba --dupe-factor 5
"""

import argparse
import glob
import json
import os
import re

import numpy as np

from bert4x.tokenizers import Tokenizer, load_vocab

TASKS = ("mlm", "unilm", "lm")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTENCE_END = re.compile(r"(?<=[。！？；])|(?<=[.!?;])\s+")
HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE_CORPUS = os.path.join(HERE, "sample_corpus.txt")
SAMPLE_WORDS = os.path.join(HERE, "sample_words.txt")


# ----------------------------------------------------------------------------- segmenters


class MaxMatchSegmenter:
    """Forward maximum matching over a word list: text -> words (pieces of the text, in order).

    At each position the longest listed word wins; a run of ASCII letters/digits is one word;
    any other character is a word of its own; whitespace is skipped. A dependency-free stand-in
    for `jieba.lcut` when a word list is at hand.
    """

    def __init__(self, words):
        self.words = {w for w in (w.strip() for w in words) if w}
        if not self.words:
            raise ValueError("MaxMatchSegmenter needs at least one word. Received an empty list.")
        self.longest = max(len(w) for w in self.words)

    def __call__(self, text):
        words, i = [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            end = i + 1
            if text[i].isascii() and text[i].isalnum():
                while end < len(text) and text[end].isascii() and text[end].isalnum():
                    end += 1
            else:
                for size in range(min(self.longest, len(text) - i), 1, -1):
                    if text[i : i + size] in self.words:
                        end = i + size
                        break
            words.append(text[i:end])
            i = end
        return words


def load_segmenter(spec):
    """None, 'jieba' (jieba.lcut) or the path of a word list (one word a line)."""
    if spec is None:
        return None
    if spec == "jieba":
        try:
            import jieba
        except ImportError:
            raise ValueError(
                "--segmenter jieba needs the jieba package: pip install jieba "
                "(or pass a word-list file for forward maximum matching)."
            ) from None
        return jieba.lcut
    if not os.path.isfile(spec):
        raise ValueError(f"segmenter must be 'jieba' or a word-list file. Received: {spec!r}.")
    with open(spec, encoding="utf-8") as file:
        return MaxMatchSegmenter(file)


class _LastCall:
    """Remembers the last result of `segmenter`, so the tokenizer and grouping share one call."""

    def __init__(self, segmenter):
        self.segmenter = segmenter
        self.text = self.words = None

    def __call__(self, text):
        if text != self.text:
            self.text, self.words = text, list(self.segmenter(text))
        return self.words


# ----------------------------------------------------------------------------- words


class WordTokenizer:
    """text -> words as lists of token ids, words from the segmenter (or '##' continuations).

    With a segmenter the WordPiece tokenizer runs on each segmenter word
    (`Tokenizer(pre_tokenize=...)`), and `rematch` maps every token to the characters, hence
    the word, it came from; so a word's tokens are contiguous and never shared.
    """

    def __init__(self, vocab, do_lower_case=False, segmenter=None):
        token_dict = load_vocab(vocab) if isinstance(vocab, str) else dict(vocab)
        self.segmenter = None if segmenter is None else _LastCall(segmenter)
        self.tokenizer = Tokenizer(
            token_dict, do_lower_case, pre_tokenize=self.segmenter, token_start=None, token_end=None
        )
        self.ids = {t: self.tokenizer.token_to_id(t) for t in SPECIAL_TOKENS if t in token_dict}
        missing = [t for t in SPECIAL_TOKENS if t not in token_dict]
        if missing:
            raise ValueError(f"the vocabulary lacks {missing}; BERT pretraining needs them.")
        special = set(self.ids.values())
        #: ids a masked token may be replaced with at random (no special tokens).
        self.random_ids = np.array(sorted(set(token_dict.values()) - special), dtype="int64")

    def words(self, text):
        """[[token ids of word 1], [token ids of word 2], ...] of `text`."""
        tokens = self.tokenizer.tokenize(text)
        if not tokens:
            return []
        ids = self.tokenizer.tokens_to_ids(tokens)
        owners = self._owners(text, tokens)
        words = []
        for i, (token, owner) in enumerate(zip(tokens, owners)):
            joins = i > 0 and (owner == owners[i - 1] or token.startswith("##"))
            if joins:
                words[-1].append(ids[i])
            else:
                words.append([ids[i]])
        return words

    def _owners(self, text, tokens):
        """Per token, the index of the segmenter word it came from (own index if unknown)."""
        if self.segmenter is None:
            return [-1 - i for i in range(len(tokens))]  # all distinct: '##' alone groups
        char_word = np.full(len(text), -1)
        position = 0
        for k, word in enumerate(self.segmenter(text)):
            start = text.find(word, position)
            char_word[start : start + len(word)] = k
            position = start + len(word)
        owners = []
        for i, chars in enumerate(self.tokenizer.rematch(text, tokens)):
            owner = char_word[chars[0]] if chars else -1
            owners.append(int(owner) if owner >= 0 else -1 - i)
        return owners


def read_documents(path):
    """Documents of a corpus file: lists of non-empty lines, split at blank lines."""
    documents, current = [], []
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line:
                current.append(line)
            elif current:
                documents.append(current)
                current = []
    if current:
        documents.append(current)
    return documents


def split_sentences(line):
    """Sentences of one line, cut after 。！？； and after .!?; followed by a space."""
    return [s.strip() for s in SENTENCE_END.split(line) if s and s.strip()]


def document_sentences(words_of, document):
    """[[word ids...] per sentence] of one document, empty sentences dropped."""
    sentences = [words_of(s) for line in document for s in split_sentences(line)]
    return [s for s in sentences if s]


def pack_sentences(sentences, budget):
    """Consecutive sentences packed into chunks of <= budget tokens; long sentences are cut.

    Each chunk is a list of sentences, each a list of words (lists of token ids).
    """
    chunks, chunk, size = [], [], 0
    for sentence in sentences:
        for piece in _cut(sentence, budget):
            length = sum(len(w) for w in piece)
            if chunk and size + length > budget:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(piece)
            size += length
    if chunk:
        chunks.append(chunk)
    return chunks


def _cut(sentence, budget):
    """A sentence (list of words) as pieces of <= budget tokens, cut between words."""
    pieces, piece, size = [], [], 0
    for word in sentence:
        word = word[:budget]
        if piece and size + len(word) > budget:
            pieces.append(piece)
            piece, size = [], 0
        piece.append(word)
        size += len(word)
    if piece:
        pieces.append(piece)
    return pieces


# ----------------------------------------------------------------------------- examples


def mask_whole_words(words, rng, mask_id, random_ids, mask_rate=0.15):
    """Whole-word masking of a list of words (lists of token ids).

    Returns (token_ids, labels, selected): the input ids, the labels (original id at tokens
    of selected words, 0 elsewhere) and one bool per word.
    """
    selected = rng.random(len(words)) < mask_rate
    token_ids, labels = [], []
    for word, chosen in zip(words, selected):
        for token in word:
            labels.append(token if chosen else 0)
            if not chosen:
                token_ids.append(token)
                continue
            r = rng.random()
            token_ids.append(
                mask_id if r < 0.8 else int(rng.choice(random_ids)) if r < 0.9 else token
            )
    return token_ids, labels, selected


def mlm_example(words, ids, rng, random_ids, mask_rate=0.15):
    """[CLS] masked words [SEP] -> {token_ids, segment_ids, labels} (lists of ints)."""
    token_ids, labels, _ = mask_whole_words(words, rng, ids["[MASK]"], random_ids, mask_rate)
    token_ids = [ids["[CLS]"]] + token_ids + [ids["[SEP]"]]
    return {"token_ids": token_ids, "segment_ids": [0] * len(token_ids), "labels": [0, *labels, 0]}


def lm_example(words, ids):
    """[CLS] words [SEP] -> {token_ids, segment_ids}; the model predicts each next token."""
    token_ids = [ids["[CLS]"]] + [t for w in words for t in w] + [ids["[SEP]"]]
    return {"token_ids": token_ids, "segment_ids": [0] * len(token_ids)}


def unilm_example(chunk, ids, rng):
    """[CLS] source [SEP] target [SEP], split at a random sentence (or word) boundary.

    Returns None for a chunk of one word, which has no split.
    """
    if len(chunk) > 1:
        k = int(rng.integers(1, len(chunk)))
        source = [w for s in chunk[:k] for w in s]
        target = [w for s in chunk[k:] for w in s]
    else:
        words = chunk[0]
        if len(words) < 2:
            return None
        k = int(rng.integers(1, len(words)))
        source, target = words[:k], words[k:]
    source = [ids["[CLS]"]] + [t for w in source for t in w] + [ids["[SEP]"]]
    target = [t for w in target for t in w] + [ids["[SEP]"]]
    return {"token_ids": source + target, "segment_ids": [0] * len(source) + [1] * len(target)}


def build_examples(
    task, documents, word_tokenizer, sequence_length, rng, dupe_factor=1, mask_rate=0.15
):
    """Examples (dicts of int lists) of `task` from documents (lists of lines)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}. Received: {task!r}.")
    ids = word_tokenizer.ids
    budget = sequence_length - (3 if task == "unilm" else 2)
    if budget < 2:
        raise ValueError(f"sequence_length must leave room for tokens. Received: {sequence_length}")
    chunks = []
    for document in documents:
        chunks.extend(pack_sentences(document_sentences(word_tokenizer.words, document), budget))
    examples = []
    for _ in range(dupe_factor if task == "mlm" else 1):
        for chunk in chunks:
            words = [w for s in chunk for w in s]
            if task == "mlm":
                examples.append(mlm_example(words, ids, rng, word_tokenizer.random_ids, mask_rate))
            elif task == "lm":
                examples.append(lm_example(words, ids))
            else:
                example = unilm_example(chunk, ids, rng)
                if example is not None:
                    examples.append(example)
    return examples


# ----------------------------------------------------------------------------- TFRecords


def feature_names(task):
    """The int64 list features a record of `task` holds."""
    return ("token_ids", "segment_ids", "labels") if task == "mlm" else ("token_ids", "segment_ids")


def write_records(path, examples, task):
    """Write examples as tf.train.Example records; returns the number written."""
    import tensorflow as tf

    names = feature_names(task)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            features = {
                name: tf.train.Feature(int64_list=tf.train.Int64List(value=example[name]))
                for name in names
            }
            writer.write(
                tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()
            )
    return len(examples)


def parse_record(serialized, task):
    """One serialized record -> {name: int32 vector} (unpadded)."""
    import tensorflow as tf

    spec = {name: tf.io.RaggedFeature(tf.int64) for name in feature_names(task)}
    parsed = tf.io.parse_single_example(serialized, spec)
    return {name: tf.cast(value, tf.int32) for name, value in parsed.items()}


def read_records(paths, task):
    """All records of `paths` as a list of {name: np.ndarray} (for inspection and tests)."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(list_records(paths)).map(lambda s: parse_record(s, task))
    return [{k: v.numpy() for k, v in example.items()} for example in dataset]


def list_records(paths):
    """A comma-separated list of files or glob patterns -> sorted file list."""
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p]
    files = sorted({f for p in paths for f in (glob.glob(p) or [p])})
    missing = [f for f in files if not f.startswith("gs://") and not os.path.isfile(f)]
    if not files or missing:
        raise ValueError(f"no TFRecord files at {missing or paths!r}; build them with data.py.")
    return files


def next_token_labels(token_ids, segment_ids, task):
    """labels[i] = token_ids[i + 1] where position i + 1 is a target, else 0 (last one 0).

    Targets: lm, every non-pad token after the first; unilm, the segment-1 tokens.
    """
    import tensorflow as tf

    following = token_ids[..., 1:]
    targets = segment_ids[..., 1:] > 0 if task == "unilm" else following > 0
    labels = tf.where(targets, following, tf.zeros_like(following))
    return tf.concat([labels, tf.zeros_like(token_ids[..., :1])], axis=-1)


def load_dataset(paths, task, batch_size, sequence_length, shuffle=True, seed=0, repeat=True):
    """((token_ids, segment_ids), labels) batches of fixed shape [batch_size, sequence_length].

    For lm/unilm the labels are the next tokens at target positions (`next_token_labels`).
    Records longer than sequence_length are cut. Files are read in an interleaved order and
    sharded by data under tf.distribute (each worker keeps its share of the examples).
    """
    import tensorflow as tf

    files = list_records(paths)
    dataset = tf.data.TFRecordDataset(files)
    if repeat:
        dataset = dataset.repeat()
    if shuffle:
        dataset = dataset.shuffle(10000, seed=seed)

    def prepare(serialized):
        example = parse_record(serialized, task)
        token_ids = example["token_ids"][:sequence_length]
        segment_ids = example["segment_ids"][:sequence_length]
        if task == "mlm":
            labels = example["labels"][:sequence_length]
        else:
            labels = next_token_labels(token_ids, segment_ids, task)
        return (token_ids, segment_ids), labels

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    shape = ([sequence_length], [sequence_length]), [sequence_length]
    dataset = dataset.padded_batch(batch_size, padded_shapes=shape, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- smoke vocab


def corpus_vocab(documents, path):
    """Write a vocab.txt of the corpus's characters (as Google's Chinese vocab) and return it.

    Special tokens, every non-space character (lowercased), '##' continuations of ASCII
    letters and digits, and the English words seen at least twice. For smoke runs.
    """
    text = "\n".join(line.lower() for document in documents for line in document)
    chars = sorted({c for c in text if not c.isspace()})
    counts = {}
    for word in re.findall(r"[a-z]+", text):
        counts[word] = counts.get(word, 0) + 1
    vocab = SPECIAL_TOKENS + chars
    vocab += ["##" + c for c in chars if c.isascii() and c.isalnum()]
    vocab += sorted(w for w, n in counts.items() if n >= 2 and len(w) > 1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write("\n".join(vocab) + "\n")
    return path


def build_records(args):
    """The command line: corpus -> TFRecord file; returns the number of examples."""
    segmenter = load_segmenter(args.segmenter)
    word_tokenizer = WordTokenizer(args.vocab, args.do_lower_case, segmenter)
    documents = []
    for corpus in args.corpus.split(","):
        documents.extend(read_documents(corpus))
    rng = np.random.default_rng(args.seed)
    examples = build_examples(
        args.task,
        documents,
        word_tokenizer,
        args.sequence_length,
        rng,
        dupe_factor=args.dupe_factor,
        mask_rate=args.mask_rate,
    )
    count = write_records(args.output, examples, args.task)
    info = {"task": args.task, "examples": count, "sequence_length": args.sequence_length}
    print(json.dumps(info, ensure_ascii=False))
    return count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--task", choices=TASKS, required=True)
    add("--corpus", required=True, help="text file(s), comma-separated; blank line = new doc")
    add("--vocab", required=True, help="vocab.txt of the model")
    add("--output", required=True, help="TFRecord file to write")
    add("--sequence-length", type=int, default=512)
    add("--segmenter", default=None, help="'jieba' or a word-list file (whole-word masking)")
    add("--do-lower-case", action="store_true")
    add("--dupe-factor", type=int, default=1, help="mlm: times each text is masked anew")
    add("--mask-rate", type=float, default=0.15)
    add("--seed", type=int, default=0)
    build_records(parser.parse_args(argv))


if __name__ == "__main__":
    main()
