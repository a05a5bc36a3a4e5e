"""Derived optimizers against numpy oracles of their update equations (ALGORITHMS §6, §7, §9).

Every expected value is computed here in float64 numpy from the published update rule (or by a
Keras built-in), never by the code under test. Shapes are tiny; gradients are fed directly
through `optimizer.apply`, so the same tests run on TensorFlow and JAX.
"""

import json

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import ops

from bert4x import optimizers as B

pytestmark = pytest.mark.backend_agnostic

SGD = keras.optimizers.SGD
RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------------------- numpy oracles
class NpSGD:
    """m ← μm − ηg, θ ← θ + m (μ = 0: θ ← θ − ηg), as Keras's SGD."""

    def __init__(self, lr, momentum=0.0):
        self.lr, self.momentum, self.m = lr, momentum, 0.0

    def step(self, theta, g, lr=None):
        self.m = self.momentum * self.m - (self.lr if lr is None else lr) * g
        return theta + self.m


class NpAdam:
    """bert4keras Adam (ε outside √v̂) or Keras Adam (lr·√(1−β2^t)/(1−β1^t)·m/(√v + ε))."""

    def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-6, keras_form=False, bias_correction=True):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.keras_form, self.bias_correction = keras_form, bias_correction
        self.m = self.v = 0.0
        self.t = 0

    def step(self, theta, g, lr=None):
        lr = self.lr if lr is None else lr
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g**2
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        if self.keras_form:
            return theta - lr * np.sqrt(c2) / c1 * self.m / (np.sqrt(self.v) + self.eps)
        if not self.bias_correction:
            c1 = c2 = 1.0
        return theta - lr * (self.m / c1) / (np.sqrt(self.v / c2) + self.eps)


BASES = {  # name: (Keras-side class, kwargs, numpy oracle factory)
    "sgd": (SGD, {}, lambda lr: NpSGD(lr)),
    "adam": (B.Adam, {}, lambda lr: NpAdam(lr)),
}


def variable(path, value):
    scope, name = path.rsplit("/", 1)
    with keras.name_scope(scope):
        return keras.Variable(np.asarray(value, "float32"), name=name)


def numpy_of(variables):
    return [ops.convert_to_numpy(v).astype("float64") for v in variables]


def apply_all(optimizer, variables, gradient_steps):
    for grads in gradient_steps:
        optimizer.apply([np.asarray(g, "float32") for g in grads], variables)
    return numpy_of(variables)


def random_problem(shapes, steps, seed=0):
    """Initial values and a gradient sequence, float32-representable."""
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=s).astype("float32").astype("float64") for s in shapes]
    grads = [
        [rng.normal(size=s).astype("float32").astype("float64") for s in shapes]
        for _ in range(steps)
    ]
    return values, grads


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_matches_bert4keras_formula(bias_correction):
    (theta,), grads = random_problem([(3, 2)], steps=4)
    v = variable("Dense/kernel", theta)
    opt = B.Adam(learning_rate=0.01, bias_correction=bias_correction)
    oracle = NpAdam(0.01, bias_correction=bias_correction)
    for (g,) in grads:
        theta = oracle.step(theta, g)
        (got,) = apply_all(opt, [v], [[g]])
        np.testing.assert_allclose(got, theta, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_weight_decay_with_zero_gradient_is_geometric(base):
    cls, _, _ = BASES[base]
    opt = B.extend_with_weight_decay(cls)(
        learning_rate=0.1, weight_decay_rate=0.2, exclude_from_weight_decay=["bias$"]
    )
    kernel, bias = variable("Dense/kernel", [[1.0, -2.0]]), variable("Dense/bias", [3.0])
    zeros = [np.zeros((1, 2)), np.zeros(1)]
    got_kernel, got_bias = apply_all(opt, [kernel, bias], [zeros] * 5)
    np.testing.assert_allclose(got_kernel, np.array([[1.0, -2.0]]) * 0.98**5, rtol=RTOL)
    np.testing.assert_array_equal(got_bias, [3.0])


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_weight_decay_matches_formula(base):
    cls, _, make_oracle = BASES[base]
    (theta,), grads = random_problem([(4,)], steps=3)
    opt = B.extend_with_weight_decay(cls)(learning_rate=0.05, weight_decay_rate=0.3)
    oracle = make_oracle(0.05)
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], grads)
    for (g,) in grads:
        theta = oracle.step(theta, g) - 0.05 * 0.3 * theta
    np.testing.assert_allclose(got, theta, rtol=RTOL, atol=ATOL)


