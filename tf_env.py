"""The one place TensorFlow and Keras are imported: modules do `from tf_env import tf, keras`,
inside the function that needs them when a --help or the app path also imports the module.

Keras: in TF >= 2.16 `tf.keras` is Keras 3, which tensorflow-model-optimization rejects. We use
Keras 2 (`tf_keras`) explicitly, and set TF_USE_LEGACY_KERAS before TensorFlow is first imported so
that behaviour does not depend on whether tfmot happens to be imported first.

Console: quiet unless SIGNBART_VERBOSE=1 (or a script's --verbose; util.py holds the switch).
TF_CPP_MIN_LOG_LEVEL=3 hides TensorFlow's C++ INFO, WARNING and ERROR lines (an "E ... node_def_util.cc
... use_unbounded_threadpool" line of tf.data is not an error of ours); the Python loggers of
TensorFlow and absl show errors only; the `tf.lite.Interpreter is deprecated` warning, raised when
the converter calibrates an integer model, is ignored. Some start-up lines are written before
TensorFlow's logging is set up, whatever that level says: the CUDA plugins registering twice
(cuFFT/cuDNN/cuBLAS factory, "computation placer already registered") and, on a machine without an
NVIDIA GPU, "failed call to cuInit". So the import and the device probe run with the C++ stderr
captured; those known lines are dropped, anything else is passed on. GPUs stay visible and usable.
`quiet_native()` does the same around the TFLite converter (its absl lines).
"""
import os
from pathlib import Path

from util import NATIVE_NOISE, native_noise_dropped, quiet_tensorflow, verbose

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
quiet_tensorflow()

STARTUP_NOISE = ("Unable to register cuFFT factory", "Unable to register cuDNN factory",
                 "Unable to register cuBLAS factory", "computation placer already registered",
                 "All log messages before absl::InitializeLog() is called")
NO_GPU_NOISE = ("failed call to cuInit",)  # dropped only where no NVIDIA device exists


def _has_nvidia_device() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _import_quietly():
    """Import TensorFlow + tf_keras and probe the devices with file descriptor 2 captured; pass on
    what is not known start-up noise (an import that fails passes on everything)."""
    with native_noise_dropped(STARTUP_NOISE + (() if _has_nvidia_device() else NO_GPU_NOISE)):
        import tensorflow
        import tf_keras
        tensorflow.config.list_physical_devices()  # CUDA is probed here, not at the first op
    return tensorflow, tf_keras


def quiet_native():
    """A context that drops the converter's and interpreter's native console lines (util.NATIVE_NOISE)."""
    return native_noise_dropped(NATIVE_NOISE)


tf, keras = _import_quietly()
if not verbose():
    import absl.logging
    tf.get_logger().setLevel("ERROR")
    absl.logging.set_verbosity(absl.logging.ERROR)


def thread_settings() -> dict:
    """TensorFlow's CPU thread pools as this process runs them. They are part of a run's recipe: the order of
    floating-point reductions, hence the exact training trajectory, depends on them. 0 = TensorFlow's default."""
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()
            or int(os.environ.get("TF_NUM_INTEROP_THREADS") or 0),
            "cpu_count": os.cpu_count()}


__all__ = ["tf", "keras", "quiet_native", "thread_settings"]
