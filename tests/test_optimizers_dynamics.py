"""Multi-step extensions against numpy oracles: accumulation, lookahead, EMA, EG step sizes.

ALGORITHMS §6.4-6.8, §7 and §9. Expected values come from float64 numpy re-statements of the
update rules, or from the base optimizer run on the equivalent large batch.
"""

import keras
import numpy as np
import pytest
from keras import ops
from test_optimizers import (
    SGD,
    NpAdam,
    NpSGD,
    apply_all,
    assert_close,
    random_problem,
    variable,
)

from bert4x import optimizers as B

pytestmark = pytest.mark.backend_agnostic

GA = B.extend_with_gradient_accumulation
EG = B.extend_with_exponentiated_gradient_step_size
ACCUMULATION_BASES = {
    "sgd": (SGD, {}, lambda lr: NpSGD(lr)),
    "adam": (B.Adam, {}, lambda lr: NpAdam(lr)),
    "keras_adam": (keras.optimizers.Adam, {}, lambda lr: NpAdam(lr, eps=1e-7, keras_form=True)),
}


RTOL_STRICT = 1e-6


def slot(optimizer, suffix):
    """The optimizer variable whose name ends with `suffix` (single model variable)."""
    (found,) = [v for v in optimizer.variables if v.name.endswith(suffix)]
    return ops.convert_to_numpy(found).astype("float64")


def updates(optimizer):
    return int(ops.convert_to_numpy(optimizer.iterations))


# ---------------------------------------------------------------------------- accumulation
@pytest.mark.parametrize("base", sorted(ACCUMULATION_BASES))
def test_buffer_accumulation_is_one_step_on_the_mean_gradient(base):
    cls, kwargs, make_oracle = ACCUMULATION_BASES[base]
    k, cycles = 3, 2
    values, grads = random_problem([(2, 3), (3,)], steps=k * cycles)
    opt = GA(cls)(learning_rate=0.05, grad_accum_steps=k, **kwargs)
    variables = [variable("Dense/kernel", values[0]), variable("Dense/bias", values[1])]
    oracles = [make_oracle(0.05) for _ in values]
    expected = list(values)
    for t, step in enumerate(grads):
        got = apply_all(opt, variables, [step])
        if (t + 1) % k == 0:  # the update happens on the k-th call, with the cycle mean
            cycle = grads[t + 1 - k : t + 1]
            for i, oracle in enumerate(oracles):
                expected[i] = oracle.step(expected[i], np.mean([s[i] for s in cycle], axis=0))
        assert_close(got, expected)  # unchanged between updates
    assert updates(opt) == cycles


def _fit_two_layer_model(optimizer, batch_size):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 1))
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return [ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.parametrize(
    "base, kwargs, mode",
    [
        (SGD, {"learning_rate": 0.1}, "buffer"),
        (B.Adam, {"learning_rate": 0.01}, "buffer"),
        (SGD, {"learning_rate": 0.1, "momentum": 0.9}, "momentum"),
    ],
    ids=["sgd-buffer", "adam-buffer", "sgdm-momentum"],
)
def test_accumulated_micro_batches_equal_the_concatenated_batch(base, kwargs, mode):
    opt = GA(base)(grad_accum_steps=2, grad_accum_mode=mode, **kwargs)
    got = _fit_two_layer_model(opt, batch_size=4)  # 4 micro-batches -> 2 updates
    expected = _fit_two_layer_model(base(**kwargs), batch_size=8)  # 2 steps on 8 samples
    assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_momentum_accumulation_sgdm_matches_gated_closed_form():
    k, cycles, lr, mu = 3, 2, 0.1, 0.9
    (theta,), grads = random_problem([(4,)], steps=k * cycles)
    opt = GA(SGD)(learning_rate=lr, momentum=mu, grad_accum_steps=k, grad_accum_mode="momentum")
    v = variable("Dense/kernel", theta)
    m, large_batch, oracle = 0.0, theta.copy(), NpSGD(lr, momentum=mu)
    for t, (g,) in enumerate(grads, start=1):  # Keras SGD keeps m = −η·(momentum of g)
        m = (mu if (t - 1) % k == 0 else 1.0) * m - lr * g / k
        theta = theta + m if t % k == 0 else theta
        (got,) = apply_all(opt, [v], [[g]])
        np.testing.assert_allclose(got, theta, rtol=RTOL_STRICT, atol=1e-7)
        np.testing.assert_allclose(slot(opt, "momentum"), m, rtol=RTOL_STRICT, atol=1e-7)
        if t % k == 0:
            cycle_mean = np.mean([s[0] for s in grads[t - k : t]], axis=0)
            large_batch = oracle.step(large_batch, cycle_mean)
            np.testing.assert_allclose(got, large_batch, rtol=RTOL_STRICT, atol=1e-7)


@pytest.mark.parametrize("base", ["adam", "keras_adam"])
def test_momentum_accumulation_adam_is_exact_for_equal_micro_gradients(base):
    cls, kwargs, make_oracle = ACCUMULATION_BASES[base]
    k, cycles = 3, 3
    (theta,), grads = random_problem([(5,)], steps=cycles)
    opt = GA(cls)(learning_rate=0.01, grad_accum_steps=k, grad_accum_mode="momentum", **kwargs)
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], [g for g in grads for _ in range(k)])
    oracle = make_oracle(0.01)
    for (g,) in grads:
        theta = oracle.step(theta, g)
    np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6)


