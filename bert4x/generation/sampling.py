"""Compiled, key/value-cached decoding: greedy, beam search, top-k/top-p sampling.

`generate` runs the prompt once through a `CachedModel` (prefill), then one
token per step inside a single `ops.while_loop` with static shapes; the whole
function is one XLA program (`tf.function(jit_compile=True)` on TensorFlow,
`jax.jit` with the model state passed explicitly on JAX), the design of
KerasHub's samplers (REFERENCE §5.1). Compiled functions are cached on the
CachedModel per (shapes, static options); temperature, top_p and
repetition_penalty are runtime scalars, so changing them does not retrace.

Per step the next-token logits go through: repetition penalty, n-gram ban,
min_new_tokens (end_id masked), the user `logits_processor`, temperature, then
the strategy (argmax; top-k then top-p then a Gumbel-max draw; beam search).

Shapes: b batch, k beams, B = b*k rows, P prompt, N max_new_tokens, L = P + N, V vocab.
"""

from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

STRATEGIES = ("greedy", "beam", "sample", "top_k", "top_p")
NEG_INF = float("-inf")
_TRACES = [0]


def trace_count():
    """How many times a decoding function has been traced (compiled) in this process."""
    return _TRACES[0]


class Options(NamedTuple):
    """The static options of one compiled decoding function (part of its cache key)."""

    max_new_tokens: int
    strategy: str  # 'greedy', 'sample' or 'beam'
    num_beams: int
    top_k: Any  # int or None
    use_top_p: bool
    end_id: Any  # int or None
    min_new_tokens: int
    use_repetition_penalty: bool
    no_repeat_ngram_size: int
    logits_processor: Any  # callable or None
    length_penalty: float


def generate(
    model,
    token_ids,
    segment_ids=None,
    *,
    max_new_tokens,
    strategy="greedy",
    num_beams=1,
    top_k=None,
    top_p=None,
    temperature=1.0,
    end_id=None,
    min_new_tokens=0,
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    logits_processor=None,
    seed=None,
    length_penalty=0.0,
    condition_inputs=None,
):
    """New tokens [b, max_new_tokens] (int32 numpy, 0 after end_id) for right-padded prompts [b, P].

    `model`: what build_transformer_model returned for an `lm`/`unilm` model
    (or `gpt`), its builder, or a `CachedModel`. See docs/generation.md.
    """
    cached = cached_model(model)
    opts, params = _options(
        cached.vocab_size,
        max_new_tokens,
        strategy,
        num_beams,
        top_k,
        top_p,
        temperature,
        end_id,
        min_new_tokens,
        repetition_penalty,
        no_repeat_ngram_size,
        logits_processor,
        length_penalty,
    )
    token_ids, segment_ids, lengths = _prompt(token_ids, segment_ids)
    condition = None if condition_inputs is None else ops.convert_to_tensor(condition_inputs)
    key = (tuple(token_ids.shape), None if condition is None else tuple(condition.shape), opts)
    function = _compiled(cached, key, opts)
    seed = ops.convert_to_tensor(_seed_pair(seed), "int32")
    tokens = function(cached.state(), token_ids, segment_ids, lengths, seed, params, condition)
    return np.asarray(ops.convert_to_numpy(tokens)).astype("int32")


def cached_model(model):
    """The CachedModel of `model` (built once per model and kept on its builder)."""
    if hasattr(model, "prefill") and hasattr(model, "step"):
        return model
    from bert4x.checkpoints import get_builder
    from bert4x.generation.cache import CachedModel

    builder = get_builder(model)
    cached = builder.__dict__.get("_bert4x_cached_model")
    if cached is None:
        cached = builder._bert4x_cached_model = CachedModel(builder)
    return cached


