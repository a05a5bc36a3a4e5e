"""`bert4x.xla.fuse_elementwise`: XLA compiles the elementwise clusters, TensorFlow the matmuls.

The fused run happens in a subprocess, because TensorFlow reads its XLA flags once per
process: there a tiny bert4x MLM trains four steps with `fuse_elementwise()` on and XLA's
HLO dumped; here the same model, from the same initial weights, trains without it. Losses
and weights agree, and the dump shows what XLA compiled: GELU's erf (elementwise work), no
dot (the matmuls stayed with TensorFlow).

Run as a script (`python tests/test_xla.py weights.npz losses.npy`) it is the worker.
"""

import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

CONFIG = dict(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    max_position_embeddings=32,
    type_vocab_size=2,
)
STEPS, BATCH, LENGTH = 4, 4, 12


def train(weights=None):
    """(per-step losses, final weights) of STEPS Adam steps of a tiny MLM, jit_compile=False."""
    from bert4x.models import build_transformer_model

    keras.utils.set_random_seed(7)
    model = build_transformer_model(CONFIG, with_mlm="linear")
    if weights is not None:
        model.set_weights(weights)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(1, CONFIG["vocab_size"], size=(STEPS, BATCH, LENGTH)).astype("int32")
    losses = [float(model.train_on_batch([x, np.zeros_like(x)], x)) for x in ids]
    return np.array(losses), model.get_weights()


def _worker(weights_path, losses_path):
    from bert4x.xla import fuse_elementwise

    fuse_elementwise()
    initial = np.load(weights_path)
    losses, weights = train([initial[f"w{i}"] for i in range(len(initial.files))])
    np.save(losses_path, losses)
    np.savez(weights_path, **{f"w{i}": w for i, w in enumerate(weights)})


def assert_xla_compiled_elementwise_only(dump_dir):
    """XLA (its HLO dumped to `dump_dir`) compiled clusters, none of them with a matmul (dot).

    Returns the text of every module, before XLA's own optimisations.
    """
    paths = glob.glob(os.path.join(dump_dir, "*before_optimizations.txt"))
    modules = [open(path).read() for path in paths]
    assert len(modules) > 10, "XLA compiled (almost) nothing"
    assert not any(" dot(" in text for text in modules), "a matmul went to XLA"
    return modules


@pytest.mark.slow
def test_fused_training_matches_unfused_and_leaves_matmuls_to_tensorflow(tmp_path):
    keras.utils.set_random_seed(7)
    from bert4x.models import build_transformer_model

    initial = build_transformer_model(CONFIG, with_mlm="linear").get_weights()
    weights_path, losses_path, dump_dir = tmp_path / "w.npz", tmp_path / "l.npy", tmp_path / "hlo"
    np.savez(weights_path, **{f"w{i}": w for i, w in enumerate(initial)})
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "XLA_FLAGS": f"--xla_dump_to={dump_dir}",
        "TF_XLA_FLAGS": "",
    }
    command = [sys.executable, __file__, str(weights_path), str(losses_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    losses, weights = train(initial)
    fused = np.load(weights_path)
    np.testing.assert_allclose(np.load(losses_path), losses, rtol=1e-5)
    assert losses[-1] < losses[0]  # the steps did train
    for i, expected in enumerate(weights):
        np.testing.assert_allclose(fused[f"w{i}"], expected, rtol=1e-4, atol=1e-5)

    modules = assert_xla_compiled_elementwise_only(dump_dir)
    assert any("erf" in text for text in modules), "GELU was not compiled by XLA"


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow flags")
def test_fuse_elementwise_after_tensorflow_started_raises(monkeypatch):
    import tensorflow as tf

    from bert4x.xla import FUSION_FLAGS, fuse_elementwise

    monkeypatch.setenv("TF_XLA_FLAGS", "")  # put back as it was after the test
    tf.constant(1.0) + 1.0  # TensorFlow has run an op: its XLA flags are read
    with pytest.raises(RuntimeError, match="before building a model") as error:
        fuse_elementwise()
    assert FUSION_FLAGS in str(error.value)


@pytest.mark.backend_agnostic
@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="the error is for JAX")
def test_fuse_elementwise_on_jax_names_the_backend():
    from bert4x.xla import fuse_elementwise

    with pytest.raises(ValueError, match="'jax'"):
        fuse_elementwise()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
