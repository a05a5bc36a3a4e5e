#!/usr/bin/env bash
# bench_training.py on the JAX backend on a GPU machine: tokens/s and MFU in bf16 and fp32,
# bert4x and KerasHub, with batches sized for a GPU. Run from the repository root:
#
#     bash benchmarks/gpu_jax.sh [extra bench_training.py arguments]
#
# Needs jax with CUDA (pip install "jax[cuda12]"), keras>=3.10, keras-hub, and bert4x
# (pip install -e .) or PYTHONPATH=. . TensorFlow is not needed on this path. The MFU
# denominator is the GPU's own measured matmul peak (8192^3, jax.jit) for the row's dtype.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # each row runs in its own process
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
python - <<'PY'
import jax
print("# devices:", jax.devices())
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python benchmarks/bench_training.py --backend jax --configs small base \
    --batch small=256 base=64 --peak-size 8192 --steps 10 "$@"
