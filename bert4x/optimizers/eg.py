"""Step-size multipliers adapted by exponentiated gradient (EGDD; arXiv 2202.00145, archives/8968).

Shapes per model variable θ: g, Δ, h, ḡ, p like θ; s a scalar.
"""

from keras import ops

from bert4x.optimizers.base import check_range, optimizer_factory

_TINY = 1e-10  # keeps u/(‖u‖ + tiny) at 0 for u = 0


def _cosine(x, y):
    """⟨x/(‖x‖ + tiny), y/(‖y‖ + tiny)⟩, computed as one pass of three sums."""
    norm_x = ops.sqrt(ops.sum(ops.square(x))) + _TINY
    norm_y = ops.sqrt(ops.sum(ops.square(y))) + _TINY
    return ops.sum(x * y) / (norm_x * norm_y)


def _check_bounds(low, high, names):
    """0 < low <= 1 <= high: the multipliers start at 1 and stay positive."""
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or not (
        0 < low <= 1 <= high
    ):
        raise ValueError(
            f"Need 0 < {names[0]} <= 1 <= {names[1]} (the multipliers start at 1). "
            f"Received: {names[0]}={low!r}, {names[1]}={high!r}."
        )
    return float(low), float(high)


@optimizer_factory("EGStepSize")
def extend_with_exponentiated_gradient_step_size(base):
    """Returns `base` with per-coordinate gains p and a per-tensor scale s on its step."""

    class NewOptimizer(base):
        """θ' ← θ − s·h, h = −p⊙Δ with Δ = θ' − θ the base step; s, p follow EG on the loss.

        Before the step, with the previous h and ḡ (EGDD, arXiv 2202.00145; lingvo egdd.py):
            s ← clip(s·exp(γ_s⟨g/‖g‖, h/‖h‖⟩), s_min, s_max)   (⟨g, h⟩ if not use_directions)
            p ← clip(p⊙exp(γ_p sign(g)⊙sign(ḡ)), p_min, p_max)
                (g⊙ḡ/(1 − β^max(t−1, 1)) if not use_signs; t = iterations + 1)
            ḡ ← βḡ + (1 − β)g
        A multiplier grows while consecutive gradients agree with the last step and shrinks
        while they oscillate; EG keeps it positive. γ_p, γ_s = `gain_learning_rate`,
        `scale_learning_rate`; β = `beta`. With `per_coordinate=False` only s is kept (h = −Δ,
        no p, no ḡ). γ_p = γ_s = 0 gives the base optimizer exactly. On an SGD-momentum base
        EGDD puts p inside the momentum; here p scales the base's step, so any base works.
        """

        def __init__(
            self,
            *args,
            gain_learning_rate=0.01,
            scale_learning_rate=0.001,
            beta=0.9,
            min_gain=0.01,
            max_gain=100.0,
            min_scale=0.1,
            max_scale=10.0,
            use_directions=True,
            use_signs=True,
            per_coordinate=True,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            inf = float("inf")
            self.gain_learning_rate = check_range(gain_learning_rate, "gain_learning_rate", 0, inf)
            self.scale_learning_rate = check_range(
                scale_learning_rate, "scale_learning_rate", 0, inf
            )
            self.beta = check_range(beta, "beta", 0.0, 1.0, closed_high=False)
            self.min_gain, self.max_gain = _check_bounds(
                min_gain, max_gain, ("min_gain", "max_gain")
            )
            self.min_scale, self.max_scale = _check_bounds(
                min_scale, max_scale, ("min_scale", "max_scale")
            )
            self.use_directions = bool(use_directions)
            self.use_signs = bool(use_signs)
            self.per_coordinate = bool(per_coordinate)

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._eg_scales = [
                self.add_variable(
                    (), "ones", dtype=v.dtype, name=f"{v.path}_eg_scale".replace("/", "_")
                )
                for v in var_list
            ]
            self._eg_directions = self.add_optimizer_variables(var_list, "eg_direction")
            if self.per_coordinate:
                self._eg_gains, self._eg_grad_averages = self.add_optimizer_variables(
                    var_list, ["eg_gain", "eg_grad_average"], initializer=["ones", "zeros"]
                )

        def _new_scale(self, index, g):
            h = ops.convert_to_tensor(self._eg_directions[index])
            if self.use_directions:
                agreement = _cosine(g, h)
            else:
                agreement = ops.sum(g * h)
            scale = ops.convert_to_tensor(self._eg_scales[index]) * ops.exp(
                self.scale_learning_rate * agreement
            )
            return ops.clip(scale, self.min_scale, self.max_scale)

        def _new_gain(self, index, g, g_bar):
            if self.use_signs:
                agreement = ops.sign(g) * ops.sign(g_bar)
            else:
                t = ops.cast(self.iterations + 1, g.dtype)
                correction = 1.0 - ops.power(self.beta, ops.maximum(t - 1.0, 1.0))
                agreement = g * g_bar / correction
            gain = ops.convert_to_tensor(self._eg_gains[index])
            gain = gain * ops.exp(self.gain_learning_rate * agreement)
            return ops.clip(gain, self.min_gain, self.max_gain)

        def _transform_update(self, step, old, new):
            new = super()._transform_update(step, old, new)
            index, g = step.index, step.gradient
            scale = self._new_scale(index, g)
            direction = old - new  # −Δ
            if self.per_coordinate:
                g_bar = ops.convert_to_tensor(self._eg_grad_averages[index])
                gain = self._new_gain(index, g, g_bar)
                self._write_state(self._eg_gains[index], gain)
                self._write_state(
                    self._eg_grad_averages[index], self.beta * g_bar + (1.0 - self.beta) * g
                )
                direction = gain * direction
            self._write_state(self._eg_scales[index], scale)
            self._write_state(self._eg_directions[index], direction)
            return old - scale * direction

        def get_config(self):
            config = super().get_config()
            for key in (
                "gain_learning_rate",
                "scale_learning_rate",
                "beta",
                "min_gain",
                "max_gain",
                "min_scale",
                "max_scale",
                "use_directions",
                "use_signs",
                "per_coordinate",
            ):
                config[key] = getattr(self, key)
            return config

    return NewOptimizer
