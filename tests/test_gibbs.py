"""bert4x.sampling.gibbs_sample: stationary law on an exact-conditional oracle, chain invariants."""

import numpy as np
import pytest

from bert4x.models import build_transformer_model
from bert4x.sampling import gibbs_sample

CLS, SEP, MASK, V = 0, 1, 5, 6  # content tokens 2, 3, 4
TINY = dict(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32, type_vocab_size=2)  # fmt: skip


def oracle_for(joint):
    """Fake MLM: at [MASK], the exact conditional of `joint` [3, 3, 3] given the rest."""

    def predict(ids):  # [1, 5] -> [1, 5, V]
        ids = np.asarray(ids)[0]
        probas = np.full((len(ids), V), 1.0 / V)
        for i in np.flatnonzero(ids == MASK):
            index = [ids[j + 1] - 2 if j + 1 != i else slice(None) for j in range(3)]
            row = joint[tuple(index)]  # [3], unnormalised conditional
            probas[i] = 0.0
            probas[i, 2:5] = row / row.sum()
        return probas[None]

    return predict


def test_oracle_chain_samples_the_joint():
    rng = np.random.default_rng(0)
    joint = rng.uniform(0.2, 1.0, (3, 3, 3))
    joint /= joint.sum()
    samples = gibbs_sample(oracle_for(joint), [CLS, 2, 2, 2, SEP], steps=21000, burn_in=1000,
                           seed=1, mask_id=MASK)  # fmt: skip
    assert len(samples) == 20000
    counts = np.zeros((3, 3, 3))
    for s in samples:
        counts[tuple(s[1:4] - 2)] += 1
    tv = 0.5 * np.abs(counts / len(samples) - joint).sum()
    assert tv < 0.03, tv


def test_oracle_conditional_is_what_the_helper_samples():
    """Sanity of the oracle itself: its conditional is p(x_i | x_-i) computed by enumeration."""
    joint = np.arange(1, 28, dtype=float).reshape(3, 3, 3)
    probas = oracle_for(joint)(np.array([[CLS, 3, MASK, 4, SEP]]))[0, 2, 2:5]
    expected = np.array([joint[1, v, 2] for v in range(3)])
    np.testing.assert_allclose(probas, expected / expected.sum())


@pytest.fixture(scope="module")
def mlm():
    return build_transformer_model(TINY, with_mlm=True)


class Recorder:
    """Wraps the real MLM; records the masked position and zeroes the odd ids' probabilities."""

    def __init__(self, model):
        self.model, self.masked = model, []

    def __call__(self, ids):
        (position,) = np.flatnonzero(ids[0] == 4)  # exactly one [MASK] per call
        self.masked.append(int(position))
        probas = np.array(self.model([ids, np.zeros_like(ids)], training=False))
        probas[..., 1::2] = 0.0
        return probas


def test_real_model_chain_invariants(mlm):
    start = np.array([2, 9, 10, 11, 12, 13, 3])  # [CLS] ... [SEP]
    recorder = Recorder(mlm)
    samples = gibbs_sample(recorder, start, steps=40, exclude_ids=[0, 2, 4, 6], seed=3, mask_id=4)
    assert len(samples) == 40 and all(s.shape == start.shape for s in samples)
    previous = start
    for masked, sample in zip(recorder.masked, samples):
        assert 1 <= masked <= len(start) - 2
        changed = np.flatnonzero(sample != previous)
        assert set(changed) <= {masked}
        assert (sample[0], sample[-1]) == (2, 3)
        token = sample[masked]
        assert token % 2 == 0 and token not in (0, 2, 4, 6), token  # zero-probability or excluded
        previous = sample


def test_keras_model_seeded_runs_are_identical_and_burn_in_drops_states(mlm):
    start = [2, 4, 4, 4, 4, 3]
    run = lambda **kw: gibbs_sample(mlm, start, steps=12, seed=7, mask_id=4, **kw)  # noqa: E731
    a, b = run(), run()
    np.testing.assert_array_equal(np.array(a), np.array(b))
    np.testing.assert_array_equal(np.array(run(burn_in=5)), np.array(a[5:]))
    samples = run(positions=[2], exclude_ids=range(5), temperature=0.5)
    assert all((s[[0, 1, 3, 4, 5]] == [2, 4, 4, 4, 3]).all() and s[2] >= 5 for s in samples)


def test_bad_arguments_raise_value_errors(mlm):
    with pytest.raises(ValueError, match="content positions"):
        gibbs_sample(mlm, [2, 5, 3], steps=1, positions=[0], mask_id=4)
    with pytest.raises(ValueError, match="burn_in"):
        gibbs_sample(mlm, [2, 5, 3], steps=1, burn_in=2, mask_id=4)
    with pytest.raises(ValueError, match="probability 0"):
        gibbs_sample(mlm, [2, 5, 3], steps=1, exclude_ids=range(20), mask_id=4)
    with pytest.raises(TypeError, match="callable"):
        gibbs_sample("model", [2, 5, 3], steps=1, mask_id=4)