def _compiled(cached, key, opts):
    """The compiled decoding function of `cached` for `key`, built on first use."""
    functions = cached.__dict__.setdefault("_bert4x_generate_functions", {})
    if key not in functions:

        def decode(state, token_ids, segment_ids, lengths, seed, params, condition):
            return _decode(
                cached, opts, state, token_ids, segment_ids, lengths, seed, params, condition
            )

        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            decode = tf.function(decode, jit_compile=True, autograph=False)
        elif backend == "jax":
            import jax

            decode = jax.jit(decode)
        functions[key] = decode
    return functions[key]


def _decode(cached, opts, state, token_ids, segment_ids, lengths, seed, params, condition):
    """Prefill then the decoding loop of `opts.strategy`; returns tokens [b, N]."""
    _TRACES[0] += 1
    max_length = token_ids.shape[1] + opts.max_new_tokens
    if condition is None:
        logits, cache = cached.prefill(state, token_ids, segment_ids, max_length)
    else:
        logits, cache = cached.prefill(
            state, token_ids, segment_ids, max_length, condition_inputs=condition
        )
    history = init_history(token_ids, lengths, opts, cached.vocab_size)
    step = lambda cache, tokens, index: cached.step(state, cache, tokens, index)  # noqa: E731
    if opts.strategy == "beam":
        return _beam_search(step, logits, cache, history, params, opts)
    return _greedy_or_sample(step, logits, cache, history, seed, params, opts)


def _greedy_or_sample(step, logits, cache, history, seed, params, opts):
    """One token per row per step; finished rows emit 0. Returns tokens [b, N]."""
    batch, n = ops.shape(logits)[0], opts.max_new_tokens

    def choose(c):
        index = c["index"]
        scores = process_logits(c["logits"], c["history"], c["out"], index, params, opts)
        if opts.strategy == "sample":
            tokens = sample(scores / params["temperature"], opts, params, seed, index)
        else:
            tokens = ops.argmax(scores, axis=-1)
        tokens = ops.where(c["done"], 0, ops.cast(tokens, "int32"))
        done = (
            c["done"] if opts.end_id is None else ops.logical_or(c["done"], tokens == opts.end_id)
        )
        out = ops.slice_update(c["out"], [0, index], tokens[:, None])
        history = update_history(c["history"], tokens, index)
        return {**c, "out": out, "done": done, "history": history}, tokens

    def body(c):
        c, tokens = choose(c)
        logits, cache = step(c["cache"], tokens, c["index"])
        return ({**c, "logits": logits, "cache": cache, "index": c["index"] + 1},)

    def cond(c):
        return ops.logical_and(c["index"] < n - 1, ops.logical_not(ops.all(c["done"])))

    carry = {
        "index": ops.convert_to_tensor(0, "int32"),
        "logits": logits,
        "cache": cache,
        "out": ops.zeros((batch, n), "int32"),
        "done": ops.zeros((batch,), "bool"),
        "history": history,
    }
    (carry,) = ops.while_loop(cond, body, (carry,))
    return choose(carry)[0]["out"]


