"""Tests for bert4x.snippets: each helper against a naive oracle written here."""

import math
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bert4x.snippets import (
    DataGenerator,
    parallel_apply,
    parallel_apply_generator,
    sequence_padding,
    text_segmentate,
    to_array,
    truncate_sequences,
)

FUZZ = settings(max_examples=80, deadline=None)


# ----------------------------------------------------------------------------- sequences


def oracle_truncate(maxlen, indices, *sequences):
    """bert4keras's loop: pop at the index from the longest sequence (first on ties)."""
    pairs = [(s, i) for s, i in zip(sequences, indices, strict=True) if s is not None]
    while sum(len(s) for s, _ in pairs) > maxlen:
        longest = max(range(len(pairs)), key=lambda k: (len(pairs[k][0]), -k))
        pairs[longest][0].pop(pairs[longest][1])
    return [s for s, _ in pairs]


@FUZZ
@given(
    st.lists(st.none() | st.integers(0, 12), min_size=1, max_size=4),
    st.integers(0, 30),
    st.data(),
)
def test_truncate_sequences_matches_pop_loop(lengths, maxlen, data):
    indices = [data.draw(st.sampled_from([-2, -1, 0, 1])) for _ in lengths]
    sequences = [
        None if n is None else list(range(100 * k, 100 * k + n)) for k, n in enumerate(lengths)
    ]
    expected = [None if s is None else list(s) for s in sequences]
    try:
        expected = oracle_truncate(maxlen, indices, *expected)
    except IndexError:  # the loop pops past an end: a clear error instead
        with pytest.raises(ValueError, match="Cannot pop"):
            truncate_sequences(maxlen, indices, *sequences)
        return
    result = truncate_sequences(maxlen, indices, *sequences)
    assert result == expected
    assert all(a is b for a, b in zip(result, [s for s in sequences if s is not None], strict=True))


def test_truncate_sequences_errors():
    with pytest.raises(ValueError, match="one index per sequence"):
        truncate_sequences(3, [-1], [1, 2], [3, 4])
    with pytest.raises(TypeError, match="lists"):
        truncate_sequences(1, -1, (1, 2, 3))
    with pytest.raises(ValueError, match="maxlen"):
        truncate_sequences(-1, -1, [1])


def oracle_pad(inputs, length, value, seq_dims, mode):
    """Cut each array's leading axes to `length`, np.pad to it, stack."""
    out = []
    for x in inputs:
        x = np.asarray(x)[tuple(slice(n) for n in length)]
        pad = [
            (0, n - m) if mode == "post" else (n - m, 0)
            for n, m in zip(length, x.shape[:seq_dims], strict=True)
        ]
        pad += [(0, 0)] * (x.ndim - seq_dims)
        out.append(np.pad(x, pad, constant_values=value))
    return np.stack(out)


@FUZZ
@given(
    st.integers(1, 2),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=4),
    st.none() | st.integers(0, 6),
    st.sampled_from(["post", "pre"]),
    st.integers(-3, 3),
)
def test_sequence_padding_matches_np_pad(seq_dims, shapes, length, mode, value):
    rng = np.random.default_rng(0)
    trailing = (2,) if seq_dims == 1 else ()
    inputs = [rng.integers(1, 9, size=shape[:seq_dims] + trailing) for shape in shapes]
    result = sequence_padding(inputs, length, value, seq_dims, mode)
    if length is None:
        target = [max(x.shape[d] for x in inputs) for d in range(seq_dims)]
    else:
        target = [length] * seq_dims
    expected = oracle_pad(inputs, target, value, seq_dims, mode)
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == inputs[0].dtype


