"""Attention for SignBART: additive attention biases and multi-head attention.

  AttentionBias       length mask (B, T) -> additive bias, 0 where a key may be attended and `mask_value`
                      (config `attention_mask_value`, -100) where it may not:
                        causal=False: (B, 1, 1, T)  padded keys          (encoder self-attention, cross-attention)
                        causal=True:  (B, 1, T, T)  padded or future keys (decoder self-attention)
                      A finite constant, not -1e9: float outputs are identical, and int8/int16 keep the scores
                      (a -1e9 bias stretches the score tensor's quantization range so far
                      that every real score quantizes to 0).
  MultiHeadAttention  [queries (B, Tq, d), keys_values (B, Tk, d), bias] -> (B, Tq, d), with q/k/v/out_proj Dense
                      layers; q is scaled by head_dim^-0.5; softmax(q k^T + bias), attention dropout, then v.
"""
from __future__ import annotations

from layers import PACKAGE, build_sublayers
from tf_env import keras, tf


@keras.utils.register_keras_serializable(package=PACKAGE)
class AttentionBias(keras.layers.Layer):
    """Length mask (B, T) float 0/1 -> additive attention bias; see the module docstring for shapes."""

    def __init__(self, mask_value: float, causal: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)
        self.causal = bool(causal)

    def call(self, mask):
        allowed = tf.expand_dims(tf.expand_dims(mask, 1), 1)                  # (B, 1, 1, T): 1 at valid keys
        if self.causal:
            positions = tf.range(tf.shape(mask)[1])
            not_future = tf.cast(tf.expand_dims(positions, 0) <= tf.expand_dims(positions, 1), mask.dtype)  # (T, T)
            allowed = allowed * not_future                                    # (B, 1, T, T); folded to a constant
        return (1.0 - allowed) * self.mask_value                              # at a fixed T except for the mask

    def get_config(self):
        return super().get_config() | {"mask_value": self.mask_value, "causal": self.causal}


@keras.utils.register_keras_serializable(package=PACKAGE)
class MultiHeadAttention(keras.layers.Layer):
    """BART attention with separate q_proj/k_proj/v_proj/out_proj Dense layers (biases on)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
        self.head_dim = d_model // num_heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = keras.layers.Dense(d_model, name="q_proj")
        self.k_proj = keras.layers.Dense(d_model, name="k_proj")
        self.v_proj = keras.layers.Dense(d_model, name="v_proj")
        self.out_proj = keras.layers.Dense(d_model, name="out_proj")
        self.attn_dropout = keras.layers.Dropout(dropout, name="attn_dropout")

    def build(self, input_shape):
        query_shape, kv_shape = tf.TensorShape(input_shape[0]), tf.TensorShape(input_shape[1])
        build_sublayers([(self.q_proj, query_shape), (self.k_proj, kv_shape), (self.v_proj, kv_shape),
                         (self.out_proj, query_shape)])
        super().build(input_shape)

    def _split_heads(self, x):
        """(B, T, d) -> (B, heads, T, head_dim)"""
        x = tf.reshape(x, tf.stack([-1, tf.shape(x)[1], self.num_heads, self.head_dim]))
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, inputs, training=None):
        queries, keys_values, bias = inputs
        q = self._split_heads(self.q_proj(queries) * self.scaling)        # (B, H, Tq, hd)
        k = self._split_heads(self.k_proj(keys_values))                    # (B, H, Tk, hd)
        v = self._split_heads(self.v_proj(keys_values))                    # (B, H, Tk, hd)
        scores = tf.matmul(q, k, transpose_b=True) + bias                  # (B, H, Tq, Tk)
        weights = self.attn_dropout(tf.nn.softmax(scores, axis=-1), training=training)
        context = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])        # (B, Tq, H, hd)
        context = tf.reshape(context, tf.stack([-1, tf.shape(context)[1], self.d_model]))  # (B, Tq, d)
        return self.out_proj(context)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return super().get_config() | {"d_model": self.d_model, "num_heads": self.num_heads, "dropout": self.dropout}
