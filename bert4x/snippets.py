"""Data helpers in the bert4keras tradition.

Sections:
    sequences   truncate_sequences, sequence_padding, text_segmentate, to_array
    batches     DataGenerator (bert4keras template) with tf.data export and length buckets
    parallel    parallel_apply, parallel_apply_generator (multi-process preprocessing)

TensorFlow is imported only by `DataGenerator.to_dataset`. `AutoRegressiveDecoder` (from
`bert4x.decoding`) is re-exported here on first use, as bert4keras kept it in snippets.
"""

import bisect
import builtins
import math
import multiprocessing
import pickle
import queue
import random as _random
import threading
import traceback

import numpy as np

__all__ = [
    "truncate_sequences",
    "sequence_padding",
    "text_segmentate",
    "to_array",
    "DataGenerator",
    "parallel_apply",
    "parallel_apply_generator",
]


def __getattr__(name):
    """Lazy re-exports: `AutoRegressiveDecoder` (would import Keras with this module) and
    `open`, the builtin (bert4keras scripts import their py2/py3 `open` from snippets)."""
    if name == "AutoRegressiveDecoder":
        from bert4x.decoding import AutoRegressiveDecoder

        return AutoRegressiveDecoder
    if name == "open":
        return builtins.open
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}")


# ----------------------------------------------------------------------------- sequences


def _truncated_lengths(lengths, maxlen):
    """Lengths after popping from the longest (the first on ties) until sum <= maxlen.

    Closed form of that loop: with h the largest level where sum(min(n_i, h)) <= maxlen,
    sequences longer than h end at h, except the last `maxlen - sum(min(n_i, h))` of them,
    which keep h + 1 (ties pop the earlier sequence first).
    """
    if sum(lengths) <= maxlen:
        return list(lengths)
    low, high = 0, max(lengths)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= maxlen:
            low = mid
        else:
            high = mid - 1
    targets = [min(n, low) for n in lengths]
    above = [i for i, n in enumerate(lengths) if n > low]
    for i in above[len(above) - (maxlen - sum(targets)) :]:
        targets[i] += 1
    return targets


