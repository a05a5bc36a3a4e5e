"""Gibbs sampling of sentences from a BERT MLM (kexue.fm/archives/8119; Wang & Cho 2019).

Shapes: n sequence length ([CLS] + content + [SEP]), V vocabulary size.
"""

import keras
import numpy as np

__all__ = ["gibbs_sample"]


def _as_predict(model):
    """A function ids [1, n] -> probabilities [1, n, V] (numpy) from a Keras MLM or a callable."""
    if isinstance(model, keras.Model):
        two_inputs = len(model.inputs) > 1  # token ids + segment ids (zeros)

        def predict(ids):
            inputs = [ids, np.zeros_like(ids)] if two_inputs else ids
            return keras.ops.convert_to_numpy(model(inputs, training=False))

        return predict
    if callable(model):
        return lambda ids: np.asarray(model(ids))
    raise TypeError(
        "model must be a Keras MLM (with_mlm=True) or a callable mapping ids [1, n] to "
        f"probabilities [1, n, V]. Received: model of type {type(model).__name__}"
    )


def _content_positions(positions, n):
    if positions is None:
        return np.arange(1, n - 1)
    positions = np.asarray(positions, dtype="int64").reshape(-1)
    bad = [int(p) for p in positions if not 1 <= p <= n - 2]
    if len(positions) == 0 or bad:
        raise ValueError(
            f"positions must be non-empty content positions in [1, {n - 2}] (never [CLS] at 0 "
            f"or [SEP] at {n - 1}). Received: positions={positions.tolist()}"
        )
    return positions


def _conditional(probas, temperature, exclude_ids):
    """p(v)^(1/T) with excluded ids set to 0, renormalised."""
    p = np.asarray(probas, dtype="float64").clip(min=0.0)
    if temperature != 1.0:
        p = np.where(p > 0, p, 0.0) ** (1.0 / temperature)
    p[list(exclude_ids)] = 0.0
    total = p.sum()
    if not total > 0:
        raise ValueError(
            "every token has probability 0 at a sampled position after exclude_ids; "
            "exclude fewer ids. Received: exclude_ids with "
            f"{len(exclude_ids)} of {len(p)} ids"
        )
    return p / total


def gibbs_sample(
    model,
    token_ids,
    steps,
    burn_in=0,
    positions=None,
    temperature=1.0,
    exclude_ids=(),
    seed=None,
    *,
    mask_id,
):
    """Pseudo-Gibbs sampling: resample one uniformly chosen content position per step.

    Each step t: i ~ Uniform(positions) (default 1..n-2, never [CLS]/[SEP]);
    x_i <- [MASK]; x_i ~ q(v) ∝ p_MLM(v | x_{-i})^(1/T) · [v ∉ exclude_ids].
    The states after steps burn_in+1 .. steps are returned (steps − burn_in arrays, each
    int64 [n]). If the MLM conditionals come from one joint p(x) (an exact-conditional
    oracle), this is a Gibbs sampler whose stationary law is p(x); a real MLM need not be
    consistent with any joint, so there it is pseudo-Gibbs. The length n never changes.

    model: a Keras MLM (`with_mlm=True`, softmax output; segment input, if any, gets zeros)
    or any callable ids [1, n] -> probabilities [1, n, V]. token_ids: 1-D, [CLS] ... [SEP]
    (e.g. [CLS] + [MASK]*L + [SEP]). mask_id: the [MASK] id (`tokenizer._token_mask_id`).
    seed: int for a reproducible chain (numpy `default_rng`).
    """
    x = np.array(token_ids, dtype="int64").reshape(-1)  # [n]
    if np.ndim(token_ids) != 1 or len(x) < 3:
        raise ValueError(
            "token_ids must be 1-D [CLS] + at least one content token + [SEP]. "
            f"Received: token_ids of shape {np.shape(token_ids)}"
        )
    if not 0 <= burn_in <= steps:
        raise ValueError(f"need 0 <= burn_in <= steps. Received: burn_in={burn_in}, steps={steps}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
    predict, candidates = _as_predict(model), _content_positions(positions, len(x))
    exclude_ids = sorted({int(i) for i in exclude_ids})
    rng, samples = np.random.default_rng(seed), []
    for step in range(steps):
        i = int(candidates[rng.integers(len(candidates))])
        x[i] = mask_id
        probas = predict(x[None])[0, i]  # [V]
        x[i] = rng.choice(len(probas), p=_conditional(probas, temperature, exclude_ids))
        if step >= burn_in:
            samples.append(x.copy())
    return samples
