"""Collect the results of a LOSO experiment: FP32 vs PTQ vs QAT per held-out signer, over one or several seeds.

Only the holdouts that were actually trained are collected: experiments `[<prefix>_]<dataset>_LOSO_<user>` found
under checkpoints/ or training_metadata/ (--holdouts narrows them; a requested holdout that was not trained is
reported). Per holdout the models are, by exact path (a missing one is reported, never replaced by another file):
  FP32       checkpoints/<exp>/final_model_fp32.tflite
  PTQ        <ptq_base_dir>/<user>/model_dynamic_int8.tflite     (default exports/ptq[_<prefix>])
  QAT        <qat_base_dir>/<user>/qat_dynamic_int8.tflite       (default exports/qat[_<prefix>])
  PTQ-<m>, QAT-<m>   any other .tflite in those folders (the other quantization modes)
  ONNX-fp32, ONNX-int8   <ptq_base_dir>/<user>/model_fp32.onnx, model_int8.onnx (onnx_export.py), in ONNX Runtime
  Keras FP32 (training)   the test top-1/top-5 that main_functional measured on final_model.h5 (metadata)
With --run_evaluation each model is evaluated on the holdout's test split (evaluation.py) and the result is stored
as results/evaluations/<exp>/<model>.json; without it, stored results are reused when they still match the file.

Writes to results/[<prefix>/] (prefix = --exp_prefix_base or --exp_prefix): the text report
experiment_results_<time>_<evaluated|stored>.txt (also printed), summary_table.csv, per_class_accuracy.csv,
model_info.csv, confusion_matrices/*.png (per holdout x model, and ALL = summed over holdouts and seeds).
Every CSV row is a mean with its std (ddof 1) and n: per holdout over seeds, and ALL = over holdouts (one seed)
or over the seeds' means across holdouts (several seeds). Dataset, classes and recipe come from the run metadata.

    python collect_results.py --run_evaluation --base_data_path data/arabic-asl-65kpts
    python collect_results.py --run_evaluation --base_data_path data/arabic-asl-65kpts \\
        --seed_list 42,511 --exp_prefix_base arabic_asl_65kpts_pose_hands \\
        --ptq_base_dir "outputs/arabic_asl/loso/exports/ptq_arabic_asl_65kpts_pose_hands_seed{seed}" \\
        --qat_base_dir "outputs/arabic_asl/loso/exports/qat_arabic_asl_65kpts_pose_hands_seed{seed}"

--run_type full collects the full-dataset model <dataset>_full (--full_exp_name) and its PTQ/QAT
exports (full/exports/{ptq,qat}[_<prefix>]/) into full/results/[<prefix>/]: full_models.csv (file,
size, the card's Keras-vs-TFLite parity, whether file and card agree), model_info.csv (parameters,
FLOPs, sizes) and full_results_<time>.txt. It trained on every signer: no held-out signer is left.
With --data_path it also evaluates that folder's --split, labelled "held-out signers" only when none
of the split's signers was trained on, else "TRAINING DATA (not a test accuracy)".

    python collect_results.py --run_type full --dataset_name arabic_asl
"""
from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import metrics
from config import model_hparams
from evaluation import (SUMMARY_METRICS, check_evaluation, csv_text, evaluate_tflite, format_cell,
                        load_eval_set, model_file_info, summary_row, text_table)
from preprocessing import MAX_FRAMES
from recipes import DEFAULT_DATASET_NAME
from results_report import KERAS_TEST, model_info_rows, read_training_record, write_report
from runs import (FINAL_MODEL, FP32_TFLITE, ONNX_SUFFIX, PTQ_FILES, QAT_FILES, comma_list, full_experiment_name,
    loso_data_path, loso_experiment_name, parse_sample_name, run_paths)
from util import UserError, atomic_write_json, atomic_write_text, cli, read_json
from tflite_runtime import check_card_matches, display_names, read_model_card, resolve_config