# ---------------------------------------------------------------- beam search
def _beam_search(step, logits, cache, history, params, opts):
    """The best beam per example [b, N]; the selection of AutoRegressiveDecoder.beam_search.

    Each step keeps the top `width` (beam, token) candidates by summed log p;
    those ending in end_id move to a per-example pool (kept if better than its
    best, scored sum / length**length_penalty) and the width shrinks by their
    number. An example stops when its pool's best is >= an upper bound of every
    live beam's final score; at N steps the best of pool and live beams wins.
    """
    batch, k, n = ops.shape(logits)[0], opts.num_beams, opts.max_new_tokens
    tile = ops.repeat(ops.arange(batch), k)
    first = ops.arange(k)[None] == 0  # [1, k]: one live beam before the first step
    carry = {
        "index": ops.convert_to_tensor(0, "int32"),
        "logits": ops.take(logits, tile, axis=0),
        "cache": keras.tree.map_structure(lambda x: ops.take(x, tile, axis=0), cache),
        "history": keras.tree.map_structure(lambda x: ops.take(x, tile, axis=0), history),
        "seqs": ops.zeros((batch, k, n), "int32"),
        "scores": ops.where(ops.broadcast_to(first, (batch, k)), 0.0, NEG_INF),
        "alive": ops.broadcast_to(first, (batch, k)),
        "width": ops.full((batch,), k, "int32"),
        "pool_seqs": ops.zeros((batch, n), "int32"),
        "pool_scores": ops.full((batch,), NEG_INF, "float32"),
        "done": ops.zeros((batch,), "bool"),
    }

    def body(c):
        c, tokens, rows = _beam_step(c, params, opts)
        cache = keras.tree.map_structure(lambda x: ops.take(x, rows, axis=0), c["cache"])
        logits, cache = step(cache, tokens, c["index"])
        return ({**c, "logits": logits, "cache": cache, "index": c["index"] + 1},)

    def cond(c):
        return ops.logical_and(c["index"] < n - 1, ops.logical_not(ops.all(c["done"])))

    (carry,) = ops.while_loop(cond, body, (carry,))
    c = _beam_step(carry, params, opts)[0]
    final = ops.where(c["alive"], c["scores"] / _length_norm(n, opts.length_penalty), NEG_INF)
    best = ops.argmax(final, axis=1)
    live_seqs = ops.take_along_axis(c["seqs"], best[:, None, None], axis=1)[:, 0]
    use_pool = c["pool_scores"] >= ops.max(final, axis=1)
    return ops.where(use_pool[:, None], c["pool_seqs"], live_seqs)


def _length_norm(length, alpha):
    return 1.0 if alpha == 0 else ops.power(ops.cast(length, "float32"), alpha)


def _beam_step(c, params, opts):
    """Select beams, update the pool and stop flags -> (carry, tokens [B], parent rows [B])."""
    index, k, n = c["index"], opts.num_beams, opts.max_new_tokens
    batch, vocab = ops.shape(c["scores"])[0], ops.shape(c["logits"])[-1]
    output_ids = ops.reshape(c["seqs"], (batch * k, n))
    logits = process_logits(c["logits"], c["history"], output_ids, index, params, opts)
    logp = ops.reshape(ops.log_softmax(logits / params["temperature"], axis=-1), (batch, k, vocab))
    candidates = ops.where(c["alive"][..., None], c["scores"][..., None] + logp, NEG_INF)
    top, flat = ops.top_k(ops.reshape(candidates, (batch, k * vocab)), k)  # [b, k]
    parent, tokens = flat // vocab, ops.cast(flat % vocab, "int32")
    live = ops.logical_and(ops.arange(k)[None] < c["width"][:, None], top > NEG_INF)
    seqs = ops.take_along_axis(c["seqs"], parent[..., None], axis=1)
    seqs = ops.slice_update(seqs, [0, 0, index], tokens[..., None])  # [b, k, N]
    if opts.end_id is None:
        finishing = ops.zeros_like(live)
    else:
        finishing = ops.logical_and(live, tokens == opts.end_id)
    normed = ops.where(finishing, top / _length_norm(index + 1, opts.length_penalty), NEG_INF)
    better = ops.max(normed, axis=1) > c["pool_scores"]
    best = ops.take_along_axis(seqs, ops.argmax(normed, axis=1)[:, None, None], axis=1)[:, 0]
    pool_seqs = ops.where(better[:, None], best, c["pool_seqs"])
    pool_scores = ops.maximum(ops.max(normed, axis=1), c["pool_scores"])
    alive = ops.logical_and(live, ops.logical_not(finishing))
    alive_count = ops.sum(ops.cast(alive, "int32"), axis=1)
    width = ops.where(ops.any(finishing, axis=1), alive_count, c["width"])
    bound = ops.where(alive, top / _bound_norm(index, n, opts.length_penalty), NEG_INF)
    done = ops.logical_or(c["done"], pool_scores >= ops.max(bound, axis=1))
    alive = ops.logical_and(alive, ops.logical_not(done)[:, None])
    rows = ops.reshape(ops.arange(batch)[:, None] * k + parent, (-1,))
    history = keras.tree.map_structure(lambda x: ops.take(x, rows, axis=0), c["history"])
    tokens = ops.reshape(tokens, (-1,))
    c = {
        **c,
        "seqs": seqs,
        "scores": ops.where(alive, top, NEG_INF),
        "alive": alive,
        "width": ops.where(done, 0, width),
        "pool_seqs": pool_seqs,
        "pool_scores": pool_scores,
        "done": done,
        "history": update_history(history, tokens, index),
    }
    return c, tokens, rows


