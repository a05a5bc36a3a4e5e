"""pretraining/: whole-word masking, UniLM/LM examples, TFRecords, and smoke pretraining runs.

Word boundaries are checked against the segmenter's own output on Chinese-only sentences
(one token per character in a character vocabulary, as Google's Chinese BERT); the smoke runs
train a tiny model on the bundled corpus under MirroredStrategy over two logical CPUs, in
subprocesses, and reload the original-format checkpoint they write.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINING = os.path.join(ROOT, "pretraining")


def _load_data_module():
    spec = importlib.util.spec_from_file_location(
        "pretraining_data", os.path.join(PRETRAINING, "data.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = _load_data_module()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(documents, vocab path, segmenter) of the bundled corpus and word list."""
    documents = data.read_documents(data.SAMPLE_CORPUS)
    vocab = data.corpus_vocab(documents, str(tmp_path_factory.mktemp("vocab") / "vocab.txt"))
    with open(data.SAMPLE_WORDS, encoding="utf-8") as file:
        segmenter = data.MaxMatchSegmenter(file)
    return documents, vocab, segmenter


def _chinese_sentences(documents):
    """Sentences without ASCII: in a character vocab every character is exactly one token."""
    sentences = [s for d in documents for line in d for s in data.split_sentences(line)]
    return [s for s in sentences if not re.search(r"[ -~]", s)]


def test_max_match_segmenter_prefers_the_longest_word():
    segment = data.MaxMatchSegmenter(["机器", "机器学习", "学习", "深度"])
    assert segment("机器学习和深度学习") == ["机器学习", "和", "深度", "学习"]
    assert segment("BERT 模型v2学习") == ["BERT", "模", "型", "v2", "学习"]


def test_words_follow_the_segmenter_and_wordpiece(corpus):
    documents, vocab, segmenter = corpus
    with_words = data.WordTokenizer(vocab, True, segmenter)
    plain = data.WordTokenizer(vocab, True)
    token_dict = data.load_vocab(vocab)
    for sentence in _chinese_sentences(documents):
        words = with_words.words(sentence)
        assert [len(w) for w in words] == [len(w) for w in segmenter(sentence)]
        assert [t for w in words for t in w] == [token_dict[c] for c in sentence]
        assert all(len(w) == 1 for w in plain.words(sentence))  # no segmenter: characters
    english = "masked language modeling hides some words"
    words = plain.words(english)  # no segmenter: a word is a token and its '##' pieces
    assert len(words) == len(english.split())
    pieces = plain.tokenizer.tokenize(english)
    assert [t for w in words for t in w] == plain.tokenizer.tokens_to_ids(pieces)
    assert any(len(w) > 1 for w in words)


def test_whole_word_masking_selects_whole_words_at_15_percent(corpus):
    documents, vocab, segmenter = corpus
    word_tokenizer = data.WordTokenizer(vocab, True, segmenter)
    ids = word_tokenizer.ids
    sentences = _chinese_sentences(documents)
    rng = np.random.default_rng(0)
    examples = data.build_examples(
        "mlm", [[s] for s in sentences], word_tokenizer, 128, rng, dupe_factor=40
    )
    assert len(examples) == 40 * len(sentences)  # one example per sentence and pass
    token_dict = data.load_vocab(vocab)
    selected_words = all_words = long_selected = 0
    replaced = {"mask": 0, "kept": 0, "random": 0}
    for k, example in enumerate(examples):
        sentence = sentences[k % len(sentences)]
        original = np.array([ids["[CLS]"]] + [token_dict[c] for c in sentence] + [ids["[SEP]"]])
        inputs, labels = np.array(example["token_ids"]), np.array(example["labels"])
        assert len(inputs) == len(labels) == len(original)
        assert example["segment_ids"] == [0] * len(inputs)
        chosen = labels != 0
        assert not chosen[0] and not chosen[-1]  # [CLS] and [SEP] are never targets
        np.testing.assert_array_equal(labels[chosen], original[chosen])
        np.testing.assert_array_equal(inputs[~chosen], original[~chosen])
        start = 1
        for word in segmenter(sentence):
            span = chosen[start : start + len(word)]
            assert span.all() or not span.any(), (sentence, word)
            selected_words += bool(span.all())
            long_selected += bool(span.all()) and len(word) > 1
            all_words += 1
            start += len(word)
        replaced["mask"] += int(np.sum(inputs[chosen] == ids["[MASK]"]))
        replaced["kept"] += int(np.sum(inputs[chosen] == original[chosen]))
        special = np.isin(inputs[chosen], list(ids.values()))
        replaced["random"] += int(np.sum((inputs[chosen] != original[chosen]) & ~special))
    assert all_words > 20000 and long_selected > 1000
    assert 0.14 < selected_words / all_words < 0.16
    targets = sum(replaced.values())
    assert 0.77 < replaced["mask"] / targets < 0.83
    assert 0.07 < replaced["kept"] / targets < 0.13  # (a random draw of itself counts here)
    assert 0.07 < replaced["random"] / targets < 0.13


