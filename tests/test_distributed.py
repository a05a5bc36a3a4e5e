"""Data-parallel training over two devices equals one device with the same global batch.

A tiny bert4x MLM model (2 layers, padded rows, 15% of positions labelled) is trained for six
steps of global batch 8 with LAMB (AdamW + layer adaptation) + piecewise-linear warm-up +
gradient accumulation over 2 batches, as pretraining/pretrain.py does, once on one device and
once on two logical CPU devices, from the same initial weights. Per-step losses and final
weights agree within 1e-5.

- TensorFlow: `tf.distribute.MirroredStrategy` over two logical CPUs, in a subprocess because
  logical devices must be configured before TensorFlow initialises. Both runs are graph mode
  (tf.function without XLA): TensorFlow cannot XLA-compile MirroredStrategy steps on CPU.
- JAX: `keras.distribution.DataParallel` over two host devices, in a subprocess with
  `XLA_FLAGS=--xla_force_host_platform_device_count=2` set before jax is imported; jit on.

Run as a script (`python tests/test_distributed.py tensorflow|jax out.npz`) it is the worker.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

CONFIG = dict(
    vocab_size=60,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    hidden_act="gelu",
    max_position_embeddings=40,
    type_vocab_size=2,
)
GLOBAL_BATCH, STEPS, LENGTH, MASK_ID = 8, 6, 12, 4
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def mlm_batches(seed=3):
    """(token_ids, segment_ids, labels) of STEPS global batches; labels 0 = not a target."""
    rng = np.random.default_rng(seed)
    count = GLOBAL_BATCH * STEPS
    original = rng.integers(5, CONFIG["vocab_size"], size=(count, LENGTH))
    lengths = rng.integers(4, LENGTH + 1, size=count)  # padded rows: replicas differ in tokens
    real = np.arange(LENGTH)[None, :] < lengths[:, None]
    original = np.where(real, original, 0)
    chosen = real & (rng.random((count, LENGTH)) < 0.15)
    chosen[np.arange(count), lengths - 1] = True  # every row has a target
    token_ids = np.where(chosen, MASK_ID, original).astype("int32")
    labels = np.where(chosen, original, 0).astype("int32")
    segment_ids = np.zeros_like(token_ids)
    return token_ids, segment_ids, labels


def _run_worker(backend, path):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend == "jax":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, __file__, backend, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return np.load(path)


def _assert_same_training(runs):
    single, parallel = runs["single_losses"], runs["parallel_losses"]
    assert single.shape == (STEPS,) and np.all(np.isfinite(single))
    np.testing.assert_allclose(parallel, single, **TOLERANCE)
    names = sorted(k for k in runs.files if k.startswith("single|"))
    assert len(names) > 20  # every weight of the model, not a subset
    moved = 0
    for name in names:
        other = name.replace("single|", "parallel|")
        np.testing.assert_allclose(runs[other], runs[name], err_msg=name, **TOLERANCE)
        moved += np.abs(runs[name] - runs[name.replace("single|", "initial|")]).max() > 1e-4
    assert moved > len(names) // 2  # the comparison is not between two untrained models


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(tmp_path):
    runs = _run_worker("tensorflow", tmp_path / "tf.npz")
    assert runs["replicas"] == 2
    # MirroredStrategy really split each global batch of 8 into two per-replica batches of 4.
    assert set(runs["parallel_batch_sizes"]) == {GLOBAL_BATCH // 2}
    assert set(runs["single_batch_sizes"]) == {GLOBAL_BATCH}
    _assert_same_training(runs)


@pytest.mark.slow
@pytest.mark.backend_agnostic
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_data_parallel_matches_one_device(tmp_path):
    runs = _run_worker("jax", tmp_path / "jax.npz")
    assert runs["replicas"] == 2  # weights replicated on both devices
    assert set(runs["parallel_batch_sizes"]) == {GLOBAL_BATCH // 2}  # batch sharded in two
    _assert_same_training(runs)


# ----------------------------------------------------------------------------- the worker


def _worker(backend, path):
    if backend == "tensorflow":  # two logical CPUs, before TensorFlow initialises its devices
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )

    import keras

    from bert4x.models import build_transformer_model
    from bert4x.optimizers import (
        AdamLAMB,
        extend_with_gradient_accumulation,
        extend_with_piecewise_linear_lr,
    )

    batch_sizes = []

    def loss(y_true, y_pred):  # as pretraining/pretrain.py: per-sequence mean over targets
        batch_sizes.append(y_true.shape[0])  # static at trace time
        labels = keras.ops.cast(y_true, "int32")
        weights = keras.ops.cast(labels > 0, "float32")
        losses = keras.ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        total = keras.ops.sum(losses * weights, axis=-1)
        return total / keras.ops.maximum(keras.ops.sum(weights, axis=-1), 1.0)

    class Unmasked(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.supports_masking = True

        def call(self, inputs):
            return keras.ops.copy(inputs)

        def compute_mask(self, inputs, mask=None):
            return None

    optimizer_class = extend_with_gradient_accumulation(extend_with_piecewise_linear_lr(AdamLAMB))

    def build(initial=None):
        model = build_transformer_model(CONFIG, with_mlm="linear", sequence_length=LENGTH)
        if initial is not None:
            model.set_weights(initial)
        train = keras.Model(model.inputs, Unmasked()(model.output))
        optimizer = optimizer_class(
            learning_rate=0.02,
            weight_decay_rate=0.01,
            exclude_from_weight_decay=["Norm", "bias"],
            exclude_from_layer_adaptation=["Norm", "bias"],
            lr_schedule={1: 1.0, 3: 0.5},
            grad_accum_steps=2,
        )
        train.compile(optimizer=optimizer, loss=loss, jit_compile=backend == "jax")
        return model, train

    token_ids, segment_ids, labels = mlm_batches()

    def fit(train):
        del batch_sizes[:]
        if backend == "tensorflow":
            data = tf.data.Dataset.from_tensor_slices(((token_ids, segment_ids), labels))
            data = data.batch(GLOBAL_BATCH, drop_remainder=True)
            history = train.fit(data, epochs=STEPS, steps_per_epoch=1, verbose=0)
        else:
            history = train.fit(
                [token_ids, segment_ids],
                labels,
                batch_size=GLOBAL_BATCH,
                epochs=STEPS,
                steps_per_epoch=1,
                shuffle=False,
                verbose=0,
            )
        return np.array(history.history["loss"]), list(batch_sizes)

    def record(prefix, model):
        for weight in model.weights:
            results[f"{prefix}|{weight.path}"] = keras.ops.convert_to_numpy(weight)

    keras.utils.set_random_seed(0)
    results = {}
    model, train = build()
    initial = model.get_weights()
    record("initial", model)
    results["single_losses"], results["single_batch_sizes"] = fit(train)
    record("single", model)

    if backend == "tensorflow":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model, train = build(initial)
        results["replicas"] = strategy.num_replicas_in_sync
    else:
        import jax

        devices = jax.devices()
        distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(distribution)
        model, train = build(initial)
        placed = {d for w in model.weights for d in w.value.sharding.device_set}
        results["replicas"] = min(len(devices), len(placed))
    results["parallel_losses"], results["parallel_batch_sizes"] = fit(train)
    if backend == "jax":  # traced shapes are global under jit: ask for the per-device shard
        sharding = distribution.get_data_layout((GLOBAL_BATCH, LENGTH)).backend_layout
        results["parallel_batch_sizes"] = [sharding.shard_shape((GLOBAL_BATCH, LENGTH))[0]]
    record("parallel", model)
    np.savez(path, **results)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