def _bound_norm(index, n, alpha):
    """Length l such that score / l**alpha bounds the final normalised score of a live beam."""
    if alpha == 0:
        return 1.0
    if alpha > 0:
        return _length_norm(n, alpha)  # scores <= 0 only fall, the divisor grows at most to N**a
    return _length_norm(ops.minimum(index + 2, n), alpha)


# ---------------------------------------------------------------- logits processing
def process_logits(logits, history, output_ids, index, params, opts):
    """Repetition penalty, n-gram ban, min_new_tokens, then the user hook; logits [B, V]."""
    vocab = ops.shape(logits)[-1]
    if opts.use_repetition_penalty:
        penalty = params["repetition_penalty"]
        penalised = ops.where(logits > 0, logits / penalty, logits * penalty)
        logits = ops.where(history["seen"], penalised, logits)
    if opts.no_repeat_ngram_size:
        cur = history["lengths"] + index
        banned = repeated_ngram_tokens(history["tokens"], cur, opts.no_repeat_ngram_size, vocab)
        logits = ops.where(banned, NEG_INF, logits)
    if opts.end_id is not None and opts.min_new_tokens > 0:
        early_end = ops.logical_and(index < opts.min_new_tokens, ops.arange(vocab) == opts.end_id)
        logits = ops.where(early_end[None], NEG_INF, logits)
    if opts.logits_processor is not None:
        logits = ops.cast(opts.logits_processor(logits, output_ids, index), "float32")
    return logits


def repeated_ngram_tokens(tokens, cur, n, vocab):
    """[B, V] bool: t such that (last n-1 tokens, t) already occurs in tokens[:, :cur].

    tokens [B, L] holds each row's history at positions < cur [B].
    """
    rows, length = ops.shape(tokens)
    width = length - n + 1  # n-gram start positions j
    if width <= 0:
        return ops.zeros((rows, vocab), "bool")
    match = ops.arange(width)[None] + n - 1 < cur[:, None]  # the n-gram lies in the history
    if n > 1:
        last = ops.arange(n - 1)[None] + cur[:, None] - (n - 1)  # [B, n-1]
        last = ops.take_along_axis(tokens, ops.clip(last, 0, length - 1), axis=1)
        for m in range(n - 1):
            match = ops.logical_and(match, tokens[:, m : m + width] == last[:, m : m + 1])
    row_ids = ops.broadcast_to(ops.arange(rows)[:, None], (rows, width))
    indices = ops.stack([ops.reshape(row_ids, [-1]), ops.reshape(tokens[:, n - 1 :], [-1])], 1)
    hits = ops.scatter(indices, ops.reshape(ops.cast(match, "float32"), [-1]), (rows, vocab))
    return hits > 0


