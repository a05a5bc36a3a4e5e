"""RealFormer scores, entropy-invariant scaling, Nystrom attention, long positions, recompute."""

import keras
import numpy as np
import pytest

from bert4x.layers import AttentionBias, MultiHeadAttention, NystromAttention, iterative_pinv
from bert4x.models import build_transformer_model

import reference_numpy as ref
from model_cases import CONFIGS, random_batch, reference_name, write_random_checkpoint

pytestmark = pytest.mark.backend_agnostic


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def build(tmp_path, model, application="encoder", **kwargs):
    heads = {} if model == "gpt" else {"with_mlm": True}
    prefix, variables = write_random_checkpoint(tmp_path, model, **heads)
    keras_model = build_transformer_model(
        CONFIGS[model], prefix, model=model, application=application, **heads, **kwargs
    )
    return keras_model, variables


def reference_mlm(model, variables, token_ids, segment_ids, application, **options):
    return ref.forward(
        reference_name(model),
        CONFIGS[model],
        variables,
        token_ids,
        segment_ids,
        application=application,
        with_mlm=True,
        **options,
    )["mlm"]


VARIANT_CASES = [
    ("bert", "encoder"),
    ("bert", "unilm"),
    ("albert", "encoder"),
    ("roformer", "lm"),
    ("gpt", "lm"),
]


@pytest.mark.parametrize("model,application", VARIANT_CASES)
def test_residual_scores_match_numpy_realformer(tmp_path, model, application):
    keras_model, variables = build(tmp_path, model, application, residual_attention_scores=True)
    token_ids, segment_ids = random_batch(np.random.default_rng(20))
    want = reference_mlm(
        model, variables, token_ids, segment_ids, application, residual_attention_scores=True
    )
    np.testing.assert_allclose(numpy(keras_model([token_ids, segment_ids])), want, atol=1e-5)
    plain = reference_mlm(model, variables, token_ids, segment_ids, application)
    assert np.abs(plain - want).max() > 1e-3  # the residual path really changes the outputs


def test_residual_scores_change_nothing_in_a_one_layer_model(tmp_path):
    config = {**CONFIGS["bert"], "num_hidden_layers": 1}
    variables = ref.random_variables("bert", config, with_mlm=True)
    token_ids, segment_ids = random_batch(np.random.default_rng(21))
    outputs = []
    for residual in (False, True):
        model = build_transformer_model(config, with_mlm=True, residual_attention_scores=residual)
        model.bert4x_builder.load_weights_from_checkpoint(variables)
        outputs.append(numpy(model([token_ids, segment_ids])))
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("model,application", VARIANT_CASES)
def test_entropy_invariant_scale_matches_numpy(tmp_path, model, application):
    options = dict(attention_scale="entropy_invariant", training_length=6, entropy_floor=2)
    keras_model, variables = build(tmp_path, model, application, **options)
    token_ids, segment_ids = random_batch(np.random.default_rng(22))
    want = reference_mlm(model, variables, token_ids, segment_ids, application, **options)
    np.testing.assert_allclose(numpy(keras_model([token_ids, segment_ids])), want, atol=1e-5)


def test_entropy_invariant_equals_plain_attention_at_the_training_length(tmp_path):
    length = 9
    scaled, variables = build(
        tmp_path,
        "bert",
        attention_scale="entropy_invariant",
        training_length=length,
        entropy_floor=1,
    )
    plain, _ = build(tmp_path, "bert")
    token_ids, segment_ids = random_batch(np.random.default_rng(23), pad=(0, 0, 0))
    np.testing.assert_allclose(
        numpy(scaled([token_ids, segment_ids])), numpy(plain([token_ids, segment_ids])), atol=1e-6
    )


@pytest.mark.parametrize("mode", ["encoder", "lm", "unilm"])
def test_entropy_scale_of_each_row_follows_its_visible_keys(mode):
    token_ids = np.array([[5, 6, 7, 8, 9, 0, 0]])
    segment_ids = np.array([[0, 0, 0, 1, 1, 1, 1]])
    bias = AttentionBias(mode=mode)([token_ids, segment_ids])
    layer = MultiHeadAttention(
        2, 4, attention_scale="entropy_invariant", training_length=512, entropy_floor=1
    )
    scale = numpy(layer.scale(bias, 7)).reshape(-1)
    visible = ref.attention_allowed(token_ids, segment_ids, mode)[0].sum(-1)
    expected = np.log(visible) / np.log(512) / 2.0  # sqrt(d) = 2
    np.testing.assert_allclose(scale, expected if mode != "encoder" else expected[:1], rtol=1e-6)


