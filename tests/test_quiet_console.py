"""The console stays quiet: an export run as users run it prints no line of TensorFlow's C++ logs, its absl
logs or the `tf.lite.Interpreter is deprecated` warning, and SIGNBART_VERBOSE=1 / --verbose brings them back
(util.py holds the switch; tf_env.py and tflite_runtime.py apply it)."""
import argparse
import os
import re
import subprocess
import sys

from conftest import REPO

NOISE = re.compile(r"tensorflow/|W0000|E0000|I0000|deprecated|absl|XNNPACK|fully_quantize")


def user_env(**extra) -> dict:
    """The environment of a user who set none of the switches."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIGNBART_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    return env | extra


def run(args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env=env or user_env())


def test_an_integer_export_prints_no_tensorflow_noise(trained_fold, tmp_path):
    """Full-integer PTQ runs the converter, its calibration (a tf.lite.Interpreter inside TensorFlow), tf.data
    and the LiteRT interpreter: each of them writes console noise unless silenced."""
    result = run(["ptq_export.py", "--config_path", str(trained_fold.config_path), "--checkpoint",
                  str(trained_fold.h5), "--modes", "int8", "--num_calibration_samples", "8",
                  "--output_dir", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert any(line.startswith("wrote ") and "model_int8.tflite" in line for line in lines)
    assert [line for line in lines if NOISE.search(line)] == []


def test_verbose_keeps_tensorflow_console():
    code = ("import os, warnings, tf_env, util; "
            "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), util.verbose(), tf_env.tf.get_logger().level)")
    quiet = run(["-c", code]).stdout.split()
    loud = run(["-c", code], user_env(SIGNBART_VERBOSE="1")).stdout.split()
    assert quiet == ["3", "False", "40"]             # C++ logs off, Python loggers at ERROR
    assert loud[0] != "3" and loud[1] == "True" and loud[2] != "40"


def test_verbose_flag_sets_the_switch_while_parsing(monkeypatch):
    import util
    monkeypatch.delenv(util.VERBOSE_ENV, raising=False)
    ap = argparse.ArgumentParser()
    util.add_verbose_flag(ap)
    assert ap.parse_args([]).verbose is False and not util.verbose()
    assert ap.parse_args(["--verbose"]).verbose is True and util.verbose()


def test_native_lines_are_filtered_and_a_failure_passes_everything():
    code = """
import os, util
def write(text):
    os.write(2, text.encode())
with util.native_noise_dropped():
    write("W0000 00:00:1.5 123 tf_tfl_flatbuffer_helpers.cc:365] Ignored output_format.\\n")
    write("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    write("a line of ours\\n")
try:
    with util.native_noise_dropped():
        write("fully_quantize: 0, inference_type: 6\\n")
        raise RuntimeError
except RuntimeError:
    pass
"""
    assert run(["-c", code]).stderr.splitlines() == ["a line of ours", "fully_quantize: 0, inference_type: 6"]
    loud = run(["-c", code], user_env(SIGNBART_VERBOSE="1")).stderr
    assert "XNNPACK" in loud and "W0000" in loud