PTQ_FILE, QAT_FILE = PTQ_FILES["dynamic"], QAT_FILES["dynamic"]  # the canonical PTQ and QAT models
KERAS_TAG = "Keras FP32 (training)"
CANONICAL_TAGS = ("FP32", "PTQ", "QAT")
ONNX_TAG = "ONNX"  # ONNX-<mode>: the .onnx exports beside the PTQ models, after the TFLite rows


@dataclass
class Run:
    """One trained LOSO experiment (seed x holdout) and what was found and measured for it."""
    seed: str | None
    holdout: str
    experiment: str
    checkpoint_dir: Path
    metadata: dict
    models: dict = field(default_factory=dict)        # tag -> .tflite path
    missing: list = field(default_factory=list)       # human-readable notes on absent artefacts
    evaluations: dict = field(default_factory=dict)   # tag -> evaluation.evaluate_tflite result

    @property
    def finished(self) -> bool:
        """Training wrote its final model (a fold with only a resume/ checkpoint has not finished)."""
        return (self.checkpoint_dir / FINAL_MODEL).is_file()


# ----------------------------------------------------------------------------------------------- discovery
def seed_plans(args, paths) -> list[tuple]:
    """[(seed or None, experiment prefix, ptq base dir, qat base dir)] for --seed_list (or the single run)."""
    seeds = comma_list(args.seed_list)
    templated = [f for f in ("exp_prefix", "ptq_base_dir", "qat_base_dir") if "{seed}" in getattr(args, f)]
    if not seeds and templated:
        raise UserError(f"--{templated[0]} contains {{seed}} but no --seed_list is given")
    if seeds and not (args.exp_prefix_base or "{seed}" in args.exp_prefix):
        raise UserError("--seed_list needs --exp_prefix_base (runs <base>_seed<seed>) or {seed} in --exp_prefix")
    plans = []
    for seed in seeds or [None]:
        prefix = f"{args.exp_prefix_base}_seed{seed}" if seed and args.exp_prefix_base else \
            args.exp_prefix.format(seed=seed)
        ptq = Path(args.ptq_base_dir.format(seed=seed)) if args.ptq_base_dir else paths.export_dir("ptq", prefix)
        qat = Path(args.qat_base_dir.format(seed=seed)) if args.qat_base_dir else paths.export_dir("qat", prefix)
        plans.append((seed, prefix, ptq, qat))
    return plans


def export_tag(kind: str, path: Path) -> str:
    """'PTQ' for model_dynamic_int8.tflite, 'PTQ-int8' for model_int8.tflite, 'QAT-float16' for qat_float16...,
    'ONNX-fp32' for model_fp32.onnx."""
    stem = path.stem
    mode = stem.split("_", 1)[1] if stem.startswith(("model_", "qat_")) and "_" in stem else stem
    kind = ONNX_TAG if path.suffix == ONNX_SUFFIX else kind
    return kind if mode == "dynamic_int8" else f"{kind}-{mode}"


def find_models(run: Run, ptq_dir: Path, qat_dir: Path) -> None:
    """Fill run.models with the exact expected files (and other exports in the PTQ/QAT folders); note the absent."""
    if not run.finished:
        run.missing.append(f"training not finished: no final_model.h5 in {run.checkpoint_dir}")
    expected = {"FP32": run.checkpoint_dir / FP32_TFLITE, "PTQ": ptq_dir / PTQ_FILE,
                "QAT": qat_dir / QAT_FILE}
    for tag, path in expected.items():
        if path.is_file():
            run.models[tag] = path
        else:
            run.missing.append(f"{tag}: {path} not found")
    for kind, folder in (("PTQ", ptq_dir), ("QAT", qat_dir)):
        for path in sorted([*folder.glob("*.tflite"), *folder.glob(f"*{ONNX_SUFFIX}")]) if folder.is_dir() else []:
            run.models.setdefault(export_tag(kind, path), path)
    if not run.metadata:
        run.missing.append(f"training metadata: training_metadata/{run.experiment}_latest.json not found")


