"""BERT / RoBERTa: embeddings, Post-LN blocks, pooler/NSP/MLM heads, original names."""

import keras

from bert4x.layers import (
    Add,
    BiasAdd,
    Embedding,
    FeedForward,
    PositionEmbedding,
    TakeFirst,
)
from bert4x.models.transformer import (
    Transformer,
    attention_names,
    dense_names,
    norm_names,
)


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
        """Input-Token, Input-Segment (unless segment_vocab_size=0), Input-Position (custom ids)."""
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
        """Google BERT's names under `root`, e.g. bert/encoder/layer_0/attention/self/query."""
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
