"""Keras 3 layers of the bert4x Transformers, written with `keras.ops` only.

Shapes: b batch, n query length, m key length, h heads, d head size, D hidden,
V vocabulary, k condition size. Each layer stores its constructor arguments,
creates weights in `build`, and returns every argument from `get_config`.
"""

import math

import keras
from keras import ops

from bert4x.backend import (
    MASK_BIAS,
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
        inside = ops.take(table, ops.minimum(position_ids, self.input_dim - 1), axis=0)
        short = (position_ids < self.input_dim)[..., None]  # the trained rows, bit for bit
        return ops.where(short, inside, alpha * high + (1 - alpha) * low)

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


class TensorRemat:
    """Gradient checkpointing that hands `keras.remat` tensors only.

    Under keras.RematScope the layer's call is recomputed in the backward pass.
    TF's recompute_grad refuses keyword arguments and JAX would trace the flags,
    so non-tensor arguments are bound in a closure and only tensors are passed.
    """

    def rematerialized_call(self, layer_call, *args, **kwargs):
        """Keras' remat hook: `layer_call` wrapped so that only its tensor arguments reach remat."""
        if self._remat_mode is None:
            return layer_call

        def call(*call_args, **call_kwargs):
            structure = (call_args, call_kwargs)
            flat = keras.tree.flatten(structure)
            positions = [i for i, x in enumerate(flat) if keras.ops.is_tensor(x)]

            def recomputed(*tensors):
                filled = list(flat)
                for i, tensor in zip(positions, tensors, strict=True):
                    filled[i] = tensor
                inner_args, inner_kwargs = keras.tree.pack_sequence_as(structure, filled)
                return layer_call(*inner_args, **inner_kwargs)

            return keras.remat(recomputed)(*(flat[i] for i in positions))

        return call


@register
class MultiHeadAttention(TensorRemat, keras.layers.Layer):
    """softmax(s_i q k^T / sqrt(d) + A_prev + bias) v over h heads, then an output projection.

    Inputs [q, k, v], then the attention bias when `a_bias=True`, the rotary
    sinusoid table when `p_bias='rotary'` (q, k rotated first,
    kexue.fm/archives/8265) and the previous layer's scores A_prev when
    `residual_scores=True` (RealFormer, kexue.fm/archives/8027). s_i = 1 by
    default; attention_scale='entropy_invariant' sets
    s_i = log(max(n_i, entropy_floor)) / log(training_length) with n_i the keys
    row i may see (kexue.fm/archives/8823). Scores and softmax run in float32.
    With `return_attention_scores` the layer also returns its unmasked scores
    A = s q k^T / sqrt(d) + A_prev [b, h, n, m], which the next layer adds.
    """

    def __init__(
        self,
        heads,
        head_size,
        out_dim=None,
        key_size=None,
        use_bias=True,
        attention_dropout=0.0,
        attention_scale="default",
        training_length=512,
        entropy_floor=16,
        return_attention_scores=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention_scale not in ("default", "entropy_invariant"):
            raise ValueError(
                "attention_scale must be 'default' or 'entropy_invariant', "
                f"received {attention_scale!r}"
            )
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim or heads * head_size
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_dropout = attention_dropout or 0.0
        self.attention_scale = attention_scale
        self.training_length = training_length
        self.entropy_floor = entropy_floor
        self.return_attention_scores = return_attention_scores
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        dense = dict(
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
        )
        size = self.heads * self.head_size
        self.q_dense = keras.layers.Dense(self.key_size * self.heads, name="q_dense", **dense)
        self.k_dense = keras.layers.Dense(self.key_size * self.heads, name="k_dense", **dense)
        self.v_dense = keras.layers.Dense(size, name="v_dense", **dense)
        self.o_dense = keras.layers.Dense(self.out_dim, name="o_dense", **dense)
        self.dropout = keras.layers.Dropout(self.attention_dropout, dtype="float32")
        q_shape, k_shape, v_shape = input_shape[:3]
        self.q_dense.build(q_shape)
        self.k_dense.build(k_shape)
        self.v_dense.build(v_shape)
        self.o_dense.build(tuple(q_shape[:-1]) + (self.heads * self.head_size,))

    def split_heads(self, x, size):
        """[b, n, h*size] -> [b, n, h, size]."""
        b, n = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (b, n, self.heads, size))

    def call(
        self,
        inputs,
        a_bias=False,
        p_bias=None,
        residual_scores=False,
        cache=None,
        cache_index=None,
        training=None,
    ):
        """Output [b, n, out_dim], followed by the scores and/or the updated cache if asked.

        `cache` = (keys [b, L, h, d], values [b, L, h, d_v]) of earlier positions:
        the new keys/values are written at slot `cache_index` and the queries
        attend over all L slots (the bias masks the empty ones).
        """
        q, k, v, *rest = inputs
        bias = rest.pop(0) if a_bias else None
        sinusoid = rest.pop(0) if p_bias == "rotary" else None
        previous = rest.pop(0) if residual_scores else None
        qw = self.split_heads(self.q_dense(q), self.key_size)  # [b, n, h, d]
        kw = self.split_heads(self.k_dense(k), self.key_size)  # [b, m, h, d]
        vw = self.split_heads(self.v_dense(v), self.head_size)  # [b, m, h, d_v]
        if sinusoid is not None:
            qw, kw = apply_rotary(qw, sinusoid), apply_rotary(kw, sinusoid)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            kw = ops.slice_update(cache[0], start, ops.cast(kw, cache[0].dtype))  # [b, L, h, d]
            vw = ops.slice_update(cache[1], start, ops.cast(vw, cache[1].dtype))
        o, scores = self.attend(qw, kw, vw, bias, previous, training)  # [b, n, h, d_v]
        b, n = ops.shape(o)[0], ops.shape(o)[1]
        o = self.o_dense(ops.reshape(o, (b, n, self.heads * self.head_size)))
        extras = ([scores] if self.return_attention_scores else []) + (
            [(kw, vw)] if cache is not None else []
        )
        return (o, *extras) if extras else o

    def scale(self, bias, key_length):
        """s / sqrt(d): 1/sqrt(d), or log(max(n_i, floor)) / log(L_train) / sqrt(d) per row."""
        if self.attention_scale == "default":
            return 1.0 / math.sqrt(self.key_size)
        if bias is None:
            visible = ops.cast(key_length, "float32")
        else:
            allowed = ops.cast(ops.cast(bias, "float32") > MASK_BIAS / 2, "float32")
            visible = ops.sum(allowed, axis=-1, keepdims=True)  # [b, 1, 1 or n, 1]
        visible = ops.maximum(visible, float(self.entropy_floor))
        return ops.log(visible) / math.log(self.training_length) / math.sqrt(self.key_size)

    def attend(self, qw, kw, vw, bias, previous=None, training=None):
        """(softmax(A + bias) v [b, n, h, d_v], A [b, h, n, m]) with A = s q k^T + A_prev."""
        a = ops.cast(ops.einsum("bnhd,bmhd->bhnm", qw, kw), "float32")
        a = a * self.scale(bias, ops.shape(kw)[1])
        if previous is not None:
            a = a + previous
        logits = a if bias is None else a + ops.cast(bias, "float32")
        p = self.dropout(ops.softmax(logits, axis=-1), training=training)
        return ops.einsum("bhnm,bmhd->bnhd", ops.cast(p, vw.dtype), vw), a

    def compute_mask(self, inputs, mask=None):
        mask = _first(mask)
        extras = int(self.return_attention_scores)
        return mask if not extras else [mask] + [None] * extras

    def compute_output_spec(self, inputs, **kwargs):
        q = inputs[0]
        output = keras.KerasTensor(tuple(q.shape[:-1]) + (self.out_dim,), dtype=self.compute_dtype)
        if not self.return_attention_scores:
            return output
        scores_shape = (q.shape[0], self.heads, q.shape[1], inputs[1].shape[1])
        return output, keras.KerasTensor(scores_shape, dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "head_size": self.head_size,
            "out_dim": self.out_dim,
            "key_size": self.key_size,
            "use_bias": self.use_bias,
            "attention_dropout": self.attention_dropout,
            "attention_scale": self.attention_scale,
            "training_length": self.training_length,
            "entropy_floor": self.entropy_floor,
            "return_attention_scores": self.return_attention_scores,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def iterative_pinv(a, iterations):
    """Moore-Penrose pseudo-inverse of a [..., m, m] by Z <- Z (13I - AZ(15I - AZ(7I - AZ))) / 4.

    Z_0 = A^T / (max column abs-sum * max row abs-sum), per matrix (Nystromformer).
    """
    abs_a = ops.abs(a)
    norm = ops.max(ops.sum(abs_a, axis=-2), axis=-1) * ops.max(ops.sum(abs_a, axis=-1), axis=-1)
    z = ops.swapaxes(a, -1, -2) / norm[..., None, None]
    identity = ops.eye(ops.shape(a)[-1], dtype=a.dtype)
    for _ in range(iterations):
        az = ops.matmul(a, z)
        inner = 15.0 * identity - ops.matmul(az, 7.0 * identity - az)
        z = 0.25 * ops.matmul(z, 13.0 * identity - ops.matmul(az, inner))
    return z


@register
class NystromAttention(MultiHeadAttention):
    """Nystrom approximation of softmax attention in O(n m) (kexue.fm/archives/8180).

    With m landmarks = segment means of q and k (sequence padded to a multiple of
    m): F = softmax(q k~^T), A = softmax(q~ k~^T), B = softmax(q~ k^T + bias),
    out = F A^+ (B v), A^+ by `pinv_iterations` Newton steps. Landmarks average
    the valid (unpadded) tokens of each segment. `conv_kernel_size` adds the
    depthwise-convolution skip over v. Same q/k/v/o weights as MultiHeadAttention,
    so the same checkpoints load. Encoder only: pooling mixes future tokens. arXiv 2102.03902.
    """

    def __init__(self, num_landmarks=64, pinv_iterations=6, conv_kernel_size=None, **kwargs):
        super().__init__(**kwargs)
        if self.attention_scale != "default" or self.return_attention_scores:
            raise ValueError(
                "NystromAttention supports neither entropy_invariant nor residual scores"
            )
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.conv_kernel_size = conv_kernel_size

    def build(self, input_shape):
        super().build(input_shape)
        if self.conv_kernel_size:
            self.conv_kernel = self.add_weight(
                name="conv_kernel", shape=(self.conv_kernel_size, self.heads), initializer="zeros"
            )

    def landmarks(self, x, valid, segments):
        """Means of the valid rows of x [b, n', h, d] in each of m segments: [b, h, m, d]."""
        b, n, h, d = ops.shape(x)
        x = ops.reshape(x * valid[:, :, None, None], (b, self.num_landmarks, segments, h, d))
        counts = ops.reshape(valid, (b, self.num_landmarks, segments))
        counts = ops.maximum(ops.sum(counts, axis=2), 1.0)  # [b, m]
        means = ops.sum(x, axis=2) / counts[:, :, None, None]  # [b, m, h, d]
        return ops.transpose(means, (0, 2, 1, 3))

    def attend(self, qw, kw, vw, bias, previous=None, training=None):
        n = ops.shape(qw)[1]
        valid = ops.ones(ops.shape(qw)[:2], "float32")
        if bias is not None:
            valid = ops.cast(ops.cast(bias, "float32")[:, 0, 0, :] > MASK_BIAS / 2, "float32")
        pad = (-n) % self.num_landmarks
        segments = (n + pad) // self.num_landmarks
        q, k, v = (ops.cast(t, "float32") for t in (qw, kw, vw))
        q = q / math.sqrt(self.key_size)
        padded = [ops.pad(t, [(0, 0), (0, pad), (0, 0), (0, 0)]) for t in (q, k)]
        valid_padded = ops.pad(valid, [(0, 0), (0, pad)])
        q_landmarks = self.landmarks(padded[0], valid_padded, segments)  # [b, h, m, d]
        k_landmarks = self.landmarks(padded[1], valid_padded, segments)
        key_bias = (1.0 - valid)[:, None, None, :] * MASK_BIAS  # [b, 1, 1, n]
        f = ops.softmax(ops.einsum("bnhd,bhmd->bhnm", q, k_landmarks), axis=-1)  # [b, h, n, m]
        a = ops.softmax(ops.matmul(q_landmarks, ops.swapaxes(k_landmarks, -1, -2)), axis=-1)
        b_kernel = ops.softmax(ops.einsum("bhmd,bnhd->bhmn", q_landmarks, k) + key_bias, axis=-1)
        bv = ops.einsum("bhmn,bnhd->bhmd", b_kernel, v)  # [b, h, m, d_v]
        o = ops.matmul(f, ops.matmul(iterative_pinv(a, self.pinv_iterations), bv))  # [b, h, n, d_v]
        o = ops.transpose(o, (0, 2, 1, 3))
        if self.conv_kernel_size:
            o = o + self.depthwise_skip(v * valid[:, :, None, None])
        return ops.cast(o, vw.dtype), None

    def depthwise_skip(self, v):
        """Per-head convolution over positions: sum_t w[t, h] v[i + t - k//2, h, :]."""
        b, n, h, d = ops.shape(v)
        kernel = ops.repeat(ops.cast(self.conv_kernel, "float32"), d, axis=1)  # [k, h*d]
        x = ops.reshape(v, (b, n, h * d))
        y = ops.depthwise_conv(x, kernel[:, :, None], padding="same")
        return ops.reshape(y, (b, n, h, d))

    def get_config(self):
        return {
            **super().get_config(),
            "num_landmarks": self.num_landmarks,
            "pinv_iterations": self.pinv_iterations,
            "conv_kernel_size": self.conv_kernel_size,
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
class FeedForward(TensorRemat, keras.layers.Layer):
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


@register
class Loss(keras.layers.Layer):
    """bert4keras's loss layer: `add_loss(compute_loss(inputs, mask))`, pass inputs through.

    Subclass it and write `compute_loss(self, inputs, mask=None)`; integer inputs (token
    and segment ids) arrive cast to floatx, as bert4keras's float32 inputs did, so that
    `loss * y_mask` works. `output_axis`: None returns all inputs, an int or a list of ints
    the inputs at those positions. Compile the model without a `loss`.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        self.add_loss(self.compute_loss(keras.tree.map_structure(_to_floatx, inputs), mask))
        return self._select(inputs)

    def compute_loss(self, inputs, mask=None):
        """The scalar loss of `inputs`; subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_loss(self, inputs, mask=None)."
        )

    def _select(self, values):
        if self.output_axis is None:
            return values
        if isinstance(self.output_axis, (list, tuple)):
            return [values[i] for i in self.output_axis]
        return values[self.output_axis]

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else self._select(mask)

    def compute_output_shape(self, input_shape):
        return self._select(input_shape)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}


def _to_floatx(x):
    """Integer tensors as floatx (Loss inputs); others unchanged."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    return ops.cast(x, keras.config.floatx()) if "int" in dtype else x
