"""SignBART decoder: causal, post-LN, fed with the y-coordinate projection, attending to the
encoder output.

  h = Dropout(LayerNorm(y_embed + positions))          (its own position table and LayerNorm)
  per DecoderLayer:  h = LN(h + Dropout(CausalSelfAttn(h, padding + causal bias)))
                     h = LN(h + Dropout(CrossAttn(q=h, kv=encoder_out, encoder padding bias)))
                     h = LN(h + Dropout(fc2(Dropout_act(GELU(fc1(h))))))

`decode()` wires these into the Functional graph as top-level layers named decoder_positions,
decoder_layernorm_embedding, decoder_embed_dropout and decoder_layer_<i>.
"""
from __future__ import annotations

from attention import MultiHeadAttention
from encoder import EncoderLayer, embed
from layers import PACKAGE, LayerNorm
from tf_env import keras


@keras.utils.register_keras_serializable(package=PACKAGE)
class DecoderLayer(EncoderLayer):
    """An EncoderLayer plus cross-attention (encoder_attn + its LayerNorm) between self-attention and the FFN.

    [h (B, T, d), encoder_out (B, T, d), causal bias (B, 1, T, T), encoder padding bias (B, 1, 1, T)] -> (B, T, d)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder_attn = MultiHeadAttention(self.d_model, self.num_heads, self.attention_dropout, name="encoder_attn")
        self.encoder_attn_layer_norm = LayerNorm(name="encoder_attn_layer_norm")

    def sublayer_shapes(self, shapes: list) -> list:
        h_shape, enc_shape, causal_bias_shape, padding_bias_shape = shapes
        return [(self.self_attn, [h_shape, h_shape, causal_bias_shape]), (self.self_attn_layer_norm, h_shape),
                (self.encoder_attn, [h_shape, enc_shape, padding_bias_shape]), (self.encoder_attn_layer_norm, h_shape),
                *self.feed_forward_shapes(h_shape)]

    def call(self, inputs, training=None):
        h, encoder_out, causal_bias, padding_bias = inputs
        h = self.self_attention_block(h, causal_bias, training)
        attended = self.encoder_attn([h, encoder_out, padding_bias], training=training)
        h = self.encoder_attn_layer_norm(h + self.drop(attended, training=training))
        return self.feed_forward_block(h, training)


def decode(y_embed, encoder_out, causal_bias, padding_bias, cfg: dict):
    """Functional decoder: y_embed (B, T, d) + encoder output (B, T, d) -> decoder output (B, T, d)."""
    h = embed(y_embed, cfg, "decoder")
    for i in range(cfg["decoder_layers"]):
        h = DecoderLayer(cfg["d_model"], cfg["decoder_attention_heads"], cfg["decoder_ffn_dim"], cfg["dropout"],
                         cfg["activation_dropout"], cfg["attention_dropout"],
                         name=f"decoder_layer_{i}")([h, encoder_out, causal_bias, padding_bias])
    return h
