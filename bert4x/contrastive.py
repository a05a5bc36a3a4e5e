"""In-batch contrastive losses (SimBERT L_sim) and their exact gradient accumulation.

SimBERT (kexue.fm/archives/7427): rows 2i and 2i+1 of a batch are paraphrases; with
z = l2_normalize(pooled), logits = scale · (z zᵀ − 10¹² I), row i's label is column i XOR 1,
L_sim = mean_i CE(softmax(logits_i), i XOR 1).

Exact accumulation (kexue.fm/archives/8471): write the loss over N = k·b samples as InfoNCE
on s_ij = ⟨h_i, h_j⟩ (normalisation and temperature folded into h, e.g. h = √scale · z):
L = (1/N) Σ_i [−Σ_j t_ij s_ij + log Σ_j e^{s_ij}], p = softmax_j(s). Then
∂L/∂h_i = h̃_i := (1/N) Σ_j (p_ij + p_ji − t_ij − t_ji) h_j, so with h̃ held constant
∇L = ∇ Σ_i ⟨h_i, h̃_i⟩, a sum of per-sample terms that accumulates over chunks: (1) forward
all N samples without gradient, (2) compute h̃ on the full N×N matrix, (3) re-forward each
chunk with gradient and accumulate ∇ Σ_{i∈chunk} ⟨h_i, h̃_i⟩. Naive accumulation (InfoNCE
inside each chunk) optimises a different loss with b − 1 instead of N − 1 negatives.

Shapes: N samples, b chunk rows, D vector size.
Backends: the losses use `keras.ops` only; `ContrastiveAccumulator` takes gradients with
`tf.GradientTape` on TensorFlow (optionally XLA-compiled) and `jax.value_and_grad` on JAX.
"""

import keras
from keras import ops

MASK_VALUE = 1e12  # subtracted from the diagonal similarities: p_ii = 0
HALF = ("float16", "bfloat16")


def simbert_labels(batch_size):
    """Target matrix t [b, b] of SimBERT: row i has its single 1 at column i XOR 1."""
    if isinstance(batch_size, int) and (batch_size < 2 or batch_size % 2):
        raise ValueError(
            f"SimBERT batches hold paraphrase pairs in adjacent rows, so the batch size must be "
            f"even and >= 2. Received: batch_size={batch_size}"
        )
    index = ops.arange(batch_size)
    return ops.one_hot(index + 1 - 2 * (index % 2), batch_size)  # i XOR 1


def info_nce_loss(h, labels=None, mask_diagonal=True):
    """(1/N) Σ_i CE(softmax_j(s_ij), t_i) with s = h hᵀ (− 10¹² on the diagonal if masked).

    h: [N, D] with normalisation and temperature already applied. labels: target matrix
    t [N, N] (rows sum to 1), default `simbert_labels(N)`.
    """
    s, t = _similarities(h, labels, mask_diagonal)
    return _cross_entropy(s, t)


def similarity_loss(pooled, scale=30.0, labels=None):
    """SimBERT's L_sim: InfoNCE of scale · cos over the batch, labels i XOR 1 (RoFormer-Sim: 20)."""
    return info_nce_loss(scaled_unit_vectors(pooled, scale), labels)


def scaled_unit_vectors(pooled, scale=30.0):
    """h = √scale · pooled / ‖pooled‖₂ [N, D], so that ⟨h_i, h_j⟩ = scale · cos(i, j)."""
    norm2 = ops.maximum(ops.sum(ops.square(pooled), axis=-1, keepdims=True), 1e-12)
    return pooled * ops.rsqrt(norm2) * (float(scale) ** 0.5)


def contrastive_surrogate_targets(h, labels=None, mask_diagonal=True):
    """(h̃ [N, D], L): h̃ = sg((1/N)(P + Pᵀ − T − Tᵀ) h), the gradient of L = `info_nce_loss`.

    For any function producing h, ∇ Σ_i ⟨h_i, h̃_i⟩ = ∇L (h̃ constant), which is what
    `ContrastiveAccumulator` accumulates chunk by chunk. The 1/N matches the mean over rows.
    """
    h = _full_precision(h)
    s, t = _similarities(h, labels, mask_diagonal)
    p = ops.softmax(s, axis=-1)  # [N, N]
    loss = _cross_entropy(s, t)
    n = ops.cast(ops.shape(h)[0], h.dtype)
    coefficients = (p + ops.transpose(p) - t - ops.transpose(t)) / n
    return ops.stop_gradient(ops.matmul(coefficients, h)), loss


def _full_precision(x):
    """float16/bfloat16 -> float32 (−10¹² and the softmax need it); other dtypes unchanged."""
    return ops.cast(x, "float32") if keras.backend.standardize_dtype(x.dtype) in HALF else x


def _similarities(h, labels, mask_diagonal):
    h = _full_precision(h)
    n = ops.shape(h)[0]
    s = ops.matmul(h, ops.transpose(h))  # [N, N]
    if mask_diagonal:
        s = s - ops.eye(n, dtype=s.dtype) * MASK_VALUE
    t = simbert_labels(n) if labels is None else labels
    return s, ops.cast(t, s.dtype)


def _cross_entropy(s, t):
    """mean_i −Σ_j t_ij log softmax(s_i)_j (Σ / N: keras' JAX `mean` of float64 loses digits)."""
    n = ops.cast(ops.shape(s)[0], s.dtype)
    return -ops.sum(t * ops.log_softmax(s, axis=-1)) / n


