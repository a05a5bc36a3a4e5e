"""Every optimizer and every pairwise composition inside `model.fit`.

- Compiled: a standalone `fit(jit_compile=True)` per optimizer equals an eager reference run
  (all optimizers trained side by side through `keras.optimizers.MultiOptimizer`,
  `run_eagerly=True`), on whichever backend runs the tests (CI: TensorFlow and JAX).
- `tf.distribute.MirroredStrategy` over two logical CPUs equals one device (1e-5), in a
  subprocess because logical devices must be set before TensorFlow initialises. All
  optimizers side by side eagerly, and the two full stacks in graph mode (XLA cannot compile
  MirroredStrategy on CPU, for plain Keras Adam too).
- `.keras` save/load of a compiled model keeps the optimizer's class, settings and state.

Run as a script (`python tests/test_optimizers_fit.py out.npz`) it is the distributed worker.
"""

import itertools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bert4x import optimizers as B

pytestmark = pytest.mark.backend_agnostic

EXTENSIONS = {  # in the recommended composition order
    "wd": (
        B.extend_with_weight_decay,
        {"weight_decay_rate": 0.1, "exclude_from_weight_decay": ["bias"]},
    ),
    "la": (B.extend_with_layer_adaptation, {"exclude_from_layer_adaptation": ["bias"]}),
    "plr": (B.extend_with_piecewise_linear_lr, {"lr_schedule": {1: 1.0, 3: 0.5}}),
    "pwlr": (B.extend_with_parameter_wise_lr, {"paramwise_lr_schedule": {"Embedding": 2.0}}),
    "lazy": (B.extend_with_lazy_optimization, {"include_in_lazy_optimization": ["Embedding"]}),
    "eg": (
        B.extend_with_exponentiated_gradient_step_size,
        {"gain_learning_rate": 0.1, "scale_learning_rate": 0.1},
    ),
    "ga": (B.extend_with_gradient_accumulation, {"grad_accum_steps": 2}),
    "gam": (
        B.extend_with_gradient_accumulation,
        {"grad_accum_steps": 2, "grad_accum_mode": "momentum"},
    ),
    "lookahead": (B.extend_with_lookahead, {"steps_per_slow_update": 2, "slow_step_size": 0.5}),
    "ema": (B.extend_with_exponential_moving_average, {"ema_momentum": 0.9}),
}
PRESETS = {  # ready-made name: the extensions it contains (for the test arguments)
    "AdamW": ["wd"],
    "AdamLA": ["la"],
    "AdamLAMB": ["wd", "la"],
    "AdamLR": ["plr"],
    "AdamWLR": ["wd", "plr"],
    "AdamParamwiseLR": ["pwlr"],
    "AdamLazy": ["lazy"],
    "AdamEG": ["eg"],
    "AdamGA": ["ga"],
    "AdamLookahead": ["lookahead"],
    "AdamEMA": ["ema"],
}
STACK = ["wd", "la", "plr", "pwlr", "lazy", "eg", "ga", "lookahead", "ema"]
MOMENTUM_STACK = ["wd", "la", "plr", "pwlr", "eg", "gam", "lookahead", "ema"]  # lazy: refused


def _kwargs(names):
    kwargs = {"learning_rate": 0.05}
    for name in names:
        kwargs.update(EXTENSIONS[name][1])
    return kwargs


def _compose(names, base=B.Adam):
    cls = base
    for name in names:
        cls = EXTENSIONS[name][0](cls)
    return cls


def _configs():
    """id -> zero-argument callable building a fresh optimizer."""
    configs = {name: (lambda n=name: getattr(B, n)(**_kwargs(PRESETS[n]))) for name in PRESETS}
    configs["AdamGA-momentum"] = lambda: B.AdamGA(**_kwargs(["gam"]))
    configs["SGDEG"] = lambda: B.SGDEG(momentum=0.9, **_kwargs(["eg"]))
    for pair in itertools.combinations(EXTENSIONS, 2):
        if set(pair) not in ({"ga", "gam"}, {"lazy", "gam"}):  # refused (other tests)
            configs["+".join(pair)] = lambda p=pair: _compose(p)(**_kwargs(p))
    return configs


CONFIGS = _configs()
STACKS = {
    "stack": lambda: _compose(STACK)(**_kwargs(STACK)),
    "stack-momentum": lambda: _compose(MOMENTUM_STACK, keras.optimizers.SGD)(
        momentum=0.9, **_kwargs(MOMENTUM_STACK)
    ),
}
RNG = np.random.default_rng(11)
TOKENS = RNG.integers(0, 5, size=(16, 3))  # ids 5-7 never occur: lazy rows
TARGETS = RNG.normal(size=(16, 1)).astype("float32")
INITIAL = [
    RNG.normal(size=(8, 4)).astype("float32"),
    RNG.normal(size=(12, 1)).astype("float32"),
    np.full((1,), 0.1, "float32"),
]


