"""Run exported .tflite models in every TFLite runtime that apps ship, on real held-out clips, and
compare.

Mobile apps do not run the pinned ai-edge-litert: the Flutter plugin tflite_flutter bundles an older
TensorFlow Lite (0.11.x: 2.11 on Android, 2.12 on iOS; 0.12.x: LiteRT 1.4, a 2.17-era runtime, on
Android, 2.12 on iOS). A model can fail to load there (a newer op version) or load and silently give
other answers (a changed kernel). This script runs each model in each runtime of
tflite_runtime.RUNTIMES: the pinned ai-edge-litert, TensorFlow Lite 2.17 and 2.12 (side venvs that
`bash setup_env.sh --runtimes` creates). For each model x runtime it prints and writes (CSV) whether
it loads and runs, its top-1, its argmax agreement with the pinned runtime and the max |dlogit|
against it, and for the second output, the embedding (enrollment.py), the lowest cosine similarity
and max |dvalue| against the pinned runtime. A runtime passes when agreement >=
RUNTIME_MIN_AGREEMENT (99 %), the embedding cosine >= RUNTIME_MIN_EMBEDDING_COSINE (0.99) on every
clip and, for fp32/float16, max |dlogit| and max |dembedding| <= 1e-4. docs/runtimes.md explains the
results and which file to ship for which app.

    bash setup_env.sh --runtimes                       # once: .venv-tflite-2.12, .venv-tflite-2.17
    python check_runtimes.py --data_path data/mlr511-90kpts_LOSO_user01 \\
        --models outputs/arabic_asl/loso/exports/ptq/user01 \\
                 outputs/arabic_asl/loso/exports/qat/user01 \\
        --output_csv results/runtime_compat.csv --update_cards

--models takes .tflite and .onnx files and folders (every *.tflite and *.onnx in them). A .onnx runs in
ONNX Runtime (onnx_runtime.py), one more runtime: its row shows that it loads and runs, its top-1 and invoke time
(its agreement with Keras was checked at export, onnx_convert.py). Clips are preprocessed as in
evaluation (the config comes from each model's card). --update_cards writes the result into each
model's card (`runtimes`: per runtime, whether it loads, agreement, max |dlogit|, passed; and the
oldest verified runtime). A model exported before the embedding output is checked on its logits
alone. Exit code: 0 when every model passes in every runtime, 1 when one does
not, 2 on bad input (e.g. a side venv is missing: run `bash setup_env.sh --runtimes`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from evaluation import csv_text
from recipes import DEFAULT_SEED
from util import UserError, atomic_write_json, atomic_write_text, cli
from enrollment import normalize
from runs import ONNX_SUFFIX
from tflite_runtime import (PINNED_RUNTIME, RUNTIME_MAX_EMBEDDING_DIFF, RUNTIME_MAX_LOGIT_DIFF,
                            RUNTIME_MIN_AGREEMENT, RUNTIME_MIN_EMBEDDING_COSINE, RUNTIMES,
                            CARD_CONFIG_KEYS, card_path, read_model_card, resolve_config)

REPO = Path(__file__).resolve().parent
WORKER = REPO / "tflite_worker.py"
ONNX_RUNTIME = "onnxruntime"  # the runtime of every .onnx file (tflite_worker.py --interpreter onnxruntime, here)
CSV_FIELDS = ["model", "mode", "runtime", "runtime_version", "status", "top1", "agreement",
              "max_abs_logit_diff", "min_embedding_cosine", "max_abs_embedding_diff", "passed",
              "invoke_ms", "error"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True,
                    help=".tflite files and/or folders of them")
    ap.add_argument("--data_path", required=True,
                    help="dataset root holding <split>/GXX/*.pkl and the label maps")
    ap.add_argument("--split", default="test",
                    help="split to run (default: test, the held-out signer)")
    ap.add_argument("--max_samples", type=int, default=None,
                    help="seeded random subset of clips (default: all)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help=f"seed of that subset (default: {DEFAULT_SEED})")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES),
                    help=f"comma-separated subset of {list(RUNTIMES)} "
                         f"(default: all; {PINNED_RUNTIME} is always run)")
    ap.add_argument("--output_csv", default="", help="write the table as CSV here (default: none)")
    ap.add_argument("--update_cards", action="store_true",
                    help="record the result in each model's card")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds per model and runtime (default: 600)")
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------- inputs
def find_models(paths: list[str]) -> list[Path]:
    models = []
    for p in map(Path, paths):
        if p.is_dir():
            models += sorted(p.glob("*.tflite")) + sorted(p.glob(f"*{ONNX_SUFFIX}"))
        elif p.suffix in (".tflite", ONNX_SUFFIX) and p.is_file():
            models.append(p)
        else:
            raise UserError(f"{p}: not a .tflite or .onnx file or a folder")
    if not models:
        raise UserError(f"no .tflite or .onnx model in {paths}")
    return models


def model_runtimes(model: Path, names: list[str]) -> list[str]:
    """The runtimes a file runs in: ONNX Runtime for a .onnx, the selected TFLite runtimes otherwise."""
    return [ONNX_RUNTIME] if model.suffix == ONNX_SUFFIX else names


def runtime_python(name: str) -> str:
    """The python that runs tflite_worker.py for runtime `name` (a missing side venv: a clear
    error)."""
    if name == ONNX_RUNTIME:
        return sys.executable
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime {name!r}; choose from {list(RUNTIMES)}")
    venv_python = RUNTIMES[name][1]
    if venv_python is None:
        return sys.executable
    path = REPO / venv_python
    if not path.exists():
        raise UserError(f"runtime {name} needs {venv_python}; "
                        "create it with: bash setup_env.sh --runtimes")
    return str(path)


def selected_runtimes(spec: str) -> list[str]:
    asked = [n.strip() for n in spec.split(",") if n.strip()]
    names = [PINNED_RUNTIME] + [n for n in asked if n != PINNED_RUNTIME]
    for name in names:
        runtime_python(name)
    return names


def write_clips(model: Path, args, folder: Path, cache: dict):
    """The held-out clips preprocessed for this model's card, as an .npz for the worker (cached
    per config)."""
    from evaluation import load_eval_set
    cfg = resolve_config(model)
    key = repr([cfg.get(k) for k in CARD_CONFIG_KEYS])  # everything the preprocessing reads
    if key not in cache:
        clips = load_eval_set(args.data_path, args.split, cfg, args.max_samples, args.seed, model)
        path = folder / f"clips_{len(cache)}.npz"
        np.savez(path, keypoints=clips.keypoints, attention_mask=clips.masks)
        cache[key] = (path, clips.targets)
    return cache[key]


# ------------------------------------------------------------------------------------ running
def run_workers(name: str, jobs: list[tuple[Path, Path, Path]], timeout: float) -> list[dict]:
    """Run models in one runtime: jobs are (model, clips .npz, output .npz). One worker process runs
    them in order (the runtime is imported once); when it dies or times out, the model it was on gets
    that as its result and a new worker takes the rest. Each model has `timeout` seconds."""
    interpreter = ONNX_RUNTIME if name == ONNX_RUNTIME else RUNTIMES[name][0]
    results, pending = {}, list(jobs)
    while pending:
        cmd = [runtime_python(name), str(WORKER), "--interpreter", interpreter]
        for model, clips_path, out in pending:
            cmd += ["--job", str(model), str(clips_path), str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * len(pending),
                                  env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
            why = f"crashed (exit code {proc.returncode})"
            stderr = [line for line in proc.stderr.splitlines() if line.strip()]
            if stderr:
                why += f": {stderr[-1].strip()[:200]}"
            failure = {"stage": "crash", "error": why, "runtime": name}
        except subprocess.TimeoutExpired:
            failure = {"stage": "timeout", "error": f"no result within {timeout:.0f} s", "runtime": name}
        for job in pending:
            if job[2].exists():
                with np.load(job[2]) as result:
                    results[job] = {k: result[k].item() if result[k].ndim == 0 else result[k]
                                    for k in result.files}
        rest = [job for job in pending if job not in results]
        if rest:  # the worker ended on rest[0]
            results[rest[0]] = failure
            rest = rest[1:]
        pending = rest
    return [results[job] for job in jobs]


def run_worker(name: str, model: Path, clips_path: Path, out: Path, timeout: float) -> dict:
    """Run one model in one runtime (a subprocess); the worker's result, or why there is none."""
    return run_workers(name, [(model, clips_path, out)], timeout)[0]


