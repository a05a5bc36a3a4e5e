"""bert4keras-style derived optimizers: gradient accumulation and an EMA of the weights.

Written as a bert4keras 0.11 user writes it; tests/test_migration.py runs it after renaming
the package in the imports, and nothing else. A tiny random BERT classifier is trained with
`train_on_batch`; the script checks that accumulation updates the weights only every
`grad_accum_steps` batches, and that `apply_ema_weights` loads the bias-corrected moving
average of the weights (recomputed here with numpy) and `reset_old_weights` restores them.
"""

import json
import os
import tempfile

import numpy as np
from bert4keras.backend import keras
from bert4keras.models import build_transformer_model
from bert4keras.optimizers import (
    Adam,
    extend_with_exponential_moving_average,
    extend_with_gradient_accumulation,
)

config = {
    "vocab_size": 20,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
}

config_path = os.path.join(tempfile.mkdtemp(), "bert_config.json")
with open(config_path, "w") as f:
    json.dump(config, f)

np.random.seed(0)
token_ids = np.random.randint(5, 20, size=(8, 10))
segment_ids = np.zeros_like(token_ids)
labels = (token_ids[:, 1] > 12).astype("int32")


def build_model(optimizer):
    bert = build_transformer_model(config_path, with_pool=True, return_keras_model=False)
    output = keras.layers.Dense(2, activation="softmax")(bert.model.output)
    model = keras.models.Model(bert.model.input, output)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=optimizer)
    return model


# gradient accumulation: weights change once per grad_accum_steps batches
AdamGA = extend_with_gradient_accumulation(Adam, name="AdamGA")
model = build_model(AdamGA(learning_rate=1e-3, grad_accum_steps=3))
changes = 0
for step in range(6):
    before = model.get_weights()
    model.train_on_batch([token_ids, segment_ids], labels)
    after = model.get_weights()
    changed = any(not np.array_equal(a, b) for a, b in zip(before, after))
    print("batch", step + 1, "weights changed:", changed)
    changes += changed
    if step == 0:
        assert not changed, "the first batch only accumulates"
assert 1 <= changes <= 2, changes

# exponential moving average of the weights
AdamEMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
ema_momentum = 0.9
optimizer = AdamEMA(learning_rate=1e-2, ema_momentum=ema_momentum)
model = build_model(optimizer)
ema = [np.zeros(w.shape) for w in model.get_weights()]
steps = 5
for _ in range(steps):
    model.train_on_batch([token_ids, segment_ids], labels)
    ema = [ema_momentum * e + (1 - ema_momentum) * w for e, w in zip(ema, model.get_weights())]
trained = model.get_weights()
expected = [e / (1 - ema_momentum**steps) for e in ema]

optimizer.apply_ema_weights()
for w, e in zip(model.get_weights(), expected):
    assert np.allclose(w, e, atol=1e-5), np.abs(w - e).max()
assert any(not np.allclose(w, t) for w, t in zip(model.get_weights(), trained))
probas = model.predict([token_ids, segment_ids])
print("EMA weights, accuracy:", (probas.argmax(axis=1) == labels).mean())
optimizer.reset_old_weights()
for w, t in zip(model.get_weights(), trained):
    assert np.array_equal(w, t)
print("optimizer_tricks: ok")
