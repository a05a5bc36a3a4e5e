"""bert4keras-style sentence classification: DataGenerator, CLS Lambda, AdamW with warm-up.

Written as a bert4keras 0.11 user writes it; tests/test_migration.py runs it after renaming
the package in the imports, and nothing else. The task is synthetic (label 1 iff the text
holds '好'), the model is a tiny random BERT, and the script checks that training lowers the
loss and that saved weights load back into a fresh model.
"""

import json
import os
import tempfile

import numpy as np
from bert4keras.backend import keras
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import Adam, extend_with_piecewise_linear_lr, extend_with_weight_decay
from bert4keras.snippets import DataGenerator, sequence_padding
from bert4keras.tokenizers import Tokenizer

maxlen = 16
batch_size = 8
work_dir = tempfile.mkdtemp()
config_path = os.path.join(work_dir, "bert_config.json")
dict_path = os.path.join(work_dir, "vocab.txt")

chars = list("我们你他是很好坏人天气今不错")
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
for _ in range(64):
    text = "".join(np.random.choice(chars, np.random.randint(3, 10)))
    data.append((text, int("好" in text)))

tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """数据生成器"""

    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


def build_model():
    bert = build_transformer_model(config_path=config_path, return_keras_model=False)
    output = keras.layers.Lambda(lambda x: x[:, 0], name="CLS-token")(bert.model.output)
    output = keras.layers.Dense(units=2, activation="softmax", kernel_initializer=bert.initializer)(
        output
    )
    return keras.models.Model(bert.model.input, output)


AdamW = extend_with_weight_decay(Adam, "AdamW")
AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")

model = build_model()
model.summary()
model.compile(
    loss="sparse_categorical_crossentropy",
    optimizer=AdamWLR(
        learning_rate=2e-3,
        weight_decay_rate=0.01,
        exclude_from_weight_decay=["Norm", "bias"],
        lr_schedule={4: 1, 80: 0.1},
    ),
    metrics=["accuracy"],
)

train_generator = data_generator(data, batch_size)


def evaluate(data):
    total, right = 0.0, 0.0
    for x_true, y_true in data:
        y_pred = model.predict(x_true).argmax(axis=1)
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


history = model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=10)
losses = history.history["loss"]
print("loss per epoch:", losses, "train acc:", evaluate(train_generator))
assert losses[-1] < 0.8 * losses[0], losses

weights_path = os.path.join(work_dir, "best_model.weights.h5")
model.save_weights(weights_path)
x_true, _ = next(iter(train_generator))
expected = model.predict(x_true)
model = build_model()
model.load_weights(weights_path)
assert np.allclose(model.predict(x_true), expected, atol=1e-5)
print("sentence_classifier: ok")
