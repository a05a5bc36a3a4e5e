"""Transformer builders in the bert4keras shape, and `build_transformer_model`.

A builder runs get_inputs -> apply_embeddings -> apply_main_layers(i) ->
apply_final_layers; every layer goes through `self.apply(...)` keyed by its
bert4keras name, so ALBERT's sharing and prefixes live in one place. Each
family also knows its original checkpoint names (`variable_mapping`).
"""

import contextlib

import keras

from bert4x.backend import get_activation
from bert4x.layers import (
    Add,
    AttentionBias,
    BiasAdd,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    NystromAttention,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
    TakeFirst,
)
from bert4x.model_config import load_config, split_arguments


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
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, x, index):
        raise NotImplementedError

    def apply_final_layers(self, x):
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


class BERT(Transformer):
    """BERT / RoBERTa (arXiv 1810.04805): embeddings -> Post-LN blocks -> pooler/NSP/MLM heads."""

    def __init__(
        self,
        max_position=512,
        segment_vocab_size=2,
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        hierarchical_position=None,
        custom_position_ids=False,
        shared_segment_embeddings=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size
        self.with_pool = with_pool or with_nsp
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids
        self.shared_segment_embeddings = shared_segment_embeddings

    def get_inputs(self):
        shape = (self.sequence_length,)
        inputs = [self.apply(layer=keras.Input, shape=shape, dtype="int32", name="Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(
                self.apply(layer=keras.Input, shape=shape, dtype="int32", name="Input-Segment")
            )
        if self.custom_position_ids:
            inputs.append(
                self.apply(layer=keras.Input, shape=shape, dtype="int32", name="Input-Position")
            )
        return inputs

    def position_ids_input(self, inputs):
        """The Input-Position tensor, or None when positions are 0..n-1."""
        if self.cache_context is not None and self.custom_position_ids:
            return self.cache_context.position_ids
        return inputs[-1] if self.custom_position_ids else None

    def position_arguments(self):
        """Call arguments of the position layers: explicit ids while decoding with a cache."""
        if self.cache_context is None or self.custom_position_ids:
            return None
        return {"position_ids": self.cache_context.position_ids}

    def token_and_segment_embeddings(self, inputs):
        """E_tok[ids] (+ E_seg[segment_ids]), the masked embedding sum [b, n, E]."""
        x = self.apply(
            inputs=inputs[0],
            layer=Embedding,
            input_dim=self.vocab_size,
            output_dim=self.embedding_size,
            embeddings_initializer=self.initializer,
            mask_zero=True,
            name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            name = "Embedding-Token" if self.shared_segment_embeddings else "Embedding-Segment"
            s = self.apply(
                inputs=inputs[1],
                layer=Embedding,
                input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size,
                embeddings_initializer=self.initializer,
                name=name,
            )
            x = self.apply(inputs=[x, s], layer=Add, name="Embedding-Token-Segment")
        return x

    def absolute_positions(self, x, inputs):
        """x + P[positions] with the learned position table."""
        p = self.position_ids_input(inputs)
        return self.apply(
            inputs=x if p is None else [x, p],
            layer=PositionEmbedding,
            arguments=self.position_arguments(),
            input_dim=self.max_position,
            output_dim=self.embedding_size,
            merge_mode="add",
            hierarchical=self.hierarchical_position,
            embeddings_initializer=self.initializer,
            custom_position_ids=self.custom_position_ids,
            name="Embedding-Position",
        )

    def embedding_mapping(self, x):
        """Project embedding_size -> hidden_size when they differ (ALBERT, ELECTRA)."""
        if self.embedding_size == self.hidden_size:
            return x
        return self.apply(
            inputs=x,
            layer=keras.layers.Dense,
            units=self.hidden_size,
            use_bias=self.use_bias,
            kernel_initializer=self.initializer,
            name="Embedding-Mapping",
        )

    def apply_embeddings(self, inputs):
        """E_tok + E_seg + E_pos -> LN -> dropout -> (mapping)."""
        self.compute_attention_bias(inputs)
        x = self.token_and_segment_embeddings(inputs)
        x = self.absolute_positions(x, inputs)
        x = self.norm(x, "Embedding-Norm")
        x = self.dropout(x, "Embedding-Dropout")
        return self.embedding_mapping(x)

    def layer_names(self, index):
        """(attention name, feed-forward name) of block `index`."""
        return (
            f"Transformer-{index}-MultiHeadSelfAttention",
            f"Transformer-{index}-FeedForward",
        )

    def attention_arguments(self, x):
        """Inputs and call arguments of a self-attention layer."""
        return [x, x, x, self.compute_attention_bias(None)], {"a_bias": True}

    def self_attention(self, x, index, **kwargs):
        """Self-attention of block `index`.

        Adds the previous block's scores when residual_attention_scores is on, and
        reads/updates the block's key/value cache under a cache context.
        """
        inputs, arguments = self.attention_arguments(x)
        if index == 0:
            self.attention_scores = None
        if self.attention_scores is not None:
            inputs, arguments = (
                inputs + [self.attention_scores],
                {**arguments, "residual_scores": True},
            )
        context = self.cache_context
        if context is not None:
            arguments = {**arguments, "cache": context.caches[index], "cache_index": context.index}
        outputs = self.apply(inputs=inputs, arguments=arguments, **self.attention_options, **kwargs)
        if not isinstance(outputs, (list, tuple)):
            return outputs
        y, *extras = outputs
        if self.residual_attention_scores:
            self.attention_scores = extras.pop(0)
        if context is not None:
            context.caches[index] = extras.pop(0)
        return y

    def apply_main_layers(self, x, index):
        """Post-LN block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
        attention_name, feed_forward_name = self.layer_names(index)
        y = self.self_attention(
            x,
            index,
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            out_dim=self.hidden_size,
            key_size=self.attention_key_size,
            use_bias=self.use_bias,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer,
            name=attention_name,
        )
        y = self.dropout(y, f"{attention_name}-Dropout")
        x = self.apply(inputs=[x, y], layer=Add, name=f"{attention_name}-Add")
        x = self.norm(x, f"{attention_name}-Norm")
        y = self.apply(
            inputs=x,
            layer=FeedForward,
            units=self.intermediate_size,
            activation=self.hidden_act,
            use_bias=self.use_bias,
            kernel_initializer=self.initializer,
            name=feed_forward_name,
        )
        y = self.dropout(y, f"{feed_forward_name}-Dropout")
        x = self.apply(inputs=[x, y], layer=Add, name=f"{feed_forward_name}-Add")
        return self.norm(x, f"{feed_forward_name}-Norm")

    def apply_final_layers(self, x):
        """Heads in bert4keras order: pooler (or NSP), MLM; no head -> the sequence."""
        outputs = [x]
        if self.with_pool:
            outputs.append(self.pooler_head(x))
        if self.with_mlm:
            outputs.append(self.mlm_head(x))
        return outputs[0] if len(outputs) == 1 else outputs[1] if len(outputs) == 2 else outputs[1:]

    def pooler_head(self, x):
        """tanh([CLS] W + b) (`with_pool` may name another activation); NSP on top."""
        x = self.apply(inputs=x, layer=TakeFirst, name="Pooler")
        x = self.apply(
            inputs=x,
            layer=keras.layers.Dense,
            units=self.hidden_size,
            activation="tanh" if self.with_pool is True else self.with_pool,
            use_bias=self.use_bias,
            kernel_initializer=self.initializer,
            name="Pooler-Dense",
        )
        if not self.with_nsp:
            return x
        return self.apply(
            inputs=x,
            layer=keras.layers.Dense,
            units=2,
            activation="softmax",
            kernel_initializer=self.initializer,
            dtype="float32",
            name="NSP-Proba",
        )

    def mlm_head(self, x):
        """softmax(LN(act(x W + b)) E_tok^T + b_out), output matrix tied to Embedding-Token."""
        x = self.apply(
            inputs=x,
            layer=keras.layers.Dense,
            units=self.embedding_size,
            activation=self.hidden_act,
            kernel_initializer=self.initializer,
            name="MLM-Dense",
        )
        x = self.norm(x, "MLM-Norm")
        x = self.tied_output(x)
        x = self.apply(inputs=x, layer=BiasAdd, name="MLM-Bias")
        return self.output_activation(x, self.with_mlm, "MLM-Activation")

    def tied_output(self, x):
        """x E_tok^T: logits over the vocabulary with the token embedding matrix."""
        return self.apply(
            inputs=x, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token"
        )

    def output_activation(self, x, activation, name):
        """softmax (for True) or the named activation, in float32; logits while decoding."""
        if self.cache_context is not None:
            return x
        return self.apply(
            inputs=x,
            layer=keras.layers.Activation,
            activation="softmax" if activation is True else activation,
            dtype="float32",
            name=name,
        )

    def variable_mapping(self, root="bert"):
        names = {
            "Embedding-Token/embeddings": f"{root}/embeddings/word_embeddings",
            "Embedding-Segment/embeddings": f"{root}/embeddings/token_type_embeddings",
            "Embedding-Position/embeddings": f"{root}/embeddings/position_embeddings",
            **norm_names("Embedding-Norm", f"{root}/embeddings/LayerNorm"),
            **dense_names("Embedding-Mapping", f"{root}/encoder/embedding_hidden_mapping_in"),
            **dense_names("Pooler-Dense", f"{root}/pooler/dense"),
            "NSP-Proba/kernel": "cls/seq_relationship/output_weights",
            "NSP-Proba/bias": "cls/seq_relationship/output_bias",
            **dense_names("MLM-Dense", "cls/predictions/transform/dense"),
            **norm_names("MLM-Norm", "cls/predictions/transform/LayerNorm"),
            "MLM-Bias/bias": "cls/predictions/output_bias",
        }
        for index in range(self.num_hidden_layers):
            names.update(self.block_mapping(index, f"{root}/encoder/layer_{index}"))
        return names

    def block_mapping(self, index, scope):
        """Original names of block `index`, whose variables live under `scope`."""
        attention_name, feed_forward_name = self.layer_names(index)
        return {
            **attention_names(attention_name, f"{scope}/attention"),
            **norm_names(f"{attention_name}-Norm", f"{scope}/attention/output/LayerNorm"),
            **dense_names(f"{feed_forward_name}/i0_dense", f"{scope}/intermediate/dense"),
            **dense_names(f"{feed_forward_name}/o_dense", f"{scope}/output/dense"),
            **norm_names(f"{feed_forward_name}-Norm", f"{scope}/output/LayerNorm"),
        }


class ALBERT(BERT):
    """ALBERT (arXiv 1909.11942): factorised embeddings and one block shared by all layers."""

    def layer_names(self, index):
        return "Transformer-MultiHeadSelfAttention", "Transformer-FeedForward"

    def variable_mapping(self):
        names = super().variable_mapping()
        return {k: v for k, v in names.items() if not k.startswith("Transformer-")} | (
            self.albert_block_mapping(0)
        )

    def albert_block_mapping(self, index):
        """Names of ALBERT's shared block under group_0/inner_group_0."""
        attention_name, feed_forward_name = self.layer_names(index)
        scope = "bert/encoder/transformer/group_0/inner_group_0"
        return {
            **attention_names(attention_name, f"{scope}/attention_1"),
            **norm_names(f"{attention_name}-Norm", f"{scope}/LayerNorm"),
            **dense_names(f"{feed_forward_name}/i0_dense", f"{scope}/ffn_1/intermediate/dense"),
            **dense_names(
                f"{feed_forward_name}/o_dense", f"{scope}/ffn_1/intermediate/output/dense"
            ),
            **norm_names(f"{feed_forward_name}-Norm", f"{scope}/LayerNorm_1"),
        }


class ALBERT_Unshared(ALBERT):
    """ALBERT with untied layers (kexue.fm/archives/7187), each starting from the shared block."""

    def layer_names(self, index):
        return BERT.layer_names(self, index)

    def variable_mapping(self):
        names = BERT.variable_mapping(self)
        names = {k: v for k, v in names.items() if not k.startswith("Transformer-")}
        for index in range(self.num_hidden_layers):
            names.update(self.albert_block_mapping(index))
        return names


class ELECTRA(BERT):
    """ELECTRA discriminator tower (arXiv 2003.10555); `with_discriminator` adds the RTD head."""

    def __init__(self, with_discriminator=False, **kwargs):
        for head in ("with_pool", "with_nsp", "with_mlm"):
            if kwargs.get(head):
                raise ValueError(
                    f"model='electra' is the discriminator and has no {head} head; use "
                    "with_discriminator=True, or model='electra_generator' for the MLM head"
                )
        super().__init__(**kwargs)
        self.with_discriminator = with_discriminator

    def apply_final_layers(self, x):
        """sigmoid(act(x W_1 + b_1) W_2 + b_2): probability that each token was replaced."""
        if not self.with_discriminator:
            return x
        x = self.apply(
            inputs=x,
            layer=keras.layers.Dense,
            units=self.hidden_size,
            activation=self.hidden_act,
            kernel_initializer=self.initializer,
            name="Discriminator-Dense",
        )
        x = self.apply(
            inputs=x,
            layer=keras.layers.Dense,
            units=1,
            kernel_initializer=self.initializer,
            name="Discriminator-Prediction",
        )
        activation = "sigmoid" if self.with_discriminator is True else self.with_discriminator
        return self.output_activation(x, activation, "Discriminator-Activation")

    def variable_mapping(self):
        names = super().variable_mapping(root="electra")
        names.update(dense_names("Embedding-Mapping", "electra/embeddings_project"))
        names.update(dense_names("Discriminator-Dense", "discriminator_predictions/dense"))
        names.update(dense_names("Discriminator-Prediction", "discriminator_predictions/dense_1"))
        return names


class ELECTRA_Generator(BERT):
    """The generator tower of Google's combined ELECTRA checkpoint (shared electra/embeddings)."""

    def __init__(self, **kwargs):
        for head in ("with_pool", "with_nsp"):
            if kwargs.get(head):
                raise ValueError(f"model='electra_generator' has no {head} head; use with_mlm")
        super().__init__(**kwargs)

    def variable_mapping(self):
        names = super().variable_mapping(root="electra")
        names = {k: v for k, v in names.items() if not k.startswith("Transformer-")}
        names.update(dense_names("Embedding-Mapping", "generator/embeddings_project"))
        names.update(dense_names("MLM-Dense", "generator_predictions/dense"))
        names.update(norm_names("MLM-Norm", "generator_predictions/LayerNorm"))
        names["MLM-Bias/bias"] = "generator_predictions/output_bias"
        for index in range(self.num_hidden_layers):
            names.update(self.block_mapping(index, f"generator/encoder/layer_{index}"))
        return names


class RoFormer(BERT):
    """RoFormer (kexue.fm/archives/8265): BERT with rotary q/k in every layer, no position table."""

    default_layer_norm_eps = 1e-7

    def apply_embeddings(self, inputs):
        """E_tok + E_seg -> LN -> dropout -> (mapping); positions enter as rotations."""
        self.compute_attention_bias(inputs)
        self.compute_position_bias(inputs)
        x = self.token_and_segment_embeddings(inputs)
        x = self.norm(x, "Embedding-Norm")
        x = self.dropout(x, "Embedding-Dropout")
        return self.embedding_mapping(x)

    def compute_position_bias(self, inputs):
        """The rotary sinusoid table [1 or b, n, d], computed once per model."""
        if self.cache_context is not None:
            return self.cache_context.rotary
        if self.position_bias is None:
            p = self.position_ids_input(inputs)
            self.position_bias = self.apply(
                inputs=inputs[0] if p is None else [inputs[0], p],
                layer=SinusoidalPositionEmbedding,
                output_dim=self.attention_key_size,
                merge_mode="zero",
                custom_position_ids=self.custom_position_ids,
                name="Embedding-Rotary-Position",
            )
        return self.position_bias

    def attention_arguments(self, x):
        bias, sinusoid = self.compute_attention_bias(None), self.compute_position_bias(None)
        return [x, x, x, bias, sinusoid], {"a_bias": True, "p_bias": "rotary"}


class RoFormerV2(RoFormer):
    """RoFormerV2 (kexue.fm/archives/8998): no biases, parameter-free RMS norms, tied MLM."""

    use_bias = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # truncated normal, std = 1.13684723 / sqrt(fan_in * L) (Keras undoes the truncation shrink)
        self.initializer = keras.initializers.VarianceScaling(
            1.0 / self.num_hidden_layers, "fan_in", "truncated_normal"
        )

    def norm(self, x, name, **kwargs):
        return super().norm(x, name, zero_mean=False, scale=False, offset=False)

    def mlm_head(self, x):
        """softmax((x W_out) E_tok^T); W_out (bias-free 'Output-Mapping') only when E != D."""
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                inputs=x,
                layer=keras.layers.Dense,
                units=self.embedding_size,
                use_bias=False,
                kernel_initializer=self.initializer,
                name="Output-Mapping",
            )
        x = self.dropout(x, "Output-MLM-Dropout")
        x = self.tied_output(x)
        return self.output_activation(x, self.with_mlm, "MLM-Activation")

    def is_new_weight(self, path):
        return super().is_new_weight(path) or path.startswith("Output-Mapping/")


class GPT(BERT):
    """GPT (OpenAI 2018) in bert4keras form: causal blocks, no embedding LN, tied softmax output."""

    attention_mode = "lm"

    def __init__(self, final_activation="softmax", **kwargs):
        for head in ("with_pool", "with_nsp", "with_mlm"):
            if kwargs.get(head):
                raise ValueError(f"model='gpt' has no {head} head; its output is the LM already")
        super().__init__(**kwargs)
        self.final_activation = final_activation

    def apply_embeddings(self, inputs):
        """E_tok + E_seg + E_pos -> dropout -> (mapping)."""
        self.compute_attention_bias(inputs)
        x = self.token_and_segment_embeddings(inputs)
        x = self.absolute_positions(x, inputs)
        x = self.dropout(x, "Embedding-Dropout")
        return self.embedding_mapping(x)

    def apply_final_layers(self, x):
        """softmax(x E_tok^T): next-token probabilities."""
        return self.output_activation(self.tied_output(x), self.final_activation, "LM-Activation")

    def variable_mapping(self):
        names = super().variable_mapping(root="gpt")
        return {k: v.replace("gpt/encoder", "gpt/transformer") for k, v in names.items()}


class LM_Mask:
    """Causal attention: Allowed(i, j) = j <= i (application='lm', kexue.fm/archives/6933)."""

    attention_mode = "lm"


class UniLM_Mask:
    """Seq2seq attention (application='unilm'): Allowed(i, j) = c_j <= c_i, c = cumsum(s)."""

    attention_mode = "unilm"


MODELS = {
    "bert": BERT,
    "roberta": BERT,
    "albert": ALBERT,
    "albert_unshared": ALBERT_Unshared,
    "electra": ELECTRA,
    "electra_generator": ELECTRA_Generator,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
    "gpt": GPT,
}

APPLICATIONS = {"encoder": None, "lm": LM_Mask, "unilm": UniLM_Mask}


def model_class(model, application):
    """The builder class for `model` with the mask mixin of `application`."""
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
        model = MODELS[key]
    if application not in APPLICATIONS:
        raise ValueError(f"unknown application {application!r}; choose encoder, lm or unilm")
    if application == "encoder" or issubclass(model, GPT) and application == "lm":
        return model
    if issubclass(model, (ELECTRA, GPT)):
        raise ValueError(f"application={application!r} is not available for {model.__name__}")
    mixin = APPLICATIONS[application]
    return type(f"{model.__name__}_{mixin.__name__}", (mixin, model), {})


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    return_keras_model=True,
    **kwargs,
):
    """Build a model from bert_config.json (path, dict or pretrained_configs name) and load weights.

    `kwargs` use bert4keras spelling (with_pool, with_mlm, keep_tokens, ...) and
    override the config. application='lm'/'unilm' turns on the MLM head as
    bert4keras does. Returns the Keras model, or the builder when
    return_keras_model=False.
    """
    cls = model_class(model, application)
    configs = load_config(config_path)
    configs.update(kwargs)
    if application in ("lm", "unilm") and not issubclass(cls, GPT):
        configs["with_mlm"] = configs.get("with_mlm") or True
    init_kwargs, build_kwargs = split_arguments(cls, configs, explicit=kwargs)
    transformer = cls(**init_kwargs)
    transformer.build(**build_kwargs)
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
