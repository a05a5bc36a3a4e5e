"""Tokenizers with the bert4keras API: `Tokenizer` (BERT WordPiece) and `SpTokenizer`.

`Tokenizer` is Google BERT's BasicTokenizer + WordPiece (google-research/bert
`tokenization.py`):

    clean      drop U+0000, U+FFFD and Cc/Cf except \\t \\n \\r (\\t \\n \\r and Zs are spaces)
    uncased    final Σ -> ς, lowercase, NFD, drop Mn (accents)
    split      at whitespace; each punctuation char (ASCII symbols, P*) and CJK ideograph alone
    wordpiece  greedy longest match first, '##' continuations; an unmatched word or one
               longer than `word_maxlen` chars -> [UNK]

Ids come from two C-speed `str.translate` passes and `str.split` (the basic tokenizer) and
the Rust `tokenizers` WordPiece model, whose results are memoised per word. Character
offsets (`rematch`, `pre_tokenize`) come from the same rules run as a Rust `tokenizers`
pipeline (regex normalizers and pre-tokenizer), which keeps exact alignments; the tests
check both against Google's algorithm. The per-text overhead of that pipeline made it 3x
slower for plain encoding.

The character classes are read from Python's `unicodedata`, as Google's code does. (The
library's own `BertNormalizer`/`BertPreTokenizer` use older tables: they drop private-use
characters, keep CJK Extension E-F ideographs and ~100 newer punctuation marks inside words,
and lowercase a word-final Σ to σ.)

Encoded layout (pattern `'S*E*E'`): `[CLS] a... [SEP] b... [SEP]`, segment ids 0...0 1...1.
"""

import functools
import json
import operator
import os
import sys
import unicodedata
from collections.abc import Mapping

from tokenizers import Regex, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _Backend

from bert4x.snippets import truncate_sequences

__all__ = ["Tokenizer", "SpTokenizer", "TokenizerBase", "load_vocab", "save_vocab"]

