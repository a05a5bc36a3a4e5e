"""Rewrites of the base step per variable: weight decay, layer adaptation, lazy rows."""

import keras
from keras import ops

from bert4x.optimizers.base import check_patterns, check_range, matches, optimizer_factory


@optimizer_factory("WeightDecay")
def extend_with_weight_decay(base):
    """Returns `base` with decoupled weight decay θ' ← θ' − η_t λ θ (AdamW, arXiv 1711.05101)."""

    class NewOptimizer(base):
        """θ' ← θ' − η_t·λ·θ with λ = `weight_decay_rate`, decay from the old θ (archives/7094).

        Variables whose path matches a regular expression of `exclude_from_weight_decay`
        (e.g. `['Norm', 'bias']`) are not decayed. With an Adam base this equals AdamW; it is
        not an L2 term in the loss. (The list replaces Keras's `exclude_from_weight_decay()`
        method, which matches `variable.name` only.)
        """

        def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.weight_decay_rate = check_range(
                weight_decay_rate, "weight_decay_rate", 0.0, float("inf")
            )
            self.exclude_from_weight_decay = check_patterns(
                exclude_from_weight_decay, "exclude_from_weight_decay"
            )

        def _transform_update(self, step, old, new):
            new = super()._transform_update(step, old, new)
            if matches(self._path(step.index), self.exclude_from_weight_decay):
                return new
            lr = ops.cast(step.learning_rate, old.dtype)
            return new - lr * self.weight_decay_rate * old

        def get_config(self):
            config = super().get_config()
            config.update(
                {
                    "weight_decay_rate": self.weight_decay_rate,
                    "exclude_from_weight_decay": list(self.exclude_from_weight_decay),
                }
            )
            return config

    return NewOptimizer


@optimizer_factory("LayerAdaptation")
def extend_with_layer_adaptation(base):
    """Returns `base` with the LAMB trust ratio per variable tensor (arXiv 1904.00962)."""

    class NewOptimizer(base):
        """θ' ← θ + r·Δ, Δ = θ' − θ, r = ‖θ‖/‖Δ/η̃‖ (1 if either norm is 0), η̃ = max(η_t, ε).

        Each tensor moves by η_t‖θ‖ along the base direction, whatever the gradient scale
        (archives/7094). Paths matching `exclude_from_layer_adaptation` keep the base step.
        Composed over weight decay it is LAMB: the decay is part of Δ.
        """

        def __init__(self, *args, exclude_from_layer_adaptation=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.exclude_from_layer_adaptation = check_patterns(
                exclude_from_layer_adaptation, "exclude_from_layer_adaptation"
            )

        def _transform_update(self, step, old, new):
            new = super()._transform_update(step, old, new)
            if matches(self._path(step.index), self.exclude_from_layer_adaptation):
                return new
            delta = new - old
            lr = ops.maximum(ops.cast(step.learning_rate, old.dtype), keras.config.epsilon())
            w_norm = ops.sqrt(ops.sum(ops.square(old)))
            u_norm = ops.sqrt(ops.sum(ops.square(delta / lr)))
            valid = ops.logical_and(w_norm > 0, u_norm > 0)
            ratio = ops.where(valid, w_norm / ops.where(valid, u_norm, 1.0), 1.0)
            return old + ratio * delta

        def get_config(self):
            config = super().get_config()
            config["exclude_from_layer_adaptation"] = list(self.exclude_from_layer_adaptation)
            return config

    return NewOptimizer


@optimizer_factory("LazyOptimization")
def extend_with_lazy_optimization(base):
    """Returns `base` leaving untouched the rows (e.g. tokens) that got no gradient."""

    class NewOptimizer(base):
        """x' ← x + (x' − x)⊙r, r = any(g ≠ 0, axis=-1), for θ and its slots (archives/7094).

        Applies to variables whose path matches `include_in_lazy_optimization` (e.g.
        `['Embedding']`): rows of tokens absent from the batch keep their value *and* their
        moments, so Adam's momentum does not keep moving them. Other variables are untouched.
        """

        def __init__(self, *args, include_in_lazy_optimization=(), **kwargs):
            super().__init__(*args, **kwargs)
            self.include_in_lazy_optimization = check_patterns(
                include_in_lazy_optimization, "include_in_lazy_optimization"
            )

        def _row_mask(self, step):
            if not matches(self._path(step.index), self.include_in_lazy_optimization):
                return None
            nonzero = ops.not_equal(step.gradient, 0)
            if len(nonzero.shape) == 0:
                return nonzero
            return ops.any(nonzero, axis=-1, keepdims=True)

        def _transform_update(self, step, old, new):
            new = super()._transform_update(step, old, new)
            mask = self._row_mask(step)
            return new if mask is None else ops.where(mask, new, old)

        def _transform_slot(self, step, slot, old, new):
            new = super()._transform_slot(step, slot, old, new)
            mask = self._row_mask(step)
            if mask is None or tuple(old.shape) != tuple(step.gradient.shape):
                return new
            return ops.where(mask, new, old)

        def get_config(self):
            config = super().get_config()
            config["include_in_lazy_optimization"] = list(self.include_in_lazy_optimization)
            return config

    return NewOptimizer