def discover_runs(args, paths) -> list[Run]:
    runs = []
    wanted = comma_list(args.holdouts)
    for seed, prefix, ptq_base, qat_base in seed_plans(args, paths):
        trained = paths.loso_holdouts(prefix)
        for user in wanted:
            if user not in trained:
                print(f"note: holdout {user} (prefix {prefix!r}) was not trained: no "
                      f"{loso_experiment_name(args.dataset_name, user, prefix)} under {paths.base}")
        for user in [u for u in trained if not wanted or u in wanted]:
            exp = loso_experiment_name(args.dataset_name, user, prefix)
            meta_file = paths.latest_record(exp)
            run = Run(seed, user, exp, paths.checkpoint_dir(exp),
                      read_training_record(meta_file) if meta_file.is_file() else {})
            find_models(run, ptq_base / user, qat_base / user)
            runs.append(run)
    if not runs:
        raise UserError(f"no trained LOSO experiment of dataset {args.dataset_name!r} under {paths.base} "
                        f"(prefixes {[p[1] for p in seed_plans(args, paths)]})")
    return runs


# ----------------------------------------------------------------------------------------------- evaluation
def run_config(run: Run, config_path: str) -> dict:
    """--config_path (checked against every model card) or the card of the run's first model."""
    if not run.models:
        raise UserError(f"{run.experiment}: no .tflite model found ({'; '.join(run.missing)})")
    cfg = resolve_config(next(iter(run.models.values())), config_path)
    for path in run.models.values():
        check_card_matches(cfg, path)
    return cfg


def stored_result(cache: Path, path: Path, data_path: str, split: str) -> dict | None:
    """A stored evaluation, if it belongs to this very file (size, mtime) and split; a damaged one,
    or one with fields of the wrong type (evaluation.EVALUATION_RECORD), is evaluated again, never
    trusted."""
    if not cache.is_file():
        return None
    try:
        result = check_evaluation(read_json(cache, "stored evaluation"), str(cache))
    except UserError:
        return None
    now = model_file_info(path)
    same_file = all(result["model"][k] == now[k] for k in ("path", "size_bytes", "mtime_ns"))
    same_data = result["data_path"] == data_path and result["split"] == split
    return result if same_file and same_data else None


def evaluate_run(run: Run, cfg: dict, args, cache_root: Path) -> None:
    data_path = str(loso_data_path(args.base_data_path, run.holdout)) if args.base_data_path else \
        run.metadata.get("data_path")
    if not data_path:
        run.missing.append("test data: no --base_data_path and no data_path in the training metadata")
        return
    clips = None
    for tag, path in run.models.items():
        cache = cache_root / run.experiment / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', tag)}.json"
        result = None if args.run_evaluation else stored_result(cache, path, data_path, args.split)
        if result is None and args.run_evaluation:
            clips = clips or load_eval_set(data_path, args.split, cfg, args.max_samples, tflite_path=path)
            result = evaluate_tflite(path, clips, args.num_threads)
            atomic_write_json(cache, result)
        if result is None:
            run.missing.append(f"{tag}: not evaluated yet (run with --run_evaluation)")
        else:
            run.evaluations[tag] = result


# ----------------------------------------------------------------------------------------------- tables
def model_order(tag: str) -> tuple:
    return (0,) if tag == KERAS_TAG else (1, CANONICAL_TAGS.index(tag)) if tag in CANONICAL_TAGS else \
        (3, tag) if tag.startswith(f"{ONNX_TAG}-") else (2, tag)


def summary_records(runs: list[Run]) -> list[dict]:
    """One record per (seed, holdout, model) with evaluation.SUMMARY_METRICS (+ the Keras test numbers)."""
    records = []
    for run in runs:
        test = run.metadata.get("test") or {}
        if all(test.get(k) is not None for k in KERAS_TEST):
            records.append({"seed": run.seed, "holdout": run.holdout, "model": KERAS_TAG, "samples": test["samples"],
                            "top1_pct": 100 * test["accuracy"], "top5_pct": 100 * test["top5_accuracy"],
                            "loss": test["loss"]})
        fp32 = run.evaluations.get("FP32")
        for tag, result in run.evaluations.items():
            records.append({"seed": run.seed, "holdout": run.holdout, "model": tag, "samples": result["samples"]}
                           | summary_row(result, fp32))
    return sorted(records, key=lambda r: (model_order(r["model"]), r["holdout"], str(r["seed"])))


