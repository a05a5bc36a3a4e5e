"""Keras 3 layers of the bert4x Transformers, written with `keras.ops` only.

Shapes: b batch, n query length, m key length, h heads, d head size, D hidden,
V vocabulary, k condition size. Each layer stores its constructor arguments,
creates weights in `build`, and returns every argument from `get_config`.
"""

import math

import keras
from keras import ops

from bert4x.backend import (
    apply_rotary,
    attention_bias,
    causal_mask,
    get_activation,
    padding_mask,
    serialize_activation,
    sinusoidal_embeddings,
    unilm_mask,
)

register = keras.saving.register_keras_serializable("bert4x")


def _first(value):
    """The first element of a list of inputs/masks, or the value itself."""
    return value[0] if isinstance(value, (list, tuple)) else value


@register
class Embedding(keras.layers.Embedding):
    """Token embedding whose matrix is also the tied output projection.

    mode='embedding': E[ids] ([b, n] -> [b, n, D]); mode='dense': x E^T
    ([b, n, D] -> [b, n, V], the MLM/LM logits). The padding mask (id 0) never
    masks position 0, so id 0 may serve as a start token (bert4keras rule).
    """

    def call(self, inputs, mode="embedding"):
        if mode == "dense":
            return ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))
        if mode != "embedding":
            raise ValueError(f"Embedding mode must be 'embedding' or 'dense', received {mode!r}")
        return super().call(inputs)

    def compute_mask(self, inputs, mask=None):
        if "float" in str(inputs.dtype):  # dense mode: keep the sequence mask
            return mask
        return padding_mask(inputs) if self.mask_zero else None

    def compute_output_spec(self, inputs, mode="embedding"):
        if mode == "dense":
            shape = tuple(inputs.shape[:-1]) + (self.input_dim,)
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return super().compute_output_spec(inputs)