def test_momentum_accumulation_adam_second_moment_gains_the_micro_batch_variance():
    k, b1, b2 = 4, 0.875, 0.9921875  # exact in float32
    (theta,), grads = random_problem([(6,)], steps=k)
    opt = GA(B.Adam)(
        learning_rate=0.01, beta_1=b1, beta_2=b2, grad_accum_steps=k, grad_accum_mode="momentum"
    )
    apply_all(opt, [variable("Dense/kernel", theta)], grads)
    micro = np.array([g for (g,) in grads])
    mean = micro.mean(axis=0)
    np.testing.assert_allclose(slot(opt, "momentum"), (1 - b1) * mean, rtol=1e-5, atol=1e-7)
    variance_term = (1 - b2) / k * np.sum((micro - mean) ** 2, axis=0)
    difference = slot(opt, "velocity") - (1 - b2) * mean**2
    np.testing.assert_allclose(difference, variance_term, rtol=1e-4, atol=1e-9)
    assert np.all(variance_term > 1e-6)  # not equivalent to large-batch Adam here


def test_momentum_accumulation_adds_no_buffer():
    def count(cls, **kwargs):
        opt = cls(**kwargs)
        opt.build([variable("Dense/kernel", np.ones((2, 2))), variable("Dense/bias", np.ones(2))])
        return len(opt.variables)

    plain = count(B.Adam)
    assert count(GA(B.Adam), grad_accum_mode="momentum") == plain
    assert count(GA(B.Adam), grad_accum_mode="buffer") == plain + 2


@pytest.mark.parametrize(
    "base, kwargs",
    [
        (keras.optimizers.Lion, {}),
        (SGD, {"momentum": 0.0}),
        (SGD, {"momentum": 0.9, "nesterov": True}),
        (keras.optimizers.Adam, {"amsgrad": True}),
    ],
    ids=["lion", "sgd-no-momentum", "nesterov", "amsgrad"],
)
def test_momentum_accumulation_rejects_bases_it_cannot_express(base, kwargs):
    with pytest.raises(ValueError, match="grad_accum_mode='momentum'"):
        GA(base)(grad_accum_mode="momentum", **kwargs)


def test_accumulation_refuses_incoherent_combinations():
    lazy_momentum = GA(B.extend_with_lazy_optimization(B.Adam))
    with pytest.raises(ValueError, match="lazy"):
        lazy_momentum(grad_accum_mode="momentum")
    lazy_momentum(grad_accum_mode="buffer")  # fine: the buffer knows every touched row
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        GA(B.Adam)(gradient_accumulation_steps=2)


