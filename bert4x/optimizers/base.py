"""Shared machinery of the derived optimizers: write routing, class factories, bert4keras Adam.

A base optimizer's `update_step(g, θ, η)` proposes a new value θ' for the model variable and
new values s' for its slots (moments). `DerivedOptimizer` intercepts those writes
(`assign`, `assign_add`, `assign_sub`) and lets each extension rewrite them, innermost first:

    g  ← prepare_gradient(g)                       before the base runs (accumulation)
    θ' ← transform_update_n(… transform_update_1(θ'))
    s' ← transform_slot(s')                        (lazy rows, momentum-embedded accumulation)
    x  ← where(gate, x', x)                        for θ, slots and extension state
    observe_update(θ')                             after the write (EMA)

so `extend_with_layer_adaptation(extend_with_weight_decay(Adam))` sees Δ = Δ_adam − ηλθ (LAMB),
as in bert4keras (kexue.fm/archives/7094). Everything is `keras.ops` arithmetic, so the same
code runs under `jit_compile=True`, on JAX and inside `tf.distribute` replicas.
"""

import functools
import re

import keras
from keras import ops

PACKAGE = "bert4x"
_CLASSES = {}  # (extension, base class, name) -> derived class, so a factory call is idempotent


class _Step:
    """The update step in progress: variable index, model variable, gradient, learning rate."""

    def __init__(self, index, variable, gradient, learning_rate):
        self.index = index
        self.variable = variable
        self.gradient = gradient
        self.learning_rate = learning_rate
        self.wrote_variable = False


class _Context:
    """Python-side state kept outside Keras/TF attribute tracking (never saved)."""

    def __init__(self):
        self.step = None
        self.moment_decays = {}
        self.ema_backup = None


def dense(gradient, variable):
    """The gradient as a dense tensor of the variable's dtype (densifies tf.IndexedSlices)."""
    if hasattr(gradient, "indices"):  # an embedding's sparse gradient
        gradient = ops.add(ops.zeros(variable.shape, variable.dtype), gradient)
    return ops.cast(gradient, variable.dtype)


class DerivedOptimizer:
    """Mixin under every extension: routes the base's writes through the extension hooks.

    Keras's own `weight_decay` is moved inside the step (θ' ← θ' − η·wd·θ) so that it is gated
    by gradient accumulation and seen by the extensions like `extend_with_weight_decay`.
    """

    _b4x_extensions = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._b4x = _Context()

    def update_step(self, gradient, variable, learning_rate):
        gradient = dense(gradient, variable)
        index = self._get_variable_index(variable)
        gradient = self._prepare_gradient(index, gradient)
        step = _Step(index, variable, gradient, learning_rate)
        self._b4x.step = step
        try:
            super().update_step(gradient, variable, learning_rate)
        finally:
            self._b4x.step = None
        if not step.wrote_variable:
            raise TypeError(
                f"{type(self).__name__}: the base optimizer did not write "
                f"{self._path(index)!r} through `self.assign*`, so the extensions cannot "
                "see its update. Use a base optimizer whose `update_step` writes variables "
                "with `self.assign`, `self.assign_add` or `self.assign_sub`."
            )

    def assign(self, variable, value):
        """variable <- value; inside `update_step` the write goes through the extensions."""
        if self._b4x.step is None:
            return super().assign(variable, value)
        self._route(variable, value)

    def assign_add(self, variable, value):
        """variable <- variable + value, routed through the extensions like `assign`."""
        if self._b4x.step is None:
            return super().assign_add(variable, value)
        self._route(variable, ops.add(ops.convert_to_tensor(variable), value))

    def assign_sub(self, variable, value):
        """variable <- variable - value, routed through the extensions like `assign`."""
        if self._b4x.step is None:
            return super().assign_sub(variable, value)
        self._route(variable, ops.subtract(ops.convert_to_tensor(variable), value))

    def _route(self, target, new):
        step = self._b4x.step
        old = ops.convert_to_tensor(target)
        new = ops.cast(new, old.dtype)
        if target is step.variable:
            new = self._gated(self._transform_update(step, old, new), old, self._update_gate())
            super().assign(target, new)
            step.wrote_variable = True
            self._observe_update(step, new)
        else:
            new = self._transform_slot(step, target, old, new)
            super().assign(target, self._gated(new, old, self._slot_gate()))

    @staticmethod
    def _gated(new, old, gate):
        return new if gate is None else ops.where(gate, new, old)

    def _write_state(self, variable, value, gated=True):
        """Write an extension's own state variable, gated like the model variables."""
        old = ops.convert_to_tensor(variable)
        value = ops.cast(value, old.dtype)
        if gated:
            value = self._gated(value, old, self._update_gate())
        super().assign(variable, value)

    # Hooks; an extension overrides one and calls `super()` first.
    def _prepare_gradient(self, index, gradient):
        return gradient

    def _transform_update(self, step, old, new):
        if self.weight_decay and self._use_weight_decay(self._trainable_variables[step.index]):
            lr = ops.cast(step.learning_rate, old.dtype)
            new = new - lr * ops.cast(self.weight_decay, old.dtype) * old
        return new

    def _transform_slot(self, step, slot, old, new):
        return new

    def _observe_update(self, step, new):
        pass

    def _update_gate(self):
        return None

    def _slot_gate(self):
        return None

    def _apply_weight_decay(self, variables):
        pass  # applied inside the step by `_transform_update`

    def _path(self, index):
        return self._trainable_variables[index].path