def test_unilm_and_lm_examples_keep_every_token_in_order(corpus):
    documents, vocab, segmenter = corpus
    word_tokenizer = data.WordTokenizer(vocab, True, segmenter)
    ids = word_tokenizer.ids
    token_dict = data.load_vocab(vocab)
    sentences = _chinese_sentences(documents)
    pairs = [sentences[i : i + 2] for i in range(0, len(sentences) - 1, 2)]
    rng = np.random.default_rng(1)
    unilm = data.build_examples("unilm", pairs, word_tokenizer, 128, rng)
    lm = data.build_examples("lm", pairs, word_tokenizer, 128, rng)
    assert len(unilm) == len(lm) == len(pairs)
    for pair, u, g in zip(pairs, unilm, lm):
        text = [token_dict[c] for c in "".join(pair)]
        tokens, segments = np.array(u["token_ids"]), np.array(u["segment_ids"])
        source = int(np.sum(segments == 0))
        assert segments.tolist() == [0] * source + [1] * (len(tokens) - source)
        assert tokens[0] == ids["[CLS]"] and tokens[source - 1] == tokens[-1] == ids["[SEP]"]
        assert tokens[1 : source - 1].tolist() + tokens[source:-1].tolist() == text
        assert len(tokens[source:-1]) > 0
        assert g["token_ids"] == [ids["[CLS]"]] + text + [ids["[SEP]"]]


def test_long_documents_are_packed_within_the_sequence_length(corpus):
    documents, vocab, segmenter = corpus
    word_tokenizer = data.WordTokenizer(vocab, True, segmenter)
    for task in data.TASKS:
        examples = data.build_examples(
            task, documents, word_tokenizer, 24, np.random.default_rng(2)
        )
        assert max(len(e["token_ids"]) for e in examples) <= 24
        if task != "unilm":  # unilm drops one-word chunks; mlm and lm keep every token
            content = sum(len(e["token_ids"]) - 2 for e in examples)
            expected = sum(
                len(t)
                for d in documents
                for line in d
                for s in data.split_sentences(line)
                for t in word_tokenizer.words(s)
            )
            assert content == expected


# ----------------------------------------------------------------------------- TFRecords


