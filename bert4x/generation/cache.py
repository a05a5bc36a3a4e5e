"""Key/value caches for incremental decoding of `lm` and `unilm` models.

The prompt (for `unilm`: the source) runs once through the model's own
builder with a key/value cache of L = P + max_new_tokens slots per layer;
each later step runs one token per row at slot P + t and attends over the
cache. Keys already in the cache never change: for `lm` because the mask is
causal, for `unilm` because the source never sees the target
(kexue.fm/archives/6933). So cached decoding computes exactly what re-running
the whole sequence computes.

Rows of a batch may have prompts of different lengths (right-padded with 0):
row r's generated token t sits at slot P + t but has position len_r + t, and
the padded slots are masked, as if each row ran alone.

Shapes: b batch, P prompt length, L cache slots, h heads, d head size, V vocab.
"""

import contextlib

import keras
from keras import ops

from bert4x.backend import (
    attention_bias,
    causal_mask,
    padding_mask,
    sinusoidal_embeddings,
    unilm_mask,
)
from bert4x.checkpoints import get_builder


class CacheContext:
    """What the builder reads while it runs with caches (see Transformer.cache_context)."""

    def __init__(self, attention_bias, position_ids, rotary, caches, index, condition):
        self.attention_bias = attention_bias  # [b, 1, n, L]
        self.position_ids = position_ids  # [b, n]
        self.rotary = rotary  # [b, n, d] sinusoids of position_ids (RoFormer)
        self.caches = caches  # per layer (keys [b, L, h, d], values [b, L, h, d_v])
        self.index = index  # cache slot of the first of the n new tokens
        self.condition = condition  # conditional-LN input [b, k] or None


