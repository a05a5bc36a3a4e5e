"""The Transformer builder base: hyper-parameters, `apply`, attention options, name maps."""

import contextlib

import keras

from bert4x.backend import get_activation
from bert4x.layers import (
    AttentionBias,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    NystromAttention,
)


class Transformer:
    """Base builder: the hyper-parameters of bert_config.json plus bert4keras options."""

    #: epsilon of the family's LayerNorms when the config has no `layer_norm_eps`.
    default_layer_norm_eps = 1e-12
    #: attention mask of the application: 'encoder', 'lm' or 'unilm' (mask mixins set it).
    attention_mode = "encoder"
    #: whether dense layers (attention, FFN, mappings, pooler) carry biases.
    use_bias = True

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        hidden_act="gelu",
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        embedding_size=None,
        attention_head_size=None,
        attention_key_size=None,
        sequence_length=None,
        keep_tokens=None,
        compound_tokens=None,
        layer_norm_eps=None,
        initializer_range=0.02,
        residual_attention_scores=False,
        attention_scale="default",
        training_length=512,
        entropy_floor=16,
        attention_type="full",
        num_landmarks=64,
        pinv_iterations=6,
        nystrom_conv_kernel_size=None,
        recompute=False,
        prefix=None,
        name=None,
    ):
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens is not None:
            vocab_size += len(compound_tokens)
        if hidden_size % num_attention_heads and attention_head_size is None:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_attention_heads="
                f"{num_attention_heads}; set attention_head_size explicitly"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = get_activation(hidden_act)
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.sequence_length = sequence_length
        self.keep_tokens = keep_tokens
        self.compound_tokens = compound_tokens
        self.layer_norm_eps = layer_norm_eps or self.default_layer_norm_eps
        self.initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.attention_options = attention_options(
            self.attention_mode,
            residual_attention_scores,
            attention_scale,
            training_length,
            entropy_floor,
            attention_type,
            num_landmarks,
            pinv_iterations,
            nystrom_conv_kernel_size,
        )
        self.residual_attention_scores = residual_attention_scores
        self.attention_scores = None
        self.recompute = recompute
        self.prefix = prefix or ""
        self.name = name
        self.layers = {}
        self.inputs = self.outputs = self.model = None
        self.attention_bias = self.position_bias = None
        self.layer_norm_conds = (None, None, None)
        #: set by bert4x.generation while it runs the layers with key/value caches.
        self.cache_context = None

    # ----------------------------------------------------------------- building
    def build(
        self,
        layer_norm_cond=None,
        layer_norm_cond_hidden_size=None,
        layer_norm_cond_hidden_act=None,
        additional_input_layers=None,
    ):
        """Create `self.model`; `layer_norm_cond` (tensor or int size) makes each LN conditional."""
        inputs = self.get_inputs()
        extra = additional_input_layers if additional_input_layers is not None else []
        extra = list(extra) if isinstance(extra, (list, tuple)) else [extra]
        if isinstance(layer_norm_cond, int):
            layer_norm_cond = self.apply(
                layer=keras.Input, shape=(layer_norm_cond,), name="Input-LayerNorm-Condition"
            )
            extra.append(layer_norm_cond)
        elif layer_norm_cond is not None and not extra:
            raise ValueError(
                "layer_norm_cond is a tensor: pass the keras.Input(s) it is computed from as "
                "additional_input_layers, or pass an int size to let the model add the input"
            )
        self.layer_norm_conds = (
            layer_norm_cond,
            layer_norm_cond_hidden_size,
            layer_norm_cond_hidden_act or "linear",
        )
        self.inputs = inputs + extra
        self.additional_inputs = extra
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        self.outputs = self.apply_final_layers(x)
        self.model = keras.Model(self.inputs, self.outputs, name=self.name)
        self.model.bert4x_builder = self
        return self.model

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Create the layer named `name` once (prefixed), then call it on `inputs`."""
        if layer is keras.layers.Dropout and kwargs.get("rate", 0) == 0:
            return inputs
        name = self.prefix + kwargs["name"]
        kwargs["name"] = name
        if layer is keras.Input:
            return layer(**kwargs)
        if name not in self.layers:
            with self.layer_scope(layer):
                self.layers[name] = layer(**kwargs)
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    def layer_scope(self, layer):
        """keras.RematScope for attention and FFN layers when recompute=True (checkpointing)."""
        if self.recompute and issubclass(layer, (MultiHeadAttention, FeedForward)):
            return keras.RematScope(mode="full")
        return contextlib.nullcontext()

    def norm(self, x, name, **kwargs):
        """LayerNorm named `name`, conditional on `layer_norm_cond` when the model has one."""
        cond, hidden_units, hidden_act = self.layer_norm_conds
        if self.cache_context is not None:
            cond = self.cache_context.condition
        return self.apply(
            inputs=x if cond is None else [x, cond],
            layer=LayerNormalization,
            conditional=cond is not None,
            hidden_units=hidden_units,
            hidden_activation=hidden_act,
            hidden_initializer=self.initializer,
            epsilon=self.layer_norm_eps,
            name=name,
            **kwargs,
        )

    def dropout(self, x, name):
        """Dropout named `name` at the model's dropout_rate (no layer when the rate is 0)."""
        return self.apply(inputs=x, layer=keras.layers.Dropout, rate=self.dropout_rate, name=name)

    def compute_attention_bias(self, inputs):
        """The one attention bias of the model (padding + the application's mask)."""
        if self.cache_context is not None:
            return self.cache_context.attention_bias
        if self.attention_bias is None:
            if self.attention_mode == "unilm" and self.segment_vocab_size == 0:
                raise ValueError(
                    "application='unilm' reads the segment ids; segment_vocab_size=0 removes them"
                )
            bias_inputs = inputs[:2] if self.attention_mode == "unilm" else inputs[0]
            self.attention_bias = self.apply(
                inputs=bias_inputs,
                layer=AttentionBias,
                mode=self.attention_mode,
                name="Attention-Bias",
            )
        return self.attention_bias

    def get_inputs(self):
        """The model's keras.Input tensors (token ids, segment ids, ...)."""
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        """Embedding layers from the inputs to the first block's input [b, n, D]."""
        raise NotImplementedError

    def apply_main_layers(self, x, index):
        """Transformer block `index` applied to x [b, n, D]."""
        raise NotImplementedError

    def apply_final_layers(self, x):
        """Heads on the last hidden states; the model's outputs."""
        raise NotImplementedError

    # -------------------------------------------------------------- checkpoints
    def variable_mapping(self):
        """{Keras weight path without prefix: original checkpoint variable name}."""
        raise NotImplementedError

    #: weight paths (without prefix) that must be gathered by keep_tokens/compound_tokens.
    vocab_weight_paths = ("Embedding-Token/embeddings", "MLM-Bias/bias")
    #: weight paths stored transposed in the original checkpoint.
    transposed_weight_paths = ("NSP-Proba/kernel",)

    def is_new_weight(self, path):
        """True for weights no original checkpoint has (conditional LN deltas, Nystrom conv)."""
        return path.endswith(("/hidden_kernel", "/gamma_kernel", "/beta_kernel", "/conv_kernel"))

    def load_weights_from_checkpoint(self, checkpoint):
        """Strictly load an original checkpoint (path or {name: array}); see bert4x.checkpoints."""
        from bert4x.checkpoints import load_weights_from_checkpoint

        return load_weights_from_checkpoint(self, checkpoint)