def per_class_records(runs: list[Run]) -> list[dict]:
    records = []
    for run in runs:
        for tag, result in run.evaluations.items():
            for label, acc in result["per_class_accuracy"].items():
                records.append({"seed": run.seed, "holdout": run.holdout, "model": tag, "class": label,
                                "name": result["label_names"].get(label, ""),
                                "accuracy_pct": None if acc is None else 100 * acc})
    return sorted(records, key=lambda r: (model_order(r["model"]), r["holdout"]))


def plot_confusions(runs: list[Run], folder: Path) -> list[Path]:
    """Per run x model, and ALL per model (counts summed over holdouts and seeds)."""
    from plots import plot_confusion_matrix  # matplotlib + seaborn: seconds to import
    written, totals = [], {}
    for run in runs:
        for tag, result in run.evaluations.items():
            cm, names = np.asarray(result["confusion_matrix"]), display_names(result["labels"], result["label_names"])
            seed = f"_seed{run.seed}" if run.seed else ""
            title = f"Confusion matrix - test signer {run.holdout} ({tag}{', seed ' + run.seed if run.seed else ''})"
            written.append(plot_confusion_matrix(cm, names, title, folder / f"confusion_matrix_{run.holdout}_"
                                                                             f"{file_tag(tag)}{seed}.png"))
            total = totals.setdefault(tag, [np.zeros_like(cm), names, set()])
            total[0] += cm
            total[2].add(run.holdout)
    for tag, (cm, names, holdouts) in totals.items():
        title = f"Confusion matrix - all test signers: {', '.join(sorted(holdouts))} ({tag})"
        written.append(plot_confusion_matrix(cm, names, title, folder / f"confusion_matrix_ALL_{file_tag(tag)}.png"))
    return written


