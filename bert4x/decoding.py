"""Host-loop autoregressive decoding in bert4keras form: beam search and random sampling.

`AutoRegressiveDecoder` runs a numpy loop around a user `predict` that scores
the next token, so any Python-side constraint fits in `predict`
(kexue.fm/archives/7500). The model runs once per step on the whole sequence;
for compiled, key/value-cached decoding of `lm`/`unilm` models use
`bert4x.generation.generate`.

Shapes: k live beams or samples, n output length so far, V vocabulary.
"""

import functools

import keras
import numpy as np


def softmax(x, axis=-1):
    """exp(x - max) / sum exp(x - max), in numpy."""
    x = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return x / np.sum(x, axis=axis, keepdims=True)


def _as_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}. Received: {name}={value!r}")


def _ranks(probas):
    """rank of every entry in its row, 0 for the largest (ties by index)."""
    order = np.argsort(-probas, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(probas.shape[1])[None], axis=1)
    return ranks


def truncate_probas(probas, topk=None, topp=None, always_keep=None):
    """Top-k, then top-p on the renormalised top-k, renormalised; probas [k, V] -> [k, V].

    top-p keeps the sorted prefix up to and including the token where the
    cumulative mass first reaches `topp` (exclusive cumsum < topp), as
    bert4keras. `always_keep` (a token id) stays in the candidate set with its
    own probability (consistent sampling, kexue.fm/archives/7500).
    """
    keep = np.ones(probas.shape, dtype=bool)
    if topk is not None:
        keep &= _ranks(probas) < topk
    if topp is not None:
        p = np.where(keep, probas, 0)
        p = p / p.sum(axis=1, keepdims=True)
        order = np.argsort(-p, axis=1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=1)
        inside = np.cumsum(sorted_p, axis=1) - sorted_p < topp
        nucleus = np.zeros_like(keep)
        np.put_along_axis(nucleus, order, inside, axis=1)
        keep &= nucleus
    if always_keep is not None:
        keep[:, always_keep] = True
    probas = np.where(keep, probas, 0)
    return probas / probas.sum(axis=1, keepdims=True)


def sample_ids(probas, rng=np.random):
    """One id per row of probas [k, V] by inverse CDF; zero-probability ids are never drawn."""
    cdf = np.cumsum(probas, axis=1)
    u = rng.random(len(probas)) * cdf[:, -1]
    ids = (cdf < u[:, None]).sum(axis=1)
    return np.minimum(ids, probas.shape[1] - 1)


