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


def thread_settings() -> dict:
    """TensorFlow's CPU thread pools as this process runs them. They are part of a run's recipe: the order of
    floating-point reductions, hence the exact training trajectory, depends on them. 0 = TensorFlow's default."""
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTEROP_THREADS") or 0),
            "cpu_count": os.cpu_count()}


__all__ = ["tf", "keras", "thread_settings"]