# ---------------------------------------------------------------------------- lookahead
def test_lookahead_with_unit_slow_step_is_the_base():
    (theta,), grads = random_problem([(3,)], steps=5)
    opt = B.extend_with_lookahead(SGD)(
        learning_rate=0.1, steps_per_slow_update=2, slow_step_size=1.0
    )
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], grads)
    oracle = NpSGD(0.1)
    for (g,) in grads:
        theta = oracle.step(theta, g)
    np.testing.assert_allclose(got, theta, rtol=RTOL_STRICT, atol=1e-7)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_lookahead_slow_and_fast_weights_after_two_cycles(base):
    cls, kwargs, make_oracle = ACCUMULATION_BASES[base]
    k, alpha = 3, 0.5
    (theta0,), grads = random_problem([(4,)], steps=2 * k)
    opt = B.extend_with_lookahead(cls)(
        learning_rate=0.05, steps_per_slow_update=k, slow_step_size=alpha, **kwargs
    )
    v = variable("Dense/kernel", theta0)
    oracle, fast, slow = make_oracle(0.05), theta0.copy(), theta0.copy()
    for t, (g,) in enumerate(grads, start=1):
        fast = oracle.step(fast, g)
        if t % k == 0:
            if t == k:  # paper: θ = θ_0 + α(θ_k^fast − θ_0), not α·θ_k^fast
                np.testing.assert_allclose(
                    slow + alpha * (fast - slow), theta0 + alpha * (fast - theta0)
                )
            slow = slow + alpha * (fast - slow)
            fast = slow.copy()
        (got,) = apply_all(opt, [v], [[g]])
        np.testing.assert_allclose(got, fast, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slot(opt, "slow"), slow, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- EMA
EMA = B.extend_with_exponential_moving_average


def test_ema_of_constant_weights_is_exact_after_bias_correction():
    constant = np.array([1.5, -2.0, 0.25])
    opt = EMA(SGD)(learning_rate=0.0, ema_momentum=0.9)
    v = variable("Dense/kernel", constant)
    for calls in (1, 1, 3):  # t = 1, 2, 5
        apply_all(opt, [v], [[np.ones(3)]] * calls)
        opt.apply_ema_weights()
        np.testing.assert_allclose(ops.convert_to_numpy(v), constant, rtol=1e-6)
        opt.reset_old_weights()
        np.testing.assert_array_equal(ops.convert_to_numpy(v), constant.astype("float32"))


@pytest.mark.parametrize("accumulate", [None, "inner", "outer"])
def test_ema_follows_the_updates_and_reset_restores_bits(accumulate):
    mu, k = 0.8, 2
    (theta,), grads = random_problem([(3,)], steps=4)
    cls = EMA(SGD)
    if accumulate == "inner":
        cls = EMA(GA(SGD))
    elif accumulate == "outer":
        cls = GA(EMA(SGD))
    kwargs = {"grad_accum_steps": k} if accumulate else {}
    opt = cls(learning_rate=0.1, ema_momentum=mu, **kwargs)
    v = variable("Dense/kernel", theta)
    micro = [g for g in grads for _ in range(k)] if accumulate else grads
    (trained,) = apply_all(opt, [v], micro)
    ema = np.zeros(3)
    for (g,) in grads:  # one EMA step per update, not per micro-batch
        theta = theta - 0.1 * g
        ema = mu * ema + (1 - mu) * theta
    opt.apply_ema_weights(bias_correction=True)
    np.testing.assert_allclose(ops.convert_to_numpy(v), ema / (1 - mu**4), rtol=1e-5)
    opt.reset_old_weights()
    opt.apply_ema_weights(bias_correction=False)
    np.testing.assert_allclose(ops.convert_to_numpy(v), ema, rtol=1e-5, atol=1e-7)
    opt.reset_old_weights()
    np.testing.assert_array_equal(ops.convert_to_numpy(v), trained.astype("float32"))


def test_ema_api_misuse_raises():
    opt = EMA(SGD)(learning_rate=0.1)
    v = variable("Dense/kernel", [1.0])
    opt.build([v])
    with pytest.raises(ValueError, match="train first"):
        opt.apply_ema_weights()
    with pytest.raises(ValueError, match="apply_ema_weights"):
        opt.reset_old_weights()
    apply_all(opt, [v], [[np.ones(1)]])
    opt.apply_ema_weights()
    with pytest.raises(ValueError, match="reset_old_weights"):
        opt.apply_ema_weights()


# ---------------------------------------------------------------------------- EG step sizes
@pytest.mark.parametrize("base", ["sgd_momentum", "adam"])
def test_eg_with_zero_meta_rates_is_the_base(base):
    cls, kwargs, make_oracle = {
        "sgd_momentum": (SGD, {"momentum": 0.9}, lambda lr: NpSGD(lr, momentum=0.9)),
        "adam": ACCUMULATION_BASES["adam"],
    }[base]
    (theta,), grads = random_problem([(2, 3)], steps=4)
    opt = EG(cls)(learning_rate=0.05, gain_learning_rate=0.0, scale_learning_rate=0.0, **kwargs)
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], grads)
    oracle = make_oracle(0.05)
    for (g,) in grads:
        theta = oracle.step(theta, g)
    np.testing.assert_allclose(got, theta, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["constant", "alternating"])