class AutoRegressiveDecoder:
    """Beam search and random sampling around a user `predict` (bert4keras semantics).

    Subclass it and define
    `predict(self, inputs, output_ids, states)` decorated with
    `@AutoRegressiveDecoder.wraps(default_rtype='probas' or 'logits', use_states=False)`;
    it returns the scores of the *next* token, [k, V] (`self.last_token(model)`
    slices the last position), or `(scores, states)` with `use_states=True`.
    `inputs` are the per-example arrays given to `beam_search`/`random_sample`
    with a leading axis of k copies; `output_ids` [k, n] the tokens so far.

    `start_id=None` starts from empty outputs (a UniLM source already ends in
    [SEP]); otherwise outputs start with `start_id`, which is returned and
    counts toward `minlen` (not toward the `maxlen` decoding steps). `minlen`
    is not a logit mask: an end token before `minlen` stays in the sequence
    (bert4keras);
    `mask_end_before_minlen=True` instead gives `end_id` probability 0 while the
    sequence is shorter than `minlen` after the step.
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1, mask_end_before_minlen=False):
        _check_int(maxlen, "maxlen", 1)
        _check_int(minlen, "minlen", 0)
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = maxlen
        self.minlen = minlen
        self.mask_end_before_minlen = mask_end_before_minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorate `predict` to add `temperature` and `rtype` (bert4keras).

        default_rtype='logits': probas = softmax(scores / T); 'probas' with
        T != 1: probas ∝ scores^(1/T). rtype='logits' returns log(probas + 1e-12),
        not raw logits. The wrapped call returns (probas or log-probas, states).
        """
        if default_rtype not in ("probas", "logits"):
            raise ValueError(
                "default_rtype must be 'probas' or 'logits'. "
                f"Received: default_rtype={default_rtype!r}"
            )

        def decorator(predict):
            @functools.wraps(predict)
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(
                        f"rtype must be 'probas' or 'logits'. Received: rtype={rtype!r}"
                    )
                prediction = predict(self, inputs, output_ids, states)
                scores, states = prediction if use_states else (prediction, None)
                scores = _as_numpy(scores)
                if default_rtype == "logits":
                    probas = softmax(scores / temperature)
                elif temperature != 1:
                    probas = np.power(scores, 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                else:
                    probas = scores
                probas = self._mask_early_end(probas, output_ids)
                if rtype == "logits":
                    return np.log(probas + 1e-12), states
                return probas, states

            return new_predict

        return decorator

    @staticmethod
    def set_rtype(default_rtype="probas"):
        """Old (2020) spelling: decorates `predict(self, inputs, output_ids, step)`."""

        def decorator(predict):
            @functools.wraps(predict)
            def with_step(self, inputs, output_ids, states):
                step = np.shape(output_ids)[1] - self.first_output_ids.shape[1]
                return predict(self, inputs, output_ids, step)

            return AutoRegressiveDecoder.wraps(default_rtype)(with_step)

        return decorator

    def _mask_early_end(self, probas, output_ids):
        """With mask_end_before_minlen: p(end) = 0 (renormalised) while n + 1 < minlen."""
        if not self.mask_end_before_minlen or np.shape(output_ids)[1] + 1 >= self.minlen:
            return probas
        probas = np.array(probas, copy=True)
        probas[:, self.end_id] = 0
        return probas / probas.sum(axis=-1, keepdims=True)

    def last_token(self, model):
        """A model with the inputs of `model` whose outputs are the last position of each output."""
        if id(model) not in self.models:
            outputs = [output[:, -1] for output in model.outputs]
            outputs = outputs[0] if len(outputs) == 1 else outputs
            self.models[id(model)] = (model, keras.Model(model.input, outputs))
        return self.models[id(model)][1]

    def predict(self, inputs, output_ids, states=None):
        """Scores of the next token [k, V] (see the class docstring); decorate with `wraps`."""
        raise NotImplementedError

    def _finished(self, output_ids, min_ends):
        """[k] bool: ends with end_id, has >= min_ends ends and is at least minlen long."""
        if output_ids.shape[1] < self.minlen:
            return np.zeros(len(output_ids), dtype=bool)
        ends = (output_ids == self.end_id).sum(axis=1)
        return (output_ids[:, -1] == self.end_id) & (ends >= min_ends)

    def beam_search(
        self, inputs, topk, states=None, temperature=1, min_ends=1, keep_finished=False
    ):
        """The best sequence (1-D ids) by beam search with `topk` beams; score = sum of log p.

        Each step keeps the `topk` best (beam, token) candidates. bert4keras rule
        (default): if the best candidate is finished, return it; otherwise drop
        the finished ones and shrink the beam. `keep_finished=True` moves finished
        candidates to a pool instead and stops once the pool's best score is >=
        the best live beam (extensions only lower a score), so with topk >=
        V^maxlen it returns the maximum-probability sequence. At maxlen the best
        of (pool and) live beams is returned, finished or not.
        """
        _check_int(topk, "topk", 1)
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        pool_ids, pool_score = None, -np.inf
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            scores = output_scores[:, None] + scores  # [k, V]
            indices = np.argsort(-scores, axis=None, kind="stable")[:topk]
            if step == 0:
                inputs = [np.repeat(i, len(indices), axis=0) for i in inputs]
            rows, ids = np.divmod(indices, scores.shape[1])
            output_ids = np.concatenate([output_ids[rows], ids[:, None]], axis=1)
            output_scores = scores.reshape(-1)[indices]
            finished = self._finished(output_ids, min_ends)
            live = ~finished
            if keep_finished and finished.any():
                best = np.flatnonzero(finished)[np.argmax(output_scores[finished])]
                if output_scores[best] > pool_score:
                    pool_ids, pool_score = output_ids[best], output_scores[best]
            if keep_finished:
                if pool_ids is not None and (
                    not live.any() or pool_score >= output_scores[live].max()
                ):
                    return pool_ids
            elif finished[output_scores.argmax()]:
                return output_ids[output_scores.argmax()]
            if live.all():
                continue
            inputs = [i[live] for i in inputs]
            output_ids, output_scores = output_ids[live], output_scores[live]
            topk = int(live.sum())
        if pool_ids is not None and pool_score >= output_scores.max():
            return pool_ids
        return output_ids[output_scores.argmax()]

    def random_sample(
        self,
        inputs,
        n,
        topk=None,
        topp=None,
        states=None,
        temperature=1,
        min_ends=1,
        always_include_end=False,
        seed=None,
    ):
        """n sampled sequences (a list of 1-D ids), finished ones first in completion order.

        Each step: renormalise, keep the top `topk`, then the top-`topp` nucleus
        of those (see `truncate_probas`), renormalise and sample. A sample
        finishes when it ends in end_id with >= min_ends ends and length >=
        minlen; the unfinished ones are appended after maxlen steps.
        `always_include_end` keeps end_id in every candidate set (consistent
        top-k/top-p); `seed` uses its own `np.random.default_rng(seed)` instead of
        the global numpy generator.
        """
        _check_int(n, "n", 1)
        if topk is not None:
            _check_int(topk, "topk", 1)
        if topp is not None and not 0 < topp <= 1:
            raise ValueError(f"topp must be in (0, 1]. Received: topp={topp!r}")
        rng = np.random if seed is None else np.random.default_rng(seed)
        keep = self.end_id if always_include_end else None
        inputs = [np.array([i]) for i in inputs]
        output_ids, results = self.first_output_ids, []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            probas = probas / probas.sum(axis=1, keepdims=True)
            if step == 0:
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            probas = truncate_probas(probas, topk, topp, keep)
            output_ids = np.concatenate([output_ids, sample_ids(probas, rng)[:, None]], axis=1)
            finished = self._finished(output_ids, min_ends)
            if finished.any():
                results.extend(output_ids[finished])
                live = ~finished
                inputs = [i[live] for i in inputs]
                output_ids = output_ids[live]
                if len(output_ids) == 0:
                    break
        results.extend(output_ids)
        return results
