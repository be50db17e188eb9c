"""Few-shot enrollment on LOSO folds: how much a held-out signer's own clips help the exported models.

For each LOSO fold of an experiment prefix (its held-out signer plays the app's user) and each exported model
(--modes, paths from runs.RunPaths.loso_model: fp32 = the checkpoint's final_model_fp32.tflite, int8 =
exports/ptq[_<prefix>]/<user>/model_int8.tflite, qat-int8 = exports/qat[_<prefix>]/<user>/qat_int8.tflite, ...),
every clip of the fold's test split (the data_path recorded in the model card, or <base_data_path>_LOSO_<user>)
is run through the .tflite ONCE: logits, embedding, descriptor (enrollment.describe). Then for each k of --ks and
each rotation r < --rotations: the repetitions r, r+1, ..., r+k-1 (mod n; the signer's n repetitions are the RZZ
of the userXX_GYY_RZZ.pkl names, sorted) of every sign enroll (enrollment.build_prototypes) and every other clip
is scored (enrollment.score, parameters from the card). A signer's top-1 at k is the mean over the rotations (at
most n distinct ones are run); k = 0 is the classifier alone on all the signer's clips. Each rotation also records
the classifier's top-1 on its own test clips, for a paired comparison.

The ONNX modes (onnx-fp32, onnx-int8: exports/ptq[_<prefix>]/<user>/model_<mode>.onnx, onnx_export.py) run in
ONNX Runtime. --runtime tflite-2.12 / tflite-2.17 (or just 2.12 / 2.17) computes the model outputs in that older TensorFlow Lite
(tflite_worker.py in the side venv of `bash setup_env.sh --runtimes`, as check_runtimes.py runs it); the
enrollment numpy runs here. A fold whose model or data is missing is one line, and the report lists and counts
them (exit code 1; 0 when everything was evaluated). No TensorFlow is imported.

Writes into --output_dir (default <root>/<dataset>/loso/results/[<prefix>/]enrollment[_<runtime>]/, which
`results_tables.py publish` copies into results/<name>/ beside the LOSO tables):
  report.txt                per mode a table: k as rows, signers as columns, mean and lowest signer
  enrollment_top1.csv       one row per mode x holdout x k: top-1 mean, std, min over rotations; clips
  enrollment_rotations.csv  one row per mode x holdout x k x rotation: enrolled repetitions, clips, top-1 and the
                            classifier's top-1 on the same test clips
  enrollment_top1.png       top-1 against k per mode: mean over signers and lowest signer
  enrollment.json           the settings, each model (path, sha256, enrollment parameters), what was missing

    python evaluate_enrollment.py --exp_prefix si                        # every trained fold, fp32 and int8
    python evaluate_enrollment.py --exp_prefix si --modes int8 --runtime 2.12 --holdouts user01,user03
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from enrollment import (ModelKey, Params, build_prototypes, card_blocks, card_hands, describe,
                        params_from_card, score)
from evaluation import EvalSet, csv_text, load_eval_set
from recipes import DEFAULT_DATASET_NAME, EVERY_TRAINED_HOLDOUT
from runs import (LOSO_MODEL_MODES, ONNX_FILES, card_path, comma_list, loso_data_path, run_paths, sample_repetition)
from model_runtime import is_onnx, open_model
from tflite_runtime import PINNED_RUNTIME, RUNTIMES, check_card_matches, read_model_card, resolve_config
from util import HelpFormatter, UserError, atomic_write_json, atomic_write_text, cli, git_commit

DEFAULT_MODES = "fp32,int8"
DEFAULT_KS = "1,2,3"
DEFAULT_ROTATIONS = 10
WORKER_TIMEOUT = 600      # seconds per model in an old runtime
ROTATION_FIELDS = ["mode", "holdout", "k", "rotation", "enrolled", "enroll_clips", "test_clips", "top1_pct",
                   "classifier_top1_pct"]
SUMMARY_FIELDS = ["mode", "holdout", "k", "rotations", "enroll_clips", "test_clips", "top1_pct", "top1_pct_std",
                  "top1_pct_min", "classifier_top1_pct"]


# ----------------------------------------------------------------------------------------------- rotations
def repetition_order(repetitions) -> list[str]:
    """The distinct repetition names, sorted with numbers compared as numbers (R2 before R10)."""
    def key(name: str):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
    return sorted(set(repetitions), key=key)


def rotation_plan(repetitions, k: int, rotations: int) -> list[tuple[str, ...]]:
    """The enrolled repetitions of each rotation r: order[r], ..., order[r + k - 1] (mod n), for
    r < min(rotations, n); [] when k >= n (no repetition would be left to test)."""
    order = repetition_order(repetitions)
    n = len(order)
    if k >= n:
        return []
    return [tuple(order[(r + j) % n] for j in range(k)) for r in range(min(rotations, n))]


@dataclass
class SignerClips:
    """One model's outputs on one signer's clips, computed once."""
    descriptors: np.ndarray     # (N, D')
    logits: np.ndarray          # (N, C)
    targets: np.ndarray         # (N,)
    repetitions: np.ndarray     # (N,) the RZZ of each clip
    runtime: str = ""           # the package that ran the model, e.g. "tensorflow 2.12.0"


@dataclass
class Scoring:
    """What enrollment needs from a model's card."""
    key: ModelKey
    blocks: tuple
    params: Params