def seed_states(model):
    """The seed-generator state variables of `model` (dropout); pass as `replay_variables`."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


class ContrastiveAccumulator:
    """Exact gradient of `info_nce_loss` over all rows of k chunks (+ additive per-chunk losses).

    encode_fn(chunk) -> h [b, D] or (h, chunk_loss): h with normalisation and temperature
    inside (e.g. `scaled_unit_vectors(pooled, scale)`); chunk_loss is any loss that is a sum
    of per-sample terms (e.g. the UniLM generation loss divided by the token count of all k
    chunks), so its gradients simply add up over chunks. variables: what to differentiate
    (`model.trainable_variables`). replay_variables: state restored before each chunk's
    re-forward so stochastic layers draw the same masks as in the first forward (dropout:
    `seed_states(model)`); without it the accumulated gradient is exact only for deterministic
    encoders. jit_compile: XLA-compile the per-chunk functions (TensorFlow only; traced
    without autograph, so encode_fn must not branch on tensor values in Python).

    `acc(chunks, labels=None)` -> (gradients aligned with `variables`, L over all rows,
    Σ chunk_loss). One chunk: plain autodiff of L + chunk_loss in one forward.
    """

    def __init__(
        self, encode_fn, variables, replay_variables=(), mask_diagonal=True, jit_compile=False
    ):
        backend = keras.backend.backend()
        if backend not in ("tensorflow", "jax"):
            raise ValueError(
                f"ContrastiveAccumulator supports the tensorflow and jax backends. Received: "
                f"backend={backend!r}; set KERAS_BACKEND=tensorflow or jax."
            )
        self.encode_fn, self.variables = encode_fn, list(variables)
        self.replay_variables, self.mask_diagonal = list(replay_variables), mask_diagonal
        compile_fn = _tf_compiler(jit_compile) if backend == "tensorflow" else (lambda f: f)
        self._forward = compile_fn(self._encode)
        self._surrogate_grads = compile_fn(
            _gradient_fn(self._surrogate, self.variables, self.replay_variables)
        )
        self._direct_grads = compile_fn(
            _gradient_fn(self._direct, self.variables, self.replay_variables)
        )

    def _encode(self, chunk):
        out = self.encode_fn(chunk)
        h, chunk_loss = out if isinstance(out, (tuple, list)) else (out, 0.0)
        h = _full_precision(h)  # mixed precision: the loss sums run in float32
        return h, ops.cast(chunk_loss, h.dtype)

    def _surrogate(self, chunk, h_tilde):
        h, chunk_loss = self._encode(chunk)
        return ops.sum(h * h_tilde) + chunk_loss, (ops.zeros((), h.dtype), chunk_loss)

    def _direct(self, chunk, labels):
        h, chunk_loss = self._encode(chunk)
        loss = info_nce_loss(h, labels, self.mask_diagonal)
        return loss + chunk_loss, (loss, chunk_loss)

    def __call__(self, chunks, labels=None):
        chunks = [keras.tree.map_structure(ops.convert_to_tensor, c) for c in chunks]
        if len(chunks) == 1:
            grads, (loss, chunk_loss) = self._direct_grads(chunks[0], labels)
            return grads, loss, chunk_loss
        states, hs = [], []
        for chunk in chunks:  # (1) all samples, no gradient
            states.append([ops.convert_to_numpy(v.value) for v in self.replay_variables])
            hs.append(self._forward(chunk)[0])
        final = [ops.convert_to_numpy(v.value) for v in self.replay_variables]
        h = ops.concatenate(hs)  # [N, D]
        h_tilde, loss = contrastive_surrogate_targets(h, labels, self.mask_diagonal)  # (2)
        total, chunk_loss, start = None, 0.0, 0
        for chunk, state, h in zip(chunks, states, hs):  # (3) re-forward with gradient
            for variable, value in zip(self.replay_variables, state):
                variable.assign(value)
            stop = start + int(ops.shape(h)[0])
            grads, (_, part) = self._surrogate_grads(chunk, h_tilde[start:stop])
            total = grads if total is None else [a + g for a, g in zip(total, grads)]
            chunk_loss, start = chunk_loss + part, stop
        for variable, value in zip(self.replay_variables, final):  # as after the first forward
            variable.assign(value)
        return total, loss, chunk_loss


def _tf_compiler(jit_compile):
    import tensorflow as tf

    return lambda function: tf.function(function, jit_compile=jit_compile, autograph=False)


def _gradient_fn(loss_fn, variables, state_variables):
    """f(*args) -> (gradients of loss_fn(*args)[0] w.r.t. variables, loss_fn(*args)[1])."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        def tf_gradients(*args):
            with tf.GradientTape() as tape:
                loss, aux = loss_fn(*args)
            grads = tape.gradient(loss, variables)  # embeddings: IndexedSlices -> dense
            dense = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for v, g in
                     zip(variables, grads)]  # fmt: skip
            return dense, aux

        return tf_gradients
    import jax

    def pure(values, *args):  # the variables' values as an argument, states returned
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            loss, aux = loss_fn(*args)
            states = [scope.get_current_value(v) for v in state_variables]
        return loss, (aux, states)

    value_and_grad = jax.value_and_grad(pure, has_aux=True)

    def jax_gradients(*args):
        (_, (aux, states)), grads = value_and_grad([v.value for v in variables], *args)
        for variable, value in zip(state_variables, states):
            if value is not None:  # the state advanced inside the stateless call
                variable.assign(value)
        return grads, aux

    return jax_gradients