def test_weight_decay_on_keras_adam_equals_keras_adamw():
    (theta,), grads = random_problem([(3, 3)], steps=3)
    ours = B.extend_with_weight_decay(keras.optimizers.Adam)(
        learning_rate=0.01, weight_decay_rate=0.1
    )
    reference = keras.optimizers.AdamW(learning_rate=0.01, weight_decay=0.1)
    (got,) = apply_all(ours, [variable("Dense/kernel", theta)], grads)
    (expected,) = apply_all(reference, [variable("Dense/kernel", theta)], grads)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_keras_weight_decay_moves_inside_the_gated_step():
    """Keras's own `weight_decay` decays once per update, not once per micro-batch."""
    opt = B.extend_with_gradient_accumulation(keras.optimizers.AdamW)(
        learning_rate=0.1, weight_decay=0.1, grad_accum_steps=2
    )
    (got,) = apply_all(opt, [variable("Dense/kernel", [2.0])], [[np.zeros(1)]] * 4)
    np.testing.assert_allclose(got, [2.0 * 0.99**2], rtol=1e-6)


# ---------------------------------------------------------------------------- layer adaptation
def test_layer_adaptation_sgd_step_has_length_lr_times_norm_along_minus_gradient():
    (theta,), ((g,),) = random_problem([(3, 4)], steps=1)
    opt = B.extend_with_layer_adaptation(SGD)(learning_rate=0.01)
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], [[g]])
    delta = got - theta
    np.testing.assert_allclose(np.linalg.norm(delta), 0.01 * np.linalg.norm(theta), rtol=1e-5)
    np.testing.assert_allclose(
        delta / np.linalg.norm(delta), -g / np.linalg.norm(g), rtol=1e-4, atol=1e-6
    )


def test_layer_adaptation_degenerate_cases_keep_the_plain_step():
    opt = B.extend_with_layer_adaptation(SGD)(
        learning_rate=0.1, exclude_from_layer_adaptation=["Norm"]
    )
    zero = variable("Dense/kernel", [0.0, 0.0])
    still = variable("Dense/bias", [1.0, 2.0])
    excluded = variable("Embedding-Norm/gamma", [1.0, 2.0])
    grads = [np.array([1.0, -3.0]), np.zeros(2), np.array([10.0, 0.0])]
    got_zero, got_still, got_excluded = apply_all(opt, [zero, still, excluded], [grads])
    np.testing.assert_allclose(got_zero, [-0.1, 0.3], rtol=1e-6)
    np.testing.assert_array_equal(got_still, [1.0, 2.0])
    np.testing.assert_allclose(got_excluded, [0.0, 2.0], atol=1e-6)


@pytest.mark.parametrize("with_decay", [False, True])
def test_layer_adaptation_on_adam_matches_lamb_formula(with_decay):
    (theta,), grads = random_problem([(5,)], steps=3)
    cls = B.AdamLAMB if with_decay else B.AdamLA
    kwargs = {"weight_decay_rate": 0.1} if with_decay else {}
    opt = cls(learning_rate=0.01, **kwargs)
    oracle = NpAdam(0.01)
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], grads)
    for (g,) in grads:
        delta = oracle.step(theta, g) - theta - (0.01 * 0.1 * theta if with_decay else 0)
        ratio = np.linalg.norm(theta) / np.linalg.norm(delta / 0.01)
        theta = theta + ratio * delta
    np.testing.assert_allclose(got, theta, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------- piecewise lr
def test_piecewise_linear_schedule_values():
    schedule = B.PiecewiseLinear({1000: 1.0, 2000: 0.1})
    steps = [0, 500, 1000, 1500, 2000, 10**6]
    got = [float(ops.convert_to_numpy(schedule(t))) for t in steps]
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.55, 0.1, 0.1], rtol=1e-6, atol=1e-7)
    flat = B.PiecewiseLinear({0: 1.0})
    assert [float(ops.convert_to_numpy(flat(t))) for t in (0, 7, 10**5)] == [1.0, 1.0, 1.0]