def truncate_sequences(maxlen, indices, *sequences):
    """Pop from the longest list (the first on ties) until the total length is <= maxlen.

    Every pop removes `sequence[index]`, with one index for all lists or one per list
    (e.g. -2 keeps a final [SEP]); lists are changed in place and None entries skipped.
    Returns the non-None lists. Same result as bert4keras's pop loop, in O(total) time.
    """
    _check_int(maxlen, "maxlen", 0)
    if isinstance(indices, (list, tuple)):
        if len(indices) != len(sequences):
            raise ValueError(
                f"`indices` needs one index per sequence: {len(indices)} != {len(sequences)}."
            )
    else:
        indices = [indices] * len(sequences)
    pairs = [(s, i) for s, i in zip(sequences, indices, strict=True) if s is not None]
    for sequence, _ in pairs:
        if not isinstance(sequence, list):
            raise TypeError(f"Sequences must be lists. Received: {type(sequence).__name__}")
    lengths = [len(s) for s, _ in pairs]
    for (sequence, index), n, target in zip(
        pairs, lengths, _truncated_lengths(lengths, maxlen), strict=True
    ):
        pops = n - target
        start = index if index >= 0 else n + index - pops + 1  # pops repeat at one position
        if pops and (start < 0 or start + pops > n):
            raise ValueError(
                f"Cannot pop {pops} items at index {index} from a sequence of length {n}."
            )
        del sequence[start : start + pops]
    return [s for s, _ in pairs]


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Stack arrays after cutting/padding their first `seq_dims` axes to `length`.

    out[b, :n_b] = x_b[:length] ('post'; 'pre' pads in front), other cells = value.
    length: None (the longest), an int (every sequence axis) or one int per axis. Cutting
    always keeps the beginning, as in bert4keras. Shapes: [b, *length, *rest].
    """
    if mode not in ("post", "pre"):
        raise ValueError(f"`mode` must be 'post' or 'pre'. Received: mode={mode!r}")
    _check_int(seq_dims, "seq_dims", 1)
    arrays = [np.asarray(x) for x in inputs]
    if not arrays:
        raise ValueError("`inputs` is empty; nothing to pad.")
    for x in arrays:
        if x.ndim < seq_dims or x.shape[seq_dims:] != arrays[0].shape[seq_dims:]:
            raise ValueError(
                f"Every input needs >= {seq_dims} sequence axes and equal trailing axes. "
                f"Received shapes {arrays[0].shape} and {x.shape}."
            )
    if length is None:
        length = np.max([x.shape[:seq_dims] for x in arrays], axis=0)
    elif np.ndim(length) == 0:
        length = [length] * seq_dims
    if len(length) != seq_dims:
        raise ValueError(f"`length` needs {seq_dims} entries. Received: length={length!r}")
    length = [int(n) for n in length]
    dtypes = [x.dtype for x in arrays if x.size] or [arrays[0].dtype]
    outputs = np.full(
        [len(arrays), *length, *arrays[0].shape[seq_dims:]], value, np.result_type(*dtypes)
    )
    for out, x in zip(outputs, arrays, strict=True):
        x = x[tuple(slice(n) for n in length)]
        if mode == "post":
            out[tuple(slice(n) for n in x.shape[:seq_dims])] = x
        else:
            out[tuple(slice(m - n, m) for n, m in zip(x.shape, length, strict=False))] = x
    return outputs


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split text into pieces of <= maxlen chars, trying the separators in order.

    The text is cut at seps[0] (kept at the end of each piece), pieces are packed
    greedily while the packed length stays below maxlen, and packs still too long are cut
    at seps[1], and so on; each piece is stripped of whitespace and `strips` chars. Text
    with no separator left is returned whole, even if longer than maxlen.
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str. Received: {text!r:.80}")
    _check_int(maxlen, "maxlen", 1)
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    pieces = text.split(seps[0])
    segments, pack = [], ""
    for i, piece in enumerate(pieces):
        if pack and piece and len(pack) + len(piece) > maxlen - 1:
            segments.extend(text_segmentate(pack, maxlen, seps[1:], strips))
            pack = ""
        pack += piece if i + 1 == len(pieces) else piece + seps[0]
    if pack:
        segments.extend(text_segmentate(pack, maxlen, seps[1:], strips))
    return [s for s in segments if s]


def to_array(*args):
    """np.array of each argument; a single argument returns one array."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(arrays) == 1 else arrays


# ----------------------------------------------------------------------------- batches


def _check_boundaries(boundaries):
    if boundaries is None:
        return None
    boundaries = list(boundaries)
    for b in boundaries:
        _check_int(b, "bucket_boundaries item", 1)
    if not boundaries or boundaries != sorted(set(boundaries)):
        raise ValueError(
            f"`bucket_boundaries` must be increasing positive ints. Received: {boundaries}"
        )
    return tuple(int(b) for b in boundaries)


def _bucket_length(length, boundaries):
    """Smallest boundary >= length."""
    i = bisect.bisect_left(boundaries, length)
    if i == len(boundaries):
        raise ValueError(
            f"A sequence of length {length} is longer than bucket_boundaries[-1]="
            f"{boundaries[-1]}; truncate it (e.g. encode(..., maxlen=...)) or add a boundary."
        )
    return boundaries[i]


def _names_wrapper(names):
    """bert4keras `names`: 'x' -> {x: v}; [a, b] -> {a: v0, b: v1}; [[a, b], [c]] -> tuple."""

    def zipped(keys, values):
        if len(keys) != len(values):
            raise ValueError(f"names {keys} do not match {len(values)} values.")
        return dict(zip(keys, values, strict=True))

    if isinstance(names, str):
        return lambda values: {names: values}
    if all(isinstance(n, str) for n in names):
        return lambda values: zipped(list(names), values)
    if all(isinstance(n, (list, tuple)) and all(isinstance(m, str) for m in n) for n in names):
        return lambda values: tuple(zipped(list(n), v) for n, v in zip(names, values, strict=True))
    raise TypeError(f"`names` must be a str, a list of str or a list of lists. Received: {names}")