@pytest.mark.parametrize("task", data.TASKS)
def test_tfrecords_round_trip_and_batches(corpus, task, tmp_path):
    pytest.importorskip("tensorflow")
    documents, vocab, segmenter = corpus
    word_tokenizer = data.WordTokenizer(vocab, True, segmenter)
    examples = data.build_examples(task, documents, word_tokenizer, 48, np.random.default_rng(3))
    path = str(tmp_path / f"{task}.tfrecord")
    assert data.write_records(path, examples, task) == len(examples)
    parsed = data.read_records(path, task)
    assert len(parsed) == len(examples)
    for written, read in zip(examples, parsed):
        assert set(read) == set(data.feature_names(task))
        for name, value in read.items():
            np.testing.assert_array_equal(value, np.array(written[name], dtype=value.dtype))

    batches = data.load_dataset(path, task, batch_size=4, sequence_length=48, shuffle=False)
    (token_ids, segment_ids), labels = next(iter(batches))
    assert token_ids.shape == segment_ids.shape == labels.shape == (4, 48)
    for row, written in enumerate(examples[:4]):
        n = len(written["token_ids"])
        tokens = token_ids[row].numpy()
        np.testing.assert_array_equal(tokens[:n], written["token_ids"])
        assert not tokens[n:].any()  # padded with 0
        if task == "mlm":
            expected = np.pad(written["labels"], (0, 48 - n))
        else:  # position i predicts token i + 1 where that token is a target
            following = np.append(tokens[1:], 0)
            segments = np.append(segment_ids[row].numpy()[1:], 0)
            target = segments == 1 if task == "unilm" else following != 0
            expected = np.where(target, following, 0)
        np.testing.assert_array_equal(labels[row].numpy(), expected)


def test_command_line_writes_the_records_it_reports(corpus, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    _, vocab, _ = corpus
    output = str(tmp_path / "unilm.tfrecord")
    data.main(
        ["--task", "unilm", "--corpus", data.SAMPLE_CORPUS, "--vocab", vocab, "--output", output]
        + ["--segmenter", data.SAMPLE_WORDS, "--sequence-length", "40", "--do-lower-case"]
    )
    report = json.loads(capsys.readouterr().out)
    records = data.read_records(output, "unilm")
    assert report["examples"] == len(records) > 20
    assert all(len(r["token_ids"]) <= 40 and r["segment_ids"].max() == 1 for r in records)
    if importlib.util.find_spec("jieba") is None:
        with pytest.raises(ValueError, match="pip install jieba"):
            data.load_segmenter("jieba")


# ----------------------------------------------------------------------------- smoke runs


def _start_pretraining(output_dir, task, strategy, devices=None, fused=False):
    """pretrain.py --smoke in a subprocess; fused: --jit-compile fused, XLA's HLO dumped."""
    command = [sys.executable, os.path.join(PRETRAINING, "pretrain.py"), "--smoke"]
    command += ["--task", task, "--strategy", strategy, "--output-dir", str(output_dir)]
    if devices:
        command += ["--devices", str(devices)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if fused:
        command += ["--jit-compile", "fused"]
        env["XLA_FLAGS"] = f"--xla_dump_to={output_dir / 'hlo'}"
    with open(output_dir / "stdout.txt", "w") as out, open(output_dir / "stderr.txt", "w") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, env=env)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """{(task, strategy[, "fused"]): (output dir, window losses, stdout)}, run in parallel."""
    pytest.importorskip("tensorflow")
    started = {}
    for task, strategy, devices, fused in (
        ("mlm", "mirrored", 2, False),
        ("unilm", "mirrored", 2, False),
        ("mlm", "default", None, False),
        ("mlm", "mirrored", 2, True),
    ):
        key = (task, strategy, "fused") if fused else (task, strategy)
        directory = tmp_path_factory.mktemp("_".join(key))
        process = _start_pretraining(directory, task, strategy, devices, fused)
        started[key] = directory, process
    runs = {}
    for key, (directory, process) in started.items():
        process.wait(timeout=600)
        stdout = (directory / "stdout.txt").read_text()
        assert process.returncode == 0, (directory / "stderr.txt").read_text()[-4000:]
        with open(os.path.join(directory, "history.json"), encoding="utf-8") as file:
            runs[key] = directory, [entry["loss"] for entry in json.load(file)], stdout
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mlm", "unilm"])
def test_smoke_pretraining_on_two_devices_learns_and_writes_checkpoints(smoke_runs, task):
    import keras

    from bert4x.checkpoints import load_weights_from_checkpoint
    from bert4x.models import build_transformer_model

    directory, losses, stdout = smoke_runs[task, "mirrored"]
    assert "MirroredStrategy with 2 replicas" in stdout
    assert len(losses) == 4 and np.all(np.isfinite(losses))
    assert np.all(np.diff(losses) < 0), losses  # mean loss of each 10 updates goes down
    with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as file:
        vocab_size = sum(1 for line in file if line.strip())
    assert losses[-1] < np.log(vocab_size) - 0.5  # below a uniform guess over the vocabulary

    import tensorflow as tf

    final = os.path.join(directory, "bert_model.ckpt")
    reader = tf.train.load_checkpoint(final)
    names = reader.get_variable_to_shape_map()
    assert "bert/embeddings/word_embeddings" in names
    assert "cls/predictions/output_bias" in names
    assert "bert/encoder/layer_0/attention/self/query/kernel" in names
    assert int(reader.get_tensor("global_step")) == 40
    assert (
        int(
            tf.train.load_checkpoint(os.path.join(directory, "model.ckpt-20")).get_tensor(
                "global_step"
            )
        )
        == 20
    )

    application = {"mlm": "encoder", "unilm": "unilm"}[task]
    config = os.path.join(directory, "bert_config.json")
    model = build_transformer_model(
        config, model="bert", application=application, with_mlm="linear"
    )
    report = load_weights_from_checkpoint(model, final)  # strict: raises on any mismatch
    assert report.unused == []
    assert len(report.loaded) == len(model.weights)
    probe = np.load(os.path.join(directory, "probe.npz"))
    logits = model([probe["token_ids"], probe["segment_ids"]], training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits), probe["logits"], atol=1e-5)

    middle = build_transformer_model(
        config, os.path.join(directory, "model.ckpt-20"), application=application, with_mlm="linear"
    )
    earlier = keras.ops.convert_to_numpy(middle([probe["token_ids"], probe["segment_ids"]]))
    assert np.abs(earlier - probe["logits"]).max() > 1e-3  # the model kept training after 20


