"""The floors of the house, each checked in a fresh process:
- floor 0 (keypoints, config, recipes, preprocessing, augmentations, run plumbing, metrics, video
  layouts) imports no TensorFlow;
- the app path (predict_video -> video_recognition -> extraction, preprocessing, tflite_runtime)
  imports none;
- every command-line script answers --help with exit code 0, without importing TensorFlow and
  without a line on stderr. How fast it answers is measured by bench/bench_help.py, not asserted."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_help import HELP_SCRIPTS, probe_help  # noqa: E402

FLOOR_0 = ("keypoints", "config", "recipes", "preprocessing", "augmentations", "runs", "metrics",
           "layouts")
APP_PATH = ("predict_video", "video_recognition", "extraction", "preprocessing", "tflite_runtime")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)


def imports_tensorflow(module: str) -> bool:
    code = f"import sys; import {module}; print('tensorflow' in sys.modules)"
    return run_python(code).stdout.strip() == "True"


@pytest.mark.parametrize("module", FLOOR_0)
def test_floor_0_imports_no_tensorflow(module):
    assert not imports_tensorflow(module)


@pytest.mark.parametrize("module", APP_PATH)
def test_app_path_imports_no_tensorflow(module):
    assert not imports_tensorflow(module)


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_help_needs_no_tensorflow_and_prints_no_noise(script):
    result = probe_help(script)
    assert result["returncode"] == 0, result["stderr"]
    assert "usage:" in result["help_text"]
    assert not result["tensorflow_imported"]
    assert result["stderr"] == ""


def test_importing_tensorflow_prints_no_start_up_noise():
    """tf_env drops TensorFlow's known C++ start-up lines (CUDA plugins registered twice; cuInit
    failing on a machine without a GPU)."""
    assert run_python("import tf_env; tf_env.tf.zeros(1) + 1").stderr == ""
