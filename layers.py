"""Small building blocks of the SignBART model, written for every TFLite mode (builtin ops only).

  CoordinatePlane   keypoints (B, T, K, 2) -> one coordinate (B, T, K): x feeds the encoder, y the decoder
  LearnedPositions  x + position table[t + 2]  (BART offset 2)
  LayerNorm         LayerNorm as `c = x - mean; var = mean(c * c)` (Keras' own lowers to SQUARED_DIFFERENCE,
                    which has no int16 kernel)
  LastValidToken    [hidden (B, T, d), length mask (B, T)] -> hidden at the last valid frame (B, d), selected by
                    a shifted-mask one-hot matmul instead of a CAST + GATHER (or a SUM, wrong in TFLite 2.12 int8)

`build_sublayers` builds the inner layers of a custom layer under name scopes. None of these holds a Dense layer; the Dense layers live in attention.py, encoder.py, decoder.py and, at the top
level of the model, model_functional.py. Several tensors go to a layer as ONE list (tfmot forwards only `inputs`).
"""
from __future__ import annotations

from tf_env import keras, tf

PACKAGE = "SignBART"  # registration prefix of every custom layer ("SignBART>LayerNorm", ...)
POSITION_OFFSET = 2   # BART reserves the first two rows of the position table
LAYER_NORM_EPS = 1e-5


def build_sublayers(pairs) -> None:
    """Build each (sublayer, input shape) inside its own name scope, so that weight names are unique (.h5 saving)
    and tfmot can reach each Dense `.kernel`."""
    for sub, shape in pairs:
        with tf.name_scope(sub.name):
            sub.build(shape)


@keras.utils.register_keras_serializable(package=PACKAGE)
class CoordinatePlane(keras.layers.Layer):
    """(B, T, K, 2) -> (B, T, K): the x (index 0) or y (index 1) coordinate of every keypoint."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        if index not in (0, 1):
            raise ValueError(f"CoordinatePlane index must be 0 (x) or 1 (y), got {index}")
        self.index = index

    def call(self, keypoints):
        return keypoints[:, :, :, self.index]  # explicit axes: a plain STRIDED_SLICE, no ellipsis

    def compute_output_shape(self, input_shape):
        return input_shape[:-1]

    def get_config(self):
        return super().get_config() | {"index": self.index}


@keras.utils.register_keras_serializable(package=PACKAGE)
class LearnedPositions(keras.layers.Layer):
    """x (B, T, d) + table[t + 2] for t < T; the table has max_positions + 2 rows."""

    def __init__(self, max_positions: int, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = max_positions

    def build(self, input_shape):
        self.table = self.add_weight(
            name="embeddings", shape=(self.max_positions + POSITION_OFFSET, int(input_shape[-1])),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05))  # Keras Embedding's default
        super().build(input_shape)

    def call(self, x):
        length = tf.shape(x)[1]
        positions = tf.slice(self.table, [POSITION_OFFSET, 0], [length, -1])  # (T, d); constant-folded at T = 64
        return x + positions

    def get_config(self):
        return super().get_config() | {"max_positions": self.max_positions}


@keras.utils.register_keras_serializable(package=PACKAGE)
class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis with gamma/beta, eps 1e-5, in the quantization-friendly form."""

    def __init__(self, epsilon: float = LAYER_NORM_EPS, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(centred * centred, axis=-1, keepdims=True)
        return centred * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return super().get_config() | {"epsilon": self.epsilon}


@keras.utils.register_keras_serializable(package=PACKAGE)
class LastValidToken(keras.layers.Layer):
    """[hidden (B, T, d), mask (B, T)] -> hidden[b, last t with mask 1] (B, d).

    The mask must be a LENGTH mask (a prefix of ones, preprocessing.length_mask). Its last one is where the mask
    is 1 and the next entry is 0: one_hot = mask * (1 - next). An all-zero mask gives a zero vector.
    The selection is one_hot (B, 1, T) @ hidden (B, T, d), a BATCH_MATMUL, not reduce_sum(hidden * one_hot): in
    float both are exact (one term is h, the others are 0), but TensorFlow Lite 2.12's int8 SUM kernel (the
    runtime of every iOS Flutter app) mishandles the zero point when it sums the 64 frames and returned
    saturated values, so full-int8 models lost ~15 points of top-1 there (docs/runtimes.md).
    """

    def call(self, inputs):
        hidden, mask = inputs
        following = tf.pad(mask[:, 1:], [[0, 0], [0, 1]])                 # (B, T): mask shifted left by one
        last = mask * (1.0 - following)                                    # (B, T) one-hot of the last frame
        selected = tf.matmul(tf.expand_dims(last, 1), hidden)              # (B, 1, d)
        return tf.reshape(selected, [-1, hidden.shape[-1]])                # (B, d)

    def compute_output_shape(self, input_shape):
        hidden_shape = input_shape[0]
        return (hidden_shape[0], hidden_shape[-1])
