"""The README's example runs as written, on tiny files it expects in the working directory."""

import json
import os
import re

import numpy as np

from bert4x.checkpoints import save_weights_as_checkpoint
from bert4x.models import build_transformer_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_example():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        text = file.read()
    return re.search(r"## Example.*?```python\n(.*?)```", text, re.S).group(1)


def test_readme_example_fine_tunes_from_original_files(tmp_path, monkeypatch):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"今天气很好是晴"]
    config = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64, hidden_act="gelu",
                  max_position_embeddings=64, type_vocab_size=2)  # fmt: skip
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "bert_config.json").write_text(json.dumps(config))
    original = build_transformer_model(config, with_pool=True)
    save_weights_as_checkpoint(original, str(tmp_path / "bert_model.ckpt"))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(readme_example(), namespace)  # noqa: S102 - the README's own code
    pooler = original.get_layer("Pooler-Dense").get_weights()[0]
    assert namespace["tokenizer"].tokenize("今天") == ["[CLS]", "今", "天", "[SEP]"]
    # Loaded from the checkpoint (the warm-up schedule starts at lr 0, so one step barely moves it).
    loaded = namespace["bert"].get_layer("Pooler-Dense").get_weights()[0]
    np.testing.assert_allclose(loaded, pooler, atol=1e-4)
    probabilities = namespace["model"].predict(namespace["inputs"], verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
