"""The floors of the house, each checked in a fresh process:
- floor 0 (keypoints, config, recipes, preprocessing, augmentations, run plumbing, metrics, video
  layouts, enrollment) imports no TensorFlow;
- the app path (predict_video -> video_recognition, video_enrollment -> extraction, preprocessing,
  tflite_runtime, onnx_runtime, model_runtime; enrollment; the live server serve.py -> live_stream)
  imports none;
- every command-line script answers --help with exit code 0, without importing TensorFlow and
  without a line on stderr. How fast it answers is measured by bench/bench_help.py, not asserted;
- no import cycle among the project's modules, function-level imports included;
- no module imports the run tree (runs.py) only for the utility drawer (util.py)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_help import HELP_SCRIPTS, probe_help  # noqa: E402

FLOOR_0 = ("keypoints", "config", "recipes", "preprocessing", "augmentations", "runs", "run_lock", "util",
           "metrics", "layouts", "enrollment")
APP_PATH = ("predict_video", "video_recognition", "video_enrollment", "extraction", "preprocessing",
            "tflite_runtime", "onnx_runtime", "model_runtime", "enrollment", "live_stream", "serve")


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


def project_imports() -> dict[str, set[str]]:
    """module -> the project's top-level modules it imports anywhere in its file (functions too)."""
    modules = {p.stem: p for p in REPO.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        graph[name] = (found & modules.keys()) - {name}
    return graph


def test_no_import_cycles():
    graph = project_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_nobody_imports_the_run_tree_only_for_the_drawer():
    """util.py holds the drawer; a module that takes from runs.py must take some of the run tree."""
    import util
    drawer = {name for name in vars(util) if not name.startswith("__")}
    offenders = []
    for path in list(REPO.glob("*.py")) + list(REPO.glob("bench/*.py")) + list(REPO.glob("tests/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "runs":
                names = {a.name for a in node.names}
                if names & drawer:
                    offenders.append(f"{path.name}: {sorted(names & drawer)} from runs")
    assert not offenders, offenders