def init_history(token_ids, lengths, opts, vocab):
    """What the repetition controls need: row lengths, the token buffer, the seen-token set."""
    history = {"lengths": lengths}
    if opts.no_repeat_ngram_size:
        history["tokens"] = ops.pad(token_ids, [(0, 0), (0, opts.max_new_tokens)])  # [b, L]
    if opts.use_repetition_penalty:
        valid = ops.arange(ops.shape(token_ids)[1])[None] < lengths[:, None]
        rows, width = ops.shape(token_ids)
        row_ids = ops.broadcast_to(ops.arange(rows)[:, None], (rows, width))
        indices = ops.stack([ops.reshape(row_ids, [-1]), ops.reshape(token_ids, [-1])], 1)
        hits = ops.scatter(indices, ops.reshape(ops.cast(valid, "float32"), [-1]), (rows, vocab))
        history["seen"] = hits > 0
    return history


def update_history(history, tokens, index):
    """Append tokens [B] (generated token `index`) to every history entry."""
    history = dict(history)
    if "tokens" in history:
        buffer = history["tokens"]
        at = ops.arange(ops.shape(buffer)[1])[None] == (history["lengths"] + index)[:, None]
        history["tokens"] = ops.where(at, tokens[:, None], buffer)
    if "seen" in history:
        seen = history["seen"]
        new = ops.arange(ops.shape(seen)[1])[None] == tokens[:, None]
        history["seen"] = ops.logical_or(seen, new)
    return history


# ---------------------------------------------------------------- sampling
def truncate_logits(logits, top_k=None, top_p=None):
    """-inf outside the top_k logits, then outside the top-p nucleus of the rest; [B, V].

    The nucleus is the sorted prefix up to and including the token where the
    cumulative probability first reaches top_p (exclusive cumsum < top_p).
    Tokens tied with the last kept logit are kept too.
    """
    if top_k is not None:
        kth = ops.top_k(logits, top_k)[0][:, -1:]
        logits = ops.where(logits >= kth, logits, NEG_INF)
    if top_p is not None:
        ordered = ops.flip(ops.sort(logits, axis=-1), axis=-1)  # descending
        probas = ops.softmax(ordered, axis=-1)
        inside = ops.cumsum(probas, axis=-1) - probas < top_p
        threshold = ops.min(ops.where(inside, ordered, float("inf")), axis=-1, keepdims=True)
        logits = ops.where(logits >= threshold, logits, NEG_INF)
    return logits


def sample(logits, opts, params, seed, index):
    """One token per row from softmax(logits) after top-k/top-p, by Gumbel-max; [B] int."""
    top_p = params["top_p"] if opts.use_top_p else None
    logits = truncate_logits(logits, opts.top_k, top_p)
    u = uniform(seed, index, ops.shape(logits))
    return ops.argmax(logits - ops.log(-ops.log(u)), axis=-1)