def attention_options(
    attention_mode,
    residual_attention_scores,
    attention_scale,
    training_length,
    entropy_floor,
    attention_type,
    num_landmarks,
    pinv_iterations,
    nystrom_conv_kernel_size,
):
    """The attention layer class and its variant arguments, checked against each other."""
    if attention_type == "full":
        return {
            "layer": MultiHeadAttention,
            "attention_scale": attention_scale,
            "training_length": training_length,
            "entropy_floor": entropy_floor,
            "return_attention_scores": residual_attention_scores,
        }
    if attention_type != "nystrom":
        raise ValueError(f"attention_type must be 'full' or 'nystrom', received {attention_type!r}")
    if attention_mode != "encoder":
        raise ValueError(
            f"attention_type='nystrom' needs a bidirectional encoder: its landmarks mix future "
            f"tokens, so application={attention_mode!r} cannot use it"
        )
    if residual_attention_scores or attention_scale != "default":
        raise ValueError(
            "attention_type='nystrom' has no score matrix: it works with neither "
            "residual_attention_scores nor attention_scale='entropy_invariant'"
        )
    return {
        "layer": NystromAttention,
        "num_landmarks": num_landmarks,
        "pinv_iterations": pinv_iterations,
        "conv_kernel_size": nystrom_conv_kernel_size,
    }


def dense_names(layer, checkpoint, bias=True):
    """Mapping of a Dense-like weight group: layer/kernel (+ layer/bias)."""
    names = {f"{layer}/kernel": f"{checkpoint}/kernel"}
    if bias:
        names[f"{layer}/bias"] = f"{checkpoint}/bias"
    return names


def norm_names(layer, checkpoint):
    """Mapping of a LayerNorm: gamma and beta."""
    return {f"{layer}/gamma": f"{checkpoint}/gamma", f"{layer}/beta": f"{checkpoint}/beta"}


def attention_names(layer, checkpoint, output="output/dense"):
    """Mapping of MultiHeadAttention: q, k, v under checkpoint/self/, o under checkpoint/output."""
    names = {}
    for short, long in (("q", "query"), ("k", "key"), ("v", "value")):
        names.update(dense_names(f"{layer}/{short}_dense", f"{checkpoint}/self/{long}"))
    names.update(dense_names(f"{layer}/o_dense", f"{checkpoint}/{output}"))
    return names
