"""Compiled decoding (`bert4x.generation.generate`) against numpy oracles on a toy cached model.

The toy implements the CachedModel interface with a transition table, so the
exact next-token distribution of every sequence is known in numpy: beam
search is checked against exhaustive enumeration and against the host loop
(`AutoRegressiveDecoder.beam_search(keep_finished=True)`), sampling against the
truncated, renormalised distribution (chi-square), and the repetition controls
against a numpy greedy decoder that applies the documented formulas.
"""

import itertools

import keras
import numpy as np
import pytest
from keras import ops
from test_decoding import assert_frequencies

from bert4x.decoding import AutoRegressiveDecoder, softmax, truncate_probas
from bert4x.generation import generate, trace_count

pytestmark = pytest.mark.backend_agnostic


# ------------------------------------------------------------------ toy model
class ToyCachedModel:
    """logits(next) = A[min(t, S-1), last token] + B[token before it, 0 if none]; t = steps done.

    Same interface as bert4x.generation.cache.CachedModel; the cache holds the
    whole token buffer, so a beam that is not reordered correctly changes B's term.
    """

    def __init__(self, A, B):
        self.vocab_size = A.shape[-1]
        self.A = keras.Variable(A.astype("float32"), trainable=False)
        self.B = keras.Variable(B.astype("float32"), trainable=False)
        self.prefills = 0

    def state(self):
        return [self.A.value, self.B.value] if keras.backend.backend() == "jax" else None

    def logits(self, state, tokens, lengths, t):
        A, B = (self.A, self.B) if state is None else state
        last = ops.take_along_axis(tokens, (lengths - 1)[:, None], axis=1)[:, 0]
        prev = ops.take_along_axis(tokens, ops.maximum(lengths - 2, 0)[:, None], axis=1)[:, 0]
        prev = ops.where(lengths >= 2, prev, 0)
        table = ops.take(A, ops.minimum(t, A.shape[0] - 1), axis=0)  # [V, V]
        return ops.take(table, last, axis=0) + ops.take(B, prev, axis=0)

    def prefill(self, state, token_ids, segment_ids, max_length):
        self.prefills += 1
        lengths = ops.sum(ops.cast(token_ids != 0, "int32"), axis=1)
        tokens = ops.pad(token_ids, [(0, 0), (0, max_length - token_ids.shape[1])])
        return self.logits(state, tokens, lengths, 0), {"tokens": tokens, "lengths": lengths}

    def step(self, state, cache, token_ids, index):
        tokens, lengths = cache["tokens"], cache["lengths"]
        at = ops.arange(tokens.shape[1])[None] == lengths[:, None]
        tokens = ops.where(at, ops.cast(token_ids, "int32")[:, None], tokens)
        lengths = lengths + 1
        return self.logits(state, tokens, lengths, index + 1), {
            "tokens": tokens,
            "lengths": lengths,
        }


def toy_logits(A, B, prompt, generated):
    """The numpy oracle of ToyCachedModel: next-token logits after prompt + generated."""
    full = list(prompt) + list(generated)
    prev = full[-2] if len(full) >= 2 else 0
    return A[min(len(generated), len(A) - 1), full[-1]] + B[prev]


def random_toy(seed, vocab=4, steps=4, scale=2.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(steps, vocab, vocab)) * scale
    B = rng.normal(size=(vocab, vocab)) * scale
    return A, B


def log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def pad_prompts(prompts):
    width = max(len(p) for p in prompts)
    return np.array([list(p) + [0] * (width - len(p)) for p in prompts], dtype="int32")


# ------------------------------------------------------------------ beam search
def exhaustive_best(A, B, prompt, n, end_id, temperature=1.0, alpha=0.0):
    """(tokens padded to n, score): max of sum log p / length**alpha, ending in end_id or at n."""
    vocab = A.shape[-1]
    best, best_score = None, -np.inf
    for length in range(1, n + 1):
        for seq in itertools.product(range(vocab), repeat=length):
            if end_id in seq[:-1] or (length < n and seq[-1] != end_id):
                continue
            score = sum(
                log_softmax(toy_logits(A, B, prompt, seq[:i]) / temperature)[seq[i]]
                for i in range(length)
            )
            score /= length**alpha
            if score > best_score:
                best, best_score = seq, score
    return list(best) + [0] * (n - len(best)), best_score


class ToyDecoder(AutoRegressiveDecoder):
    """The host loop over the same toy: inputs = [prompt]."""

    def __init__(self, A, B, **kwargs):
        super().__init__(start_id=None, **kwargs)
        self.A, self.B = A, B

    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        return np.stack(
            [toy_logits(self.A, self.B, p, o) for p, o in zip(inputs[0], output_ids, strict=True)]
        )