def top1_pct(probabilities: np.ndarray, targets: np.ndarray) -> float:
    if not len(targets):
        return float("nan")
    return round(100.0 * float(np.mean(np.argmax(probabilities, axis=1) == targets)), 6)


def rotation_result(clips: SignerClips, enrolled: tuple, scoring: Scoring) -> dict:
    """Enroll the clips of the `enrolled` repetitions, score every other clip."""
    enroll = np.isin(clips.repetitions, enrolled)
    test = ~enroll
    prototypes = build_prototypes(clips.descriptors[enroll], clips.targets[enroll], scoring.key.num_labels,
                                  model=scoring.key, blocks=scoring.blocks)
    p = score(clips.descriptors[test], clips.logits[test], prototypes, scoring.params)
    return {"enrolled": " ".join(enrolled), "enroll_clips": int(enroll.sum()), "test_clips": int(test.sum()),
            "top1_pct": top1_pct(np.atleast_2d(p), clips.targets[test]),
            "classifier_top1_pct": top1_pct(clips.logits[test], clips.targets[test])}


def signer_rows(clips: SignerClips, ks: list[int], rotations: int, scoring: Scoring,
                label: dict) -> tuple[list[dict], list[dict], list[int]]:
    """(summary rows: k = 0 and each k; rotation rows; the ks skipped for lack of repetitions). label: the
    {'mode', 'holdout'} of every row."""
    plain = top1_pct(clips.logits, clips.targets)
    summary = [label | {"k": 0, "rotations": 0, "enroll_clips": 0, "test_clips": len(clips.targets),
                        "top1_pct": plain, "top1_pct_std": None, "top1_pct_min": plain,
                        "classifier_top1_pct": plain}]
    per_rotation, skipped = [], []
    for k in ks:
        plan = rotation_plan(clips.repetitions, k, rotations)
        if not plan:
            skipped.append(k)
            continue
        rows = [label | {"k": k, "rotation": r} | rotation_result(clips, enrolled, scoring)
                for r, enrolled in enumerate(plan)]
        top1 = np.array([row["top1_pct"] for row in rows])
        summary.append(label | {"k": k, "rotations": len(rows),
                                "enroll_clips": float(np.mean([row["enroll_clips"] for row in rows])),
                                "test_clips": float(np.mean([row["test_clips"] for row in rows])),
                                "top1_pct": float(top1.mean()),
                                "top1_pct_std": float(top1.std(ddof=1)) if len(rows) > 1 else None,
                                "top1_pct_min": float(top1.min()),
                                "classifier_top1_pct": float(np.mean([r["classifier_top1_pct"] for r in rows]))})
        per_rotation += rows
    return summary, per_rotation, skipped


# ----------------------------------------------------------------------------------------------- model outputs
def runtime_name(value: str) -> str:
    """--runtime: a name of tflite_runtime.RUNTIMES, or its version alone (2.12 -> tflite-2.12)."""
    if value in RUNTIMES:
        return value
    matches = [name for name in RUNTIMES if name.endswith(f"-{value}")]
    if len(matches) != 1:
        raise UserError(f"--runtime {value!r}: choose one of {list(RUNTIMES)} (or 2.12, 2.17)")
    return matches[0]