def file_tag(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", tag).strip("_")


def model_summary(runs: list[Run], cfgs: list[dict]) -> dict:
    """Parameters and FLOPs (computed once: every run must share the network hyperparameters) and file sizes."""
    distinct = {json.dumps(model_hparams(c), sort_keys=True) for c in cfgs}
    if len(distinct) > 1:
        raise UserError(f"the runs use {len(distinct)} different network configs; collect them separately "
                        f"(--exp_prefix / --holdouts)")
    from model_functional import build_model, count_flops, parameter_breakdown
    cfg = cfgs[0]
    sizes = {}
    for run in runs:
        for tag, path in [("Keras .h5", run.checkpoint_dir / FINAL_MODEL), *run.models.items()]:
            if Path(path).is_file():
                sizes.setdefault(tag, []).append(Path(path).stat().st_size / 2**20)
    network = build_model(cfg, max_frames=MAX_FRAMES, batch_size=1)  # static shapes, for the FLOP count
    return {"parameters": parameter_breakdown(network), "flops": count_flops(cfg, network),
            "hparams": model_hparams(cfg), "sizes_mb": sizes}


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run_evaluation", action="store_true",
                    help="evaluate every model now (default: reuse stored evaluations that match the files)")
    ap.add_argument("--config_path", default="", help="YAML config (default: each run's model card)")
    ap.add_argument("--base_data_path", default="",
                    help="dataset root; test data = <root>_LOSO_<user>/<split> (default: the run metadata's data_path)")
    ap.add_argument("--dataset_name", default=DEFAULT_DATASET_NAME,
                    help=f"output folder name (default: {DEFAULT_DATASET_NAME})")
    ap.add_argument("--run_type", default="loso", choices=("loso", "full"),
                    help="loso: held-out signers; full: the full-dataset models (see above)")
    ap.add_argument("--full_exp_name", default="",
                    help="full: the experiment (default: <dataset>_full)")
    ap.add_argument("--data_path", default="",
                    help="full: a dataset folder to evaluate on (its --split)")
    ap.add_argument("--output_root", default="", help="output root (default: $SIGNBART_OUTPUT_ROOT or outputs)")
    ap.add_argument("--exp_prefix", default="", help="experiment prefix of the runs (may contain {seed})")
    ap.add_argument("--exp_prefix_base", default="", help="with --seed_list: runs are <base>_seed<seed>")
    ap.add_argument("--seed_list", default="", help="comma list of seeds for a multi-seed summary (default: none)")
    ap.add_argument("--ptq_base_dir", default="", help="PTQ export folder holding <user>/ (may contain {seed}; "
                                                       "default: exports/ptq[_<prefix>])")
    ap.add_argument("--qat_base_dir", default="", help="QAT export folder holding <user>/ (may contain {seed}; "
                                                       "default: exports/qat[_<prefix>])")
    ap.add_argument("--holdouts", default="", help="comma list: collect only these trained holdouts (default: all)")
    ap.add_argument("--split", default="test", help="split evaluated (default: test)")
    ap.add_argument("--max_samples", type=int, default=None, help="evaluate a seeded subset of N clips (default: all)")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default: 1)")
    ap.add_argument("-o", "--output", default="", help="text report path (default: results/experiment_results_*.txt)")
    ap.add_argument("--no-console", dest="no_console", action="store_true", help="do not print the report")
    ap.add_argument("--no-csv", dest="no_csv", action="store_true", help="do not write the CSV tables")
    return ap.parse_args(argv)


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.run_type == "full":
        return collect_full(args)
    paths = run_paths(args.dataset_name, args.run_type, args.output_root or None)
    prefix = args.exp_prefix_base or args.exp_prefix.replace("{seed}", "seeds")
    results_dir = paths.results_dir(prefix)
    runs = discover_runs(args, paths)
    cfgs = []
    for run in runs:
        if not run.models:
            continue
        cfgs.append(run_config(run, args.config_path))
        evaluate_run(run, cfgs[-1], args, paths.results_dir() / "evaluations")
    if not cfgs:
        raise UserError("none of the trained runs has a .tflite model: " + "; ".join(runs[0].missing))
    model = model_summary(runs, cfgs)
    tables = {"summary_table": metrics.aggregate(summary_records(runs), ("model",),
                                                 ("samples", *SUMMARY_METRICS)),
              "per_class_accuracy": metrics.aggregate(per_class_records(runs), ("model", "class", "name"),
                                                        ("accuracy_pct",)),
              "model_info": model_info_rows(model)}
    written = plot_confusions(runs, results_dir / "confusion_matrices")
    if not args.no_csv:
        for name, rows in tables.items():
            if rows:
                written.append(atomic_write_text(results_dir / f"{name}.csv", csv_text(rows)))
    mode = "evaluated" if args.run_evaluation else "stored"
    report_path = Path(args.output) if args.output else \
        results_dir / f"experiment_results_{time.strftime('%Y%m%d_%H%M%S')}_{mode}.txt"
    report = write_report(report_path, runs, tables, model, args, written)
    if not args.no_console:
        print(report)
    print(f"wrote {report_path}, {len(written)} other files under {results_dir}")
    return {"runs": runs, "tables": tables, "model": model, "report": report_path, "written": written}


# ------------------------------------------------------------------------------------ full dataset
def full_model_row(tag: str, path: Path, cfg: dict) -> dict:
    """File, size, the card's Keras-vs-TFLite parity; card_agrees: the file has the card's size."""
    card, size = read_model_card(path), path.stat().st_size
    check_card_matches(cfg, path)
    parity = card.get("parity") or {}
    return {"model": tag, "file": str(path), "mode": card.get("mode", ""),
            "size_mb": round(size / 2**20, 4), "card_agrees": card.get("size_bytes") == size,
            "parity_clips": parity.get("clips"),
            "parity_max_abs_logit_diff": parity.get("max_abs_logit_diff"),
            "parity_argmax_identical": parity.get("argmax_identical"),
            "parity_passed": parity.get("passed")}