PROMPTS = [[1, 2, 2], [2], [2, 1]]


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_search_equals_exhaustive_search(seed):
    A, B = random_toy(seed, vocab=3, steps=4)
    toy = ToyCachedModel(A, B)
    got = generate(
        toy, pad_prompts(PROMPTS), max_new_tokens=4, strategy="beam", num_beams=81, end_id=2
    )
    for prompt, row in zip(PROMPTS, got, strict=True):
        want, _ = exhaustive_best(A, B, prompt, 4, end_id=2)
        assert row.tolist() == want
        host = ToyDecoder(A, B, end_id=2, maxlen=4).beam_search([prompt], 81, keep_finished=True)
        assert list(host) + [0] * (4 - len(host)) == want


@pytest.mark.parametrize("alpha", [1.0, -0.5])
def test_beam_search_with_length_penalty_equals_exhaustive_search(alpha):
    A, B = random_toy(3, vocab=3, steps=4, scale=1.0)
    toy = ToyCachedModel(A, B)
    got = generate(
        toy,
        pad_prompts(PROMPTS),
        max_new_tokens=4,
        strategy="beam",
        num_beams=81,
        end_id=2,
        length_penalty=alpha,
    )
    for prompt, row in zip(PROMPTS, got, strict=True):
        assert row.tolist() == exhaustive_best(A, B, prompt, 4, end_id=2, alpha=alpha)[0]


@pytest.mark.parametrize("num_beams", [2, 5])
def test_beam_search_equals_host_loop(num_beams):
    A, B = random_toy(7, vocab=5, steps=6, scale=1.5)
    toy = ToyCachedModel(A, B)
    got = generate(
        toy,
        pad_prompts(PROMPTS),
        max_new_tokens=6,
        strategy="beam",
        num_beams=num_beams,
        end_id=4,
        temperature=1.3,
    )
    for prompt, row in zip(PROMPTS, got, strict=True):
        decoder = ToyDecoder(A, B, end_id=4, maxlen=6)
        host = decoder.beam_search([prompt], num_beams, temperature=1.3, keep_finished=True)
        assert row.tolist() == list(host) + [0] * (6 - len(host))


def greedy_oracle(A, B, prompt, n, end_id=None, penalty=1.0, ngram=0):
    """Greedy decoding in numpy with the documented processors."""
    out = []
    for _ in range(n):
        logits = toy_logits(A, B, prompt, out).copy()
        history = list(prompt) + out
        if penalty != 1:
            for t in set(history):
                logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
        if ngram:
            tail = tuple(history[len(history) - ngram + 1 :]) if ngram > 1 else ()
            for j in range(len(history) - ngram + 1):
                if tuple(history[j : j + ngram - 1]) == tail:
                    logits[history[j + ngram - 1]] = -np.inf
        out.append(int(np.argmax(logits)))
        if out[-1] == end_id:
            break
    return out + [0] * (n - len(out))


def test_greedy_equals_oracle_and_beam_of_one():
    A, B = random_toy(11, vocab=6, steps=8)
    toy = ToyCachedModel(A, B)
    token_ids = pad_prompts(PROMPTS)
    greedy = generate(toy, token_ids, max_new_tokens=8, end_id=5)
    beam = generate(toy, token_ids, max_new_tokens=8, strategy="beam", num_beams=1, end_id=5)
    for prompt, row, beam_row in zip(PROMPTS, greedy, beam, strict=True):
        assert row.tolist() == greedy_oracle(A, B, prompt, 8, end_id=5)
        assert beam_row.tolist() == row.tolist()
    assert toy.prefills == 2  # one prefill per compiled program; the loop only steps


def test_bert4keras_drop_example_is_not_dropped():
    """ALGORITHMS §11: with a finished pool, [end] (log p -0.90) beats [0, end] (-1.29)."""
    A = np.zeros((3, 3, 3))
    A[0, 1] = np.log([0.549, 0.044, 0.407])  # after the prompt [1]
    A[1:, 0] = np.log([0.25, 0.25, 0.5])
    A[1:, 1] = np.log([0.3, 0.3, 0.4])
    toy = ToyCachedModel(A, np.zeros((3, 3)))
    for beams, want in [(1, [0, 2, 0]), (2, [2, 0, 0])]:
        got = generate(toy, [[1]], max_new_tokens=3, strategy="beam", num_beams=beams, end_id=2)
        assert got.tolist() == [want]


# ------------------------------------------------------------------ sampling
def first_token_draws(toy, count, **kwargs):
    token_ids = np.full((count, 1), 1, dtype="int32")
    return generate(toy, token_ids, max_new_tokens=1, seed=123, **kwargs)[:, 0]