_PATTERNS = ("S*E*E", "S*ES*E")
_WORD_CACHE = 1 << 17  # distinct words whose WordPiece ids a Tokenizer keeps
_CJK_RANGES = (  # Google's _is_chinese_char blocks
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_ASCII_PUNCTUATION = ((33, 47), (58, 64), (91, 96), (123, 126))
# Python's str.lower(): Σ is final when a cased letter precedes it and none follows, skipping
# case-ignorable characters on both sides.
_FINAL_SIGMA = (
    r"(?<=[\p{Cased}&&\P{Case_Ignorable}]\p{Case_Ignorable}*)Σ"
    r"(?!\p{Case_Ignorable}*[\p{Cased}&&\P{Case_Ignorable}])"
)
_OPENING = set("([{<$")  # decode: no space after these
_JOINERS = set("-/+=_@#&*^~|\\·")  # decode: no space on either side


# ----------------------------------------------------------------------------- characters


def _is_cjk_character(ch):
    """CJK Unified Ideographs (and extensions, compatibility blocks) as Google defines them."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(ch):
    """ASCII symbols (!-/ :-@ [-` {-~) or any Unicode P* category, as Google defines it."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _ASCII_PUNCTUATION) or (
        unicodedata.category(ch).startswith("P")
    )


def _is_wide(ch):
    """Written without spaces around it: CJK ideographs, kana, CJK and full-width punctuation."""
    code = ord(ch)
    return _is_cjk_character(ch) or 0x3000 <= code <= 0x30FF or 0xFF00 <= code <= 0xFFEF


def _is_special(token):
    """bert4keras convention: '[CLS]', '[SEP]', '[UNK]', '[unused1]'... are special."""
    return len(token) > 1 and token[0] == "[" and token[-1] == "]"


def _stem(token):
    """'##ing' -> 'ing'; other tokens unchanged."""
    return token[2:] if token[:2] == "##" else token


def _is_redundant(token):
    """A multi-char token containing a CJK or punctuation char can never be produced."""
    return len(token) > 1 and any(_is_cjk_character(c) or _is_punctuation(c) for c in _stem(token))


def _regex_ranges(codes):
    """Sorted code points -> onig class body '\\x{41}-\\x{5a}\\x{5f}...'."""
    parts, start, prev = [], codes[0], codes[0]
    for code in codes[1:] + [None]:
        if code is not None and code == prev + 1:
            prev = code
            continue
        parts.append(f"\\x{{{start:x}}}" + ("" if prev == start else f"-\\x{{{prev:x}}}"))
        if code is not None:
            start = prev = code
    return "".join(parts)


@functools.cache
def _code_points():
    """Sorted code points of BERT's character classes, from this Python's `unicodedata` (~0.3 s).

    control: dropped (Cc, Cf, U+0000, U+FFFD; not \\t \\n \\r); space: become ' ' (Zs, \\t \\n
    \\r); accent: dropped when uncased (Mn); split: stand alone (ASCII symbols, P*, CJK).
    """
    members = {"Cc": [], "Cf": [], "Mn": [], "P": [], "Zs": []}
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        key = "P" if category[0] == "P" else category
        if key in members:
            members[key].append(code)
    split = set(members["P"])
    for lo, hi in _ASCII_PUNCTUATION + _CJK_RANGES:
        split.update(range(lo, hi + 1))
    return {
        "control": sorted(set(members["Cc"] + members["Cf"] + [0, 0xFFFD]) - {9, 10, 13}),
        "space": sorted(members["Zs"] + [9, 10, 13]),
        "accent": members["Mn"],
        "split": sorted(split),
    }


@functools.cache
def _unicode_classes():
    """Regex class bodies ('\\x{41}-\\x{5a}...') of `_code_points` for the Rust pipeline."""
    return {name: _regex_ranges(codes) for name, codes in _code_points().items()}


@functools.cache
def _translate_tables(do_lower_case):
    """`str.translate` tables of BERT's basic tokenizer: (clean, split).

    clean drops control chars and maps spaces to ' '; split surrounds each split char with
    spaces (and, uncased, drops accents), so that `str.split()` yields Google's words. Every
    BMP char has an entry (the identity if unchanged): a missing key costs `str.translate` a
    KeyError, which doubles its time.
    """
    codes = _code_points()
    identity = {code: code for code in range(0x10000)}
    clean = {**identity, **dict.fromkeys(codes["control"]), **dict.fromkeys(codes["space"], " ")}
    split = dict(identity if do_lower_case else clean)  # cased: one pass does both
    split.update({code: f" {chr(code)} " for code in codes["split"]})
    if do_lower_case:
        split.update(dict.fromkeys(codes["accent"]))
    return clean, split


def _basic_words(text, do_lower_case):
    """Google's BasicTokenizer on `text`: its words, before WordPiece.

    Cased: one `str.translate`. Uncased: clean, lowercase the whole text (Python's final-Σ
    rule sees the same neighbours as Google's per-word `lower`: spaces are neither cased nor
    case-ignorable), NFD, then drop accents and split in one pass.
    """
    clean, split = _translate_tables(do_lower_case)
    if do_lower_case:
        text = unicodedata.normalize("NFD", text.translate(clean).lower())
    return text.translate(split).split()


def _build_wordpiece(token_dict, do_lower_case, word_maxlen):
    """A `tokenizers.Tokenizer` running BERT's basic tokenizer and WordPiece (module docstring).

    Whitespace needs no mapping to ' ': the pre-tokenizer drops every White_Space char, a
    superset of Google's (Zs, \\t, \\n, \\r) whose extra members are control chars (removed
    first) and U+2028/U+2029 (which Python's str.split also splits at). One regex pass
    keeps the words: runs of other chars, and each punctuation char or CJK ideograph alone.
    """
    classes = _unicode_classes()
    steps = [normalizers.Replace(Regex(f"[{classes['control']}]"), "")]
    if do_lower_case:
        steps += [
            normalizers.Replace(Regex(_FINAL_SIGMA), "ς"),
            normalizers.Lowercase(),
            normalizers.NFD(),
            normalizers.Replace(Regex(f"[{classes['accent']}]"), ""),
        ]
    backend = _Backend(
        models.WordPiece(
            vocab=dict(token_dict), unk_token="[UNK]", max_input_chars_per_word=word_maxlen
        )
    )
    backend.normalizer = normalizers.Sequence(steps)
    split = classes["split"]
    words = Regex(f"[^\\s{split}]+|[{split}]")
    backend.pre_tokenizer = pre_tokenizers.Split(words, behavior="removed", invert=True)
    return backend


# ----------------------------------------------------------------------------- vocabularies


def _check_path(path, name):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a str or os.PathLike path. Received: {name}={path!r}")


def _check_token_dict(token_dict):
    """token -> id mapping whose ids are 0..n-1, each used once."""
    if not isinstance(token_dict, Mapping):
        raise TypeError(
            "`token_dict` must be a dict {token: id} or a vocab.txt path. "
            f"Received: {type(token_dict).__name__}"
        )
    owners = {}
    for token, index in token_dict.items():
        if not isinstance(token, str) or isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"`token_dict` maps str to int. Received: {token!r}: {index!r}")
        if index in owners:
            raise ValueError(f"id {index} is used by both {owners[index]!r} and {token!r}.")
        owners[index] = token
    if owners and (min(owners) != 0 or max(owners) != len(owners) - 1):
        missing = sorted(set(range(max(owners) + 1)) - set(owners))[:5]
        raise ValueError(f"`token_dict` ids must be 0..{len(owners) - 1}; missing ids {missing}.")


def _vocab_file(path):
    """`path`, or the vocab.txt (else tokenizer.json) inside a directory."""
    if not os.path.isdir(path):
        return path
    for name in ("vocab.txt", "tokenizer.json"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise ValueError(f"Directory {os.fspath(path)!r} has neither vocab.txt nor tokenizer.json.")


def _vocab_txt(dict_path, encoding):
    """{token: line index} of a vocab.txt; a repeated token raises."""
    token_dict, lines = {}, {}
    with open(dict_path, encoding=encoding) as reader:
        for line_number, line in enumerate(reader, 1):
            fields = line.split()
            token = fields[0] if fields else line.strip()
            if token in token_dict:
                raise ValueError(
                    f"{os.fspath(dict_path)}: token {token!r} on line {line_number} repeats "
                    f"line {lines[token]}; every token must appear once."
                )
            token_dict[token], lines[token] = len(token_dict), line_number
    return token_dict


def _tokenizer_json_vocab(path):
    """{token: id} of a Hugging Face tokenizer.json: model.vocab plus added_tokens."""
    with open(path, encoding="utf-8") as reader:
        try:
            spec = json.load(reader)
        except json.JSONDecodeError as error:
            raise ValueError(f"{os.fspath(path)} is not valid JSON: {error}") from None
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise ValueError(
            f"{os.fspath(path)} holds a {kind!r} tokenizer, not WordPiece; `Tokenizer` reads "
            "BERT WordPiece vocabularies (use SpTokenizer for SentencePiece models)."
        )
    token_dict = dict(model.get("vocab", {}))
    for token in spec.get("added_tokens") or []:
        token_dict.setdefault(token["content"], token["id"])
    _check_token_dict(token_dict)
    return token_dict


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Read a BERT vocab.txt: line i holds token i (its first whitespace-separated field).

    `dict_path` may also be a Hugging Face tokenizer.json (WordPiece model) or a directory
    holding vocab.txt or tokenizer.json.

    With `simplified=True`, drop tokens the tokenizer can never produce (multi-char tokens
    holding a CJK or punctuation char, e.g. '##的', '中国', '[CLS]') and return
    `(token_dict, keep_tokens)`: the renumbered vocabulary and, for each new id, its old id
    (pass it as `keep_tokens` to `build_transformer_model` to slice the embeddings). Tokens
    in `startswith` (e.g. ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']) are kept first.
    """
    _check_path(dict_path, "dict_path")
    dict_path = _vocab_file(dict_path)
    if os.fspath(dict_path).endswith(".json"):
        token_dict = _tokenizer_json_vocab(dict_path)
    else:
        token_dict = _vocab_txt(dict_path, encoding)
    if not simplified:
        return token_dict
    startswith = list(startswith or [])
    for token in startswith:
        if token not in token_dict:
            raise ValueError(f"`startswith` token {token!r} is not in {os.fspath(dict_path)}.")
    if len(set(startswith)) != len(startswith):
        raise ValueError(f"`startswith` repeats a token. Received: startswith={startswith}")
    first = set(startswith)
    ordered = sorted(token_dict, key=token_dict.get)
    kept = startswith + [t for t in ordered if t not in first and not _is_redundant(t)]
    return {t: i for i, t in enumerate(kept)}, [token_dict[t] for t in kept]


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Write `token_dict` as vocab.txt, one token per line in id order (inverse of load_vocab)."""
    _check_path(dict_path, "dict_path")
    _check_token_dict(token_dict)
    for token in token_dict:
        if token and token.split() != [token]:
            raise ValueError(f"Token {token!r} contains whitespace, so vocab.txt cannot store it.")
    with open(dict_path, "w", encoding=encoding) as writer:
        for token in sorted(token_dict, key=token_dict.get):
            writer.write(token + "\n")


# ----------------------------------------------------------------------------- shared API


def _check_text(text, name):
    if not isinstance(text, str):
        raise TypeError(f"`{name}` must be a str. Received: {name}={text!r:.80}")


def _word_spans(text, words):
    """Character span of each pre-tokenized word, found left to right in `text`."""
    spans, position = [], 0
    for word in words:
        _check_text(word, "pre_tokenize(text) item")
        start = text.find(word, position)
        if start < 0:
            raise ValueError(
                f"pre_tokenize returned {word!r}, which is not in the text after position "
                f"{position}; it must return pieces of the text in order (as jieba.lcut does)."
            )
        position = start + len(word)
        if word:
            spans.append((start, position))
    return spans


class TokenizerBase:
    """bert4keras tokenizer API; subclasses supply `_tokenize`, `_spans` and `_encode_ids`.

    tokenize(text) = [token_start] + pieces + [token_end]  (None leaves one out).
    """

    def __init__(self, token_start, token_end, pre_tokenize):
        if pre_tokenize is not None and not callable(pre_tokenize):
            raise TypeError(f"`pre_tokenize` must be callable. Received: {pre_tokenize!r}")
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize

    @property
    def vocab_size(self):
        """Number of ids, including the special tokens."""
        return self._vocab_size

    def _check_special_tokens(self, is_known):
        for name in ("token_start", "token_end"):
            token = getattr(self, f"_{name}")
            if token is not None and not is_known(token):
                raise ValueError(
                    f"`{name}`={token!r} is not in the vocabulary; pass the model's own token "
                    f"or {name}=None."
                )
        self._token_start_id = (
            None if self._token_start is None else self.token_to_id(self._token_start)
        )
        self._token_end_id = None if self._token_end is None else self.token_to_id(self._token_end)

    def _wrap(self, pieces, start, end):
        return ([start] if start is not None else []) + pieces + ([end] if end is not None else [])

    def tokenize(self, text, maxlen=None):
        """Pieces of `text` between the start and end tokens, cut to `maxlen` before the end."""
        _check_text(text, "text")
        tokens = self._wrap(self._tokenize(text), self._token_start, self._token_end)
        if maxlen is not None:
            self._check_maxlen(maxlen, None, "S*E*E")
            truncate_sequences(maxlen, -int(self._token_end is not None) - 1, tokens)
        return tokens

    def token_to_id(self, token):
        """Id of `token` (subclasses define the unknown-token rule)."""
        raise NotImplementedError

    def id_to_token(self, i):
        """Token of id `i`; ValueError for ids outside the vocabulary."""
        raise NotImplementedError

    def tokens_to_ids(self, tokens):
        """[token_to_id(t) for t in tokens]."""
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids):
        """[id_to_token(i) for i in ids]."""
        return [self.id_to_token(i) for i in ids]

    def _check_maxlen(self, maxlen, second, pattern):
        """maxlen must leave room for every start/end token of the encoded layout."""
        if pattern not in _PATTERNS:
            raise ValueError(f"`pattern` must be one of {_PATTERNS}. Received: {pattern!r}")
        if maxlen is None:
            return
        ends = (self._token_start is not None) + (self._token_end is not None)
        if second is not None:
            ends += self._token_end is not None if pattern == "S*E*E" else ends
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < ends:
            raise ValueError(
                f"`maxlen` must be an int >= {ends} (the start/end tokens). Received: {maxlen!r}"
            )

    def _truncate_index(self, truncate_from):
        if truncate_from == "right":
            return -int(self._token_end is not None) - 1
        if truncate_from == "left":
            return int(self._token_start is not None)
        if isinstance(truncate_from, int) and not isinstance(truncate_from, bool):
            return truncate_from
        raise ValueError(
            f"`truncate_from` must be 'right', 'left' or an int index. Received: {truncate_from!r}"
        )

    def _sequence_ids(self, text, name):
        """A str -> wrapped ids; a token list (a `tokenize` result) -> its ids."""
        if isinstance(text, str):
            return self._wrap(self._encode_ids([text])[0], self._token_start_id, self._token_end_id)
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            return self.tokens_to_ids(text)
        raise TypeError(f"`{name}` must be a str or a list of str tokens. Received: {text!r:.80}")

    def _assemble(self, first, second, maxlen, pattern, index):
        """Truncate longest-first to maxlen, then join: (token_ids, segment_ids)."""
        skip = int(second is not None and pattern == "S*E*E" and self._token_start is not None)
        if maxlen is not None:
            truncate_sequences(maxlen + skip, index, first, second)
        if second is None:
            return first, [0] * len(first)
        second = second[skip:]
        return first + second, [0] * len(first) + [1] * len(second)

    def encode(
        self, first_text, second_text=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """(token_ids, segment_ids) of one text or a pair, at most `maxlen` long.

        Truncation pops one token at a time from the longer sequence (the first on ties),
        just before its end token ('right') or after its start token ('left').
        pattern `'S*E*E'`: `[CLS] a [SEP] b [SEP]`; `'S*ES*E'`: `[CLS] a [SEP] [CLS] b [SEP]`.
        """
        self._check_maxlen(maxlen, second_text, pattern)
        index = self._truncate_index(truncate_from)
        first = self._sequence_ids(first_text, "first_text")
        second = None if second_text is None else self._sequence_ids(second_text, "second_text")
        return self._assemble(first, second, maxlen, pattern, index)

    def encode_batch(
        self, first_texts, second_texts=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """`encode` over lists of texts in one call of the fast backend.

        Returns (batch_token_ids, batch_segment_ids), two lists of lists.
        """
        texts = [self._check_texts(first_texts, "first_texts")]
        if second_texts is not None:
            texts.append(self._check_texts(second_texts, "second_texts"))
            if len(texts[1]) != len(texts[0]):
                raise ValueError(
                    f"`first_texts` and `second_texts` differ in length: "
                    f"{len(texts[0])} != {len(texts[1])}."
                )
        self._check_maxlen(maxlen, second_texts, pattern)
        index = self._truncate_index(truncate_from)
        head = [] if self._token_start_id is None else [self._token_start_id]
        tail = [] if self._token_end_id is None else [self._token_end_id]
        ids = [[head + p + tail for p in self._encode_ids(t)] for t in texts]
        if len(ids) == 1 and maxlen is None:  # nothing to cut or join
            return ids[0], [[0] * len(x) for x in ids[0]]
        seconds = ids[1] if len(ids) == 2 else [None] * len(ids[0])
        encoded = [
            self._assemble(a, b, maxlen, pattern, index)
            for a, b in zip(ids[0], seconds, strict=True)
        ]
        return [e[0] for e in encoded], [e[1] for e in encoded]

    @staticmethod
    def _check_texts(texts, name):
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"`{name}` must be a list of str. Received: {texts!r:.80}")
        for text in texts:
            _check_text(text, f"{name} item")
        return list(texts)

    def rematch(self, text, tokens):
        """Character indices of `text` each token came from: a list per token.

        Tokens are matched to the text's pieces in order, earliest first; start, end, pad
        and mask tokens (and tokens not found) map to []. [UNK] maps to its word.
        """
        _check_text(text, "text")
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise TypeError(f"`tokens` must be a list of str. Received: {tokens!r:.80}")
        pieces, spans = self._spans(text)
        skipped = {self._token_start, self._token_end, self._token_pad, self._token_mask}
        mapping, position = [], 0
        for token in tokens:
            try:
                k = -1 if token in skipped else pieces.index(token, position)
            except ValueError:
                k = -1
            if k < 0:
                mapping.append([])
                continue
            mapping.append(list(range(*spans[k])))
            position = k + 1
        return mapping


# ----------------------------------------------------------------------------- WordPiece


class Tokenizer(TokenizerBase):
    """BERT tokenizer: Google's BasicTokenizer + WordPiece on the Rust `tokenizers` library.

    Args:
        token_dict: {token: id} or the path of a vocab.txt (see `load_vocab`); must hold [UNK].
        do_lower_case: uncased model: lowercase and strip accents (module docstring).
        pre_tokenize: optional text -> list of words (e.g. `jieba.lcut`) run first; a word
            in the vocabulary (after normalisation) stays one token, others are tokenized.
            The words must be pieces of the text, in order.
        token_start: token put before every sequence, or None.
        token_end: token put after every sequence, or None.
        word_maxlen: words longer than this many chars become [UNK] (Google: 100).
    """

    stem = staticmethod(_stem)
    _is_special = staticmethod(_is_special)

    def __init__(
        self,
        token_dict,
        do_lower_case=False,
        pre_tokenize=None,
        token_start="[CLS]",
        token_end="[SEP]",
        word_maxlen=100,
    ):
        super().__init__(token_start, token_end, pre_tokenize)
        if isinstance(token_dict, (str, os.PathLike)):
            token_dict = load_vocab(token_dict)
        _check_token_dict(token_dict)
        if not isinstance(do_lower_case, bool):
            raise TypeError(f"`do_lower_case` must be a bool. Received: {do_lower_case!r}")
        if isinstance(word_maxlen, bool) or not isinstance(word_maxlen, int) or word_maxlen < 1:
            raise ValueError(f"`word_maxlen` must be a positive int. Received: {word_maxlen!r}")
        if "[UNK]" not in token_dict:
            raise ValueError("The vocabulary has no '[UNK]' token; BERT WordPiece needs one.")
        self._token_dict = dict(token_dict)
        self._token_dict_inv = {i: t for t, i in self._token_dict.items()}
        self._vocab_size = len(self._token_dict)
        self._do_lower_case = do_lower_case
        self._word_maxlen = word_maxlen
        self._token_pad, self._token_unk, self._token_mask = "[PAD]", "[UNK]", "[MASK]"
        for name in ("pad", "unk", "mask"):
            token = getattr(self, f"_token_{name}")
            setattr(self, f"_token_{name}_id", self._token_dict.get(token))
        self._check_special_tokens(self._token_dict.__contains__)
        self._backend = _build_wordpiece(self._token_dict, do_lower_case, word_maxlen)
        self._word_ids = {}  # word -> WordPiece ids (see _encode_ids)

    def token_to_id(self, token):
        """Id of `token`; the [UNK] id for tokens outside the vocabulary."""
        return self._token_dict.get(token, self._token_unk_id)

    def tokens_to_ids(self, tokens):
        """Ids of `tokens`; the [UNK] id for tokens outside the vocabulary."""
        get, unk = self._token_dict.get, self._token_unk_id
        return [get(token, unk) for token in tokens]

    def id_to_token(self, i):
        """Token of id `i`; ValueError for ids outside the vocabulary."""
        try:
            return self._token_dict_inv[operator.index(i)]
        except (KeyError, TypeError):
            raise ValueError(
                f"id {i!r} is not in the vocabulary (ids 0..{self._vocab_size - 1})."
            ) from None

    def _tokenize(self, text):
        if self._pre_tokenize is not None:
            return self._pre_tokenized(text)[0]
        return self.ids_to_tokens(self._encode_ids([text])[0])

    def _spans(self, text):
        if self._pre_tokenize is not None:
            tokens, _, spans = self._pre_tokenized(text)
            return tokens, spans
        encoding = self._backend.encode(text, add_special_tokens=False)
        return encoding.tokens, encoding.offsets

    def _encode_ids(self, texts):
        """Ids of each text: `_basic_words` in Python, each word's pieces from the Rust model.

        Words recur, so their piece ids are memoised (up to `_WORD_CACHE` words); this path
        is about 3x faster than the Rust pipeline's per-text overhead, which `_spans` keeps
        for character offsets.
        """
        if self._pre_tokenize is not None:
            return [self._pre_tokenized(text)[1] for text in texts]
        cache, lower = self._word_ids, self._do_lower_case
        batch = []
        for text in texts:
            ids = []
            for word in _basic_words(text, lower):
                pieces = cache.get(word)
                if pieces is None:
                    pieces = self._wordpiece_ids(word)
                ids += pieces
            batch.append(ids)
        return batch

    def _wordpiece_ids(self, word):
        """WordPiece ids of one basic word by the Rust model, memoised in `_word_ids`."""
        if len(self._word_ids) >= _WORD_CACHE:
            self._word_ids.clear()
        pieces = self._word_ids[word] = tuple(t.id for t in self._backend.model.tokenize(word))
        return pieces

    def _pre_tokenized(self, text):
        """(tokens, ids, spans) with `pre_tokenize` words: in-vocab words whole, others split."""
        normalize = self._backend.normalizer.normalize_str
        parts, rest = [], []  # parts: (token, span) or (None, index into rest)
        for start, end in _word_spans(text, self._pre_tokenize(text)):
            word = text[start:end]
            key = normalize(word).strip()
            if key in self._token_dict and key.split() == [key]:
                lead, trail = len(word) - len(word.lstrip()), len(word) - len(word.rstrip())
                parts.append((key, (start + lead, end - trail)))
            else:
                parts.append((None, len(rest)))
                rest.append((word, start))
        encodings = self._backend.encode_batch([w for w, _ in rest], add_special_tokens=False)
        tokens, spans = [], []
        for token, where in parts:
            if token is not None:
                tokens.append(token)
                spans.append(where)
                continue
            encoding, shift = encodings[where], rest[where][1]
            tokens.extend(encoding.tokens)
            spans.extend((shift + s, shift + e) for s, e in encoding.offsets)
        return tokens, self.tokens_to_ids(tokens), spans

    def decode(self, ids, tokens=None):
        """Readable text from ids (or from `tokens` when given); special tokens are dropped.

        '##' pieces join the previous piece; CJK ideographs, kana and full-width punctuation
        take no spaces; other punctuation attaches to the previous word, opening brackets
        and '$' to the next, and '-/+=_@#&*^~|' to both; '3.14', '1,000', "don't" stay
        whole; everything else is separated by one space.
        """
        tokens = tokens or self.ids_to_tokens(ids)
        text = ""
        for token in tokens:
            if _is_special(token) or not token:
                continue
            if token[:2] == "##" and len(token) > 2:
                text += token[2:]
                continue
            if text and _space_between(text, token[0]):
                text += " "
            text += token
        return text


def _space_between(text, ch):
    """Whether decode puts a space between `text` so far and a next token starting with ch."""
    last, before = text[-1], text[-2] if len(text) > 1 else ""
    if _is_wide(last) or _is_wide(ch) or last in _JOINERS or ch in _JOINERS:
        return False
    if last in _OPENING or unicodedata.category(last) in ("Ps", "Pi"):
        return False
    if _is_punctuation(ch) and ch not in _OPENING and unicodedata.category(ch) not in ("Ps", "Pi"):
        return False
    if last in ".,:" and before.isdigit() and ch.isdigit():
        return False
    return not (last == "'" and before.isalpha() and ch.isalpha())


# ----------------------------------------------------------------------------- SentencePiece


def _join_words(text, words):
    """' '.join(words) and, per char of it, its index in `text` (-1 for the added spaces)."""
    joined, char_map = [], []
    for start, end in _word_spans(text, words):
        if joined:
            joined.append(" ")
            char_map.append(-1)
        joined.append(text[start:end])
        char_map.extend(range(start, end))
    return "".join(joined), char_map


class SpTokenizer(TokenizerBase):
    """A SentencePiece model with the same API as `Tokenizer` (bert4keras `SpTokenizer`).

    Args:
        sp_model_path: path of the `.model` file.
        token_start: piece put before every sequence, or None (default '[CLS]', as in
            ALBERT's model and bert4keras). A piece missing from the model is an error.
        token_end: piece put after every sequence, or None (default '[SEP]'); T5 uses
            token_start=None, token_end=`'</s>'`.
        pre_tokenize: optional text -> words, joined by spaces before encoding.
    """

    def __init__(self, sp_model_path, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None):
        super().__init__(token_start, token_end, pre_tokenize)
        import sentencepiece as spm

        _check_path(sp_model_path, "sp_model_path")
        if not os.path.isfile(sp_model_path):
            raise FileNotFoundError(f"No SentencePiece model at {os.fspath(sp_model_path)!r}.")
        self._sp_model_path = sp_model_path
        self.sp_model = spm.SentencePieceProcessor(model_file=os.fspath(sp_model_path))
        self._vocab_size = self.sp_model.get_piece_size()
        pad_id, unk_id = self.sp_model.pad_id(), self.sp_model.unk_id()
        self._token_pad = self.sp_model.id_to_piece(pad_id) if pad_id >= 0 else None
        self._token_pad_id = pad_id if pad_id >= 0 else None
        self._token_unk, self._token_unk_id = self.sp_model.id_to_piece(unk_id), unk_id
        mask_id = self.sp_model.piece_to_id("[MASK]")
        self._token_mask = "[MASK]" if mask_id != unk_id else None
        self._token_mask_id = mask_id if mask_id != unk_id else None
        self._check_special_tokens(
            lambda t: t == self._token_unk or self.sp_model.piece_to_id(t) != unk_id
        )

    def token_to_id(self, token):
        """Id of piece `token`; the unknown id for pieces outside the model."""
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        """Piece of id `i`; ValueError for ids outside the model."""
        if isinstance(i, bool) or not 0 <= operator.index(i) < self._vocab_size:
            raise ValueError(f"id {i!r} is not in the model (ids 0..{self._vocab_size - 1}).")
        return self.sp_model.id_to_piece(operator.index(i))

    def _is_decodable(self, i):
        """In range, not a control/unknown/unused piece, not the start/end/pad/mask token."""
        sp = self.sp_model
        specials = (self._token_start_id, self._token_end_id, self._token_pad_id)
        return (
            0 <= i < self._vocab_size
            and i not in specials + (self._token_mask_id,)
            and not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i))
        )

    def decode(self, ids):
        """Text of the ids, skipping special and unknown pieces and ids past the model."""
        ids = [operator.index(i) for i in ids]
        return self.sp_model.decode([i for i in ids if self._is_decodable(i)])

    def _joined(self, text):
        if self._pre_tokenize is None:
            return text
        return _join_words(text, self._pre_tokenize(text))[0]

    def _tokenize(self, text):
        return self.sp_model.encode(self._joined(text), out_type=str)

    def _encode_ids(self, texts):
        return self.sp_model.encode([self._joined(text) for text in texts])

    def _spans(self, text):
        """Pieces and the char span of each (surface whitespace trimmed; '▁' alone -> empty)."""
        from sentencepiece import sentencepiece_pb2

        if self._pre_tokenize is None:
            joined, char_map = text, range(len(text))
        else:
            joined, char_map = _join_words(text, self._pre_tokenize(text))
        proto = sentencepiece_pb2.SentencePieceText.FromString(
            self.sp_model.encode(joined, out_type="serialized_proto")
        )
        byte_to_char = []
        for i, ch in enumerate(joined):
            byte_to_char.extend([i] * len(ch.encode("utf-8")))
        byte_to_char.append(len(joined))
        tokens, spans = [], []
        for piece in proto.pieces:
            start, end = byte_to_char[piece.begin], byte_to_char[piece.end]
            chars = [char_map[c] for c in range(start, end) if not joined[c].isspace()]
            chars = [c for c in chars if c >= 0]
            tokens.append(piece.piece)
            spans.append((chars[0], chars[-1] + 1) if chars else (0, 0))
        return tokens, spans