@register
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions P[p], merged into x by add/mul/zero/concat.

    hierarchical=alpha (True means 0.4) extends an N-row table to N^2 positions
    (kexue.fm/archives/7947): u = (P - alpha P_0) / (1 - alpha),
    p -> alpha u[p // N] + (1 - alpha) u[p % N]; rows p < N are unchanged.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        merge_mode="add",
        hierarchical=None,
        embeddings_initializer="zeros",
        custom_position_ids=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise ValueError(
                f"merge_mode must be add, mul, zero or concat, received {merge_mode!r}"
            )
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.hierarchical = hierarchical
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.custom_position_ids = custom_position_ids
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def position_table(self, position_ids):
        """Embeddings of integer positions [..., n] -> [..., n, D]."""
        table = ops.cast(self.embeddings, self.compute_dtype)
        if not self.hierarchical:
            return ops.take(table, position_ids, axis=0)
        alpha = 0.4 if self.hierarchical is True else self.hierarchical
        u = (table - alpha * table[:1]) / (1 - alpha)
        high = ops.take(u, position_ids // self.input_dim, axis=0)
        low = ops.take(u, position_ids % self.input_dim, axis=0)
        return alpha * high + (1 - alpha) * low

    def call(self, inputs, position_ids=None):
        """`position_ids` [b, n] overrides 0..n-1 (cached decoding passes them)."""
        if self.custom_position_ids:
            x, position_ids = inputs
        else:
            x = inputs
            if position_ids is None:
                position_ids = ops.arange(ops.shape(x)[1])[None]
        p = self.position_table(ops.cast(position_ids, "int32"))  # [1 or b, n, D]
        if self.merge_mode == "add":
            return x + p
        if self.merge_mode == "mul":
            return x * (p + 1.0)
        p = ops.broadcast_to(p, tuple(ops.shape(x)[:2]) + (self.output_dim,))
        return p if self.merge_mode == "zero" else ops.concatenate([x, p], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return _first(mask)

    def compute_output_shape(self, input_shape):
        shape = tuple(_first_shape(input_shape))
        if self.merge_mode == "zero":
            return shape[:2] + (self.output_dim,)
        if self.merge_mode == "concat":
            return shape[:2] + (shape[2] + self.output_dim,)
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "merge_mode": self.merge_mode,
            "hierarchical": self.hierarchical,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "custom_position_ids": self.custom_position_ids,
        }


def _first_shape(input_shape):
    """The first shape of a list of input shapes, or the shape itself."""
    if (
        isinstance(input_shape, (list, tuple))
        and input_shape
        and isinstance(input_shape[0], (list, tuple))
    ):
        return input_shape[0]
    return input_shape


@register
class SinusoidalPositionEmbedding(keras.layers.Layer):
    """Weightless interleaved sinusoid table [b or 1, n, d] for positions 0..n-1 or given ids.

    With merge_mode='zero' it returns the table (the rotary input of RoFormer);
    'add' adds it to x.
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "zero"):
            raise ValueError(f"merge_mode must be 'add' or 'zero', received {merge_mode!r}")
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.custom_position_ids = custom_position_ids
        self.supports_masking = True

    def call(self, inputs, position_ids=None):
        """`position_ids` [b, n] overrides 0..n-1 (cached decoding passes them)."""
        if self.custom_position_ids:
            x, position_ids = inputs
        else:
            x = inputs
            if position_ids is None:
                position_ids = ops.arange(ops.shape(inputs)[1])[None]
        table = ops.cast(sinusoidal_embeddings(position_ids, self.output_dim), self.compute_dtype)
        return table if self.merge_mode == "zero" else x + table

    def compute_mask(self, inputs, mask=None):
        return None if self.merge_mode == "zero" else _first(mask)

    def compute_output_shape(self, input_shape):
        shape = tuple(_first_shape(input_shape))
        if self.merge_mode == "zero":
            batch = shape[0] if self.custom_position_ids else 1
            return (batch, shape[1], self.output_dim)
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "output_dim": self.output_dim,
            "merge_mode": self.merge_mode,
            "custom_position_ids": self.custom_position_ids,
        }


@register
class AttentionBias(keras.layers.Layer):
    """The one attention bias of a model: 0 where Allowed(i, j), a large negative elsewhere.

    mode='encoder': key padding only, [b, 1, 1, n]; 'lm': padding AND j <= i;
    'unilm': padding AND cumsum(s)[j] <= cumsum(s)[i] (inputs [token_ids, segment_ids]),
    both [b, 1, n, n]. float32, built once and shared by every attention layer.
    """

    def __init__(self, mode="encoder", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in ("encoder", "lm", "unilm"):
            raise ValueError(f"attention mode must be encoder, lm or unilm, received {mode!r}")
        self.mode = mode

    def call(self, inputs):
        token_ids = _first(inputs)
        allowed = padding_mask(token_ids)[:, None, None, :]  # [b, 1, 1, n]
        if self.mode == "lm":
            allowed = ops.logical_and(allowed, causal_mask(ops.shape(token_ids)[1])[None, None])
        elif self.mode == "unilm":
            allowed = ops.logical_and(allowed, unilm_mask(inputs[1])[:, None])
        return attention_bias(allowed)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        b, n = tuple(_first_shape(input_shape))[:2]
        return (b, 1, 1, n) if self.mode == "encoder" else (b, 1, n, n)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@register
class MultiHeadAttention(keras.layers.Layer):
    """softmax(q k^T / sqrt(d) + bias) v over h heads, then an output projection.

    Inputs [q, k, v] followed by the attention bias when `a_bias=True` and the
    rotary sinusoid table when `p_bias='rotary'` (q and k rotated before the
    product, kexue.fm/archives/8265). Scores and softmax run in float32.
    """

    def __init__(
        self,
        heads,
        head_size,
        out_dim=None,
        key_size=None,
        use_bias=True,
        attention_dropout=0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim or heads * head_size
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout or 0.0
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True
        dense = dict(
            use_bias=use_bias, kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy
        )
        self.q_dense = keras.layers.Dense(self.key_size * heads, name="q_dense", **dense)
        self.k_dense = keras.layers.Dense(self.key_size * heads, name="k_dense", **dense)
        self.v_dense = keras.layers.Dense(head_size * heads, name="v_dense", **dense)
        self.o_dense = keras.layers.Dense(self.out_dim, name="o_dense", **dense)
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype="float32")

    def build(self, input_shape):
        q_shape, k_shape, v_shape = input_shape[:3]
        self.q_dense.build(q_shape)
        self.k_dense.build(k_shape)
        self.v_dense.build(v_shape)
        self.o_dense.build(tuple(q_shape[:-1]) + (self.heads * self.head_size,))

    def split_heads(self, x, size):
        """[b, n, h*size] -> [b, n, h, size]."""
        b, n = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (b, n, self.heads, size))

    def call(self, inputs, a_bias=False, p_bias=None, cache=None, cache_index=None, training=None):
        """Attention output [b, n, out_dim]; with `cache` also the updated cache.

        `cache` = (keys [b, L, h, d], values [b, L, h, d_v]) of earlier positions:
        the new keys/values are written at slot `cache_index` and the queries
        attend over all L slots (the bias masks the empty ones).
        """
        q, k, v, *rest = inputs
        bias = rest.pop(0) if a_bias else None
        qw = self.split_heads(self.q_dense(q), self.key_size)  # [b, n, h, d]
        kw = self.split_heads(self.k_dense(k), self.key_size)  # [b, m, h, d]
        vw = self.split_heads(self.v_dense(v), self.head_size)  # [b, m, h, d_v]
        if p_bias == "rotary":
            sinusoid = rest.pop(0)
            qw, kw = apply_rotary(qw, sinusoid), apply_rotary(kw, sinusoid)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            kw = ops.slice_update(cache[0], start, ops.cast(kw, cache[0].dtype))  # [b, L, h, d]
            vw = ops.slice_update(cache[1], start, ops.cast(vw, cache[1].dtype))
        o = self.attend(qw, kw, vw, bias, training)  # [b, n, h, d_v]
        b, n = ops.shape(o)[0], ops.shape(o)[1]
        o = self.o_dense(ops.reshape(o, (b, n, self.heads * self.head_size)))
        return o if cache is None else (o, (kw, vw))

    def attend(self, qw, kw, vw, bias, training=None):
        """softmax(q k^T / sqrt(d) + bias) v, scores in float32: [b, n, h, d_v]."""
        a = ops.einsum("bnhd,bmhd->bhnm", qw, kw)
        a = ops.cast(a, "float32") * (1.0 / math.sqrt(self.key_size))
        if bias is not None:
            a = a + ops.cast(bias, "float32")
        p = self.dropout(ops.softmax(a, axis=-1), training=training)
        return ops.einsum("bhnm,bmhd->bnhd", ops.cast(p, vw.dtype), vw)

    def compute_mask(self, inputs, mask=None):
        return _first(mask)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.out_dim,)

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "head_size": self.head_size,
            "out_dim": self.out_dim,
            "key_size": self.key_size,
            "use_bias": self.use_bias,
            "attention_dropout": self.attention_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@register
class LayerNormalization(keras.layers.Layer):
    """y = (x - mean) / sqrt(var + eps) * (g + W_g c') + (b + W_b c'), statistics in float32.

    Conditional LayerNorm (kexue.fm/archives/7124): inputs [x, c] with c [b, k],
    c' = act(c W_h) when `hidden_units` is set, else c; W_g and W_b start at zero,
    so at initialisation the layer equals the plain one. zero_mean=False,
    scale=False, offset=False gives the parameter-free RMS norm of RoFormerV2:
    x / sqrt(mean(x^2) + eps).
    """

    def __init__(
        self,
        conditional=False,
        hidden_units=None,
        hidden_activation="linear",
        hidden_initializer="glorot_uniform",
        zero_mean=True,
        unit_variance=True,
        scale=True,
        offset=True,
        epsilon=1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = get_activation(hidden_activation)
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.scale = scale
        self.offset = offset
        self.epsilon = epsilon
        self.supports_masking = True

    def build(self, input_shape):
        if self.conditional:
            x_shape, c_shape = input_shape
            if len(c_shape) != 2:
                raise ValueError(
                    f"the condition of a conditional LayerNorm must have shape [batch, size], "
                    f"received shape {tuple(c_shape)}"
                )
        else:
            x_shape = input_shape
        dim = x_shape[-1]
        if self.offset:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if not self.conditional:
            return
        c_dim = c_shape[-1]
        if self.hidden_units:
            self.hidden_kernel = self.add_weight(
                name="hidden_kernel",
                shape=(c_dim, self.hidden_units),
                initializer=self.hidden_initializer,
            )
            c_dim = self.hidden_units
        if self.offset:
            self.beta_kernel = self.add_weight(
                name="beta_kernel", shape=(c_dim, dim), initializer="zeros"
            )
        if self.scale:
            self.gamma_kernel = self.add_weight(
                name="gamma_kernel", shape=(c_dim, dim), initializer="zeros"
            )

    def condition_deltas(self, c, rank):
        """(W_g c', W_b c') broadcast to x's rank, float32."""
        c = ops.cast(c, "float32")
        if self.hidden_units:
            c = self.hidden_activation(ops.matmul(c, ops.cast(self.hidden_kernel, "float32")))
        for _ in range(rank - 2):
            c = ops.expand_dims(c, 1)
        gamma = ops.matmul(c, ops.cast(self.gamma_kernel, "float32")) if self.scale else 0.0
        beta = ops.matmul(c, ops.cast(self.beta_kernel, "float32")) if self.offset else 0.0
        return gamma, beta

    def call(self, inputs):
        x, c = inputs if self.conditional else (inputs, None)
        x32 = ops.cast(x, "float32")
        if self.zero_mean:
            x32 = x32 - ops.mean(x32, axis=-1, keepdims=True)
        if self.unit_variance:
            x32 = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.epsilon)
        gamma = ops.cast(self.gamma, "float32") if self.scale else 1.0
        beta = ops.cast(self.beta, "float32") if self.offset else 0.0
        if self.conditional:
            d_gamma, d_beta = self.condition_deltas(c, len(x.shape))
            gamma, beta = gamma + d_gamma, beta + d_beta
        return ops.cast(x32 * gamma + beta, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return _first(mask)

    def compute_output_shape(self, input_shape):
        return tuple(_first_shape(input_shape)) if self.conditional else tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "conditional": self.conditional,
            "hidden_units": self.hidden_units,
            "hidden_activation": serialize_activation(self.hidden_activation),
            "hidden_initializer": keras.initializers.serialize(self.hidden_initializer),
            "zero_mean": self.zero_mean,
            "unit_variance": self.unit_variance,
            "scale": self.scale,
            "offset": self.offset,
            "epsilon": self.epsilon,
        }


@register
class FeedForward(keras.layers.Layer):
    """Position-wise FFN: act(x W_i + b_i) W_o + b_o, output size = input size."""

    def __init__(
        self, units, activation="relu", use_bias=True, kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = get_activation(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        dense = dict(
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
        )
        self.i0_dense = keras.layers.Dense(
            self.units, activation=self.activation, name="i0_dense", **dense
        )
        self.o_dense = keras.layers.Dense(input_shape[-1], name="o_dense", **dense)
        self.i0_dense.build(input_shape)
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, inputs):
        return self.o_dense(self.i0_dense(inputs))

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": serialize_activation(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@register
class BiasAdd(keras.layers.Layer):
    """x + b with a learned bias over the last axis (the MLM output bias)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)


@register
class Add(keras.layers.Add):
    """x_1 + x_2 + ...; the output mask is the AND of the masks that exist.

    Keras' Add drops the mask when one input has none (e.g. the segment embedding).
    """

    def compute_mask(self, inputs, mask=None):
        masks = [m for m in (mask or []) if m is not None]
        if not masks:
            return None
        result = masks[0]
        for m in masks[1:]:
            result = ops.logical_and(result, m)
        return result


@register
class TakeFirst(keras.layers.Layer):
    """The first position of a sequence, x[:, 0] ([b, n, D] -> [b, D]): the [CLS] vector."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])
