"""Tests for bert4x.tokenizers against an independent Google BERT reference.

The reference below is written from the published algorithm (google-research/bert
`tokenization.py`: BasicTokenizer + WordPiece), not by calling bert4x. The corpus
`data/corpus.txt` mixes Chinese, English, accented Latin, Greek capitals (final sigma),
Cyrillic, Japanese, Korean, Arabic, Hindi, Thai, emoji sequences, control and format
characters, exotic whitespace, full-width forms, CJK extension ideographs, private-use
characters, recent punctuation and words longer than 100 characters.
"""

import pickle
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert4x.tokenizers import SpTokenizer, Tokenizer, load_vocab, save_vocab

CORPUS = Path(__file__).parent / "data" / "corpus.txt"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- reference


def ref_is_cjk(ch):
    code = ord(ch)
    blocks = [
        (0x4E00, 0x9FFF),
        (0x3400, 0x4DBF),
        (0x20000, 0x2A6DF),
        (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF),
        (0xF900, 0xFAFF),
        (0x2F800, 0x2FA1F),
    ]
    return any(lo <= code <= hi for lo, hi in blocks)


def ref_is_punct(ch):
    code = ord(ch)
    ascii_symbol = 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
    return ascii_symbol or unicodedata.category(ch).startswith("P")


def ref_clean(text):
    """Drop NUL, U+FFFD and control/format chars (not tab/newline/CR); whitespace -> ' '."""
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in "\x00\ufffd" or (category in ("Cc", "Cf") and ch not in "\t\n\r"):
            continue
        kept.append(" " if ch in "\t\n\r" or category == "Zs" else ch)
    return "".join(kept)


def ref_fold(word):
    """Uncased: lowercase, canonical decomposition, drop non-spacing marks."""
    decomposed = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def ref_basic(text, lower):
    text = "".join(f" {c} " if ref_is_cjk(c) else c for c in ref_clean(text))
    words = []
    for word in text.split():
        word = ref_fold(word) if lower else word
        current = ""
        for ch in word:
            if ref_is_punct(ch):
                words += [current, ch] if current else [ch]
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


def ref_wordpiece(word, vocab, max_chars=100):
    """Greedy longest-match-first; any unmatched remainder makes the whole word [UNK]."""
    if len(word) > max_chars:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def ref_tokenize(text, vocab, lower):
    return [p for w in ref_basic(text, lower) for p in ref_wordpiece(w, vocab)]


def ref_normalize(text, lower):
    text = ref_clean(text)
    return ref_fold(text) if lower else text


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus():
    return CORPUS.read_text(encoding="utf-8").split("\n")[:-1]


def build_vocab(lines, lower):
    """Specials, chars seen twice, some '##' chars, frequent words, prefixes/suffixes."""
    words = Counter(w for line in lines for w in ref_basic(line, lower))
    chars = Counter()
    for word, n in words.items():
        for ch in word:
            chars[ch] += n
    common = sorted(c for c, n in chars.items() if n >= 2)
    tokens = SPECIALS + common + ["##" + c for c in common if ord(c) % 3]
    tokens += sorted(w for w, n in words.items() if n >= 2 and len(w) > 1)
    tokens += sorted({p for w in words if len(w) >= 6 for p in (w[:4], "##" + w[4:])})
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


@pytest.fixture(scope="module", params=[False, True], ids=["cased", "uncased"])
def case(request, corpus):
    lower = request.param
    vocab = build_vocab(corpus, lower)
    return lower, vocab, Tokenizer(vocab, do_lower_case=lower)


# ----------------------------------------------------------------------------- agreement


def test_matches_google_reference_on_corpus(case, corpus):
    lower, vocab, tokenizer = case
    expected = [ref_tokenize(line, vocab, lower) for line in corpus]
    assert [tokenizer.tokenize(line)[1:-1] for line in corpus] == expected
    flat = [t for tokens in expected for t in tokens]
    assert flat.count("[UNK]") > 10 and sum(t.startswith("##") for t in flat) > 10
    assert sum(t in vocab and len(t) > 3 and not t.startswith("#") for t in flat) > 10
    token_ids, segment_ids = tokenizer.encode_batch(corpus)
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    assert token_ids == [[cls] + [vocab[t] for t in tokens] + [sep] for tokens in expected]
    assert segment_ids == [[0] * len(ids) for ids in token_ids]