def test_piecewise_linear_schedule_survives_json_config():
    schedule = B.PiecewiseLinear({10: 2.0, 30: 0.5})
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    restored = keras.saving.deserialize_keras_object(config)
    assert restored.schedule == {10: 2.0, 30: 0.5}
    np.testing.assert_allclose(ops.convert_to_numpy(restored(20)), 1.25, rtol=1e-6)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_piecewise_lr_scales_every_step(base):
    cls, _, make_oracle = BASES[base]
    (theta,), grads = random_problem([(3,)], steps=6)
    opt = B.extend_with_piecewise_linear_lr(cls)(learning_rate=0.1, lr_schedule={2: 1.0, 4: 0.5})
    oracle = make_oracle(0.1)
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], grads)
    for multiplier, (g,) in zip([0.0, 0.5, 1.0, 0.75, 0.5, 0.5], grads, strict=True):
        theta = oracle.step(theta, g, lr=0.1 * multiplier)
    np.testing.assert_allclose(got, theta, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------- parameter-wise lr
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_parameter_wise_lr_multiplies_the_step(base):
    cls, _, make_oracle = BASES[base]
    paths = ["Embedding-Token/embeddings", "Dense/kernel", "Embedding-Norm/gamma"]
    multipliers = [2.0 * 0.5, 3.0, 2.0]  # "Embedding" and "Token"; "Dense"; "Embedding"
    values, grads = random_problem([(2, 3), (3,), (3,)], steps=3)
    opt = B.extend_with_parameter_wise_lr(cls)(
        learning_rate=0.05,
        paramwise_lr_schedule={"Embedding": 2.0, "Token": 0.5, "Dense": 3.0},
    )
    got = apply_all(opt, [variable(p, v) for p, v in zip(paths, values, strict=True)], grads)
    oracles = [make_oracle(0.05) for _ in paths]
    for step in grads:
        for i, g in enumerate(step):
            values[i] = values[i] + multipliers[i] * (oracles[i].step(values[i], g) - values[i])
    assert_close(got, values)


# ---------------------------------------------------------------------------- lazy optimization
LAZY_BASES = {
    "sgd_momentum": (SGD, {"momentum": 0.9}, lambda lr: NpSGD(lr, momentum=0.9)),
    "adam": BASES["adam"],
}


@pytest.mark.parametrize("base", sorted(LAZY_BASES))
def test_lazy_rows_without_gradient_keep_value_and_moments(base):
    cls, kwargs, make_oracle = LAZY_BASES[base]
    (table, kernel), grads = random_problem([(5, 3), (3, 2)], steps=2)
    grads[1][0][[1, 3, 4]] = 0.0  # second batch: only tokens 0 and 2
    opt = B.extend_with_lazy_optimization(cls)(
        learning_rate=0.1, include_in_lazy_optimization=["Embedding"], **kwargs
    )
    variables = [variable("Embedding-Token/embeddings", table), variable("Dense/kernel", kernel)]
    apply_all(opt, variables, grads[:1])
    before = numpy_of(variables) + numpy_of(opt.variables[1:])
    got_table, got_kernel = apply_all(opt, variables, grads[1:])
    after_slots = numpy_of(opt.variables[1:])
    table_oracle, kernel_oracle = make_oracle(0.1), make_oracle(0.1)
    for g_table, g_kernel in grads:  # the base on all rows, then keep rows 0 and 2
        expected_table = table_oracle.step(table, g_table)
        table, kernel = expected_table, kernel_oracle.step(kernel, g_kernel)
    np.testing.assert_array_equal(got_table[[1, 3, 4]], before[0][[1, 3, 4]])
    np.testing.assert_allclose(got_table[[0, 2]], expected_table[[0, 2]], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_kernel, kernel, rtol=RTOL, atol=ATOL)
    for slot_before, slot_after in zip(before[2:], after_slots, strict=True):
        if slot_before.shape == (5, 3):  # the embedding's moments
            np.testing.assert_array_equal(slot_after[[1, 3, 4]], slot_before[[1, 3, 4]])


def test_plain_adam_moves_rows_without_gradient():
    """The situation lazy optimization exists for (a sensitivity check of the test above)."""
    (table,), grads = random_problem([(5, 3)], steps=2)
    grads[1][0][[1, 3, 4]] = 0.0
    v = variable("Embedding-Token/embeddings", table)
    opt = B.Adam(learning_rate=0.1)
    (after_first,) = apply_all(opt, [v], grads[:1])
    (after_second,) = apply_all(opt, [v], grads[1:])
    assert np.all(np.abs(after_second[[1, 3, 4]] - after_first[[1, 3, 4]]) > 1e-4)


# ---------------------------------------------------------------------------- config, factories
FACTORY_CASES = [
    (B.extend_with_weight_decay, {"weight_decay_rate": 0.3, "exclude_from_weight_decay": ["b"]}),
    (B.extend_with_layer_adaptation, {"exclude_from_layer_adaptation": ["Norm", "bias"]}),
    (B.extend_with_piecewise_linear_lr, {"lr_schedule": {100: 1.0, 200: 0.25}}),
    (B.extend_with_parameter_wise_lr, {"paramwise_lr_schedule": {"Embedding": 0.1}}),
    (B.extend_with_lazy_optimization, {"include_in_lazy_optimization": ["Embedding"]}),
    (B.extend_with_gradient_accumulation, {"grad_accum_steps": 4, "grad_accum_mode": "momentum"}),
    (B.extend_with_lookahead, {"steps_per_slow_update": 3, "slow_step_size": 0.25}),
    (B.extend_with_exponential_moving_average, {"ema_momentum": 0.9}),
    (
        B.extend_with_exponentiated_gradient_step_size,
        {
            "gain_learning_rate": 0.2,
            "scale_learning_rate": 0.3,
            "beta": 0.5,
            "min_gain": 0.5,
            "max_gain": 2.0,
            "min_scale": 0.25,
            "max_scale": 4.0,
            "use_directions": False,
            "use_signs": False,
            "per_coordinate": False,
        },
    ),
]


@pytest.mark.parametrize("factory, kwargs", FACTORY_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_config_round_trip_keeps_every_argument(factory, kwargs):
    cls = factory(B.Adam)
    opt = cls(learning_rate=0.125, beta_1=0.8, epsilon=1e-5, **kwargs)
    config = opt.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    assert cls.from_config(dict(config)).get_config() == config
    serialized = json.loads(json.dumps(keras.optimizers.serialize(opt)))
    assert serialized["registered_name"] == f"bert4x>{cls.__name__}"
    restored = keras.optimizers.deserialize(serialized)
    assert type(restored) is cls
    assert restored.get_config() == config


def test_factory_names_are_unique_and_calls_idempotent():
    cls = B.extend_with_weight_decay(SGD)
    assert cls is B.extend_with_weight_decay(SGD)
    assert cls.__name__ == "KerasSGDWeightDecay"
    assert keras.saving.get_registered_name(cls) == "bert4x>KerasSGDWeightDecay"
    assert B.extend_with_weight_decay(B.Adam, name="AdamW") is B.AdamW
    stacked = B.extend_with_lookahead(B.extend_with_weight_decay(B.Adam))
    assert stacked.__name__ == "AdamWeightDecayLookahead"
    assert isinstance(stacked(), keras.optimizers.Optimizer)
    with pytest.raises(ValueError, match="AdamW"):
        B.extend_with_weight_decay(SGD, name="AdamW")
    with pytest.raises(ValueError, match="twice"):
        B.extend_with_weight_decay(B.AdamW)
    with pytest.raises(TypeError, match="optimizer class"):
        B.extend_with_weight_decay(B.Adam())


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (B.extend_with_weight_decay, {"exclude_from_weight_decay": "bias"}, "'bias'"),
        (B.extend_with_weight_decay, {"weight_decay_rate": -1.0}, "-1.0"),
        (B.extend_with_layer_adaptation, {"exclude_from_layer_adaptation": ["("]}, r"'\('"),
        (B.extend_with_piecewise_linear_lr, {"lr_schedule": {-5: 1.0}}, "-5"),
        (B.extend_with_piecewise_linear_lr, {"lr_schedule": {}}, "non-empty"),
        (B.extend_with_parameter_wise_lr, {"paramwise_lr_schedule": {"a": "x"}}, "'x'"),
        (B.extend_with_gradient_accumulation, {"grad_accum_steps": 0}, "0"),
        (B.extend_with_gradient_accumulation, {"grad_accum_mode": "sum"}, "'sum'"),
        (B.extend_with_lookahead, {"slow_step_size": 1.5}, "1.5"),
        (B.extend_with_exponential_moving_average, {"ema_momentum": 1.0}, "1.0"),
        (B.extend_with_exponential_moving_average, {"use_ema": True}, "use_ema"),
        (B.extend_with_exponentiated_gradient_step_size, {"min_gain": 0.0}, "min_gain=0.0"),
        (B.extend_with_exponentiated_gradient_step_size, {"max_scale": 0.5}, "max_scale=0.5"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(B.Adam)(**kwargs)


def test_base_writing_variables_directly_is_rejected():
    class DirectWrites(SGD):
        def update_step(self, gradient, variable, learning_rate):
            variable.assign(variable - learning_rate * gradient)

    opt = B.extend_with_weight_decay(DirectWrites, name="DirectWritesWeightDecay")()
    with pytest.raises(TypeError, match="self.assign"):
        opt.apply([np.ones(2, "float32")], [variable("Dense/kernel", [1.0, 2.0])])


# ---------------------------------------------------------------------------- hypothesis: gates
@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 4), calls=st.integers(1, 9))
def test_accumulation_updates_exactly_once_per_cycle(k, calls):
    opt = B.extend_with_gradient_accumulation(SGD)(learning_rate=1.0, grad_accum_steps=k)
    v = variable("Dense/kernel", [0.0])
    history = [apply_all(opt, [v], [[np.ones(1)]])[0][0] for _ in range(calls)]
    expected = [-float((t + 1) // k) for t in range(calls)]  # one unit step per k calls
    np.testing.assert_allclose(history, expected, atol=1e-6)
    assert int(ops.convert_to_numpy(opt.iterations)) == calls // k
