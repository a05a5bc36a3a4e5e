"""Weight averaging: lookahead slow weights and an exponential moving average (EMA)."""

import numpy as np
from keras import ops

from bert4x.optimizers.base import check_positive_int, check_range, optimizer_factory


@optimizer_factory("Lookahead")
def extend_with_lookahead(base):
    """Returns `base` with lookahead slow weights (arXiv 1907.08610)."""

    class NewOptimizer(base):
        """φ ← φ + α(θ' − φ), θ' ← φ after every k-th update (arXiv 1907.08610).

        k = `steps_per_slow_update`, α = `slow_step_size`; the fast weights θ follow the base.
        φ starts as θ_0, the weights at the first update, as in the paper (bert4keras started
        φ at zero, which scaled the weights by α at the first sync). So after k updates
        θ = θ_0 + α(θ_k^fast − θ_0).
        """

        def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps_per_slow_update = check_positive_int(
                steps_per_slow_update, "steps_per_slow_update"
            )
            self.slow_step_size = check_range(slow_step_size, "slow_step_size", 0.0, 1.0)
            if self.slow_step_size == 0.0:
                raise ValueError("`slow_step_size` must be > 0. Received: slow_step_size=0.")

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._slow_weights = self.add_optimizer_variables(var_list, "slow")

        def _transform_update(self, step, old, new):
            new = super()._transform_update(step, old, new)
            slow_weight = self._slow_weights[step.index]
            first = ops.equal(self.iterations, 0)
            slow = ops.where(first, old, ops.convert_to_tensor(slow_weight))  # φ_0 = θ_0
            sync = ops.equal(ops.mod(self.iterations + 1, self.steps_per_slow_update), 0)
            synced = slow + self.slow_step_size * (new - slow)
            self._write_state(slow_weight, ops.where(sync, synced, slow))
            return ops.where(sync, synced, new)

        def get_config(self):
            config = super().get_config()
            config.update(
                {
                    "steps_per_slow_update": self.steps_per_slow_update,
                    "slow_step_size": self.slow_step_size,
                }
            )
            return config

    return NewOptimizer


@optimizer_factory("EMA")
def extend_with_exponential_moving_average(base):
    """Returns `base` keeping e ← μe + (1 − μ)θ after every update, with bert4keras's API."""

    class NewOptimizer(base):
        """e ← μe + (1 − μ)θ after every update, e_0 = 0, μ = `ema_momentum` (archives/7094).

        `apply_ema_weights(bias_correction=True)` backs θ up and loads e/(1 − μ^t)
        (t = updates so far); `reset_old_weights()` restores θ. Typical use: around
        evaluation. Keras's `use_ema` (e_1 = θ_1, overwrites θ at the end of `fit`) is a
        different scheme and cannot be combined with this one.
        """

        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            if kwargs.get("use_ema"):
                raise ValueError(
                    "Keras's `use_ema=True` cannot be combined with the bert4x EMA extension; "
                    "drop `use_ema` and use `apply_ema_weights()`/`reset_old_weights()`."
                )
            super().__init__(*args, **kwargs)
            self.ema_momentum = check_range(
                ema_momentum, "ema_momentum", 0.0, 1.0, closed_high=False
            )

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._ema_weights = self.add_optimizer_variables(var_list, "ema")

        def _observe_update(self, step, new):
            super()._observe_update(step, new)
            ema = self._ema_weights[step.index]
            average = self.ema_momentum * ops.convert_to_tensor(ema)
            self._write_state(ema, average + (1.0 - self.ema_momentum) * new)

        def apply_ema_weights(self, bias_correction=True):
            """Back up the model weights, then load the (bias-corrected) averages into them."""
            updates = int(ops.convert_to_numpy(self.iterations))
            if not self.built or updates == 0:
                raise ValueError("apply_ema_weights() needs at least one update; train first.")
            if self._b4x.ema_backup is not None:
                raise ValueError(
                    "apply_ema_weights() was already called; call reset_old_weights() first, "
                    "or the backed-up weights would be replaced by the averages."
                )
            scale = 1.0 - self.ema_momentum**updates if bias_correction else 1.0
            variables = self._trainable_variables
            self._b4x.ema_backup = [ops.convert_to_numpy(v) for v in variables]
            for variable, ema in zip(variables, self._ema_weights, strict=True):
                if ema is not None:
                    average = ops.convert_to_numpy(ema) / np.asarray(scale, ema.dtype)
                    variable.assign(average)

        def reset_old_weights(self):
            """Restore the weights backed up by `apply_ema_weights()`."""
            if self._b4x.ema_backup is None:
                raise ValueError("reset_old_weights() needs a prior apply_ema_weights() call.")
            for variable, value in zip(
                self._trainable_variables, self._b4x.ema_backup, strict=True
            ):
                variable.assign(value)
            self._b4x.ema_backup = None

        def get_config(self):
            config = super().get_config()
            config["ema_momentum"] = self.ema_momentum
            return config

    return NewOptimizer
