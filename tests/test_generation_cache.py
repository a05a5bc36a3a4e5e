"""Key/value-cached decoding equals re-running the whole sequence, row by row."""

import keras
import numpy as np
import pytest

from bert4x.generation.cache import CachedModel
from bert4x.models import build_transformer_model

from model_cases import CONFIGS, write_random_checkpoint

pytestmark = pytest.mark.backend_agnostic

STEPS = 4


def uncached_next_logits(model, tokens, segments, unilm):
    """Logits after the last token of one unpadded row, from a full forward pass."""
    inputs = [np.array([tokens]), np.array([segments])]
    probas = np.asarray(model(inputs))[0, -1]
    return np.log(probas)


def greedy_both_ways(model, prompts, unilm):
    """(cached tokens, uncached tokens) for greedy decoding of every prompt in one batch."""
    cached = CachedModel(model)
    width = max(len(p) for p in prompts)
    token_ids = np.array([p + [0] * (width - len(p)) for p in prompts], dtype="int32")
    segment_ids = np.zeros_like(token_ids)
    logits, cache = cached.prefill(cached.state(), token_ids, segment_ids, width + STEPS)
    cached_tokens, uncached_tokens = [], []
    for index in range(STEPS):
        logits = np.asarray(logits)
        for row, prompt in enumerate(prompts):
            generated = [t[row] for t in cached_tokens]
            segments = [0] * len(prompt) + [1 if unilm else 0] * len(generated)
            want = uncached_next_logits(model, prompt + generated, segments, unilm)
            got = (
                logits[row]
                - np.log(np.exp(logits[row] - logits[row].max()).sum())
                - logits[row].max()
            )
            np.testing.assert_allclose(got, want, atol=2e-4)
            uncached_tokens.append(int(np.argmax(want)))
        choice = logits.argmax(axis=-1).astype("int32")
        cached_tokens.append(choice)
        logits, cache = cached.step(cached.state(), cache, choice, index)
    return np.stack(cached_tokens, 1), np.array(uncached_tokens).reshape(STEPS, -1).T


CASES = [
    ("bert", "lm"),
    ("bert", "unilm"),
    ("roformer", "lm"),
    ("roformer", "unilm"),
    ("gpt", "lm"),
]


@pytest.mark.parametrize("model,application", CASES)
def test_cached_greedy_equals_full_recomputation(tmp_path, model, application):
    heads = {} if model == "gpt" else {"with_mlm": True}
    prefix, _ = write_random_checkpoint(tmp_path, model, **heads)
    keras_model = build_transformer_model(
        CONFIGS[model], prefix, model=model, application=application
    )
    prompts = [[2, 17, 33, 5, 3], [2, 40, 3], [2, 8, 9, 11, 12, 13, 3]]
    cached, uncached = greedy_both_ways(keras_model, prompts, application == "unilm")
    np.testing.assert_array_equal(cached, uncached)


def test_conditional_model_decodes_with_its_condition(tmp_path):
    prefix, _ = write_random_checkpoint(tmp_path, "bert", with_mlm=True)
    model = build_transformer_model(CONFIGS["bert"], prefix, application="lm", layer_norm_cond=4)
    from bert4x.layers import LayerNormalization

    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, LayerNormalization):
            layer.gamma_kernel.assign(rng.normal(size=layer.gamma_kernel.shape).astype("float32"))
    condition = rng.normal(size=(2, 4)).astype("float32")
    token_ids = np.array([[2, 9, 10, 3], [2, 7, 3, 0]], dtype="int32")
    segment_ids = np.zeros_like(token_ids)
    cached = CachedModel(model)
    logits, cache = cached.prefill(cached.state(), token_ids, segment_ids, 6, [condition])
    full = np.asarray(model([token_ids, segment_ids, condition]))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.softmax(logits)), full[[0, 1], [3, 2]], atol=1e-5
    )


def compiled(function):
    """`function` under XLA: jax.jit on JAX, tf.function(jit_compile=True) on TensorFlow."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    import tensorflow as tf

    return tf.function(function, jit_compile=True)


def test_compiled_step_equals_eager_step(tmp_path):
    prefix, _ = write_random_checkpoint(tmp_path, "roformer", with_mlm=True)
    model = build_transformer_model(
        CONFIGS["roformer"], prefix, model="roformer", application="unilm"
    )
    cached = CachedModel(model)
    token_ids = np.array([[2, 9, 10, 3], [2, 7, 3, 0]], dtype="int32")
    state = cached.state()
    logits, cache = cached.prefill(state, token_ids, np.zeros_like(token_ids), 7)
    choice = np.asarray(logits).argmax(-1).astype("int32")
    eager, _ = cached.step(state, cache, choice, 0)

    def step(state, cache, choice, index):
        return cached.step(state, cache, choice, index)[0]

    jitted = compiled(step)(state, cache, choice, np.int32(0))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)


def test_encoder_models_are_refused():
    model = build_transformer_model(CONFIGS["bert"], with_mlm=True)
    with pytest.raises(ValueError, match="application='lm' or 'unilm'"):
        CachedModel(model)