STATUS = {"ok": "ok", "load": "does not load", "run": "does not run", "crash": "crashes",
          "timeout": "timeout"}


def compare(mode: str, name: str, result: dict, reference: dict | None,
            targets: np.ndarray) -> dict:
    """One table row: status, top-1, agreement and max |dlogit| against the pinned runtime,
    passed."""
    row = {"runtime": name, "runtime_version": result.get("runtime", name),
           "status": STATUS[result["stage"]], "error": result.get("error", ""), "top1": None,
           "agreement": None, "max_abs_logit_diff": None, "min_embedding_cosine": None,
           "max_abs_embedding_diff": None, "passed": False, "invoke_ms": None}
    if result["stage"] != "ok":
        return row
    logits = result["logits"]
    row |= {"top1": float(np.mean(logits.argmax(1) == targets)),
            "invoke_ms": float(1000 * np.median(result["invoke_seconds"]))}
    if reference is None or reference["stage"] != "ok":
        return row
    row["agreement"] = float(np.mean(logits.argmax(1) == reference["logits"].argmax(1)))
    row["max_abs_logit_diff"] = float(np.abs(logits - reference["logits"]).max())
    bound = RUNTIME_MAX_LOGIT_DIFF.get(mode)
    embedding_ok = embedding_agrees(mode, result, reference, row)  # fills its columns in every case
    row["passed"] = bool(row["agreement"] >= RUNTIME_MIN_AGREEMENT
                         and (bound is None or row["max_abs_logit_diff"] <= bound) and embedding_ok)
    return row