def test_word_length_limit_is_100_chars():
    vocab = {t: i for i, t in enumerate(SPECIALS + ["x", "##x"])}
    tokenizer = Tokenizer(vocab)
    assert tokenizer.tokenize("x" * 100)[1:-1] == ["x"] + ["##x"] * 99
    assert tokenizer.tokenize("x" * 101)[1:-1] == ["[UNK]"]
    assert Tokenizer(vocab, word_maxlen=5).tokenize("xxxxxx")[1:-1] == ["[UNK]"]


def mixed_text(corpus_chars):
    """Corpus chars, tricky chars and random BMP chars assigned in this Python's Unicode.

    Unassigned code points are left out: Python's tables and the Rust library's may be
    of different Unicode versions for them.
    """
    tricky = st.sampled_from(list("ΣΣς'\u0301\u200d\ufe0f\x00\ufffd\u3000\xa0 \t\n.-İ한𫠠\ue000"))
    other = st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs", "Cn"))
    alphabet = st.one_of(st.sampled_from(corpus_chars), tricky, other)
    return st.text(alphabet=alphabet, max_size=40)


@pytest.fixture(scope="module")
def corpus_chars(corpus):
    return sorted(set("".join(corpus)))


def test_matches_google_reference_on_fuzzed_text(case, corpus_chars):
    lower, vocab, tokenizer = case

    @FUZZ
    @given(mixed_text(corpus_chars))
    def check(text):
        assert tokenizer.tokenize(text)[1:-1] == ref_tokenize(text, vocab, lower)

    check()


def test_ids_path_agrees_with_offsets_path(case, corpus_chars):
    """encode's str.translate + memoised WordPiece path and the Rust offsets pipeline."""
    _, _, tokenizer = case
    anything = st.characters(exclude_categories=("Cs",))  # astral and unassigned too
    astral = st.characters(min_codepoint=0x10000, exclude_categories=("Cs", "Cn"))

    @FUZZ
    @given(st.text(st.one_of(st.sampled_from(corpus_chars), anything, astral), max_size=40))
    def check(text):
        assert tokenizer.tokenize(text)[1:-1] == tokenizer._spans(text)[0]

    check()


def test_word_memo_is_bounded_and_does_not_change_ids(case, corpus, monkeypatch):
    lower, vocab, tokenizer = case
    expected = [["[CLS]", *ref_tokenize(line, vocab, lower), "[SEP]"] for line in corpus]
    monkeypatch.setattr("bert4x.tokenizers._WORD_CACHE", 5)
    fresh = Tokenizer(vocab, do_lower_case=lower)
    assert [fresh.ids_to_tokens(ids) for ids in fresh.encode_batch(corpus)[0]] == expected
    assert 0 < len(fresh._word_ids) <= 5


# ----------------------------------------------------------------------------- rematch


def check_rematch(tokenizer, text, lower):
    tokens = tokenizer.tokenize(text)
    mapping = tokenizer.rematch(text, tokens)
    assert len(mapping) == len(tokens) and mapping[0] == [] and mapping[-1] == []
    spans = [(m[0], m[-1] + 1) for m in mapping if m]
    for span, m in zip(spans, [m for m in mapping if m], strict=True):
        assert m == list(range(*span)) and 0 <= span[0] < span[1] <= len(text)
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert [e for _, e in spans] == sorted(e for _, e in spans)
    # Pieces cut from one character (e.g. decomposed Hangul) share a span: compare groups.
    groups = []
    for token, m in zip(tokens[1:-1], mapping[1:-1], strict=True):
        assert m, f"{token!r} got no span in {text!r}"
        if groups and m[0] < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], m[-1] + 1)
            groups[-1][2].append(token)
        else:
            groups.append([m[0], m[-1] + 1, [token]])
    for start, end, group in groups:
        if "[UNK]" not in group:
            stems = "".join(t[2:] if t.startswith("##") else t for t in group)
            piece = ref_normalize(text[start:end], lower)
            if lower:  # a slice's last Σ lowercases as final ς even inside a word
                piece, stems = piece.replace("ς", "σ"), stems.replace("ς", "σ")
            assert piece == stems, (text, start, end, group)