def pinned_outputs(path: Path, evalset: EvalSet, num_threads: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Logits (N, C), embeddings (N, D) and the runtime's version, in the pinned runtime, here."""
    from tflite_worker import runtime_version
    model = open_model(path, num_threads=num_threads)
    if is_onnx(path):
        from onnx_runtime import runtime_version as onnx_version
        version = onnx_version()
    else:
        version = runtime_version(RUNTIMES[PINNED_RUNTIME][0])
    logits, embeddings = [], []
    for i in tqdm(range(len(evalset)), desc=path.name, leave=False, disable=len(evalset) < 50):
        out, embedding, _ = model.run_with_embedding(evalset.keypoints[i:i + 1], evalset.masks[i:i + 1])
        logits.append(out)
        embeddings.append(embedding)
    return np.concatenate(logits), np.concatenate(embeddings), version


def worker_outputs(runtime: str, path: Path, evalset: EvalSet, folder: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The same in an older runtime: tflite_worker.py in its side venv (check_runtimes.run_worker)."""
    from check_runtimes import STATUS, run_worker
    folder.mkdir(parents=True, exist_ok=True)
    clips = folder / "clips.npz"
    if not clips.exists():
        np.savez(clips, keypoints=evalset.keypoints, attention_mask=evalset.masks)
    result = run_worker(runtime, path, clips, folder / f"{path.stem}_{runtime}.npz", WORKER_TIMEOUT)
    if result["stage"] != "ok":
        raise UserError(f"{path}: {STATUS[result['stage']]} in {runtime}: {result['error']}")
    if result["embedding"].size == 0:
        raise UserError(f"{path}: the model has no 'embedding' output (exported before card version 6); "
                        "export it again")
    return result["logits"], result["embedding"], str(result["runtime"])


def signer_clips(path: Path, evalset: EvalSet, repetitions: np.ndarray, args, folder: Path,
                 card: dict) -> SignerClips:
    if args.runtime == PINNED_RUNTIME:
        logits, embeddings, version = pinned_outputs(path, evalset, args.num_threads)
    else:
        logits, embeddings, version = worker_outputs(args.runtime, path, evalset, folder)
    hands = card_hands(card)
    descriptors = np.stack([describe(e, k, m, hands) for e, k, m in
                            zip(embeddings, evalset.keypoints, evalset.masks)])
    return SignerClips(descriptors, logits, evalset.targets, repetitions, version)


# ----------------------------------------------------------------------------------------------- one fold
@dataclass
class Fold:
    user: str
    models: dict               # mode -> .tflite path that exists
    evalset: EvalSet | None = None
    repetitions: np.ndarray | None = None


def find_fold(paths, user: str, args, notes: list[str]) -> Fold | None:
    """The fold's existing models (a missing one is a note) and its held-out clips; None when nothing to do."""
    models = {}
    for mode in args.modes:
        path = paths.loso_model(user, mode, args.exp_prefix)
        if path.is_file():
            models[mode] = path
        else:
            notes.append(f"{user} {mode}: {path} not found")
    if not models:
        return None
    try:
        first = next(iter(models.values()))
        cfg = resolve_config(first)
        for path in models.values():
            check_card_matches(cfg, path)
        data_path = fold_data_path(first, user, args)
        evalset = load_eval_set(data_path, args.split, cfg, tflite_path=first)
        return Fold(user, models, evalset, clip_repetitions(evalset))
    except UserError as e:
        notes.append(f"{user}: {e}")
        return None


def fold_data_path(model: Path, user: str, args) -> Path:
    if args.base_data_path:
        return loso_data_path(args.base_data_path, user)
    data_path = read_model_card(model).get("training", {}).get("data_path")
    if not data_path:
        raise UserError(f"{card_path(model)} records no training data_path; pass --base_data_path")
    return Path(data_path)


def clip_repetitions(evalset: EvalSet) -> np.ndarray:
    repetitions = [sample_repetition(p) for p in evalset.paths]
    unnamed = [p for p, r in zip(evalset.paths, repetitions) if r is None]
    if unnamed:
        raise UserError(f"{unnamed[0]}: not named userXX_GYY_RZZ.pkl; no repetition to rotate")
    return np.array(repetitions)


def evaluate_fold(fold: Fold, args, folder: Path, notes: list[str], skipped: list[str],
                  record: dict) -> tuple[list, list]:
    """Every mode of one fold: (summary rows, rotation rows); a model that fails is a note, a k the signer
    has too few repetitions for is a `skipped` line."""
    summary, rotations = [], []
    for mode, path in fold.models.items():
        try:
            card = read_model_card(path)
            scoring = Scoring(ModelKey.from_card(path, card), card_blocks(card), params_from_card(card))
            clips = signer_clips(path, fold.evalset, fold.repetitions, args, folder, card)
        except UserError as e:
            notes.append(f"{fold.user} {mode}: {e}")
            continue
        rows, per_rotation, too_few = signer_rows(clips, args.ks, args.rotations, scoring,
                                                  {"mode": mode, "holdout": fold.user})
        skipped += [f"{fold.user} {mode}: k = {k}: the signer has only "
                    f"{len(repetition_order(fold.repetitions))} repetitions" for k in too_few]
        summary, rotations = summary + rows, rotations + per_rotation
        record.setdefault(fold.user, {"data_path": fold.evalset.data_path, "split": fold.evalset.split,
                                      "clips": len(fold.evalset),
                                      "repetitions": repetition_order(fold.repetitions), "models": {}})
        record[fold.user]["models"][mode] = {"path": str(path), "sha256": scoring.key.sha256,
                                             "params": vars(scoring.params), "runtime": clips.runtime}
    return summary, rotations


# ----------------------------------------------------------------------------------------------- report
def mode_table(rows: list[dict], mode: str) -> list[str]:
    """Markdown: k as rows, signers as columns, then the mean over signers and the lowest signer."""
    mine = [r for r in rows if r["mode"] == mode]
    signers = sorted({r["holdout"] for r in mine})
    lines = [f"### {mode}: top-1 (%) on the held-out signer's other clips, mean over rotations", "",
             "| k | " + " | ".join(signers) + " | mean | lowest |", "|" + "---|" * (len(signers) + 3)]
    for k in sorted({r["k"] for r in mine}):
        cell = {r["holdout"]: r["top1_pct"] for r in mine if r["k"] == k}
        lowest = min(cell, key=cell.get)
        lines.append(f"| {'0 (classifier)' if k == 0 else k} | "
                     + " | ".join(f"{cell[s]:.1f}" if s in cell else "–" for s in signers)
                     + f" | {np.mean(list(cell.values())):.1f} | {cell[lowest]:.1f} ({lowest}) |")
    return lines + [""]


def curves(rows: list[dict]) -> dict:
    """{mode: {'k', 'mean', 'lowest'}} over signers, for the plot."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        ks = sorted({r["k"] for r in rows if r["mode"] == mode})
        values = [[r["top1_pct"] for r in rows if r["mode"] == mode and r["k"] == k] for k in ks]
        out[mode] = {"k": ks, "mean": [float(np.mean(v)) for v in values], "lowest": [min(v) for v in values]}
    return out


def report_text(rows: list[dict], notes: list[str], skipped: list[str], args, record: dict) -> str:
    params = {str(m["params"]) for fold in record.values() for m in fold["models"].values()}
    signers = ", ".join(f"{user} ({fold['clips']} clips)" for user, fold in sorted(record.items()))
    versions = sorted({m["runtime"] for fold in record.values() for m in fold["models"].values()})
    lines = [f"Few-shot enrollment on the held-out signers: {args.dataset_name}, prefix {args.exp_prefix or '(none)'}",
             f"evaluated {time.strftime('%Y-%m-%d %H:%M:%S')} (git {git_commit()}), runtime {args.runtime} "
             f"({', '.join(versions)}), "
             f"split {args.split}",
             f"k = {', '.join(map(str, args.ks))} enrollment clips per sign; up to {args.rotations} rotations of "
             "the signer's repetitions (k consecutive ones enroll, every other clip is tested); k = 0: the "
             "classifier alone on all the signer's clips",
             f"enrollment parameters (model cards): {'; '.join(sorted(params))}",
             f"signers: {signers}", ""]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        lines += mode_table(rows, mode)
    lines.append(f"missing ({len(notes)})" + (":" if notes else ""))
    lines += [f"  {note}" for note in notes]
    if skipped:
        lines += ["k skipped (no repetition left to test):", *[f"  {line}" for line in skipped]]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list, rotations: list, notes: list, skipped: list, args,
                  record: dict) -> str:
    from plots import plot_enrollment   # matplotlib: seconds to import, after the work
    text = report_text(rows, notes, skipped, args, record)
    atomic_write_text(out / "report.txt", text)
    atomic_write_text(out / "enrollment_top1.csv", csv_text(rows, SUMMARY_FIELDS))
    if rotations:
        atomic_write_text(out / "enrollment_rotations.csv", csv_text(rotations, ROTATION_FIELDS))
    plot_enrollment(curves(rows), f"Few-shot enrollment ({args.runtime})", out / "enrollment_top1.png")
    settings = {k: v for k, v in vars(args).items()}
    atomic_write_json(out / "enrollment.json", {"settings": settings, "folds": record, "missing": notes,
                                                "skipped": skipped})
    return text


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--exp_prefix", default="", help="experiment prefix of the LOSO runs")
    ap.add_argument("--dataset_name", default=DEFAULT_DATASET_NAME, help="dataset folder under the output root")
    ap.add_argument("--output_root", default="", help="output root ('': $SIGNBART_OUTPUT_ROOT, else outputs)")
    ap.add_argument("--holdouts", default=EVERY_TRAINED_HOLDOUT,
                    help="comma list of held-out signers, or 'all': every trained fold of the prefix")
    ap.add_argument("--modes", default=DEFAULT_MODES, help=f"comma list of {list(LOSO_MODEL_MODES)}")
    ap.add_argument("--ks", default=DEFAULT_KS, help="comma list of enrollment clips per sign (k >= 1)")
    ap.add_argument("--rotations", type=int, default=DEFAULT_ROTATIONS,
                    help="rotations of the repetitions per k (at most the number of repetitions run)")
    ap.add_argument("--runtime", default=PINNED_RUNTIME,
                    help=f"where the models run: one of {list(RUNTIMES)}, or 2.12 / 2.17")
    ap.add_argument("--base_data_path", default="",
                    help="dataset root: clips from <root>_LOSO_<user>/<split> ('': the model card's data_path)")
    ap.add_argument("--split", default="test", help="split of the fold's data with the held-out signer")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads")
    ap.add_argument("--output_dir", default="",
                    help="('': <root>/<dataset>/loso/results/[<prefix>/]enrollment[_<runtime>])")
    args = ap.parse_args(argv)
    args.modes = comma_list(args.modes)
    unknown = [m for m in args.modes if m not in LOSO_MODEL_MODES]
    if unknown or not args.modes:
        raise UserError(f"--modes: unknown mode(s) {unknown}; choose from {list(LOSO_MODEL_MODES)}")
    try:
        args.ks = sorted({int(k) for k in comma_list(args.ks)})
    except ValueError:
        raise UserError(f"--ks: expected a comma list of integers, got {args.ks!r}") from None
    if not args.ks or args.ks[0] < 1 or args.rotations < 1:
        raise UserError("need --ks >= 1 and --rotations >= 1")
    args.runtime = runtime_name(args.runtime)
    onnx = [m for m in args.modes if m in ONNX_FILES]
    if onnx and args.runtime != PINNED_RUNTIME:
        raise UserError(f"--modes {','.join(onnx)}: ONNX models run in ONNX Runtime, not in --runtime "
                        f"{args.runtime}; evaluate them without --runtime")
    return args


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.runtime != PINNED_RUNTIME:
        from check_runtimes import runtime_python
        runtime_python(args.runtime)             # a missing side venv: one line before any work
    paths = run_paths(args.dataset_name, "loso", args.output_root or None)
    holdouts = (paths.loso_holdouts(args.exp_prefix) if args.holdouts.strip().lower() == "all"
                else comma_list(args.holdouts))
    if not holdouts:
        raise UserError(f"no trained LOSO fold of prefix {args.exp_prefix!r} under {paths.base}")
    out = Path(args.output_dir) if args.output_dir else paths.enrollment_dir(
        args.exp_prefix, "" if args.runtime == PINNED_RUNTIME else args.runtime)
    rows, rotations, notes, skipped, record = [], [], [], [], {}
    with tempfile.TemporaryDirectory(prefix="evaluate_enrollment_") as tmp:
        for user in tqdm(holdouts, desc="folds", disable=len(holdouts) < 2):
            fold = find_fold(paths, user, args, notes)
            if fold is not None:
                summary, per_rotation = evaluate_fold(fold, args, Path(tmp) / user, notes, skipped, record)
                rows, rotations = rows + summary, rotations + per_rotation
    if not rows:
        raise UserError(f"nothing evaluated ({len(notes)} missing: {notes[0] if notes else 'no fold'})")
    print(write_outputs(out, rows, rotations, notes, skipped, args, record))
    print(f"wrote {out}/: report.txt, enrollment_top1.csv, enrollment_rotations.csv, enrollment_top1.png, "
          "enrollment.json")
    return 1 if notes else 0


if __name__ == "__main__":
    sys.exit(main())
