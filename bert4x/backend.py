"""Backend-neutral ops: activations, attention masks and biases, sinusoids, rotary.

Everything here is written with `keras.ops`, so it runs on TensorFlow and JAX and
compiles under XLA. Shapes: b batch, n query length, m key length, h heads,
d head size.
"""

import math

import keras
from keras import ops

#: Added to the logits of forbidden keys. Large but finite, so that a fully masked
#: row gives a uniform softmax instead of NaN; softmax always runs in float32.
MASK_BIAS = -1e9


@keras.saving.register_keras_serializable("bert4x")
def gelu_erf(x):
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))) (bert4keras' and HF's "gelu")."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


@keras.saving.register_keras_serializable("bert4x")
def gelu_tanh(x):
    """Tanh GELU of Google's TF code: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_erf": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "swish": keras.activations.silu,
    "silu": keras.activations.silu,
}


def get_activation(activation):
    """Resolve a config activation name; "gelu" is the exact erf GELU, "gelu_tanh" the tanh one."""
    if isinstance(activation, str) and activation.lower() in _ACTIVATIONS:
        return _ACTIVATIONS[activation.lower()]
    try:
        return keras.activations.get(activation)
    except ValueError as error:
        raise ValueError(
            f"unknown activation {activation!r}; use one of {sorted(_ACTIVATIONS)} "
            "or a Keras activation name"
        ) from error


def serialize_activation(activation):
    """The name under which `get_activation` finds `activation` again (for get_config)."""
    for name, function in _ACTIVATIONS.items():
        if function is activation:
            return name
    return keras.activations.serialize(activation)


def padding_mask(token_ids):
    """Key validity [b, n]: token id != 0, except that position 0 is always valid.

    Keeping the first position lets id 0 serve as a start token (bert4keras rule).
    """
    valid = ops.not_equal(token_ids, 0)
    return ops.concatenate([ops.ones_like(valid[:, :1]), valid[:, 1:]], axis=1)


def causal_mask(length):
    """Allowed(i, j) = j <= i, shape [n, n] (LM mask)."""
    idx = ops.arange(length)
    return idx[None, :] <= idx[:, None]


def unilm_mask(segment_ids):
    """Allowed(b, i, j) = c[b, j] <= c[b, i] with c = cumsum(segment_ids), shape [b, n, n].

    Source (segment 0) rows see the whole source; target rows see the source and
    the target prefix up to themselves (kexue.fm/archives/6933).
    """
    c = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    return c[:, None, :] <= c[:, :, None]


def attention_bias(allowed):
    """0 where allowed, MASK_BIAS elsewhere, float32, broadcastable to [b, h, n, m]."""
    return ops.where(allowed, 0.0, MASK_BIAS)


def sinusoidal_embeddings(position_ids, output_dim):
    """Interleaved sinusoids [..., n, d]: pairs (sin(p t_i), cos(p t_i)), t_i = 10000^(-2i/d)."""
    if output_dim % 2:
        raise ValueError(
            f"sinusoidal embeddings need an even size, received output_dim={output_dim}"
        )
    theta = ops.power(10000.0, -2.0 * ops.arange(output_dim // 2, dtype="float32") / output_dim)
    angles = ops.cast(position_ids, "float32")[..., None] * theta  # [..., n, d/2]
    table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)  # [..., n, d/2, 2]
    return ops.reshape(table, tuple(ops.shape(angles)[:-1]) + (output_dim,))


def apply_rotary(x, sinusoid):
    """Rotate pairs (2i, 2i+1) of x [b, n, h, d] by angle p t_i (RoPE, kexue.fm/archives/8265).

    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin); `sinusoid` is the interleaved
    table [b or 1, n, d] from `sinusoidal_embeddings`.
    """
    sinusoid = ops.cast(sinusoid[:, :, None, :], x.dtype)  # [b, n, 1, d]
    sin = ops.repeat(sinusoid[..., 0::2], 2, axis=-1)
    cos = ops.repeat(sinusoid[..., 1::2], 2, axis=-1)
    rotated = ops.stack([-x[..., 1::2], x[..., 0::2]], axis=-1)  # [b, n, h, d/2, 2]
    rotated = ops.reshape(rotated, ops.shape(x))
    return x * cos + rotated * sin


def sequence_masking(x, mask, value=0.0, axis=1):
    """Set x to `value` where mask [b, n] is False, along `axis` of x."""
    if mask is None:
        return x
    mask = ops.cast(mask, "bool")
    for _ in range(axis - 1):
        mask = ops.expand_dims(mask, 1)
    while len(mask.shape) < len(x.shape):
        mask = ops.expand_dims(mask, -1)
    return ops.where(mask, x, ops.cast(value, x.dtype))


class _KerasBackendCalls:
    """bert4keras's `K` (the Keras 2 backend) for migrated code: `K.sum`, `K.cast`...

    A name resolves to `keras.ops`, then `keras.backend` (`K.epsilon()`, `K.floatx()`),
    then `keras.losses` (`K.sparse_categorical_crossentropy`). Calls Keras 3 dropped
    raise an AttributeError that points to docs/migration.md.
    """

    def __getattr__(self, name):
        for module in (keras.ops, keras.backend, keras.losses):
            if not name.startswith("_") and hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(
            f"K.{name} has no Keras 3 counterpart in keras.ops, keras.backend or keras.losses; "
            "see the K table in docs/migration.md for its replacement."
        )


#: bert4keras's `from bert4keras.backend import K`: Keras 2 backend calls, on Keras 3.
K = _KerasBackendCalls()