def test_rematch_maps_tokens_back_to_text(case, corpus, corpus_chars):
    """check_rematch asserts each span's normalised text equals its token, spans increase."""
    lower, _, tokenizer = case
    for line in corpus:
        check_rematch(tokenizer, line, lower)

    @FUZZ
    @given(mixed_text(corpus_chars))
    def check(text):
        check_rematch(tokenizer, text, lower)

    check()


def test_rematch_on_truncated_and_foreign_tokens(case):
    _, _, tokenizer = case
    text = "The quick brown fox, 自然语言处理。 the lazy dog"
    full = tokenizer.tokenize(text)
    mapping = tokenizer.rematch(text, full)
    for maxlen in range(2, len(full)):
        cut = tokenizer.tokenize(text, maxlen=maxlen)
        assert tokenizer.rematch(text, cut) == mapping[: maxlen - 1] + [[]]
    assert tokenizer.rematch(text, ["[CLS]", "不在这里", "[SEP]"]) == [[], [], []]


# ----------------------------------------------------------------------------- pre_tokenize


def max_match(lexicon):
    """Forward maximum matching over `lexicon` (a jieba stand-in): pieces of the text."""

    def segment(text):
        words, i = [], 0
        while i < len(text):
            size = next(n for n in (4, 3, 2, 1) if n == 1 or text[i : i + n] in lexicon)
            words.append(text[i : i + size])
            i += size
        return words

    return segment


def test_pre_tokenize_keeps_vocab_words_whole(corpus):
    lexicon = {"自然语言", "人工智能", "中国", "北京", "首都", "ABC"}
    vocab = build_vocab(corpus, False)
    for word in sorted(lexicon - {"ABC"}):
        vocab[word] = len(vocab)
    segment = max_match(lexicon)
    tokenizer = Tokenizer(vocab, pre_tokenize=segment)
    for line in corpus[:12]:
        expected = []
        for word in segment(line):
            key = ref_normalize(word, False).strip()
            expected += [key] if key in vocab else ref_tokenize(word, vocab, False)
        assert tokenizer.tokenize(line)[1:-1] == expected
        assert tokenizer.encode(line)[0][1:-1] == [vocab[t] for t in expected]
        check_rematch(tokenizer, line, False)
    assert "自然语言" in tokenizer.tokenize(corpus[0])
    bad = Tokenizer(vocab, pre_tokenize=lambda text: ["not", "in", "text"])
    with pytest.raises(ValueError, match="pre_tokenize"):
        bad.tokenize("something else")


# ----------------------------------------------------------------------------- encode


def oracle_truncate(maxlen, index, *sequences):
    """bert4keras: pop at `index` from the longest sequence (first on ties) until it fits."""
    sequences = [s for s in sequences if s is not None]
    while sum(len(s) for s in sequences) > maxlen:
        longest = max(range(len(sequences)), key=lambda i: (len(sequences[i]), -i))
        sequences[longest].pop(index)


@pytest.fixture(scope="module")
def words(case):
    _, vocab, _ = case
    return sorted(t for t in vocab if t.isascii() and t.isalpha() and t.islower())