def test_top_k_frequencies_match_the_truncated_distribution():
    A, B = random_toy(5, vocab=8, steps=2, scale=1.0)
    toy = ToyCachedModel(A, B)
    draws = first_token_draws(toy, 20000, strategy="top_k", top_k=4, temperature=0.8)
    probas = softmax(toy_logits(A, B, [1], []) / 0.8)[None]
    assert_frequencies(draws, truncate_probas(probas, topk=4)[0], 20000)


def test_top_p_never_leaves_the_nucleus_and_matches_frequencies():
    A, B = random_toy(6, vocab=8, steps=2, scale=1.0)
    toy = ToyCachedModel(A, B)
    probas = softmax(toy_logits(A, B, [1], []))[None]
    for top_k, top_p in [(None, 0.7), (5, 0.8)]:
        draws = first_token_draws(toy, 20000, strategy="sample", top_k=top_k, top_p=top_p)
        want = truncate_probas(probas, topk=top_k, topp=top_p)[0]
        assert 1 < (want > 0).sum() < 8
        assert_frequencies(draws, want, 20000)


def test_sampling_over_steps_and_seed():
    A, B = random_toy(8, vocab=6, steps=5, scale=1.0)
    toy = ToyCachedModel(A, B)
    token_ids = pad_prompts(PROMPTS * 4)
    one = generate(toy, token_ids, max_new_tokens=5, strategy="top_p", top_p=0.6, seed=3)
    two = generate(toy, token_ids, max_new_tokens=5, strategy="top_p", top_p=0.6, seed=3)
    np.testing.assert_array_equal(one, two)
    # every token lies in the nucleus of its prefix
    for prompt, row in zip(PROMPTS * 4, one, strict=True):
        for i, token in enumerate(row):
            nucleus = truncate_probas(softmax(toy_logits(A, B, prompt, row[:i]))[None], topp=0.6)
            assert nucleus[0, token] > 0


# ------------------------------------------------------------------ controls
def test_end_id_and_min_new_tokens():
    A = np.zeros((6, 5, 5))
    A[:, :, 4] = 3.0  # end (4) is always the most likely token
    A[:, :, 2] = 2.0
    A[:, :, 0] = -30.0  # so that 0 in the output means "after end"
    toy = ToyCachedModel(A, np.zeros((5, 5)))
    got = generate(toy, [[1, 2], [3, 0]], max_new_tokens=6, end_id=4)
    assert got.tolist() == [[4, 0, 0, 0, 0, 0]] * 2
    got = generate(toy, [[1, 2], [3, 0]], max_new_tokens=6, end_id=4, min_new_tokens=3)
    assert got.tolist() == [[2, 2, 2, 4, 0, 0]] * 2
    got = generate(
        toy, [[1]] * 500, max_new_tokens=6, strategy="sample", end_id=4, min_new_tokens=2, seed=0
    )
    assert (got[:, :2] != 4).all() and (got[:, :2] != 0).all() and (got == 4).any()
    ended = np.cumsum(got == 4, axis=1) - (got == 4) > 0  # strictly after the first end
    assert (got[ended] == 0).all() and ended.any()


@pytest.mark.parametrize(
    "controls",
    [{"penalty": 2.5}, {"ngram": 2}, {"ngram": 1}, {"ngram": 3, "penalty": 0.7}],
)
def test_repetition_controls_match_greedy_oracle(controls):
    A, B = random_toy(21, vocab=6, steps=8, scale=1.0)
    A[:, :, 1] += 1.5  # a strong attractor to repeat
    toy = ToyCachedModel(A, B)
    kwargs = {
        "repetition_penalty": controls.get("penalty", 1.0),
        "no_repeat_ngram_size": controls.get("ngram", 0),
    }
    got = generate(toy, pad_prompts(PROMPTS), max_new_tokens=8, end_id=5, **kwargs)
    for prompt, row in zip(PROMPTS, got, strict=True):
        want = greedy_oracle(
            A,
            B,
            prompt,
            8,
            end_id=5,
            penalty=kwargs["repetition_penalty"],
            ngram=kwargs["no_repeat_ngram_size"],
        )
        assert row.tolist() == want
        if controls.get("ngram") == 2:
            row = row.tolist()
            seq = prompt + (row[: row.index(5) + 1] if 5 in row else row)
            bigrams = list(zip(seq, seq[1:], strict=False))
            assert len(bigrams) == len(set(bigrams))


def test_beams_keep_their_own_history():
    A, B = random_toy(21, vocab=6, steps=8, scale=1.0)
    A[:, :, 1] += 1.5
    toy = ToyCachedModel(A, B)
    got = generate(
        toy,
        pad_prompts(PROMPTS),
        max_new_tokens=8,
        strategy="beam",
        num_beams=3,
        no_repeat_ngram_size=2,
    )
    for prompt, row in zip(PROMPTS, got, strict=True):
        seq = prompt + row.tolist()
        bigrams = list(zip(seq, seq[1:], strict=False))
        assert len(bigrams) == len(set(bigrams))


