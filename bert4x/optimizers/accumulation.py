"""Gradient accumulation: a gradient buffer, or one hidden in the momentum (archives/8634)."""

import keras
from keras import ops

from bert4x.optimizers.base import Adam, check_positive_int, optimizer_factory

MODES = ("buffer", "momentum")


def _moment_decays(optimizer):
    """[(slot list attribute, decay)] of a base whose moments are s ← β s + (1 − β)·h(g)."""
    if isinstance(optimizer, (Adam, keras.optimizers.Adam)):
        if getattr(optimizer, "amsgrad", False):
            raise ValueError(
                "grad_accum_mode='momentum' does not support Adam(amsgrad=True): its v̂ = "
                "max(v̂, v) is not a moving average. Use grad_accum_mode='buffer'."
            )
        return [("_momentums", optimizer.beta_1), ("_velocities", optimizer.beta_2)]
    if isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum > 0:
        if optimizer.nesterov:
            raise ValueError(
                "grad_accum_mode='momentum' does not support SGD(nesterov=True): its step "
                "uses the current gradient besides the momentum. Use grad_accum_mode='buffer'."
            )
        return [("momentums", optimizer.momentum)]
    raise ValueError(
        "grad_accum_mode='momentum' needs a base whose moving averages can hold the "
        "accumulated gradient: bert4x Adam, keras.optimizers.Adam/AdamW, or "
        f"keras.optimizers.SGD with momentum > 0. Received: {type(optimizer).__name__} "
        "(Lion, for one, uses the current gradient besides its momentum). "
        "Use grad_accum_mode='buffer'."
    )


@optimizer_factory("GradientAccumulation")
def extend_with_gradient_accumulation(base):
    """Returns `base` updating the model once every `grad_accum_steps` calls."""

    class NewOptimizer(base):
        """One update per k = `grad_accum_steps` calls (micro-batches); χ = [(c + 1) mod k = 0].

        `grad_accum_mode='buffer'`: a ← a + g each call; on the k-th call the base step runs
        with ḡ = a/k and a ← 0; every other write (θ, moments, extension state) is gated by χ.
        k equal micro-batches equal one step on their concatenation, for any base.
        `grad_accum_mode='momentum'` (no buffer, archives/8634): each moving average
        s ← β s + (1 − β) h(g) becomes s ← c s + (1 − β) h(g)/k, c = β on the first call of a
        cycle and 1 after, and θ is written only when χ. Exact for SGD with momentum; for
        Adam v sums squares of micro-gradients instead of squaring their mean.
        `iterations` counts updates (c // k): Adam's bias correction, learning-rate schedules,
        lookahead and EMA run on updates, not micro-batches. bert4keras applied each update
        one chunk late; this is the corrected form. In momentum mode the EG step-size
        extension sees the last micro-batch's gradient, and lazy optimization is refused.
        """

        def __init__(self, *args, grad_accum_steps=2, grad_accum_mode="buffer", **kwargs):
            super().__init__(*args, **kwargs)
            self.grad_accum_steps = check_positive_int(grad_accum_steps, "grad_accum_steps")
            if grad_accum_mode not in MODES:
                raise ValueError(
                    f"`grad_accum_mode` must be one of {MODES}. "
                    f"Received: grad_accum_mode={grad_accum_mode!r}."
                )
            self.grad_accum_mode = grad_accum_mode
            if self.gradient_accumulation_steps:
                raise ValueError(
                    "Use either Keras's `gradient_accumulation_steps` or `grad_accum_steps`, "
                    f"not both. Received: gradient_accumulation_steps="
                    f"{self.gradient_accumulation_steps}, grad_accum_steps={grad_accum_steps}."
                )
            if grad_accum_mode == "momentum":
                _moment_decays(self)
                if "LazyOptimization" in self._b4x_extensions:
                    raise ValueError(
                        "grad_accum_mode='momentum' cannot be combined with lazy optimization: "
                        "without a buffer the rows touched earlier in a cycle are unknown. "
                        "Use grad_accum_mode='buffer'."
                    )

        @property
        def iterations(self):
            """Parameter updates so far: the mini-batch count // grad_accum_steps."""
            return ops.floor_divide(self._iterations, self.grad_accum_steps)

        def _get_current_learning_rate(self):
            schedule = keras.optimizers.schedules.LearningRateSchedule
            if isinstance(self._learning_rate, schedule):
                return self._learning_rate(self.iterations)
            return super()._get_current_learning_rate()

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            if self.grad_accum_mode == "buffer":
                self._grad_accumulators = self.add_optimizer_variables(var_list, "grad_accum")
                return
            for attribute, decay in _moment_decays(self):
                for slot in getattr(self, attribute):
                    self._b4x.moment_decays[id(slot)] = float(decay)

        def _update_gate(self):
            return ops.equal(ops.mod(self._iterations + 1, self.grad_accum_steps), 0)

        def _slot_gate(self):
            return self._update_gate() if self.grad_accum_mode == "buffer" else None

        def _prepare_gradient(self, index, gradient):
            gradient = super()._prepare_gradient(index, gradient)
            if self.grad_accum_mode != "buffer":
                return gradient
            accumulator = self._grad_accumulators[index]
            total = ops.add(ops.convert_to_tensor(accumulator), gradient)
            reset = ops.where(self._update_gate(), ops.zeros_like(total), total)
            self._write_state(accumulator, reset, gated=False)
            return total / self.grad_accum_steps

        def _transform_slot(self, step, slot, old, new):
            new = super()._transform_slot(step, slot, old, new)
            decay = self._b4x.moment_decays.get(id(slot))
            if decay is None:
                return new
            first = ops.equal(ops.mod(self._iterations, self.grad_accum_steps), 0)
            keep = ops.cast(ops.where(first, decay, 1.0), old.dtype)
            return keep * old + (new - decay * old) / self.grad_accum_steps

        def get_config(self):
            config = super().get_config()
            config.update(
                {
                    "grad_accum_steps": self.grad_accum_steps,
                    "grad_accum_mode": self.grad_accum_mode,
                }
            )
            return config

    return NewOptimizer
