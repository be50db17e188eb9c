"""How long each command-line script takes to answer --help, and whether it imports TensorFlow.

Every script is run --repeats times in a fresh Python process (`python -c` running the script as
__main__ with --help); the row reports the median and the slowest wall time of the whole process,
its exit code, whether `tensorflow` ended up in sys.modules, and how many lines it wrote to stderr
(log noise). No script needs TensorFlow to print its help, so each should answer in well under
1.5 s with no stderr line. tests/test_floors.py checks the exit code, the import and the silence
(never the time) with the same probe.

    python bench/bench_help.py                       # every script, 5 runs each
    python bench/bench_help.py --repeats 3 --scripts main_functional.py,predict_video.py --no_write
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import common
from runs import comma_list
from util import HelpFormatter, UserError, cli

BENCH = "help"
REPO_DIR = common.REPO_DIR
HELP_SCRIPTS = (  # the command-line scripts of the repository (seed names first)
    "extract_65_keypoints.py", "extract_63_keypoints.py", "extract_90_keypoints.py", "fix_loso.py",
    "make_demo_dataset.py", "main_functional.py", "train_loso_functional.py",
    "train_full_dataset.py", "ptq_export.py", "ptq_export_batch.py", "train_loso_functional_qat.py",
    "train_loso_functional_qat_batch.py", "run_qat_export.py", "evaluate_tflite_single.py",
    "test_tflite_models.py", "test_single_sample.py", "collect_results.py", "predict_video.py",
    "results_tables.py", "runs.py", "recipes.py", "config.py", "check_runtimes.py", "tflite_worker.py",
    "make_test_vectors.py", "build_karsl_subset.py", "layouts.py", "evaluate_enrollment.py",
    "onnx_export.py", "serve.py", "sweep.py",
)
PROBE = """import os, runpy, sys
script = sys.argv[1]
sys.argv = [script, "--help"]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
code = 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as e:
    code = e.code or 0
print("TENSORFLOW_IMPORTED" if "tensorflow" in sys.modules else "TENSORFLOW_NOT_IMPORTED")
sys.exit(code)
"""


def probe_help(script: str) -> dict:
    """A fresh process answering `script --help`: exit code, seconds, TF imported, stderr."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, script], cwd=REPO_DIR, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    lines = done.stdout.rstrip("\n").splitlines()
    return {"returncode": done.returncode, "seconds": seconds, "stderr": done.stderr,
            "tensorflow_imported": bool(lines) and lines[-1] == "TENSORFLOW_IMPORTED",
            "help_text": "\n".join(lines[:-1])}


def measure(script: str, repeats: int) -> dict:
    runs = [probe_help(script) for _ in range(repeats)]
    times = [r["seconds"] for r in runs]
    return {"script": script, "median_s": statistics.median(times), "max_s": max(times),
            "returncode": max(r["returncode"] for r in runs),
            "tensorflow_imported": any(r["tensorflow_imported"] for r in runs),
            "stderr_lines": max(len(r["stderr"].splitlines()) for r in runs)}


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--scripts", default=",".join(HELP_SCRIPTS),
                    help="comma list of scripts (repo-relative)")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per script")
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    scripts = comma_list(args.scripts)
    missing = [s for s in scripts if not (REPO_DIR / s).is_file()]
    if missing:
        raise UserError(f"--scripts: not found in {REPO_DIR}: {missing}")
    rows = [measure(script, args.repeats) for script in scripts]
    columns = {"script": "script", "median_s": "median s", "max_s": "max s", "returncode": "exit",
               "tensorflow_imported": "TF imported", "stderr_lines": "stderr lines"}
    settings = {"repeats": args.repeats}
    return common.report(args, BENCH, common.machine_info(), settings, rows, columns)


if __name__ == "__main__":
    main()