def embedding_agrees(mode: str, result: dict, reference: dict, row: dict) -> bool:
    """Fill the row's embedding columns (lowest cosine, max |dvalue| against the pinned runtime) and say
    whether they are within bounds; True for a model without an embedding output."""
    embedding, expected = result.get("embedding"), reference.get("embedding")
    if embedding is None or expected is None or embedding.size == 0 or expected.size == 0:
        return True
    cosine = float(np.min(np.sum(normalize(embedding) * normalize(expected), axis=-1)))
    diff = float(np.abs(embedding - expected).max())
    row |= {"min_embedding_cosine": cosine, "max_abs_embedding_diff": diff}
    bound = RUNTIME_MAX_EMBEDDING_DIFF.get(mode)
    return cosine >= RUNTIME_MIN_EMBEDDING_COSINE and (bound is None or diff <= bound)


def check_models(models: list[Path], names: list[str], args, folder: Path) -> list[tuple[list[dict], int]]:
    """Every runtime for every model, pinned first (the others are compared with it); per model,
    (rows, number of clips). One worker per runtime runs all its models (run_workers). A .onnx runs in
    ONNX Runtime alone: its row passes when it loads and runs (onnx_convert checked it against Keras at
    export)."""
    cache = {}
    clips = [write_clips(model, args, folder, cache) for model in models]
    runtimes = [model_runtimes(model, names) for model in models]
    results = {}  # (model index, runtime) -> the worker's result
    for name in dict.fromkeys(n for model_names in runtimes for n in model_names):
        indices = [i for i, model_names in enumerate(runtimes) if name in model_names]
        jobs = [(models[i], clips[i][0], folder / f"{i}_{models[i].stem}_{name}.npz") for i in indices]
        results |= dict(zip([(i, name) for i in indices], run_workers(name, jobs, args.timeout)))
    checked = []
    for i, (model, (_, targets)) in enumerate(zip(models, clips)):
        mode = read_model_card(model).get("mode", "unknown")
        reference = results[i, runtimes[i][0]]
        rows = [{"model": str(model), "mode": mode}
                | compare(mode, name, results[i, name], reference, targets) for name in runtimes[i]]
        rows[0]["passed"] = reference["stage"] == "ok"
        checked.append((rows, len(targets)))
    return checked


# ------------------------------------------------------------------------------------- output
def oldest_passing(rows: list[dict]) -> str | None:
    """The oldest runtime (RUNTIMES is newest first) such that it and every newer one checked
    passed."""
    oldest = None
    order = [*RUNTIMES, ONNX_RUNTIME]
    for row in sorted(rows, key=lambda r: order.index(r["runtime"])):
        if not row["passed"]:
            break
        oldest = row["runtime_version"]
    return oldest


def card_block(rows: list[dict], args, clips: int) -> dict:
    return {"checked_with": "check_runtimes.py", "data_path": str(args.data_path),
            "split": args.split,
            "clips": clips, "reference": rows[0]["runtime"], "min_agreement": RUNTIME_MIN_AGREEMENT,
            "oldest_verified_runtime": oldest_passing(rows),
            "results": [{k: row[k] for k in CSV_FIELDS if k not in ("model", "mode")}
                        for row in rows]}


def update_card(model: Path, rows: list[dict], args, clips: int) -> None:
    card = read_model_card(model)
    if not card:
        print(f"{model}: no model card to update")
        return
    card["runtimes"] = card_block(rows, args, clips)
    atomic_write_json(card_path(model), card)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = ["| model | mode | runtime | status | top-1 | agreement | max abs dlogit "
             "| min embedding cos | max abs dembedding | passed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).name} | {r['mode']} | {r['runtime_version']} | "
                     f"{r['status']} | "
                     f"{fmt(r['top1'], '.1%')} | {fmt(r['agreement'], '.1%')} | "
                     f"{fmt(r['max_abs_logit_diff'], '.1e')} | {fmt(r['min_embedding_cosine'], '.5f')} | "
                     f"{fmt(r['max_abs_embedding_diff'], '.1e')} | {'yes' if r['passed'] else 'NO'} |")
    return "\n".join(lines)


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    names = selected_runtimes(args.runtimes)
    models = find_models(args.models)
    rows = []
    with tempfile.TemporaryDirectory(prefix="check_runtimes_") as tmp:
        for model, (model_rows, clips) in zip(models, check_models(models, names, args, Path(tmp))):
            for row in model_rows:
                if row["status"] != "ok":
                    print(f"{model.name} in {row['runtime_version']}: {row['status']}: "
                          f"{row['error']}")
            if args.update_cards:
                update_card(model, model_rows, args, clips)
            rows += model_rows
    print(table(rows))
    if args.output_csv:
        atomic_write_text(args.output_csv, csv_text(rows, CSV_FIELDS))
        print(f"wrote {args.output_csv}")
    failed = sorted({Path(r["model"]).name for r in rows if not r["passed"]})
    print(f"{len(models)} model(s), {len(rows)} model x runtime run(s): "
          + (f"NOT verified everywhere: {', '.join(failed)}" if failed else "all pass"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
