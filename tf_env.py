"""The one place TensorFlow and Keras are imported: modules do `from tf_env import tf, keras`,
inside the function that needs them when a --help or the app path also imports the module.

Keras: in TF >= 2.16 `tf.keras` is Keras 3, which tensorflow-model-optimization rejects. We use
Keras 2 (`tf_keras`) explicitly, and set TF_USE_LEGACY_KERAS before TensorFlow is first imported so
that behaviour does not depend on whether tfmot happens to be imported first.

Logs: TF_CPP_MIN_LOG_LEVEL=2 hides TensorFlow's C++ INFO and WARNING lines and keeps its errors.
Some start-up lines are written before TensorFlow's logging is set up, whatever that level says:
the CUDA plugins registering twice (cuFFT/cuDNN/cuBLAS factory, "computation placer already
registered") and, on a machine without an NVIDIA GPU, "failed call to cuInit". So the import and
the device probe run with the C++ stderr captured; those known lines are dropped, anything else is
passed on. GPUs stay visible and usable.
"""
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STARTUP_NOISE = ("Unable to register cuFFT factory", "Unable to register cuDNN factory",
                 "Unable to register cuBLAS factory", "computation placer already registered",
                 "All log messages before absl::InitializeLog() is called")
NO_GPU_NOISE = ("failed call to cuInit",)  # dropped only where no NVIDIA device exists


def _has_nvidia_device() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _import_quietly():
    """Import TensorFlow + tf_keras and probe the devices with file descriptor 2 captured; re-emit
    what is not known start-up noise (an import that fails re-emits everything)."""
    noise = STARTUP_NOISE + (() if _has_nvidia_device() else NO_GPU_NOISE)
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
            import tf_keras
            tensorflow.config.list_physical_devices()  # CUDA is probed here, not at the first op
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines
                                     if failed or not any(text in line for text in noise)))
            sys.stderr.flush()
    return tensorflow, tf_keras


tf, keras = _import_quietly()
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
