"""bert4x: BERT-family Transformers for Keras 3 in the bert4keras tradition.

Modules: `bert4x.backend` (ops and masks), `bert4x.layers`, `bert4x.models`
(`build_transformer_model`), `bert4x.checkpoints` (original checkpoint I/O),
`bert4x.optimizers`, `bert4x.tokenizers`, `bert4x.snippets`, `bert4x.generation`,
`bert4x.xla` (XLA for the elementwise work only, on TensorFlow).
"""

__version__ = "0.1.0"