def test_sequence_padding_lists_and_errors():
    out = sequence_padding([[1, 2, 3], [], [4]])
    np.testing.assert_array_equal(out, [[1, 2, 3], [0, 0, 0], [4, 0, 0]])
    assert out.dtype.kind == "i"  # an empty sequence does not turn the batch into floats
    np.testing.assert_array_equal(sequence_padding([[1, 2, 3]], length=2, mode="pre"), [[1, 2]])
    with pytest.raises(ValueError, match="mode"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match="empty"):
        sequence_padding([])
    with pytest.raises(ValueError, match="trailing"):
        sequence_padding([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="length"):
        sequence_padding([np.zeros((2, 3))], length=[2, 3, 4], seq_dims=2)


def test_text_segmentate_example():
    # Worked by hand: pieces 'ab。', 'cd。', 'ef' cannot pair within 5 chars (3 + 2 > 4).
    assert text_segmentate("ab。cd。ef", 5, seps="。") == ["ab。", "cd。", "ef"]
    # 'a,b,' fits in 5 chars; the long sentence falls back to the second separator ','.
    assert text_segmentate("a,b。cccc,dd。", 5, seps="。,") == ["a,b。", "cccc,", "dd。"]
    assert text_segmentate("  short  ", 10) == ["short"]


@FUZZ
@given(
    st.text(alphabet="ab。，\n ", max_size=60),
    st.integers(1, 12),
)
def test_text_segmentate_properties(text, maxlen):
    seps = "\n。，"
    segments = text_segmentate(text, maxlen, seps)
    squeeze = lambda s: "".join(s.split())  # noqa: E731
    assert "".join(squeeze(s) for s in segments) == squeeze(text)
    for segment in segments:
        # Longer than maxlen only when no separator is left to cut at (runs of separators
        # at the ends stay attached, as in bert4keras).
        assert len(segment) <= maxlen or all(c not in seps for c in segment.strip(seps))
    position = 0
    for segment in segments:
        position = text.index(segment, position) + len(segment)


def test_imports_stay_light():
    code = (
        "import sys, bert4x.tokenizers, bert4x.snippets\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from bert4x.decoding import AutoRegressiveDecoder as original
    from bert4x.snippets import AutoRegressiveDecoder

    assert AutoRegressiveDecoder is original


def test_to_array():
    a, b = to_array([1, 2], [[3]])
    assert isinstance(a, np.ndarray) and b.shape == (1, 1)
    assert to_array([1]).shape == (1,)


# ----------------------------------------------------------------------------- batches


class Examples(DataGenerator):
    """Yields single examples (token_ids, label); token i of example k is k * 1000 + i + 1."""

    def __iter__(self, random=False):
        for _, (k, n) in self.sample(random):
            yield [k * 1000 + i + 1 for i in range(n)], k


class Batches(DataGenerator):
    """bert4keras-style: padded batches of token ids."""

    def __iter__(self, random=False):
        batch = []
        for is_end, (_, n) in self.sample(random):
            batch.append(list(range(1, n + 1)))
            if len(batch) == self.batch_size or is_end:
                yield self.sequence_padding(batch)
                batch = []


def test_sample_flags_and_shuffling():
    generator = DataGenerator(list(range(10)), batch_size=3)
    assert len(generator) == 4
    items = list(generator.sample())
    assert items == [(i == 9, i) for i in range(10)]
    shuffled = [x for _, x in generator.sample(random=True)]
    assert sorted(shuffled) == list(range(10)) and shuffled != list(range(10))
    unsized = DataGenerator((i for i in range(50)), batch_size=4, buffer_size=5)
    streamed = [x for _, x in unsized.sample(random=True)]
    assert sorted(streamed) == list(range(50)) and streamed != list(range(50))
    with pytest.raises(TypeError, match="len"):
        len(unsized)
    assert list(DataGenerator([]).sample()) == []


def test_forfit_and_template_errors():
    generator = Batches([(0, 2), (1, 3), (2, 1)], batch_size=2)
    stream = generator.forfit(random=False)
    batches = [next(stream) for _ in range(4)]
    assert [b.shape for b in batches] == [(2, 3), (1, 1), (2, 3), (1, 1)]
    with pytest.raises(NotImplementedError, match="__iter__"):
        next(DataGenerator([1]).forfit())
    with pytest.raises(ValueError, match="empty"):
        next(Batches([]).forfit())
    with pytest.raises(ValueError, match="batch_size"):
        DataGenerator([1], batch_size=0)
    with pytest.raises(ValueError, match="bucket_boundaries"):
        DataGenerator([1], bucket_boundaries=[64, 32])


def test_python_batches_pad_to_bucket_boundaries():
    data = [(k, n) for k, n in enumerate(np.random.default_rng(1).integers(1, 65, size=200))]
    generator = Batches(data, batch_size=8, bucket_boundaries=[16, 32, 64])
    shapes = set()
    for batch in generator.__iter__(random=True):
        longest = int((batch > 0).sum(axis=1).max())
        assert batch.shape[1] == min(b for b in (16, 32, 64) if b >= longest)
        shapes.add(batch.shape[1])
    assert shapes <= {16, 32, 64}
    with pytest.raises(ValueError, match="bucket_boundaries"):
        Batches([(0, 70)], bucket_boundaries=[16, 32, 64]).__iter__().__next__()


def take(dataset, n):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(n)]


def test_to_dataset_batching_modes():
    fixed = Examples([(k, 3) for k in range(6)], batch_size=4)
    batches = take(fixed.to_dataset(("int32", "int32"), ([3], [])), 2)
    assert batches[0][0].shape == (4, 3)
    assert sorted(batches[0][1].tolist() + batches[1][1][:2].tolist()) == list(range(6))
    ragged = Examples([(0, 2), (1, 5), (2, 3)], batch_size=3)
    (tokens, labels), *_ = take(
        ragged.to_dataset(("int32", "int32"), ([None], []), padded_batch=True), 1
    )
    assert tokens.shape == (3, 5)
    for row, k in zip(tokens, labels, strict=True):
        n = [2, 5, 3][k]
        assert row.tolist() == [k * 1000 + i + 1 for i in range(n)] + [0] * (5 - n)


def test_to_dataset_names():
    generator = Examples([(0, 2), (1, 4)], batch_size=2)
    dataset = generator.to_dataset(
        types=("int32", "int32"),
        shapes=([None], []),
        names=("Input-Token", "label"),
        padded_batch=True,
    )
    batch = next(iter(dataset))
    assert set(batch) == {"Input-Token", "label"} and batch["Input-Token"].shape == (2, 4)

    class Nested(DataGenerator):
        def __iter__(self, random=False):
            for _, n in self.sample(random):
                yield [list(range(1, n + 1)), [0] * n], [[n]]

    nested = Nested([2, 3], batch_size=2).to_dataset(
        types=[("int32", "int32"), ("int32",)],
        shapes=[([None], [None]), ([1],)],
        names=[("Input-Token", "Input-Segment"), ("Probas",)],
        padded_batch=True,
    )
    inputs, outputs = next(iter(nested))
    assert inputs["Input-Segment"].shape == (2, 3) and outputs["Probas"].shape == (2, 1)
    with pytest.raises(TypeError, match="names"):
        generator.to_dataset(("int32", "int32"), ([None], []), names=[1, 2])


def test_to_dataset_buckets_bound_the_shapes():
    boundaries = [16, 32, 64, 128]
    lengths = np.random.default_rng(2).integers(1, 129, size=300)
    generator = Examples(list(enumerate(lengths)), batch_size=8, bucket_boundaries=boundaries)
    dataset = generator.to_dataset(("int32", "int32"), ([None], []))
    shapes = set()
    for tokens, labels in take(dataset, 60):
        shapes.add(tokens.shape)
        longest = max(lengths[k] for k in labels)
        shortest = min(lengths[k] for k in labels)
        bucket = min(b for b in boundaries if b >= longest)
        assert tokens.shape == (8, bucket)
        assert shortest > max([0] + [b for b in boundaries if b < bucket])  # one bucket per batch
        for row, k in zip(tokens, labels, strict=True):
            assert (row > 0).sum() == lengths[k] and row[0] == k * 1000 + 1
    assert len(shapes) <= len(boundaries) + 1 and len(shapes) >= 3


def test_to_dataset_bucket_overflow_is_reported():
    import tensorflow as tf

    generator = Examples([(0, 10), (1, 40)], batch_size=1, bucket_boundaries=[16, 32])
    dataset = generator.to_dataset(("int32", "int32"), ([None], []))
    with pytest.raises(tf.errors.InvalidArgumentError, match="bucket_boundaries"):
        take(dataset, 4)


# ----------------------------------------------------------------------------- parallel


def square_with_pid(x):
    return x * x, os.getpid()


def test_parallel_apply_keeps_order():
    data = list(range(200))
    results = parallel_apply(square_with_pid, data, workers=2, max_queue_size=8)
    assert [r for r, _ in results] == [x * x for x in data]
    assert len({pid for _, pid in results} - {os.getpid()}) >= 1
    collected = []
    parallel_apply(lambda x: -x, iter(data), 2, 4, callback=collected.append)
    assert collected == [-x for x in data]
    unordered = parallel_apply(lambda x: x + 1, data, 2, 4, unordered=True)
    assert sorted(unordered) == [x + 1 for x in data]
    threads = parallel_apply(lambda x: x * 3, data, 3, 4, dummy=True)
    assert threads == [x * 3 for x in data]


def test_parallel_apply_generator_yields_indices():
    pairs = list(parallel_apply_generator(lambda x: x.upper(), "abcdef", 2, 2))
    assert sorted(pairs) == list(enumerate("ABCDEF"))


def first_draw_per_worker(random_seeds):
    def draw(i):
        return i, os.getpid(), np.random.randint(1 << 30)

    results = parallel_apply(draw, range(40), 2, 2, random_seeds=random_seeds)
    first = {}
    for _, pid, value in results:  # in input order, so the first seen is each worker's first
        first.setdefault(pid, value)
    return list(first.values())


def test_parallel_apply_random_seeds():
    np.random.seed(0)
    fresh = first_draw_per_worker(True)
    inherited = first_draw_per_worker(False)
    if len(inherited) == 2:  # both forked workers drew from the same inherited state
        assert inherited[0] == inherited[1]
    if len(fresh) == 2:
        assert fresh[0] != fresh[1]
    seeded = first_draw_per_worker([7, 7])
    assert len(set(seeded)) == 1 and seeded[0] == np.random.RandomState(7).randint(1 << 30)


def test_parallel_apply_errors_and_early_exit():
    def fail(x):
        if x == 5:
            raise KeyError("boom")
        return x

    with pytest.raises(RuntimeError, match=r"(?s)item 5.*KeyError"):
        parallel_apply(fail, range(20), 2, 4)
    with pytest.raises(RuntimeError, match="KeyError"):
        parallel_apply(fail, range(20), 2, 4, dummy=True)
    before = len(multiprocessing.active_children())
    stream = parallel_apply_generator(lambda x: x, range(1000), 2, 4)
    next(stream)
    stream.close()
    assert len(multiprocessing.active_children()) == before
    with pytest.raises(ValueError, match="random_seeds"):
        parallel_apply(abs, [1], 2, 2, random_seeds=[1])
    with pytest.raises(ValueError, match="workers"):
        parallel_apply(abs, [1], 0, 2)


def test_parallel_apply_reads_lazily():
    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield i

    stream = parallel_apply_generator(math.sqrt, source(), 2, 4)
    for _ in range(5):
        next(stream)
    assert len(pulled) < 100
    stream.close()


def test_forfit_yields_lists_as_tuples_and_fortest_the_inputs():
    """Keras 3's TF generator adapter rejects lists; bert4keras generators yield them."""

    class Lists(DataGenerator):
        def __iter__(self, random=False):
            for _, x in self.sample(random):
                yield [np.array([x]), [np.array([x]), np.array([-x])]], np.array([x])

    batches = Lists([1, 2], batch_size=1).forfit(random=False)
    first = next(batches)
    assert isinstance(first, tuple) and isinstance(first[0], tuple)
    assert isinstance(first[0][1], tuple) and first[0][1][1].tolist() == [-1]
    tests = Lists([1, 2], batch_size=1).fortest()
    assert [next(tests)[0].tolist() for _ in range(3)] == [[1], [2], [1]]


def test_snippets_open_is_the_builtin():
    import builtins

    from bert4x.snippets import open as snippets_open

    assert snippets_open is builtins.open
