"""Checkpoint formats beyond the original TF names: TensorFlow-free reading, Hugging Face.

`TensorBundleReader` reads TensorFlow checkpoints without TensorFlow; `huggingface`
maps Hugging Face safetensors to and from the original names (see docs/checkpoint_formats.md).
"""

from bert4x.formats.tensor_bundle import TensorBundleReader

__all__ = ["TensorBundleReader"]
