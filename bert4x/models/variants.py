"""Families built on BERT: ALBERT (shared and unshared), ELECTRA, RoFormer(V2), GPT."""

import keras

from bert4x.layers import (
    SinusoidalPositionEmbedding,
)
from bert4x.models.bert import BERT
from bert4x.models.transformer import attention_names, dense_names, norm_names


class ALBERT(BERT):
    """ALBERT (arXiv 1909.11942): factorised embeddings and one block shared by all layers."""

    def layer_names(self, index):
        """The shared block's names, the same for every index."""
        return "Transformer-MultiHeadSelfAttention", "Transformer-FeedForward"

    def variable_mapping(self):
        """BERT's embedding and head names; the shared block under group_0/inner_group_0."""
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
        """BERT's per-layer names, Transformer-{index}-..."""
        return BERT.layer_names(self, index)

    def variable_mapping(self):
        """Every layer's weights map to the one shared block of the checkpoint."""
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
        """BERT's names under electra/, electra/embeddings_project, discriminator_predictions."""
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
        """Shared electra/embeddings; generator/embeddings_project, encoder and predictions."""
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
        """Self-attention inputs plus the rotary table (p_bias='rotary')."""
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
        """Parameter-free RMS norm: x / sqrt(mean(x^2) + eps)."""
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
        """Also `Output-Mapping`, which the original checkpoints do not have."""
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
        """BERT's names with bert/ -> gpt/ and encoder -> transformer."""
        names = super().variable_mapping(root="gpt")
        return {k: v.replace("gpt/encoder", "gpt/transformer") for k, v in names.items()}