class CachedModel:
    """Prefill/step functions of a bert4x `lm` or `unilm` model with key/value caches.

    `prefill(state, token_ids, segment_ids, max_length, condition_inputs=None)`
    -> (logits [b, V] after each row's last prompt token, cache);
    `step(state, cache, token_ids, index)` -> (logits [b, V] of the next token,
    cache). Logits are float32 and pre-softmax. Every cache leaf has the batch
    as axis 0, so beams can reorder it with `ops.take(leaf, rows, axis=0)`.
    `state()` is the model's variable values for stateless (JAX) calls, or None.
    """

    def __init__(self, model):
        builder = get_builder(model)
        if builder.attention_mode not in ("lm", "unilm"):
            raise ValueError(
                f"cached decoding needs a model built with application='lm' or 'unilm' (or "
                f"model='gpt'); this {type(builder).__name__} is a bidirectional encoder"
            )
        self.builder = builder
        self.model = builder.model
        self.vocab_size = builder.vocab_size
        self.condition_model = self.make_condition_model()

    def make_condition_model(self):
        """A model from the extra inputs to the conditional-LN condition, or None."""
        condition = self.builder.layer_norm_conds[0]
        if condition is None:
            return None
        return keras.Model(self.builder.additional_inputs, condition)

    def state(self):
        """Variable values to pass into jitted functions on JAX; None on TensorFlow."""
        if keras.backend.backend() != "jax":
            return None
        return [v.value for v in self.model.variables]

    def scope(self, state):
        """Bind `state` to the model's variables for the duration of a stateless call."""
        if state is None:
            return contextlib.nullcontext()
        return keras.StatelessScope(state_mapping=list(zip(self.model.variables, state)))

    def empty_caches(self, batch, length):
        """Zeros (keys, values) [b, L, h, d] for every layer, in the compute dtype."""
        builder = self.builder
        dtype = keras.config.dtype_policy().compute_dtype
        key_shape = (batch, length, builder.num_attention_heads, builder.attention_key_size)
        value_shape = (batch, length, builder.num_attention_heads, builder.attention_head_size)
        return [
            (ops.zeros(key_shape, dtype), ops.zeros(value_shape, dtype))
            for _ in range(builder.num_hidden_layers)
        ]

    def run(self, token_ids, segment_ids, context):
        """Logits [b, n, V] of the builder's layers run under `context`."""
        builder = self.builder
        inputs = [token_ids, segment_ids] if builder.segment_vocab_size > 0 else [token_ids]
        builder.cache_context = context
        try:
            x = builder.apply_embeddings(inputs)
            for index in range(builder.num_hidden_layers):
                x = builder.apply_main_layers(x, index)
            outputs = builder.apply_final_layers(x)
        finally:
            builder.cache_context = None
        logits = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        return ops.cast(logits, "float32")

    def prefill(self, state, token_ids, segment_ids, max_length, condition_inputs=None):
        """Run the right-padded prompt [b, P] once; return (next-token logits [b, V], cache)."""
        token_ids = ops.cast(token_ids, "int32")
        segment_ids = (
            ops.zeros_like(token_ids) if segment_ids is None else ops.cast(segment_ids, "int32")
        )
        batch, prompt = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        valid = padding_mask(token_ids)  # [b, P]
        lengths = ops.sum(ops.cast(valid, "int32"), axis=1)  # [b]
        slot_valid = ops.pad(valid, [(0, 0), (0, max_length - prompt)], constant_values=False)
        if self.builder.attention_mode == "unilm":
            allowed = unilm_mask(segment_ids)  # [b, P, P]
        else:
            allowed = ops.broadcast_to(causal_mask(prompt)[None], (batch, prompt, prompt))
        allowed = ops.pad(
            allowed, [(0, 0), (0, 0), (0, max_length - prompt)], constant_values=False
        )
        allowed = ops.logical_and(allowed, slot_valid[:, None, :])  # [b, P, L]
        positions = ops.broadcast_to(ops.arange(prompt)[None], (batch, prompt))
        with self.scope(state):
            condition = None
            if self.condition_model is not None:
                condition = self.condition_model(condition_inputs)
            context = self.context(
                attention_bias(allowed)[:, None], positions, max_length, 0, condition, batch
            )
            logits = self.run(token_ids, segment_ids, context)  # [b, P, V]
        last = ops.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
        cache = {
            "layers": tuple(context.caches),
            "slot_valid": slot_valid,
            "lengths": lengths,
            "start": ops.full((batch,), prompt, "int32"),
            "segment": self.generated_segment(segment_ids, lengths),
        }
        if condition is not None:
            cache["condition"] = condition
        return last, cache

    def context(self, bias, positions, length, index, condition, batch=None):
        """A CacheContext with fresh caches (prefill) or the given ones."""
        rotary = sinusoidal_embeddings(positions, self.builder.attention_key_size)
        caches = self.empty_caches(batch, length) if batch is not None else None
        return CacheContext(bias, positions, rotary, caches, index, condition)

    def generated_segment(self, segment_ids, lengths):
        """Segment of generated tokens [b]: 1 for unilm, the last prompt segment for lm."""
        if self.builder.attention_mode == "unilm":
            return ops.ones_like(lengths)
        return ops.take_along_axis(segment_ids, (lengths - 1)[:, None], axis=1)[:, 0]

    def step(self, state, cache, token_ids, index):
        """Append token_ids [b] at step `index`; return (next-token logits [b, V], cache)."""
        length = ops.shape(cache["slot_valid"])[1]
        slot = cache["start"][0] + index
        slot_valid = ops.logical_or(cache["slot_valid"], ops.arange(length)[None] == slot)
        positions = (cache["lengths"] + index)[:, None]  # [b, 1]
        context = self.context(
            attention_bias(slot_valid)[:, None, None, :],
            positions,
            length,
            slot,
            cache.get("condition"),
        )
        context.caches = list(cache["layers"])
        token_ids = ops.cast(token_ids, "int32")[:, None]
        with self.scope(state):
            logits = self.run(token_ids, cache["segment"][:, None], context)[:, 0]
        return logits, {**cache, "layers": tuple(context.caches), "slot_valid": slot_valid}
