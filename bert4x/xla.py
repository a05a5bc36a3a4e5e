"""XLA where it pays on TensorFlow: XLA fuses the elementwise work, oneDNN keeps the matmuls.

`model.compile(jit_compile=True)` hands the whole train step to XLA. On CPU that
trades oneDNN's matmuls (which use AVX512-BF16/AMX for bfloat16) for XLA's own,
which are slower in float32 and do not speed up in bfloat16. `fuse_elementwise()`
keeps the matmuls in TensorFlow's kernels and lets XLA compile only the clusters
of elementwise ops, reductions and casts between them (softmax, GELU, LayerNorm,
bias adds, the loss, the optimizer arithmetic): TensorFlow's auto-clustering,
limited to the ops it calls "fusible". Use it with `jit_compile=False`:

    from bert4x.xla import fuse_elementwise

    fuse_elementwise()            # first thing in the program, before any TF op
    model = build_transformer_model(config_path, checkpoint_path)
    model.compile(optimizer, loss, jit_compile=False)

Measured with `benchmarks/bench_training.py` on a 2-core AVX512-BF16 CPU, see
`docs/performance.md`. TensorFlow reads its XLA flags once per process, at its
first op, so the call must come before anything runs on TensorFlow; it checks
that the flags took effect and raises otherwise.
"""

import os

import keras

#: TensorFlow flags: auto-cluster every function (level 2), also on CPU, fusible ops only.
FUSION_FLAGS = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE"


def fuse_elementwise():
    """Let XLA compile the elementwise clusters of every TensorFlow graph, not its matmuls.

    Appends `FUSION_FLAGS` to the `TF_XLA_FLAGS` environment variable (TensorFlow's
    flags are per process) and checks, on a small graph, that TensorFlow now
    compiles a cluster with XLA.

    Raises:
        ValueError: the Keras backend is not TensorFlow (JAX compiles everything
            with XLA already).
        RuntimeError: TensorFlow had read its XLA flags before this call.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"fuse_elementwise() configures TensorFlow's XLA auto-clustering; the Keras backend "
            f"is {backend!r}, which needs no such step (use jit_compile=True there)"
        )
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if FUSION_FLAGS not in flags:
        os.environ["TF_XLA_FLAGS"] = f"{flags} {FUSION_FLAGS}".strip()
    if not _graphs_are_clustered():
        raise RuntimeError(
            "TensorFlow read its XLA flags before fuse_elementwise() was called (it reads them "
            "once per process, at its first op), so elementwise fusion is off. Call "
            "bert4x.xla.fuse_elementwise() at the start of the program, before building a "
            f"model, or start Python with TF_XLA_FLAGS='{FUSION_FLAGS}'"
        )


def _graphs_are_clustered():
    """Whether TensorFlow runs a matmul itself and the elementwise ops after it in XLA."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 2])
        xx = tf.matmul(x, x)
        y = tf.tanh(tf.exp(xx) * 2.0 + 1.0) - tf.sqrt(tf.abs(xx)) * 3.0
    options = tf.compat.v1.RunOptions(output_partition_graphs=True)
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(y, {x: [[1.0, 2.0], [3.0, 4.0]]}, options=options, run_metadata=metadata)
    ops = {node.op for g in metadata.partition_graphs for node in g.node}
    return "_XlaRun" in ops and any(op.endswith("MatMul") for op in ops)  # or oneDNN's _MklMatMul
