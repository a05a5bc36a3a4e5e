"""AutoRegressiveDecoder (host loop) against brute force and the ALGORITHMS §11 oracles."""

import itertools
import math

import keras
import numpy as np
import pytest

from bert4x.decoding import AutoRegressiveDecoder, softmax, truncate_probas

pytestmark = pytest.mark.backend_agnostic

END = 2


def chi2_sf(x, df):
    """P(chi2_df > x) = 1 - P(df/2, x/2), the lower regularised gamma by its series."""
    a, z = df / 2, x / 2
    term = total = 1 / a
    for n in range(1, 1000):
        term *= z / (a + n)
        total += term
    return 1 - math.exp(a * math.log(z) - z - math.lgamma(a)) * total


def assert_frequencies(draws, probas, count):
    """Nothing drawn outside the support, and chi-square goodness of fit p > 1e-3."""
    support = np.flatnonzero(probas > 0)
    observed = np.bincount(draws, minlength=len(probas))
    assert observed[probas == 0].sum() == 0, (observed, probas)
    expected = probas[support] * count
    stat = ((observed[support] - expected) ** 2 / expected).sum()
    assert chi2_sf(stat, len(support) - 1) > 1e-3, (observed, expected)


def test_chi2_sf_matches_tabulated_quantiles():
    for df, quantile in [(1, 10.828), (3, 16.266), (7, 24.322)]:  # p = 1e-3
        assert abs(chi2_sf(quantile, df) - 1e-3) < 2e-6


class TableDecoder(AutoRegressiveDecoder):
    """probas(next | outputs) = table(tuple(outputs)); returns probas or logits as asked."""

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table, self.calls = table, 0

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        self.calls += 1
        return np.stack([self.table(tuple(row)) for row in output_ids])


def drop_table(ids):
    """ALGORITHMS §11: first step (0.549, 0.044, end 0.407), then p(.|0) = (0.25, 0.25, end 0.5)."""
    if not ids:
        return np.array([0.549, 0.044, 0.407])
    return np.array([0.25, 0.25, 0.5]) if ids[-1] == 0 else np.array([0.3, 0.3, 0.4])


@pytest.mark.parametrize("topk", [1, 2, 3])
def test_bert4keras_rule_drops_the_better_short_hypothesis(topk):
    decoder = TableDecoder(drop_table, start_id=None, end_id=END, maxlen=4)
    assert decoder.beam_search([np.zeros(1)], topk).tolist() == [0, END]
    assert math.log(0.549 * 0.5) == pytest.approx(-1.29, abs=0.01)  # what it returns
    assert math.log(0.407) == pytest.approx(-0.90, abs=0.01)  # what it dropped
    kept = decoder.beam_search([np.zeros(1)], topk, keep_finished=True).tolist()
    assert kept == ([0, END] if topk == 1 else [END])


def random_table(seed, vocab=3):
    """A history-dependent next-token distribution (a hash of the whole prefix)."""
    rng = np.random.default_rng(seed)
    cache = {}

    def table(ids):
        if ids not in cache:
            cache[ids] = softmax(rng.normal(size=vocab) * 1.5)
        return cache[ids]

    return table


def brute_force(table, maxlen, start=()):
    """(ids, log p) of the most probable sequence ending in END or reaching maxlen."""
    best, best_score = None, -np.inf
    free = maxlen  # the start token is not one of the maxlen steps
    for length in range(1, free + 1):
        for tail in itertools.product(range(3), repeat=length):
            if END in tail[:-1] or (length < free and tail[-1] != END):
                continue
            seq = tuple(start) + tail
            score = sum(np.log(table(seq[:i])[seq[i]]) for i in range(len(start), len(seq)))
            if score > best_score:
                best, best_score = list(seq), score
    return best, best_score


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("start_id", [None, 1])
def test_keep_finished_with_a_wide_beam_finds_the_map_sequence(seed, start_id):
    table = random_table(seed)
    decoder = TableDecoder(table, start_id=start_id, end_id=END, maxlen=4)
    start = () if start_id is None else (start_id,)
    want, _ = brute_force(table, 4, start)
    assert decoder.beam_search([np.zeros(1)], 81, keep_finished=True).tolist() == want


def greedy(table, maxlen):
    ids = []
    while len(ids) < maxlen and (not ids or ids[-1] != END):
        ids.append(int(np.argmax(table(tuple(ids)))))
    return ids


@pytest.mark.parametrize("seed", range(4))
def test_beam_of_one_is_greedy(seed):
    table = random_table(seed, vocab=3)
    decoder = TableDecoder(table, start_id=None, end_id=END, maxlen=6)
    for keep_finished in (False, True):
        got = decoder.beam_search([np.zeros(1)], 1, keep_finished=keep_finished).tolist()
        assert got == greedy(table, 6)


def test_minlen_keeps_early_ends_unless_masked():
    def table(ids):
        return np.array([0.3, 0.1, 0.6])  # END is always the most likely

    decoder = TableDecoder(table, start_id=None, end_id=END, maxlen=5, minlen=3)
    assert decoder.beam_search([np.zeros(1)], 1).tolist() == [END, END, END]
    masked = TableDecoder(
        table, start_id=None, end_id=END, maxlen=5, minlen=3, mask_end_before_minlen=True
    )
    assert masked.beam_search([np.zeros(1)], 1).tolist() == [0, 0, END]
    two_ends = TableDecoder(table, start_id=None, end_id=END, maxlen=5)
    assert two_ends.beam_search([np.zeros(1)], 2, min_ends=2).tolist() == [END, END]
    samples = masked.random_sample([np.zeros(1)], 200, seed=0)
    assert all(END not in s[:2] and len(s) <= 5 for s in samples)


