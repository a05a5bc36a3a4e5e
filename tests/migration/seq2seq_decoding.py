"""bert4keras-style UniLM decoding: an AutoRegressiveDecoder subclass, beam search and sampling.

Written as a bert4keras 0.11 user writes it; tests/test_migration.py runs it after renaming
the package in the imports, and nothing else. The model is a tiny random UniLM, so the check
is on the decoding contract: beam search with topk=1 equals a greedy loop over the full
model, and sampled outputs respect maxlen and the vocabulary.
"""

import json
import os
import tempfile

import numpy as np
from bert4keras.models import build_transformer_model
from bert4keras.snippets import AutoRegressiveDecoder
from bert4keras.tokenizers import Tokenizer

maxlen = 32
work_dir = tempfile.mkdtemp()
config_path = os.path.join(work_dir, "bert_config.json")
dict_path = os.path.join(work_dir, "vocab.txt")

chars = list("新闻标题生成的模型今天气很好我们去公园")
with open(dict_path, "w", encoding="utf-8") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars) + "\n")
with open(config_path, "w") as f:
    json.dump(
        {
            "vocab_size": 5 + len(chars),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "hidden_act": "gelu",
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
        },
        f,
    )

tokenizer = Tokenizer(dict_path, do_lower_case=True)
model = build_transformer_model(config_path, application="unilm")
model.summary()


class AutoTitle(AutoRegressiveDecoder):
    """seq2seq解码器"""

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(model).predict([token_ids, segment_ids])

    def generate(self, text, topk=1):
        max_c_len = maxlen - self.maxlen
        token_ids, segment_ids = tokenizer.encode(text, maxlen=max_c_len)
        output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
        return tokenizer.decode(output_ids)


autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=6)

text = "今天天气很好我们去公园"
title = autotitle.generate(text, topk=3)
print("beam search (topk=3):", title)
assert isinstance(title, str)

# topk=1 is greedy decoding: compare with a loop over the full model
token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen - autotitle.maxlen)
beam_ids = autotitle.beam_search([token_ids, segment_ids], topk=1)
greedy_ids = []
for _ in range(autotitle.maxlen):
    probas = model.predict(
        [np.array([token_ids + greedy_ids]), np.array([segment_ids + [1] * len(greedy_ids)])]
    )
    greedy_ids.append(int(probas[0, -1].argmax()))
    if greedy_ids[-1] == tokenizer._token_end_id:
        break
print("beam search (topk=1):", beam_ids.tolist(), "greedy:", greedy_ids)
assert list(beam_ids) == greedy_ids

# random sampling: n results, each at most maxlen tokens from the vocabulary
results = autotitle.random_sample([token_ids, segment_ids], 3, topk=5)
assert len(results) == 3
for ids in results:
    assert 1 <= len(ids) <= autotitle.maxlen, ids
    assert all(0 <= i < tokenizer._vocab_size for i in ids), ids
    print("random sample:", tokenizer.decode(ids))
print("seq2seq_decoding: ok")