def _branch(tokens, prefix=""):
    x = keras.layers.Embedding(8, 4, name=f"{prefix}Embedding-Token")(tokens)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(1, name=f"{prefix}Dense")(x)


def _branch_layers(model, prefix=""):
    return [model.get_layer(f"{prefix}Embedding-Token"), model.get_layer(f"{prefix}Dense")]


def _set_initial(model, prefix=""):
    embedding, dense = _branch_layers(model, prefix)
    embedding.set_weights(INITIAL[:1])
    dense.set_weights(INITIAL[1:])


def _weights(model, prefix=""):
    layers = _branch_layers(model, prefix)
    return [keras.ops.convert_to_numpy(w) for layer in layers for w in layer.weights]


def fit_one(optimizer, jit_compile, epochs=1):
    tokens = keras.Input((3,), dtype="int32")
    model = keras.Model(tokens, _branch(tokens))
    _set_initial(model)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    model.fit(TOKENS, TARGETS, batch_size=4, epochs=epochs, shuffle=False, verbose=0)
    return model


def fit_side_by_side(configs, batch_size=4, **compile_kwargs):
    """One branch per optimizer, trained together; returns {id: [weights]}."""
    tokens = keras.Input((3,), dtype="int32")
    ids = list(configs)
    model = keras.Model(tokens, [_branch(tokens, f"c{i}_") for i in range(len(ids))])
    for i in range(len(ids)):
        _set_initial(model, f"c{i}_")
    optimizers = {f"c{i}_.*": configs[key]() for i, key in enumerate(ids)}
    routing = keras.optimizers.OptimizerMap(keras.optimizers.SGD(), optimizers)
    model.compile(
        optimizer=keras.optimizers.MultiOptimizer(routing),
        loss=["mse"] * len(ids),
        **compile_kwargs,
    )
    targets = [TARGETS] * len(ids)
    model.fit(TOKENS, targets, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return {key: _weights(model, f"c{i}_") for i, key in enumerate(ids)}


@pytest.fixture(scope="module")
def eager_reference():
    return fit_side_by_side(CONFIGS, run_eagerly=True)


@pytest.mark.parametrize("config_id", list(CONFIGS))
def test_compiled_fit_matches_eager_reference(config_id, eager_reference):
    model = fit_one(CONFIGS[config_id](), jit_compile=True)
    got = _weights(model)
    for weight, expected in zip(got, eager_reference[config_id], strict=True):
        np.testing.assert_allclose(weight, expected, rtol=1e-5, atol=1e-5)
    assert any(np.abs(w - i).max() > 1e-4 for w, i in zip(got, INITIAL, strict=True))


@pytest.mark.parametrize("stack", list(STACKS))
def test_keras_file_round_trip_keeps_optimizer_settings_and_state(stack, tmp_path):
    model = fit_one(STACKS[stack](), jit_compile=True)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(restored)
        )
    for trained in (model, loaded):  # training resumes identically from the file
        trained.fit(TOKENS, TARGETS, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-6
        )
    model.optimizer.apply_ema_weights()  # the EMA API still works after compiled training
    model.optimizer.reset_old_weights()


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow-only"
)
def test_mirrored_strategy_matches_one_device(tmp_path):
    out = tmp_path / "weights.npz"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, __file__, str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    weights = np.load(out)
    ids = sorted({key.split("|")[0] for key in weights.files})
    assert len(ids) == len(CONFIGS) + len(STACKS)
    for key in ids:
        for i in range(3):
            np.testing.assert_allclose(
                weights[f"{key}|mirrored|{i}"],
                weights[f"{key}|single|{i}"],
                rtol=1e-5,
                atol=1e-5,
                err_msg=key,
            )


def _mirrored_worker(path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}

    def record(mode, weights_by_id):
        for key, weights in weights_by_id.items():
            for i, weight in enumerate(weights):
                results[f"{key}|{mode}|{i}"] = weight

    # Eager replicas are slow: batches of 8 (2 calls, 1 accumulated update) for all configs.
    record("single", fit_side_by_side(CONFIGS, batch_size=8, run_eagerly=True))
    with strategy.scope():
        record("mirrored", fit_side_by_side(CONFIGS, batch_size=8, run_eagerly=True))
    for key, make in STACKS.items():  # graph mode (tf.function, no XLA)
        record("single", {key: _weights(fit_one(make(), False))})
        with strategy.scope():
            record("mirrored", {key: _weights(fit_one(make(), False))})
    np.savez(path, **results)


if __name__ == "__main__":
    _mirrored_worker(sys.argv[1])