def check_patterns(patterns, argument):
    """Validate a list of regular expressions; returns it as a list of strings."""
    if isinstance(patterns, str):
        raise ValueError(
            f"`{argument}` must be a list of regular expressions, not a string. "
            f"Received: {argument}={patterns!r}. Wrap it in a list: [{patterns!r}]."
        )
    patterns = list(patterns)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(
                f"`{argument}` entries must be regular expressions. "
                f"Received: {pattern!r} ({error})."
            ) from None
    return patterns


def matches(path, patterns):
    """True when any pattern is found (`re.search`) in the variable path."""
    return any(re.search(pattern, path) for pattern in patterns)


def check_positive_int(value, argument):
    """`value` when it is an int >= 1 (bools excluded); ValueError naming `argument` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{argument}` must be an integer >= 1. Received: {value!r}.")
    return value


def check_range(value, argument, low, high, closed_high=True):
    """low <= value <= high (or < high); returns the value as a float."""
    inside = value <= high if closed_high else value < high
    if not isinstance(value, (int, float)) or value < low or not inside:
        bracket = "]" if closed_high else ")"
        raise ValueError(
            f"`{argument}` must be a number in [{low}, {high}{bracket}. Received: {value!r}."
        )
    return float(value)


def _default_name(base, suffix):
    prefix = "Keras" if base.__module__.startswith("keras") else ""
    return f"{prefix}{base.__name__}{suffix}"


def optimizer_factory(suffix):
    """Decorate `make(base) -> class`; the result is a bert4keras-style `extend_with_*`.

    The factory takes `(base_optimizer, name=None)`, returns a subclass registered as
    `bert4x>{name}`, and returns the same class again for the same arguments.
    """

    def decorate(make):
        @functools.wraps(make)
        def factory(base_optimizer, name=None):
            if not (
                isinstance(base_optimizer, type)
                and issubclass(base_optimizer, keras.optimizers.Optimizer)
            ):
                raise TypeError(
                    f"{make.__name__} expects a Keras optimizer class, e.g. "
                    f"keras.optimizers.Adam. Received: {base_optimizer!r}."
                )
            name = name or _default_name(base_optimizer, suffix)
            key = (suffix, base_optimizer, name)
            if key in _CLASSES:
                return _CLASSES[key]
            if suffix in getattr(base_optimizer, "_b4x_extensions", ()):
                raise ValueError(
                    f"{base_optimizer.__name__} already has the {suffix} extension; "
                    f"{make.__name__} cannot apply it twice."
                )
            if keras.saving.get_registered_object(f"{PACKAGE}>{name}") is not None:
                raise ValueError(
                    f"The name {name!r} is already registered as {PACKAGE}>{name} for "
                    f"another optimizer class. Pass a different `name=` to {make.__name__}."
                )
            base = base_optimizer
            if not issubclass(base, DerivedOptimizer):
                base = type(f"_Derived{base.__name__}", (DerivedOptimizer, base), {})
            cls = make(base)
            cls.__name__ = cls.__qualname__ = name
            cls.__module__ = "bert4x.optimizers"
            cls._b4x_extensions = base._b4x_extensions + (suffix,)
            keras.saving.register_keras_serializable(PACKAGE)(cls)
            _CLASSES[key] = cls
            return cls

        return factory

    return decorate


@keras.saving.register_keras_serializable(PACKAGE)
class Adam(keras.optimizers.Optimizer):
    """θ ← θ − η m̂/(√v̂ + ε), m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g² (arXiv 1412.6980).

    bert4keras's Adam: m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t) with t = iterations + 1 when
    `bias_correction`, else m̂ = m, v̂ = v; ε is added to √v̂ and defaults to 1e-6. (Keras's
    Adam adds ε to the uncorrected √v, i.e. uses ε/√(1 − β2^t) here, and defaults to 1e-7.)
    Other keyword arguments are Keras's (`clipnorm`, `weight_decay`, `name`, ...).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        bias_correction=True,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1 = check_range(beta_1, "beta_1", 0.0, 1.0, closed_high=False)
        self.beta_2 = check_range(beta_2, "beta_2", 0.0, 1.0, closed_high=False)
        self.epsilon = epsilon
        self.bias_correction = bool(bias_correction)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = dense(gradient, variable)  # as bert4keras: sparse gradients are densified
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        b1, b2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        self.assign(m, b1 * m + (1.0 - b1) * g)
        self.assign(v, b2 * v + (1.0 - b2) * ops.square(g))
        step_size, root_scale = lr, 1.0  # m̂ = m/(1 − β1^t), √v̂ = √v/√(1 − β2^t) as scalars
        if self.bias_correction:
            t = ops.cast(self.iterations + 1, dtype)
            step_size = lr / (1.0 - ops.power(b1, t))
            root_scale = 1.0 / ops.sqrt(1.0 - ops.power(b2, t))
        m, v = ops.convert_to_tensor(m), ops.convert_to_tensor(v)  # the values just written
        update = step_size * m / (root_scale * ops.sqrt(v) + self.epsilon)
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "bias_correction": self.bias_correction,
            }
        )
        return config
