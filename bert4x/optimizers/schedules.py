"""Learning-rate multipliers: piecewise-linear in time, and per parameter by name."""

import keras
from keras import ops

from bert4x.optimizers.base import PACKAGE, check_patterns, matches, optimizer_factory


def _check_schedule(schedule, argument):
    """{step: value} with integer steps >= 0 -> sorted [(step, value)], (0, 0.0) prepended."""
    if not isinstance(schedule, dict) or not schedule:
        raise ValueError(
            f"`{argument}` must be a non-empty dict {{step: value}}, e.g. {{1000: 1, 2000: 0.1}}. "
            f"Received: {argument}={schedule!r}."
        )
    points = []
    for step, value in schedule.items():
        try:
            step, value = int(step), float(value)  # JSON configs turn the keys into strings
        except (TypeError, ValueError):
            raise ValueError(
                f"`{argument}` maps integer steps to numbers. Received: {step!r}: {value!r}."
            ) from None
        if step < 0:
            raise ValueError(f"`{argument}` steps must be >= 0. Received: {step}.")
        points.append((step, value))
    points.sort()
    if points[0][0] != 0:
        points.insert(0, (0, 0.0))
    return points


def _piecewise_linear(t, points):
    """f(t) = v_0 + Σ_k (v_{k+1} − v_k)·clip((t − t_k)/(t_{k+1} − t_k), 0, 1).

    The telescoping sum is the linear interpolation between consecutive points and the last
    value after the last point, computed without branching on t.
    """
    t = ops.cast(t, "float32")
    value = ops.convert_to_tensor(points[0][1], "float32")
    for (t0, v0), (t1, v1) in zip(points[:-1], points[1:], strict=True):
        value = value + (v1 - v0) * ops.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    return value


@keras.saving.register_keras_serializable(PACKAGE)
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """lr(t) interpolates {t_k: lr_k} linearly, constant after the last key (archives/7094).

    If the smallest key is not 0, (0, 0.0) is prepended, so `{1000: 1e-4}` warms up from 0 to
    1e-4 over the first 1000 steps. `t` is the step Keras passes (`optimizer.iterations`).
    """

    def __init__(self, schedule):
        self._points = _check_schedule(schedule, "schedule")
        self.schedule = {int(k): float(v) for k, v in schedule.items()}

    def __call__(self, step):
        return _piecewise_linear(step, self._points)

    def get_config(self):
        return {"schedule": dict(self.schedule)}


@optimizer_factory("PiecewiseLinearLR")
def extend_with_piecewise_linear_lr(base):
    """Returns `base` with η_t = η·f(t), f piecewise linear from `lr_schedule` (archives/7094)."""

    class NewOptimizer(base):
        """η_t = η·f(t): `lr_schedule={t_k: f_k}` interpolated linearly, f_last afterwards.

        A smallest key other than 0 prepends (0, 0): `{1000: 1, 2000: 0.1}` warms up over
        [0, 1000], decays to 0.1 over [1000, 2000], then stays. t = `iterations`, the number of
        completed updates (micro-batches do not count under gradient accumulation). The
        scaled η reaches every use of the learning rate: the base step, weight decay, the trust
        ratio.
        """

        def __init__(self, *args, lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            lr_schedule = {0: 1.0} if lr_schedule is None else lr_schedule
            self._b4x.lr_points = _check_schedule(lr_schedule, "lr_schedule")
            self.lr_schedule = {int(k): float(v) for k, v in lr_schedule.items()}

        def _get_current_learning_rate(self):
            lr = super()._get_current_learning_rate()
            return ops.cast(lr, "float32") * _piecewise_linear(self.iterations, self._b4x.lr_points)

        def get_config(self):
            config = super().get_config()
            config["lr_schedule"] = dict(self.lr_schedule)
            return config

    return NewOptimizer


@optimizer_factory("ParamwiseLR")
def extend_with_parameter_wise_lr(base):
    """Returns `base` with the step of each variable scaled by name-matched multipliers."""

    class NewOptimizer(base):
        """θ' ← θ + (θ' − θ)·Π_{p matches} c_p for `paramwise_lr_schedule={p: c_p}`.

        Each key is a regular expression searched in the variable path (e.g. `'Embedding'`,
        `'Transformer-[01]-'`); a plain substring matches where it occurs, as in bert4keras.
        """

        def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            schedule = dict(paramwise_lr_schedule or {})
            check_patterns(list(schedule), "paramwise_lr_schedule")
            for pattern, multiplier in schedule.items():
                if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
                    raise ValueError(
                        "`paramwise_lr_schedule` maps name patterns to numbers. "
                        f"Received: {pattern!r}: {multiplier!r}."
                    )
            self.paramwise_lr_schedule = {k: float(v) for k, v in schedule.items()}

        def _transform_update(self, step, old, new):
            new = super()._transform_update(step, old, new)
            multiplier = 1.0
            path = self._path(step.index)
            for pattern, value in self.paramwise_lr_schedule.items():
                if matches(path, [pattern]):
                    multiplier *= value
            if multiplier == 1.0:
                return new
            return old + (new - old) * multiplier

        def get_config(self):
            config = super().get_config()
            config["paramwise_lr_schedule"] = dict(self.paramwise_lr_schedule)
            return config

    return NewOptimizer