def softmax_attention(q, k, v, valid):
    a = np.einsum("bnhd,bmhd->bhnm", q, k) / np.sqrt(q.shape[-1])
    a = np.where(valid[:, None, None, :], a, -1e9)
    p = np.exp(a - a.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhnm,bmhd->bnhd", p, v)


def nystrom_output(n, landmarks, iterations, rng, valid=None):
    q, k, v = (rng.normal(size=(2, n, 2, 8)).astype("float32") for _ in range(3))
    valid = np.ones((2, n), bool) if valid is None else valid
    bias = np.where(valid, 0.0, -1e9).astype("float32")[:, None, None, :]
    layer = NystromAttention(
        num_landmarks=landmarks, pinv_iterations=iterations, heads=2, head_size=8
    )
    o, _ = layer.attend(q, k, v, bias)
    return numpy(o), softmax_attention(q, k, v, valid)


def test_nystrom_with_one_landmark_per_token_is_full_attention():
    got, want = nystrom_output(16, 16, 20, np.random.default_rng(24))
    np.testing.assert_allclose(got, want, atol=1e-4)


def smooth_sequence(rng, shape):
    """Random-walk rows: neighbouring tokens are correlated, as in text."""
    steps = np.cumsum(rng.normal(size=shape), axis=1)
    return (steps / np.sqrt(np.arange(1, shape[1] + 1))[None, :, None, None]).astype("float32")


def test_nystrom_error_falls_as_landmarks_grow():
    """Mean error over a few random smooth inputs decreases with m; m = n is exact."""
    errors = []
    for landmarks in (4, 16, 32, 64):
        error = 0.0
        for seed in range(3):
            rng = np.random.default_rng(seed)
            q, k = smooth_sequence(rng, (2, 64, 2, 8)), smooth_sequence(rng, (2, 64, 2, 8))
            v = rng.normal(size=(2, 64, 2, 8)).astype("float32")
            layer = NystromAttention(
                num_landmarks=landmarks, pinv_iterations=20, heads=2, head_size=8
            )
            o, _ = layer.attend(q, k, v, np.zeros((2, 1, 1, 64), "float32"))
            error += np.abs(numpy(o) - softmax_attention(q, k, v, np.ones((2, 64), bool))).mean()
        errors.append(error / 3)
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


def test_nystrom_padding_changes_valid_rows_only_within_the_approximation():
    rng = np.random.default_rng(26)
    q, k, v = (rng.normal(size=(1, 16, 2, 8)).astype("float32") for _ in range(3))
    layer = NystromAttention(num_landmarks=8, pinv_iterations=20, heads=2, head_size=8)
    short, _ = layer.attend(q, k, v, np.zeros((1, 1, 1, 16), "float32"))
    pad = [(0, 0), (0, 16), (0, 0), (0, 0)]
    bias = np.concatenate([np.zeros((1, 1, 1, 16)), np.full((1, 1, 1, 16), -1e9)], -1)
    long, _ = layer.attend(*(np.pad(t, pad) for t in (q, k, v)), bias.astype("float32"))
    exact = softmax_attention(q, k, v, np.ones((1, 16), bool))
    approximation_error = np.abs(numpy(short) - exact).mean()
    padding_change = np.abs(numpy(long)[:, :16] - numpy(short)).mean()
    assert padding_change <= 2 * approximation_error + 1e-5


def test_iterative_pinv_converges_to_numpy_pinv():
    rng = np.random.default_rng(27)
    logits = rng.normal(size=(3, 12, 12))
    a = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        numpy(iterative_pinv(a, 25)), np.linalg.pinv(a), rtol=1e-4, atol=1e-4
    )
    six = numpy(iterative_pinv(a, 6))
    assert np.abs(a @ six @ a - a).max() < 5e-2


@pytest.mark.slow
def test_nystrom_model_loads_the_same_checkpoint_and_compiles(tmp_path):
    full, _ = build(tmp_path, "bert")
    nystrom, _ = build(
        tmp_path, "bert", attention_type="nystrom", num_landmarks=9, pinv_iterations=20
    )
    token_ids, segment_ids = random_batch(np.random.default_rng(28), pad=(0, 0, 0))
    want = numpy(full([token_ids, segment_ids]))
    np.testing.assert_allclose(numpy(nystrom([token_ids, segment_ids])), want, atol=1e-4)
    nystrom.compile(loss="sparse_categorical_crossentropy", jit_compile=True)
    compiled = nystrom.predict([token_ids, segment_ids], verbose=0)
    np.testing.assert_allclose(compiled, want, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"attention_type": "nystrom", "application": "lm"}, "bidirectional encoder"),
        ({"attention_type": "nystrom", "residual_attention_scores": True}, "no score matrix"),
        ({"attention_type": "linear"}, "'full' or 'nystrom'"),
        ({"attention_scale": "log"}, "entropy_invariant"),
    ],
)
def test_incompatible_attention_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_transformer_model(CONFIGS["bert"], **kwargs)


def test_hierarchical_positions_keep_short_inputs_and_read_long_ones(tmp_path):
    plain, _ = build(tmp_path, "bert")
    extended, _ = build(tmp_path, "bert", hierarchical_position=True)
    token_ids, segment_ids = random_batch(np.random.default_rng(29))
    np.testing.assert_array_equal(
        numpy(extended([token_ids, segment_ids])), numpy(plain([token_ids, segment_ids]))
    )
    long_ids = np.random.default_rng(30).integers(1, 60, size=(1, 200)).astype("int32")
    output = numpy(extended([long_ids, np.zeros_like(long_ids)]))
    assert output.shape == (1, 200, 60) and np.isfinite(output).all()


def test_recompute_gives_the_same_loss_and_gradients(tmp_path):
    token_ids, segment_ids = random_batch(np.random.default_rng(31))
    results = []
    for recompute in (False, True):
        model, _ = build(tmp_path, "bert", recompute=recompute)
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
        loss = model.train_on_batch([token_ids, segment_ids], token_ids)
        results.append((loss, [numpy(w) for w in model.trainable_weights]))
    assert abs(results[0][0] - results[1][0]) < 1e-6
    for plain, remat in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(remat, plain, atol=1e-6)
