"""bert4keras-style feature extraction: config json + vocab.txt -> Tokenizer -> BERT features.

Written as a bert4keras 0.11 user writes it; tests/test_migration.py runs it after renaming
the package in the imports, and nothing else. It builds from a config (no checkpoint) and
checks itself.
"""

import json
import os
import tempfile

import numpy as np
from bert4keras.models import build_transformer_model
from bert4keras.snippets import sequence_padding, to_array
from bert4keras.tokenizers import Tokenizer, load_vocab

work_dir = tempfile.mkdtemp()
config_path = os.path.join(work_dir, "bert_config.json")
dict_path = os.path.join(work_dir, "vocab.txt")

tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##语", "中国"]
tokens += list("语言模型我们是好人的") + ["hello", "world", "##s"]
with open(dict_path, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens) + "\n")

config = {
    "vocab_size": len(tokens),
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
}
with open(config_path, "w") as f:
    json.dump(config, f)

tokenizer = Tokenizer(dict_path, do_lower_case=True)
model = build_transformer_model(config_path, None)

# encode and predict
assert tokenizer.tokenize("语言模型") == ["[CLS]", "语", "言", "模", "型", "[SEP]"]
token_ids, segment_ids = tokenizer.encode("语言模型")
token_ids, segment_ids = to_array([token_ids], [segment_ids])
features = model.predict([token_ids, segment_ids])
print(features)
assert features.shape == (1, 6, 32), features.shape

# padding does not change the features of the real tokens
texts = ["我们是好人", "hello worlds"]
batch_token_ids, batch_segment_ids = [], []
for text in texts:
    token_ids, segment_ids = tokenizer.encode(text)
    batch_token_ids.append(token_ids)
    batch_segment_ids.append(segment_ids)
batch_token_ids = sequence_padding(batch_token_ids)
batch_segment_ids = sequence_padding(batch_segment_ids)
batch_features = model.predict([batch_token_ids, batch_segment_ids])
for i, text in enumerate(texts):
    token_ids, segment_ids = tokenizer.encode(text)
    single = model.predict(to_array([token_ids], [segment_ids]))[0]
    assert np.allclose(batch_features[i, : len(token_ids)], single, atol=1e-4), text

# a simplified vocabulary and keep_tokens slice the embeddings
token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
)
assert "##语" not in token_dict and "中国" not in token_dict
assert len(keep_tokens) == len(token_dict) < len(tokens)
tokenizer = Tokenizer(token_dict, do_lower_case=True)
model = build_transformer_model(config_path, with_mlm=True, keep_tokens=keep_tokens)
embeddings = model.get_layer("Embedding-Token").get_weights()[0]
assert embeddings.shape == (len(keep_tokens), 32), embeddings.shape

token_ids, segment_ids = tokenizer.encode("我们是好人")
token_ids[3] = tokenizer._token_mask_id
probas = model.predict(to_array([token_ids], [segment_ids]))[0]
assert probas.shape == (len(token_ids), len(token_dict))
assert np.allclose(probas.sum(axis=-1), 1, atol=1e-5)
print("filled [MASK] with:", tokenizer.decode(probas[3:4].argmax(axis=1)))
print("extract_features: ok")