def test_encode_truncation_follows_bert4keras(case, words):
    lower, vocab, tokenizer = case

    @FUZZ
    @given(
        st.lists(st.sampled_from(words), max_size=12),
        st.none() | st.lists(st.sampled_from(words), max_size=12),
        st.integers(4, 30),
        st.sampled_from(["right", "left"]),
        st.sampled_from(["S*E*E", "S*ES*E"]),
    )
    def check(first, second, maxlen, truncate_from, pattern):
        a_text, b_text = " ".join(first), None if second is None else " ".join(second)
        a = ["[CLS]"] + ref_tokenize(a_text, vocab, lower) + ["[SEP]"]
        b = None if b_text is None else ["[CLS]"] + ref_tokenize(b_text, vocab, lower) + ["[SEP]"]
        index = -2 if truncate_from == "right" else 1
        oracle_truncate(maxlen + (b is not None and pattern == "S*E*E"), index, a, b)
        if b is not None and pattern == "S*E*E":
            b = b[1:]
        expected = [vocab[t] for t in a + (b or [])]
        segments = [0] * len(a) + [1] * len(b or [])
        got = tokenizer.encode(a_text, b_text, maxlen, pattern, truncate_from)
        assert got == (expected, segments) and len(expected) <= maxlen
        batch = tokenizer.encode_batch([a_text], None if b_text is None else [b_text], maxlen,
                                       pattern, truncate_from)  # fmt: skip
        assert batch == ([expected], [segments])
        tokens = ["[CLS]"] + ref_tokenize(a_text, vocab, lower) + ["[SEP]"]
        oracle_truncate(maxlen, -2, tokens)
        assert tokenizer.tokenize(a_text, maxlen=maxlen) == tokens

    check()


def test_encode_accepts_token_lists_without_mutating_them(case):
    _, vocab, tokenizer = case
    tokens = tokenizer.tokenize("the quick brown fox jumps over the lazy dog")
    original = list(tokens)
    ids, segments = tokenizer.encode(tokens, maxlen=4)
    assert tokens == original
    assert ids == [vocab.get(t, vocab["[UNK]"]) for t in original[:3] + original[-1:]]
    assert segments == [0, 0, 0, 0]


def canonical(items):
    """Human spacing: no spaces around CJK or inside brackets/before punctuation."""
    text, previous = "", None
    for kind, piece in items:
        glued = previous in ("cjk", "open") or kind in ("cjk", "punct", "close")
        text += piece if not text or glued else " " + piece
        previous = kind
    return text


def test_decode_inverts_encode_for_in_vocab_text(case):
    lower, vocab, tokenizer = case
    items = [("word", t) for t in vocab if t.isascii() and t.isalpha() and len(t) > 1]
    items += [("cjk", t) for t in vocab if len(t) == 1 and "\u4e00" <= t <= "\u9fff"]
    items += [("cjk", t) for t in "，。！？、" if t in vocab]
    items += [("punct", t) for t in ",.!?;:" if t in vocab]
    items += [("open", "("), ("close", ")")]

    @FUZZ
    @given(st.lists(st.sampled_from(items), min_size=1, max_size=15), st.booleans())
    def check(chosen, shout):
        text = canonical(chosen)
        source = text.upper() if lower and shout else text
        assert tokenizer.decode(tokenizer.encode(source)[0]) == text

    check()


@pytest.mark.parametrize(
    "text",
    [
        "3.14 and 1,000 don't",
        "e-mail me at a/b (see below)!",
        "中文English混排，好的。",
        "costs $5, he said “hi” [twice]; ok?",
    ],
)
def test_decode_spacing_rules(text):
    pieces = ref_basic(text, False)
    tokenizer = Tokenizer({t: i for i, t in enumerate(dict.fromkeys(SPECIALS + pieces))})
    assert tokenizer.decode(tokenizer.encode(text)[0]) == text


def test_special_token_attributes(case):
    _, vocab, tokenizer = case
    assert tokenizer.vocab_size == len(vocab)
    for name in ("pad", "unk", "mask", "start", "end"):
        token = getattr(tokenizer, f"_token_{name}")
        assert getattr(tokenizer, f"_token_{name}_id") == vocab[token]
    assert tokenizer.id_to_token(vocab["[MASK]"]) == "[MASK]"
    assert tokenizer.tokens_to_ids(["[SEP]", "not-a-token"]) == [vocab["[SEP]"], vocab["[UNK]"]]
    assert tokenizer.ids_to_tokens([vocab["[CLS]"]]) == ["[CLS]"]


def test_tokenizer_pickles(case, corpus):
    _, _, tokenizer = case
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode_batch(corpus) == tokenizer.encode_batch(corpus)