def _signature(types, shapes):
    """tf.TensorSpec tree from parallel trees of dtypes and shapes (lists become tuples)."""
    import tensorflow as tf

    if isinstance(types, dict):
        return {k: _signature(t, shapes[k]) for k, t in types.items()}
    if isinstance(types, (list, tuple)):
        if not isinstance(shapes, (list, tuple)) or len(shapes) != len(types):
            raise ValueError(f"`shapes` {shapes} does not match `types` {types}.")
        return tuple(_signature(t, s) for t, s in zip(types, shapes, strict=True))
    return tf.TensorSpec(shapes, types)


def _conform(example, signature):
    """Arrange an example like the signature (dicts stay dicts, lists become tuples)."""
    if isinstance(signature, dict):
        return {k: _conform(example[k], s) for k, s in signature.items()}
    if isinstance(signature, tuple):
        if len(example) != len(signature):
            raise ValueError(f"An example has {len(example)} parts; `types` has {len(signature)}.")
        return tuple(_conform(e, s) for e, s in zip(example, signature, strict=True))
    return example


def _as_tuples(structure):
    """Lists (and tuples) as tuples, recursively; arrays and scalars unchanged."""
    if isinstance(structure, (list, tuple)):
        return tuple(_as_tuples(x) for x in structure)
    return structure