def test_eg_multipliers_follow_the_sign_closed_forms(sign):
    gp, gs = 0.3, 0.2
    opt = EG(SGD)(
        learning_rate=0.01,
        gain_learning_rate=gp,
        scale_learning_rate=gs,
        max_gain=2.0,
        min_gain=0.25,
        max_scale=1.5,
    )
    v = variable("Dense/kernel", np.ones(3))
    g = np.array([0.5, 1.0, 2.0])
    for t in range(1, 10):
        apply_all(opt, [v], [[g * sign ** (t - 1)]])
        gain = np.exp(gp * sign * (t - 1)).clip(0.25, 2.0)  # ḡ = 0 at t = 1 gives sign 0
        np.testing.assert_allclose(slot(opt, "eg_gain"), np.full(3, gain), rtol=1e-5)
        if sign > 0:  # consecutive steps agree: ⟨g/‖g‖, h/‖h‖⟩ = 1 from t = 2
            np.testing.assert_allclose(
                slot(opt, "eg_scale"), min(1.5, np.exp(gs * (t - 1))), rtol=1e-5
            )
    assert slot(opt, "eg_gain")[0] == pytest.approx(2.0 if sign > 0 else 0.25)


def test_eg_unnormalised_meta_updates_match_the_egdd_formulas():
    gp, gs, beta, lr = 0.1, 0.05, 0.7, 0.1
    (theta,), grads = random_problem([(4,)], steps=4)
    opt = EG(SGD)(
        learning_rate=lr,
        gain_learning_rate=gp,
        scale_learning_rate=gs,
        beta=beta,
        use_signs=False,
        use_directions=False,
    )
    (got,) = apply_all(opt, [variable("Dense/kernel", theta)], grads)
    p, s, h, g_bar = np.ones(4), 1.0, np.zeros(4), np.zeros(4)
    for t, (g,) in enumerate(grads, start=1):
        s = np.clip(s * np.exp(gs * np.sum(g * h)), 0.1, 10.0)
        p = np.clip(p * np.exp(gp * g * g_bar / (1 - beta ** max(t - 1, 1))), 0.01, 100.0)
        g_bar = beta * g_bar + (1 - beta) * g
        h = p * lr * g  # −p⊙Δ_sgd
        theta = theta - s * h
    np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(slot(opt, "eg_gain"), p, rtol=1e-5)
    np.testing.assert_allclose(slot(opt, "eg_scale"), s, rtol=1e-5)


@pytest.mark.parametrize("per_coordinate", [True, False])
def test_eg_multipliers_stay_positive_and_clipped(per_coordinate):
    opt = EG(B.Adam)(
        learning_rate=0.1,
        gain_learning_rate=3.0,
        scale_learning_rate=3.0,
        per_coordinate=per_coordinate,
        use_signs=False,
        use_directions=False,
    )
    (theta,), grads = random_problem([(20,)], steps=30, seed=7)
    apply_all(opt, [variable("Dense/kernel", theta)], [[10.0 * g] for (g,) in grads])
    low, high = np.float32(0.01), np.float32(100.0)  # the bounds as float32 variables hold them
    scale = slot(opt, "eg_scale")
    assert np.float32(0.1) <= scale <= np.float32(10.0)
    if per_coordinate:
        gain = slot(opt, "eg_gain")
        assert np.all((gain >= low) & (gain <= high))
        assert gain.min() == pytest.approx(0.01) or gain.max() == pytest.approx(100.0)
    else:
        assert not [v for v in opt.variables if "eg_gain" in v.name]


def _quadratic_loss_after(optimizer, steps=150):
    """L(x) = ½ Σ λ_i x_i², λ from 1 to 100 (condition number 100), x_0 = 1."""
    curvature = np.logspace(0, 2, 20)
    x = variable("Dense/kernel", np.ones(20))
    for _ in range(steps):
        gradient = curvature * ops.convert_to_numpy(x)
        optimizer.apply([gradient.astype("float32")], [x])
    return 0.5 * float(np.sum(curvature * ops.convert_to_numpy(x).astype("float64") ** 2))


@pytest.mark.parametrize(
    "base, kwargs, per_coordinate",
    [
        (SGD, {"learning_rate": 0.015}, True),
        (SGD, {"learning_rate": 0.015}, False),
        (SGD, {"learning_rate": 0.015, "momentum": 0.5}, True),
        (B.Adam, {"learning_rate": 0.01}, True),
    ],
    ids=["sgd", "sgd-per-tensor", "sgdm", "adam"],
)
def test_eg_beats_its_base_on_an_ill_conditioned_quadratic(base, kwargs, per_coordinate):
    plain = _quadratic_loss_after(base(**kwargs))
    adapted = _quadratic_loss_after(EG(base)(per_coordinate=per_coordinate, **kwargs))
    assert adapted < plain