def test_no_start_or_end_token(case):
    _, vocab, _ = case
    tokenizer = Tokenizer(vocab, token_start=None, token_end=None)
    assert tokenizer.encode("the dog", "the fox", maxlen=3) == (
        [vocab["the"], vocab["the"], vocab["fox"]],
        [0, 1, 1],
    )


# ----------------------------------------------------------------------------- vocab files


def test_load_vocab_reads_first_field_and_round_trips(tmp_path, case):
    _, vocab, _ = case
    path = tmp_path / "vocab.txt"
    save_vocab(path, vocab)
    assert load_vocab(path) == vocab
    (tmp_path / "counts.txt").write_text("[UNK] 10\nhello 5\n\nworld\n", encoding="utf-8")
    assert load_vocab(tmp_path / "counts.txt") == {"[UNK]": 0, "hello": 1, "": 2, "world": 3}
    assert Tokenizer(str(path)).vocab_size == len(vocab)


def test_load_vocab_simplified(tmp_path):
    tokens = SPECIALS + [
        "a",
        "##b",
        "中",
        "##中",
        "中国",
        "ab",
        ",",
        "##,",
        "a.b",
        "##",
        "[unused1]",
    ]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    start = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    new, keep = load_vocab(path, simplified=True, startswith=start)

    def removable(t):  # multi-char token holding a CJK or punctuation char (after '##')
        stem = t[2:] if t.startswith("##") else t
        return len(t) > 1 and any(ref_is_cjk(c) or ref_is_punct(c) for c in stem)

    expected = start + [t for t in tokens if t not in start and not removable(t)]
    assert list(new) == expected and list(new.values()) == list(range(len(expected)))
    assert keep == [tokens.index(t) for t in expected]
    assert {"中国", "##中", "##,", "a.b", "[unused1]"}.isdisjoint(new)
    with pytest.raises(ValueError, match="startswith"):
        load_vocab(path, simplified=True, startswith=["[NOPE]"])


def test_bad_vocab_files(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("[UNK]\nhello\nworld\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'hello' on line 4 repeats line 2"):
        load_vocab(path)
    path = tmp_path / "nounk.txt"
    path.write_text("[CLS]\n[SEP]\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[UNK\]"):
        Tokenizer(str(path))
    with pytest.raises(ValueError, match="whitespace"):
        save_vocab(tmp_path / "x.txt", {"a b": 0})
    with pytest.raises(ValueError, match="id 0 is used by both"):
        Tokenizer({"[UNK]": 0, "a": 0})
    with pytest.raises(ValueError, match="missing ids"):
        Tokenizer({"[UNK]": 0, "a": 2})
    with pytest.raises(TypeError):
        Tokenizer(b"vocab.txt")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [None, b"bytes", ["a", "list"], 3])
def test_bad_text_raises_type_error(case, bad):
    _, _, tokenizer = case
    with pytest.raises(TypeError, match="text"):
        tokenizer.tokenize(bad)
    with pytest.raises(TypeError, match="text"):
        tokenizer.rematch(bad, [])
    if not isinstance(bad, list):  # a token list is valid input to encode
        with pytest.raises(TypeError, match="first_text"):
            tokenizer.encode(bad)
    if bad is not None and not isinstance(bad, list):  # second_text=None means one text
        with pytest.raises(TypeError, match="second_text"):
            tokenizer.encode("ok", bad)
    with pytest.raises(TypeError, match="first_texts"):
        tokenizer.encode_batch(["ok", bad])


def test_bad_arguments_raise_value_error(case):
    _, vocab, tokenizer = case
    with pytest.raises(TypeError, match="first_texts"):
        tokenizer.encode_batch("a str, not a list")
    with pytest.raises(ValueError, match="differ in length"):
        tokenizer.encode_batch(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="maxlen"):
        tokenizer.encode("a", "b", maxlen=2)
    with pytest.raises(ValueError, match="maxlen"):
        tokenizer.tokenize("a", maxlen=1)
    with pytest.raises(ValueError, match="pattern"):
        tokenizer.encode("a", pattern="SE")
    with pytest.raises(ValueError, match="truncate_from"):
        tokenizer.encode("a", maxlen=5, truncate_from="middle")
    with pytest.raises(ValueError, match="id"):
        tokenizer.id_to_token(len(vocab))
    with pytest.raises(ValueError, match="token_start"):
        Tokenizer(vocab, token_start="<s>")
    with pytest.raises(TypeError, match="do_lower_case"):
        Tokenizer(vocab, do_lower_case="yes")
    with pytest.raises(TypeError, match="pre_tokenize"):
        Tokenizer(vocab, pre_tokenize="jieba")