class DataGenerator:
    """Batch template: subclass it and write `__iter__(self, random=False)`.

    For `fit(generator.forfit(), steps_per_epoch=len(generator))`, `__iter__` yields
    padded batches (collect `self.sample(random)` items until `len(batch) ==
    self.batch_size or is_end`, then pad with `self.sequence_padding`). For
    `to_dataset`, `__iter__` yields single examples and tf.data batches them.

    Args:
        data: the examples; a sized sequence is shuffled by permutation, any other
            iterable through a buffer of `buffer_size` items.
        batch_size: examples per batch.
        buffer_size: shuffle buffer for unsized data (default batch_size * 1000).
        bucket_boundaries: increasing padded lengths, e.g. [32, 64, 128]: a batch whose
            longest sequence has n tokens is padded to the smallest boundary >= n, so a
            compiled (XLA) model sees at most len(bucket_boundaries) sequence lengths.
            `to_dataset` also groups examples of similar length into the same batch.
    """

    def __init__(self, data, batch_size=32, buffer_size=None, bucket_boundaries=None):
        _check_int(batch_size, "batch_size", 1)
        if buffer_size is not None:
            _check_int(buffer_size, "buffer_size", 1)
        self.data = data
        self.batch_size = batch_size
        self.buffer_size = buffer_size or batch_size * 1000
        self.bucket_boundaries = _check_boundaries(bucket_boundaries)
        self.steps = math.ceil(len(data) / batch_size) if hasattr(data, "__len__") else None

    def __len__(self):
        if self.steps is None:
            raise TypeError(
                "The data has no len(), so the number of batches is unknown; pass "
                "steps_per_epoch to fit explicitly."
            )
        return self.steps

    def _shuffled(self):
        if self.steps is not None:
            for i in np.random.permutation(len(self.data)):
                yield self.data[i]
            return
        buffer = []
        for item in self.data:
            buffer.append(item)
            if len(buffer) > self.buffer_size:
                i = np.random.randint(len(buffer))
                buffer[i], buffer[-1] = buffer[-1], buffer[i]
                yield buffer.pop()
        np.random.shuffle(buffer)
        yield from buffer

    def sample(self, random=False):
        """Yield (is_end, item) over the data, is_end True for the last item."""
        items = self._shuffled() if random else iter(self.data)
        try:
            current = next(items)
        except StopIteration:
            return
        for item in items:
            yield False, current
            current = item
        yield True, current

    def __iter__(self, random=False):
        raise NotImplementedError(
            "Subclass DataGenerator and implement __iter__(self, random=False) yielding "
            "batches (or single examples for to_dataset)."
        )

    def forfit(self, random=True):
        """`__iter__(random)` repeated forever (for `fit` with steps_per_epoch).

        Lists in a batch are yielded as tuples: Keras 3's TensorFlow generator adapter
        rejects lists, and bert4keras generators yield `[token_ids, segment_ids], labels`.
        """
        while True:
            empty = True
            for d in self.__iter__(random):
                empty = False
                yield _as_tuples(d)
            if empty:
                raise ValueError("DataGenerator.__iter__ yielded nothing; is the data empty?")

    def fortest(self, random=False):
        """The inputs of each batch (`d[0]`) repeated forever, for `predict`."""
        for d in self.forfit(random):
            yield d[0]

    def sequence_padding(self, inputs, value=0, seq_dims=1, mode="post"):
        """`sequence_padding` to the bucket length of the longest input (or to it, unbucketed)."""
        length = None
        if self.bucket_boundaries is not None:
            longest = np.max([np.shape(x)[:seq_dims] for x in inputs], axis=0)
            length = [_bucket_length(n, self.bucket_boundaries) for n in longest]
        return sequence_padding(inputs, length, value, seq_dims, mode)

    def to_dataset(self, types, shapes, names=None, padded_batch=False):
        """A tf.data.Dataset of batches from `forfit()`; `__iter__` yields single examples.

        types, shapes: per example, nested like it, e.g. ('int32', 'int32'), ([None], []).
        names: wrap examples in dicts keyed by layer names (see `_names_wrapper`).
        Batching: `batch` for fixed shapes; `padded_batch=True` pads each batch to its
        longest example; with `bucket_boundaries`, examples are grouped by length (the
        largest None-sized dimension) and every None dimension is padded to the bucket's
        boundary, so batches have at most len(bucket_boundaries) shapes.
        """
        import tensorflow as tf

        wrap = (lambda d: d) if names is None else _names_wrapper(names)
        signature = _signature(wrap(types), wrap(shapes))

        def generator():
            for example in self.forfit():
                yield _conform(wrap(example), signature)

        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        if self.bucket_boundaries is not None:
            return self._bucketed(dataset, signature)
        if padded_batch:
            padded_shapes = tf.nest.map_structure(lambda spec: spec.shape, signature)
            return dataset.padded_batch(self.batch_size, padded_shapes)
        return dataset.batch(self.batch_size)

    def _bucketed(self, dataset, signature):
        """bucket_by_sequence_length with inclusive boundaries: length <= b pads to b."""
        import tensorflow as tf

        dynamic = [
            (k, axis)
            for k, spec in enumerate(tf.nest.flatten(signature))
            for axis, size in enumerate(spec.shape)
            if size is None
        ]
        if not dynamic:
            raise ValueError("bucket_boundaries need a None dimension in `shapes` to pad.")
        top = self.bucket_boundaries[-1]

        def length(*example):
            flat = tf.nest.flatten(example)
            n = tf.reduce_max([tf.shape(flat[k])[axis] for k, axis in dynamic])
            message = f"An example is longer than bucket_boundaries[-1]={top}; truncate it."
            with tf.control_dependencies([tf.debugging.assert_less_equal(n, top, message)]):
                return tf.identity(n)

        return dataset.bucket_by_sequence_length(
            length,
            [b + 1 for b in self.bucket_boundaries],
            [self.batch_size] * (len(self.bucket_boundaries) + 1),
            pad_to_bucket_boundary=True,
        )


# ----------------------------------------------------------------------------- parallel


def _worker_loop(func, in_queue, out_queue, seed, serialize):
    """Apply func to (i, x) items until a None arrives; errors travel back as tracebacks."""
    if seed is not False:
        np.random.seed(seed)
        _random.seed(seed)
    while True:
        item = in_queue.get()
        if item is None:
            return
        i, x = item
        try:
            result = func(x)
            out_queue.put((i, pickle.dumps(result) if serialize else result, None))
        except Exception:  # reported to the caller, which raises
            out_queue.put((i, None, traceback.format_exc()))


