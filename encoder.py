"""SignBART encoder: bidirectional, post-LN, fed with the x-coordinate projection.

  h = Dropout(LayerNorm(x_embed + positions))
  per EncoderLayer:  h = LN(h + Dropout(SelfAttn(h, padding bias)))
                     h = LN(h + Dropout(fc2(Dropout_act(GELU(fc1(h))))))

`encode()` wires these into the Functional graph as top-level layers named encoder_positions,
encoder_layernorm_embedding, encoder_embed_dropout and encoder_layer_<i>.
"""
from __future__ import annotations

from attention import MultiHeadAttention
from layers import PACKAGE, LayerNorm, LearnedPositions, build_sublayers
from tf_env import keras, tf


@keras.utils.register_keras_serializable(package=PACKAGE)
class EncoderLayer(keras.layers.Layer):
    """[h (B, T, d), padding bias (B, 1, 1, T)] -> (B, T, d). DecoderLayer (decoder.py) extends it."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, activation_dropout: float,
                 attention_dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.num_heads, self.ffn_dim = d_model, num_heads, ffn_dim
        self.dropout, self.activation_dropout, self.attention_dropout = dropout, activation_dropout, attention_dropout
        self.self_attn = MultiHeadAttention(d_model, num_heads, attention_dropout, name="self_attn")
        self.self_attn_layer_norm = LayerNorm(name="self_attn_layer_norm")
        self.fc1 = keras.layers.Dense(ffn_dim, name="fc1")
        self.fc2 = keras.layers.Dense(d_model, name="fc2")
        self.final_layer_norm = LayerNorm(name="final_layer_norm")
        self.drop = keras.layers.Dropout(dropout, name="dropout")
        self.act_drop = keras.layers.Dropout(activation_dropout, name="activation_dropout")

    def build(self, input_shape):
        build_sublayers(self.sublayer_shapes([tf.TensorShape(s) for s in input_shape]))
        super().build(input_shape)

    def sublayer_shapes(self, shapes: list) -> list:
        """(sublayer, input shape) pairs in call order; DecoderLayer inserts its cross-attention."""
        h_shape, bias_shape = shapes
        return [(self.self_attn, [h_shape, h_shape, bias_shape]), (self.self_attn_layer_norm, h_shape),
                *self.feed_forward_shapes(h_shape)]

    def feed_forward_shapes(self, h_shape) -> list:
        ffn_shape = h_shape[:-1].concatenate([self.ffn_dim])
        return [(self.fc1, h_shape), (self.fc2, ffn_shape), (self.final_layer_norm, h_shape)]

    def self_attention_block(self, h, bias, training):
        attended = self.self_attn([h, h, bias], training=training)
        return self.self_attn_layer_norm(h + self.drop(attended, training=training))

    def feed_forward_block(self, h, training):
        ffn = self.act_drop(tf.nn.gelu(self.fc1(h), approximate=False), training=training)  # exact (erf) GELU
        return self.final_layer_norm(h + self.drop(self.fc2(ffn), training=training))

    def call(self, inputs, training=None):
        h, bias = inputs
        return self.feed_forward_block(self.self_attention_block(h, bias, training), training)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return super().get_config() | {
            "d_model": self.d_model, "num_heads": self.num_heads, "ffn_dim": self.ffn_dim, "dropout": self.dropout,
            "activation_dropout": self.activation_dropout, "attention_dropout": self.attention_dropout}


def embed(x_embed, cfg: dict, prefix: str):
    """Positions, embedding LayerNorm and dropout shared by the encoder and the decoder (B, T, d) -> (B, T, d)."""
    h = LearnedPositions(cfg["max_position_embeddings"], name=f"{prefix}_positions")(x_embed)
    h = LayerNorm(name=f"{prefix}_layernorm_embedding")(h)
    return keras.layers.Dropout(cfg["dropout"], name=f"{prefix}_embed_dropout")(h)


def encode(x_embed, padding_bias, cfg: dict):
    """Functional encoder: x_embed (B, T, d), padding bias (B, 1, 1, T) -> encoder output (B, T, d)."""
    h = embed(x_embed, cfg, "encoder")
    for i in range(cfg["encoder_layers"]):
        h = EncoderLayer(cfg["d_model"], cfg["encoder_attention_heads"], cfg["encoder_ffn_dim"], cfg["dropout"],
                         cfg["activation_dropout"], cfg["attention_dropout"], name=f"encoder_layer_{i}")([h, padding_bias])
    return h