# ----------------------------------------------------------------------------- SentencePiece


@pytest.fixture(scope="module")
def sp_path(tmp_path_factory, corpus):
    spm = pytest.importorskip("sentencepiece")
    path = tmp_path_factory.mktemp("sp") / "tiny.model"
    with open(path, "wb") as writer:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus),
            model_writer=writer,
            vocab_size=600,
            character_coverage=0.98,
            hard_vocab_limit=False,
            user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
            pad_id=3,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            minloglevel=2,
        )
    return path


def test_sp_tokenizer_wraps_the_model(sp_path, corpus):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    tokenizer = SpTokenizer(str(sp_path))
    cls, sep = sp.piece_to_id("[CLS]"), sp.piece_to_id("[SEP]")
    assert (tokenizer._token_start_id, tokenizer._token_end_id) == (cls, sep)
    assert (tokenizer._token_pad_id, tokenizer._token_unk_id) == (sp.pad_id(), sp.unk_id())
    assert tokenizer._token_mask_id == sp.piece_to_id("[MASK]")
    for line in corpus[:20]:
        ids = sp.encode(line)
        assert tokenizer.encode(line) == ([cls] + ids + [sep], [0] * (len(ids) + 2))
        assert tokenizer.tokenize(line) == ["[CLS]"] + sp.encode(line, out_type=str) + ["[SEP]"]
        known = [i for i in ids if not sp.is_unknown(i)]
        assert tokenizer.decode(tokenizer.encode(line)[0]) == sp.decode(known)
    assert tokenizer.encode_batch(corpus[:20]) == tuple(
        list(x) for x in zip(*[tokenizer.encode(line) for line in corpus[:20]], strict=True)
    )
    assert tokenizer.decode([cls, sp.unk_id(), tokenizer.vocab_size + 5]) == ""


def test_sp_tokenizer_truncation_and_options(sp_path):
    tokenizer = SpTokenizer(str(sp_path), token_start=None, token_end="</s>")
    a, b = "the quick brown fox jumps over the lazy dog", "she sells seashells"
    pieces_a, pieces_b = tokenizer.tokenize(a), tokenizer.tokenize(b)
    oracle_truncate(8, -2, pieces_a, pieces_b)
    ids, segments = tokenizer.encode(a, b, maxlen=8)
    assert ids == tokenizer.tokens_to_ids(pieces_a + pieces_b)
    assert segments == [0] * len(pieces_a) + [1] * len(pieces_b)
    with pytest.raises(ValueError, match="token_start"):
        SpTokenizer(str(sp_path), token_start="[NOPE]")
    with pytest.raises(FileNotFoundError):
        SpTokenizer(str(sp_path) + ".missing")
    with pytest.raises(TypeError, match="sp_model_path"):
        SpTokenizer(None)
    with pytest.raises(ValueError, match="id"):
        tokenizer.id_to_token(-1)


def test_sp_rematch(sp_path, corpus):
    for pre_tokenize in (None, max_match({"自然语言", "人工智能"})):
        tokenizer = SpTokenizer(str(sp_path), pre_tokenize=pre_tokenize)
        for line in corpus:
            tokens = tokenizer.tokenize(line)
            mapping = tokenizer.rematch(line, tokens)
            assert mapping[0] == [] and mapping[-1] == []
            covered = [i for m in mapping for i in m]  # disjoint, in order, all non-space chars
            assert covered == [i for i, ch in enumerate(line) if not ch.isspace()]
            for token, m in zip(tokens, mapping, strict=True):
                if m and line.isascii() and line.isprintable() and token != tokenizer._token_unk:
                    assert line[m[0] : m[-1] + 1] == token.replace("\u2581", "")
