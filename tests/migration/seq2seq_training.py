"""bert4keras-style UniLM seq2seq training: a `Loss` layer written with `K`, fit on a generator.

Written as a bert4keras 0.11 user writes it (the task_seq2seq_autotitle pattern);
tests/test_migration.py runs it after renaming the package in the imports, and nothing else.
The task is synthetic (the title is the first three characters of the content), the model a
tiny random UniLM; the script checks that the loss falls and that the decoder returns a
bounded title.
"""

import json
import os
import tempfile

import numpy as np
from bert4keras.backend import K, keras
from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import Adam
from bert4keras.snippets import AutoRegressiveDecoder, DataGenerator, sequence_padding
from bert4keras.tokenizers import Tokenizer

maxlen = 24
batch_size = 8
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
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "max_position_embeddings": 64,
            "type_vocab_size": 2,
        },
        f,
    )

np.random.seed(42)
data = []
for _ in range(32):
    content = "".join(np.random.choice(chars, np.random.randint(6, 12)))
    data.append((content[:3], content))

tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """数据生成器"""

    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (title, content) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(content, title, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    """交叉熵作为loss，并mask掉输入部分"""

    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]  # 目标token_ids
        y_mask = y_mask[:, 1:]  # segment_ids，刚好指示了要预测的部分
        y_pred = y_pred[:, :-1]  # 预测序列，错开一位
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


model = build_transformer_model(config_path, application="unilm")
output = CrossEntropy(2)(model.inputs + model.outputs)
model = keras.models.Model(model.inputs, output)
model.compile(optimizer=Adam(2e-3))
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


autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=8)

train_generator = data_generator(data, batch_size)
history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=8)
losses = history.history["loss"]
print("loss per epoch:", losses)
assert losses[-1] < 0.9 * losses[0], losses

title, content = data[0]
generated = autotitle.generate(content, topk=2)
print(content, "->", generated, "(target:", title + ")")
assert len(tokenizer.tokenize(generated)) - 2 <= autotitle.maxlen
print("seq2seq_training: ok")
