"""bert4keras -> bert4x migration: docs/migration.md stays true, tests/migration/ scripts run.

The scripts in tests/migration/ are written as a bert4keras user writes them; each is run in a
subprocess after replacing the string `bert4keras` with `bert4x` and nothing else. The doc's
tables are checked in both directions: every bert4keras public name appears, and every bert4x
or Keras name given as its counterpart imports.
"""

import importlib
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "migration.md")
SCRIPTS_DIR = os.path.join(ROOT, "tests", "migration")

#: Scripts that run with only the import rename.
SCRIPTS = [
    "extract_features.py",
    "seq2seq_decoding.py",
    "optimizer_tricks.py",
    "sentence_classifier.py",
    "seq2seq_training.py",
]
#: Scripts that do not run yet, with what bert4x lacks; move them to SCRIPTS once it is added.
PENDING = {}

#: Public names defined by bert4keras (HEAD c1ae0dc), per module, plus the imports scripts
#: take from it (`keras`, `K`, `tf` from backend; `uniout` from snippets).
BERT4KERAS_NAMES = {
    "models": """Transformer LM_Mask UniLM_Mask BERT ALBERT ALBERT_Unshared NEZHA RoFormer
        RoFormerV2 ELECTRA GPT GPT2 GPT2_ML T5_Base T5_Encoder T5_Decoder T5
        extend_with_language_model extend_with_unified_language_model data_parallel
        build_transformer_model""",
    "layers": """integerize_shape Layer Model NodeBase Node GlobalAveragePooling1D
        GlobalMaxPooling1D Embedding ScaleOffset Concatenate1D BatchSplit BatchConcat
        MultiHeadAttention GatedAttentionUnit LayerNormalization PositionEmbedding
        SinusoidalPositionEmbedding RelativePositionEmbedding RelativePositionEmbeddingT5
        FeedForward ConditionalRandomField MaximumEntropyMarkovModel GlobalPointer
        EfficientGlobalPointer Loss custom_objects""",
    "optimizers": """Adam LionV2 AdaFactorBase AdaFactorV1 AdaFactorV2 export_to_custom_objects
        extend_with_weight_decay extend_with_weight_decay_v2 extend_with_layer_adaptation
        extend_with_layer_adaptation_v2 extend_with_piecewise_linear_lr
        extend_with_piecewise_linear_lr_v2 extend_with_gradient_accumulation
        extend_with_gradient_accumulation_v2 extend_with_lookahead extend_with_lookahead_v2
        extend_with_lazy_optimization extend_with_lazy_optimization_v2
        extend_with_exponential_moving_average extend_with_exponential_moving_average_v2
        extend_with_parameter_wise_lr extend_with_parameter_wise_lr_v2 Lion AdaFactor
        custom_objects""",
    "snippets": """is_py2 basestring to_array is_string strQ2B string_matching
        convert_to_unicode convert_to_str lowercase_and_normalize open parallel_apply_generator
        parallel_apply sequence_padding truncate_sequences text_segmentate is_one_of
        DataGenerator ViterbiDecoder softmax AutoRegressiveDecoder insert_arguments
        delete_arguments longest_common_substring longest_common_subsequence
        orthogonally_resize WebServing Hook uniout""",
    "tokenizers": "load_vocab save_vocab TokenizerBase Tokenizer SpTokenizer",
    "backend": """keras K tf is_tf_keras do_recompute get_available_gpus gelu_erf gelu_tanh
        set_gelu piecewise_linear search_layer align reshape flatten dtype where
        sequence_masking batch_gather pool1d divisible_temporal_padding root_mean_square swish
        leaky_relu attention_normalize sinusoidal_embeddings Sinusoidal
        apply_rotary_position_embeddings multilabel_categorical_crossentropy
        sparse_multilabel_categorical_crossentropy symbolic graph_mode_decorator
        recompute_grad custom_objects""",
}

_PATH = re.compile(r"`((?:bert4x|keras)(?:\.[A-Za-z_][A-Za-z0-9_]*)*)`")


def doc_sections():
    """{heading: [row cells]} of the docs/migration.md tables whose header is `bert4keras ...`."""
    sections, heading, mapping = {}, None, False
    with open(DOC, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                heading = line[3:].strip()
            if not line.startswith("|"):
                mapping = None  # between tables
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if mapping is None:  # a table's header row
                mapping = cells[0].startswith("bert4keras")
            elif mapping and not set(cells[0]) <= set("-: "):
                sections.setdefault(heading, []).append(cells)
    return sections


def resolve(path):
    """Import the longest importable module prefix of `path`, then getattr the rest."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(path)


def test_every_bert4keras_name_has_a_row():
    sections = doc_sections()
    for module, names in BERT4KERAS_NAMES.items():
        rows = sections[f"`bert4keras.{module}`"]
        listed = [re.findall(r"`([^`]+)`", cells[0]) for cells in rows]
        listed = [name for names_in_row in listed for name in names_in_row]
        assert sorted(listed) == sorted(names.split()), module


def test_every_counterpart_imports_and_every_gone_name_says_why():
    checked = []
    for heading, rows in doc_sections().items():
        for cells in rows:
            assert len(cells) == 3, (heading, cells)
            name, counterpart, note = cells
            paths = _PATH.findall(counterpart)
            if counterpart == "—":
                assert note, f"{heading}: {name} is gone but the note gives no reason"
                continue
            assert paths, f"{heading}: {name}: counterpart {counterpart!r} names nothing"
            for path in paths:
                try:
                    resolve(path)
                except (ImportError, AttributeError) as error:
                    pytest.fail(f"{heading}: {name} -> {path} does not import: {error}")
                checked.append(path)
    assert len(checked) > 60


def test_every_bert4x_name_in_the_prose_imports():
    with open(DOC, encoding="utf-8") as f:
        paths = set(re.findall(r"`(bert4x(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`", f.read()))
    assert len(paths) > 40
    for path in sorted(paths):
        try:
            resolve(path)
        except (ImportError, AttributeError) as error:
            pytest.fail(f"docs/migration.md names {path}, which does not import: {error}")


def test_every_script_is_run_or_pending():
    scripts = {f for f in os.listdir(SCRIPTS_DIR) if f.endswith(".py")}
    assert scripts == set(SCRIPTS) | set(PENDING)
    assert not set(SCRIPTS) & set(PENDING)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_after_import_rename(script, tmp_path):
    with open(os.path.join(SCRIPTS_DIR, script), encoding="utf-8") as f:
        text = f.read()
    assert "bert4keras" in text and "bert4x" not in text
    migrated = tmp_path / script
    migrated.write_text(text.replace("bert4keras", "bert4x"), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(migrated)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{script[:-3]}: ok" in result.stdout, result.stdout[-2000:]
