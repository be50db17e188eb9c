"""The one place TensorFlow and Keras are imported (../shared/STACK.md rules 1 and 10).

In TF >= 2.16 `tf.keras` is Keras 3, which tensorflow-model-optimization rejects. We use Keras 2 (`tf_keras`)
explicitly, and set TF_USE_LEGACY_KERAS before TensorFlow is first imported so that behaviour does not depend on
whether tfmot happens to be imported first. Every module does `from tf_env import tf, keras`.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras"]