def test_random_sample_top_k_frequencies():
    def table(ids):
        return np.array([0.05, 0.3, 0.15, 0.2, 0.1, 0.2])

    decoder = TableDecoder(table, start_id=None, end_id=5, maxlen=1)
    draws = np.concatenate(decoder.random_sample([np.zeros(1)], 20000, topk=3, seed=1))
    want = truncate_probas(table(())[None], topk=3)[0]
    assert want.tolist() == pytest.approx([0, 0.3 / 0.7, 0, 0.2 / 0.7, 0, 0.2 / 0.7])
    assert_frequencies(draws, want, 20000)


def test_random_sample_top_p_stays_in_the_nucleus():
    table = random_table(5, vocab=3)
    decoder = TableDecoder(table, start_id=1, end_id=END, maxlen=6, minlen=2)
    samples = decoder.random_sample([np.zeros(1)], 300, topp=0.6, seed=2, temperature=0.8)
    assert len(samples) == 300
    finished = [s[-1] == END for s in samples]
    assert finished == sorted(finished, reverse=True)  # finished first, then leftovers
    for s in samples:
        assert s[0] == 1 and 2 <= len(s) <= 7 and END not in s[:-1].tolist()[1:]
        for i in range(1, len(s)):
            probas = table(tuple(s[:i])) ** (1 / 0.8)
            nucleus = truncate_probas((probas / probas.sum())[None], topp=0.6)[0]
            assert nucleus[s[i]] > 0
    orders = [len(s) for s in samples if s[-1] == END]
    assert orders == sorted(orders)  # completion order: shorter ones finish first


def test_truncate_probas_nucleus_and_consistent_end():
    p = np.array([[0.125, 0.5, 0.25, 0.125]])
    # sorted 0.5, 0.25 | 0.125, 0.125: the cumulative mass reaches 0.75 at the second token
    assert truncate_probas(p, topp=0.75).tolist() == [[0, 2 / 3, 1 / 3, 0]]
    assert truncate_probas(p, topp=0.76).tolist() == [[0.125 / 0.875, 0.5 / 0.875, 0.25 / 0.875, 0]]
    kept = truncate_probas(p, topk=1, always_keep=0)
    np.testing.assert_allclose(kept, [[0.2, 0.8, 0, 0]])
    decoder = TableDecoder(lambda ids: p[0], start_id=None, end_id=0, maxlen=1)
    draws = np.concatenate(
        decoder.random_sample([np.zeros(1)], 4000, topk=1, seed=3, always_include_end=True)
    )
    assert_frequencies(draws, kept[0], 4000)


class LogitsDecoder(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        return np.log(np.stack([drop_table(tuple(r)) for r in output_ids])) * 1.7


class ProbasDecoder(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        return np.stack([drop_table(tuple(r)) for r in output_ids]) ** 1.7


def test_temperature_and_rtype():
    ids = np.array([[0], [1]])
    for temperature in (1, 0.5, 2.0):
        a = LogitsDecoder(None, END, 3).predict([], ids, None, temperature, "probas")[0]
        b = ProbasDecoder(None, END, 3).predict([], ids, None, temperature, "probas")[0]
        np.testing.assert_allclose(a, b / b.sum(axis=1, keepdims=True), rtol=1e-10)
    probas = ProbasDecoder(None, END, 3).predict([], ids, None, 1, "probas")[0]
    np.testing.assert_allclose(probas, np.stack([drop_table((0,)), drop_table((1,))]) ** 1.7)
    logp = ProbasDecoder(None, END, 3).predict([], ids, None, 1, "logits")[0]
    np.testing.assert_allclose(logp, np.log(probas + 1e-12))
    with pytest.raises(ValueError, match="rtype"):
        ProbasDecoder(None, END, 3).predict([], ids, None, 1, "scores")


def test_states_are_threaded_and_inputs_tiled():
    class Counting(AutoRegressiveDecoder):
        seen = []

        @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
        def predict(self, inputs, output_ids, states):
            self.seen.append((states, len(inputs[0]), output_ids.shape))
            return np.stack([[0.5, 0.3, 0.2]] * len(output_ids)), states + 1

    Counting(None, END, 3).beam_search([np.array([7, 8])], 2, states=0)
    assert [s for s, _, _ in Counting.seen] == [0, 1, 2]
    assert [n for _, n, _ in Counting.seen] == [1, 2, 2]  # tiled to topk after step 0
    assert Counting.seen[2][2] == (2, 2)


def test_old_set_rtype_api_passes_the_step():
    class Old(AutoRegressiveDecoder):
        steps = []

        @AutoRegressiveDecoder.set_rtype("probas")
        def predict(self, inputs, output_ids, step):
            self.steps.append(step)
            return np.stack([[0.5, 0.3, 0.2]] * len(output_ids))

    got = Old(start_id=1, end_id=END, maxlen=4).beam_search([np.zeros(1)], 2)
    assert got.tolist() == [1, 0, 0, 0, 0]  # the start token is returned; maxlen steps follow it
    assert Old.steps == [0, 1, 2, 3]


def test_last_token_model():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    decoder = AutoRegressiveDecoder(None, END, 3)
    last = decoder.last_token(model)
    assert decoder.last_token(model) is last
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(np.asarray(last(ids)), np.asarray(model(ids))[:, -1], rtol=1e-6)


def test_argument_errors():
    with pytest.raises(ValueError, match="maxlen"):
        AutoRegressiveDecoder(None, END, 0)
    with pytest.raises(ValueError, match="default_rtype"):
        AutoRegressiveDecoder.wraps("scores")
    decoder = TableDecoder(drop_table, start_id=None, end_id=END, maxlen=2)
    with pytest.raises(ValueError, match="topp"):
        decoder.random_sample([np.zeros(1)], 2, topp=1.5)