def uniform(seed, index, shape):
    """Stateless U(0, 1) noise for step `index` from a [2] int32 seed tensor."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed[0]), seed[1]), index)
        return jax.random.uniform(key, shape, minval=1e-20, maxval=1.0)
    if backend == "tensorflow":
        import tensorflow as tf

        pair = tf.stack([seed[0], seed[1] + tf.cast(index, "int32")])
        return tf.random.stateless_uniform(shape, seed=pair, minval=1e-20, maxval=1.0)
    raise ValueError(
        f"strategy='sample' needs the tensorflow or jax backend. Received: backend={backend!r}"
    )


# ---------------------------------------------------------------- arguments
def _seed_pair(seed):
    if seed is None:
        return np.random.randint(0, 2**31 - 1, size=2)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
    return np.array([seed & 0x7FFFFFFF, seed >> 31 & 0x7FFFFFFF])


def _prompt(token_ids, segment_ids):
    """(token_ids, segment_ids, lengths) as int32 tensors; checks right padding."""
    ids = np.asarray(ops.convert_to_numpy(token_ids))
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"token_ids must be an int array [batch, length] (wrap one prompt as [ids]). "
            f"Received: shape={ids.shape}, dtype={ids.dtype}"
        )
    valid = ids != 0
    lengths = valid.sum(axis=1)
    if (lengths == 0).any() or (valid != (np.arange(ids.shape[1]) < lengths[:, None])).any():
        raise ValueError(
            "every row of token_ids needs >= 1 token and must be right-padded with 0 "
            f"(no 0 before a real token). Received rows: {ids.tolist()}"
        )
    if segment_ids is None:
        segments = np.zeros_like(ids)
    else:
        segments = np.asarray(ops.convert_to_numpy(segment_ids))
        if segments.shape != ids.shape:
            raise ValueError(
                f"segment_ids must have the shape of token_ids {ids.shape}. "
                f"Received: shape={segments.shape}"
            )
    return tuple(ops.convert_to_tensor(x.astype("int32")) for x in (ids, segments, lengths))


def _check(ok, name, value, expected):
    if not ok:
        raise ValueError(f"{name} must be {expected}. Received: {name}={value!r}")


def _is_int(value, minimum):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum


def _options(
    vocab,
    max_new_tokens,
    strategy,
    num_beams,
    top_k,
    top_p,
    temperature,
    end_id,
    min_new_tokens,
    repetition_penalty,
    no_repeat_ngram_size,
    logits_processor,
    length_penalty,
):
    """(Options, runtime float params) from the arguments of `generate`, validated."""
    _check(_is_int(max_new_tokens, 1), "max_new_tokens", max_new_tokens, "an int >= 1")
    _check(strategy in STRATEGIES, "strategy", strategy, f"one of {STRATEGIES}")
    _check(_is_int(num_beams, 1), "num_beams", num_beams, "an int >= 1")
    _check(num_beams == 1 or strategy == "beam", "num_beams", num_beams, "1 unless strategy='beam'")
    sampling = strategy in ("sample", "top_k", "top_p")
    _check(top_k is None or _is_int(top_k, 1), "top_k", top_k, "None or an int >= 1")
    _check(top_p is None or 0 < top_p <= 1, "top_p", top_p, "None or in (0, 1]")
    _check(
        sampling or (top_k, top_p) == (None, None),
        "strategy",
        strategy,
        "a sampling one ('sample', 'top_k', 'top_p') when top_k or top_p is given",
    )
    _check(strategy != "top_k" or top_k is not None, "top_k", top_k, "set for strategy='top_k'")
    _check(strategy != "top_p" or top_p is not None, "top_p", top_p, "set for strategy='top_p'")
    _check(temperature > 0, "temperature", temperature, "> 0")
    _check(
        end_id is None or _is_int(end_id, 0) and end_id < vocab,
        "end_id",
        end_id,
        f"None or an int in [0, {vocab})",
    )
    _check(_is_int(min_new_tokens, 0), "min_new_tokens", min_new_tokens, "an int >= 0")
    _check(repetition_penalty > 0, "repetition_penalty", repetition_penalty, "> 0")
    _check(
        _is_int(no_repeat_ngram_size, 0),
        "no_repeat_ngram_size",
        no_repeat_ngram_size,
        "an int >= 0",
    )
    _check(
        logits_processor is None or callable(logits_processor),
        "logits_processor",
        logits_processor,
        "None or a callable (logits, output_ids, index) -> logits",
    )
    opts = Options(
        max_new_tokens=max_new_tokens,
        strategy="sample" if sampling else strategy,
        num_beams=num_beams,
        top_k=None if top_k is None else min(top_k, vocab),
        use_top_p=top_p is not None and top_p < 1,
        end_id=end_id,
        min_new_tokens=min_new_tokens,
        use_repetition_penalty=repetition_penalty != 1,
        no_repeat_ngram_size=no_repeat_ngram_size,
        logits_processor=logits_processor,
        length_penalty=float(length_penalty) if strategy == "beam" else 0.0,
    )
    params = {
        "temperature": temperature,
        "top_p": 1.0 if top_p is None else top_p,
        "repetition_penalty": repetition_penalty,
    }
    return opts, {k: ops.convert_to_tensor(v, "float32") for k, v in params.items()}