def test_logits_processor_sees_outputs_and_index():
    A, B = random_toy(2, vocab=6, steps=6)
    toy = ToyCachedModel(A, B)

    def count_up(logits, output_ids, index):  # next = previous output + 1, read from output_ids
        previous = ops.take(output_ids, ops.maximum(index - 1, 0), axis=1)
        want = ops.where(index > 0, previous + 1, 1)
        return logits + 100.0 * ops.one_hot(ops.minimum(want, 5), 6)

    got = generate(toy, pad_prompts(PROMPTS), max_new_tokens=5, logits_processor=count_up)
    assert got.tolist() == [[1, 2, 3, 4, 5]] * 3

    def ban_three(logits, output_ids, index):
        return ops.where(ops.arange(6)[None] == 3, float("-inf"), logits)

    got = generate(
        toy,
        pad_prompts(PROMPTS),
        max_new_tokens=6,
        strategy="beam",
        num_beams=3,
        logits_processor=ban_three,
    )
    assert (got != 3).all()


# ------------------------------------------------------------------ compilation
def test_second_call_does_not_retrace_and_reads_current_weights():
    A, B = random_toy(17, vocab=6, steps=6)
    toy = ToyCachedModel(A, B)
    token_ids = pad_prompts(PROMPTS)
    kwargs = {"max_new_tokens": 5, "strategy": "sample", "top_p": 0.9, "end_id": 5}
    generate(toy, token_ids, temperature=0.9, seed=1, **kwargs)
    traces = trace_count()
    generate(toy, token_ids, temperature=0.5, seed=2, **kwargs)
    generate(toy, token_ids, temperature=0.7, seed=3, **{**kwargs, "top_p": 0.5})
    greedy = generate(toy, token_ids, max_new_tokens=5)
    assert trace_count() == traces + 1  # only the greedy function is new
    toy.A.assign(np.flip(A, axis=-1).astype("float32"))  # the loop reads the weights at run time
    again = generate(toy, token_ids, max_new_tokens=5)
    assert trace_count() == traces + 1
    for prompt, row in zip(PROMPTS, again, strict=True):
        assert row.tolist() == greedy_oracle(np.flip(A, axis=-1), B, prompt, 5)
    assert again.tolist() != greedy.tolist()


def test_argument_errors():
    toy = ToyCachedModel(*random_toy(0, vocab=4, steps=2))
    with pytest.raises(ValueError, match="right-padded"):
        generate(toy, [[0, 1]], max_new_tokens=2)
    with pytest.raises(ValueError, match="num_beams"):
        generate(toy, [[1]], max_new_tokens=2, num_beams=2)
    with pytest.raises(ValueError, match="top_k"):
        generate(toy, [[1]], max_new_tokens=2, strategy="top_k")
    with pytest.raises(ValueError, match="strategy"):
        generate(toy, [[1]], max_new_tokens=2, top_p=0.5)
    with pytest.raises(ValueError, match="end_id"):
        generate(toy, [[1]], max_new_tokens=2, end_id=4)


# ------------------------------------------------------------------ real models
class FullRecompute(AutoRegressiveDecoder):
    """The uncached reference: the whole sequence through the Keras model at every step."""

    def __init__(self, model, unilm, **kwargs):
        super().__init__(start_id=None, **kwargs)
        self.model, self.unilm = model, unilm

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        """Right-padded to 12 tokens (padding is masked), so the predict function compiles once."""
        prompt = np.repeat(inputs[0][:1], len(output_ids), axis=0)
        token_ids = np.zeros((len(output_ids), 12), dtype="int32")
        segment_ids = np.zeros_like(token_ids)
        length = prompt.shape[1] + output_ids.shape[1]
        token_ids[:, :length] = np.concatenate([prompt, output_ids], axis=1)
        segment_ids[:, prompt.shape[1] : length] = int(self.unilm)
        return self.model.predict_on_batch([token_ids, segment_ids])[:, length - 1]


@pytest.mark.parametrize("model_type, application", [("bert", "unilm")])
def test_real_model_matches_full_recompute(tmp_path, model_type, application):
    from model_cases import build_loaded

    heads = {"with_mlm": True} if model_type == "bert" else {}
    model, _ = build_loaded(tmp_path, model_type, application, seed=3, **heads)
    prompts = [[5, 9, 17, 4], [8, 2], [30, 31, 32]]
    got = generate(model, pad_prompts(prompts), max_new_tokens=5, end_id=7)
    for prompt, row in zip(prompts, got, strict=True):
        host = FullRecompute(model, application == "unilm", end_id=7, maxlen=5)
        want = host.beam_search([np.array(prompt)], 1)
        assert row.tolist() == list(want) + [0] * (5 - len(want))