def evaluate_full(run: Run, cfg: dict, args) -> dict:
    """Top-1 of every model on --data_path/--split, labelled by whether its signers were trained."""
    clips = load_eval_set(args.data_path, args.split, cfg, args.max_samples,
                          tflite_path=next(iter(run.models.values())))
    signers = sorted({(parse_sample_name(p) or ("?",))[0] for p in clips.paths})
    trained = set(run.metadata.get("train_users") or [])
    seen = [u for u in signers if u in trained or not trained]
    kind = "held-out signers" if not seen else "TRAINING DATA (not a test accuracy)" \
        if len(seen) == len(signers) else f"PARTLY TRAINING DATA ({', '.join(seen)} trained on)"
    out = {}
    for tag, path in run.models.items():
        result = evaluate_tflite(path, clips, args.num_threads)
        out[tag] = {"eval_data": f"{args.data_path}/{args.split}",
                    "eval_signers": " ".join(signers), "eval_is": kind,
                    "eval_clips": result["samples"],
                    "eval_top1_pct": round(100 * result["top1"], 2)}
    return out


def collect_full(args) -> dict:
    paths = run_paths(args.dataset_name, "full", args.output_root or None)
    exp = args.full_exp_name or full_experiment_name(args.dataset_name)
    meta_file = paths.latest_record(exp)
    run = Run(None, "full", exp, paths.checkpoint_dir(exp),
              read_training_record(meta_file) if meta_file.is_file() else {})
    find_models(run, Path(args.ptq_base_dir or paths.export_dir("ptq", args.exp_prefix)),
                Path(args.qat_base_dir or paths.export_dir("qat", args.exp_prefix)))
    if not run.models:
        raise UserError(f"no full-dataset model of experiment {exp}: " + "; ".join(run.missing))
    cfg = run_config(run, args.config_path)
    models = sorted(run.models.items(), key=lambda kv: model_order(kv[0]))
    rows = [full_model_row(tag, path, cfg) for tag, path in models]
    if args.data_path:
        evaluated = evaluate_full(run, cfg, args)
        rows = [row | evaluated[row["model"]] for row in rows]
    model = model_summary([run], [cfg])
    results_dir = paths.results_dir(args.exp_prefix)
    written = [atomic_write_text(results_dir / "full_models.csv", csv_text(rows)),
               atomic_write_text(results_dir / "model_info.csv", csv_text(model_info_rows(model)))]
    header = ["model", "size (MB)", "card agrees", "parity |dlogit|", "argmax same"] + \
        (["top-1 (%)", "evaluated on"] if args.data_path else [])
    evaluated_cells = lambda r: [f"{r['eval_top1_pct']:.2f}", f"{r['eval_data']}: {r['eval_is']}"] \
        if args.data_path else []  # noqa: E731
    table = text_table(header, [[r["model"], f"{r['size_mb']:.3f}", r["card_agrees"],
                                 format_cell(r["parity_max_abs_logit_diff"], "{:.1e}"),
                                 f"{r['parity_argmax_identical']}/{r['parity_clips']}",
                                 *evaluated_cells(r)] for r in rows])
    report = "\n".join([f"Full-dataset models of {exp} (trained on every signer: no held-out one)",
                        f"parameters {model['parameters']}, FLOPs per clip {model['flops']:,}",
                        table, *[f"missing: {note}" for note in run.missing]]) + "\n"
    report_path = Path(args.output) if args.output else \
        results_dir / f"full_results_{time.strftime('%Y%m%d_%H%M%S')}.txt"
    atomic_write_text(report_path, report)
    if not args.no_console:
        print(report)
    print(f"wrote {report_path}, {', '.join(p.name for p in written)} under {results_dir}")
    return {"run": run, "rows": rows, "model": model, "report": report_path, "written": written}


if __name__ == "__main__":
    main()