def _start_workers(func, workers, max_queue_size, dummy, random_seeds):
    if dummy:
        in_queue, out_queue = queue.Queue(max_queue_size), queue.Queue()
        seeds = [False] * workers  # threads share one RNG: reseeding it would be meaningless
        make = threading.Thread
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        in_queue, out_queue = context.Queue(max_queue_size), context.Queue()
        if random_seeds is True:
            seeds = [None] * workers  # fresh OS entropy in each process
        elif random_seeds is None or random_seeds is False:
            seeds = [False] * workers
        else:
            seeds = list(random_seeds)
            if len(seeds) != workers:
                raise ValueError(f"`random_seeds` needs {workers} seeds. Received: {seeds}")
        make = context.Process
    procs = [
        make(target=_worker_loop, args=(func, in_queue, out_queue, seed, not dummy), daemon=True)
        for seed in seeds
    ]
    for p in procs:
        p.start()
    return procs, in_queue, out_queue


def _receive(out_queue, procs, dummy):
    """Next (i, result); raises if func failed or a worker died."""
    while True:
        try:
            i, result, error = out_queue.get(timeout=0.1)
            break
        except queue.Empty:
            dead = [p for p in procs if not p.is_alive()]
            if dead:
                raise RuntimeError(f"A parallel_apply worker exited early: {dead[0]}.") from None
    if error is not None:
        raise RuntimeError(f"func failed on item {i} in a parallel_apply worker:\n{error}")
    return i, result if dummy else pickle.loads(result)


def parallel_apply_generator(
    func, iterable, workers, max_queue_size, dummy=False, random_seeds=True
):
    """Yield (i, func(x_i)) for the items of `iterable`, in completion order.

    `workers` processes (threads if dummy) run func; at most `max_queue_size` items wait
    for a worker, so the iterable is read lazily. Processes are forked where the OS allows
    (func may then be a closure); items and results must pickle. random_seeds: True
    reseeds numpy/random in each process from OS entropy, a list gives one seed per
    process, False leaves the forked state. An exception in func raises RuntimeError.
    """
    _check_int(workers, "workers", 1)
    _check_int(max_queue_size, "max_queue_size", 1)
    procs, in_queue, out_queue = _start_workers(func, workers, max_queue_size, dummy, random_seeds)
    sent = received = 0
    finished = False
    try:
        for item in enumerate(iterable):
            while True:
                try:
                    in_queue.put(item, block=False)
                    break
                except queue.Full:
                    yield _receive(out_queue, procs, dummy)
                    received += 1
            sent += 1
        while received < sent:
            yield _receive(out_queue, procs, dummy)
            received += 1
        finished = True
    finally:
        _stop_workers(procs, in_queue, finished, dummy)


def _stop_workers(procs, in_queue, finished, dummy):
    """Stop signal to each worker; processes left busy by an error or early close are killed."""
    if dummy:
        while not finished and not in_queue.empty():  # only this thread puts items
            in_queue.get_nowait()
        for _ in procs:
            in_queue.put(None)
        return
    if finished:
        for _ in procs:
            in_queue.put(None)
    else:
        in_queue.cancel_join_thread()  # its pending items will never be read
        for p in procs:
            p.terminate()
    for p in procs:
        p.join()


def _in_order(pairs):
    """Reorder (i, result) pairs by i, holding only the early arrivals."""
    pending, expected = {}, 0
    for i, result in pairs:
        pending[i] = result
        while expected in pending:
            yield expected, pending.pop(expected)
            expected += 1


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=False,
):
    """[func(x) for x in iterable] computed by `workers` processes (threads if dummy).

    Results come in input order unless `unordered=True` (completion order, less waiting).
    With `callback`, each result is passed to it (in the same order) and None is returned.
    See `parallel_apply_generator` for the other arguments.
    """
    pairs = parallel_apply_generator(func, iterable, workers, max_queue_size, dummy, random_seeds)
    if not unordered:
        pairs = _in_order(pairs)
    if callback is None:
        return [result for _, result in pairs]
    for _, result in pairs:
        callback(result)
    return None