@pytest.mark.slow
def test_smoke_pretraining_is_the_same_on_one_and_two_devices(smoke_runs):
    import tensorflow as tf

    one_dir, one_losses, stdout = smoke_runs["mlm", "default"]
    two_dir, two_losses, _ = smoke_runs["mlm", "mirrored"]
    assert "with 1 replicas" in stdout
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5, atol=1e-5)
    one = tf.train.load_checkpoint(os.path.join(one_dir, "bert_model.ckpt"))
    two = tf.train.load_checkpoint(os.path.join(two_dir, "bert_model.ckpt"))
    names = sorted(one.get_variable_to_shape_map())
    assert names == sorted(two.get_variable_to_shape_map())
    for name in names:
        np.testing.assert_allclose(
            two.get_tensor(name), one.get_tensor(name), rtol=1e-5, atol=1e-5, err_msg=name
        )


@pytest.mark.slow
def test_smoke_pretraining_with_fused_xla_matches_and_compiles_elementwise_only(smoke_runs):
    """--jit-compile fused under MirroredStrategy: XLA compiled clusters, none with a matmul,
    and training is the same as without it."""
    import tensorflow as tf
    from test_xla import assert_xla_compiled_elementwise_only

    fused_dir, fused_losses, _ = smoke_runs["mlm", "mirrored", "fused"]
    plain_dir, plain_losses, _ = smoke_runs["mlm", "mirrored"]
    assert_xla_compiled_elementwise_only(fused_dir / "hlo")
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-4)
    fused = tf.train.load_checkpoint(os.path.join(fused_dir, "bert_model.ckpt"))
    plain = tf.train.load_checkpoint(os.path.join(plain_dir, "bert_model.ckpt"))
    for name in sorted(plain.get_variable_to_shape_map()):
        np.testing.assert_allclose(
            fused.get_tensor(name), plain.get_tensor(name), rtol=1e-3, atol=1e-4, err_msg=name
        )
