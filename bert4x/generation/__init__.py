"""Compiled, key/value-cached decoding for `lm` and `unilm` models.

`generate(model, token_ids, ...)` (see `bert4x.generation.sampling`) runs the
prompt once and then one token per step, the whole loop one XLA program;
`CachedModel` (`bert4x.generation.cache`) holds the model's prefill/step
functions. For Python-side constraints use `bert4x.decoding.AutoRegressiveDecoder`.
"""

from bert4x.generation.sampling import generate, trace_count

__all__ = ["CachedModel", "generate", "trace_count"]


def __getattr__(name):
    """`CachedModel` is imported on first use, so this package imports without the cache module."""
    if name == "CachedModel":
        from bert4x.generation.cache import CachedModel

        return CachedModel
    raise AttributeError(f"module 'bert4x.generation' has no attribute {name!r}")
