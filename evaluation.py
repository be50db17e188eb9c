"""Evaluating .tflite (and .onnx: model_runtime.open_model) models on a dataset split: the loop behind evaluate_tflite_single.py, test_tflite_models.py,
test_single_sample.py and collect_results.py.

    cfg = resolve_config(tflite_path)                        # (tflite_runtime) the card's config
    clips = load_eval_set(data_path, "test", cfg)            # dataset.load_split + SplitData.padded, timed
    results = evaluate_tflite(tflite_path, clips)            # a JSON-able dict (metrics.py computes every number)

Timing, per model (one interpreter thread by default):
  invoke_ms        the interpreter's invoke() alone, per clip: median and p90 over the clips
  end_to_end_ms    per clip, amortized: reading + preprocessing the split (divided by its clips), loading the
                   model (divided by the evaluated clips) and the whole run() call (quantize, set, invoke, get)
A model with no card beside it needs --config_path; a card and a --config_path that disagree are an error.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

import metrics
from dataset import load_split, read_label_maps, read_label_names
from recipes import DEFAULT_SEED
from util import NUMBER, ListOf, MapOf, UserError, bounded, check_fields
from model_runtime import open_model
from tflite_runtime import display_names, read_model_card

TOP_K = 5
EVALUATION_RECORD = {  # an evaluate_tflite result as stored and read back: every key, these types
    "model": {"path": str, "size_bytes": int, "size_mb": NUMBER, "mtime_ns": int},
    "mode": str, "integer_io": bool, "data_path": str, "split": str, "samples": int,
    "num_classes": int, "top1": NUMBER, "top5": NUMBER, "loss": NUMBER, "labels": ListOf(str),
    "label_names": MapOf(str), "per_class_accuracy": MapOf(NUMBER),
    "confusion_matrix": ListOf(ListOf(int)), "num_threads": int,
    "invoke_ms": {"median_ms": NUMBER, "p90_ms": NUMBER}, "end_to_end_ms": NUMBER,
    "predictions": ListOf(int), "paths": ListOf(str),
}


def check_evaluation(result, where: str) -> dict:
    """A stored evaluate_tflite result with EVALUATION_RECORD's keys and types and a square
    confusion matrix of its labels; UserError otherwise."""
    check_fields(result, EVALUATION_RECORD, where, required=True)
    n, cm = len(result["labels"]), result["confusion_matrix"]
    if len(cm) != n or any(len(row) != n for row in cm):
        raise UserError(f"{where}: the confusion matrix is not {n} x {n} (a row and column per label)")
    return result


# ----------------------------------------------------------------------------------------------- CLI
def add_evaluation_args(ap, config_default: str = "the model card beside the .tflite") -> None:
    """Flags shared by the evaluation scripts: what to read, how much of it, and how to run the interpreter."""
    ap.add_argument("--data_path", required=True, help="dataset root holding <split>/GXX/*.pkl and the label maps")
    ap.add_argument("--split", default="test", help="split folder to evaluate (default: test)")
    ap.add_argument("--config_path", default="",
                    help=f"YAML config (default: {config_default}; a card and a config must agree)")
    ap.add_argument("--max_samples", type=bounded(int, lambda v: v >= 1, ">= 1"), default=None,
                    help="evaluate a seeded random subset of this many clips (default: all)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help=f"seed of the --max_samples subset (default: {DEFAULT_SEED})")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default: 1)")


# ----------------------------------------------------------------------------------------------- labels
def class_labels(data_path, tflite_path=None) -> tuple[list[str], dict]:
    """(labels by class id, {label: human name}) from the dataset's label maps; the model card, when there is
    one, must list the same labels in the same order."""
    _, id2label = read_label_maps(data_path)
    labels = [id2label[i] for i in sorted(id2label)]
    card = read_model_card(tflite_path) if tflite_path else {}
    check_card_labels(card, labels, tflite_path, data_path)
    names = read_label_names(data_path) or card.get("label_names", {})
    return labels, names


def check_card_labels(card: dict, labels: list[str], tflite_path, data_path) -> None:
    if card.get("labels") and card["labels"] != labels:
        raise UserError(f"{tflite_path} was trained with labels {card['labels']}, but {data_path} has {labels}")


# ----------------------------------------------------------------------------------------------- data
@dataclass
class EvalSet:
    """A split, preprocessed exactly as in training and padded for the TFLite signature."""
    data_path: str
    split: str
    keypoints: np.ndarray      # (N, 64, K, 2) float32
    masks: np.ndarray          # (N, 64) float32 length masks
    targets: np.ndarray        # (N,) int32 class ids
    paths: list
    labels: list               # class labels by id
    label_names: dict
    seconds_per_clip: float    # reading + preprocessing, per clip of the split

    def __len__(self):
        return len(self.targets)


def load_eval_set(data_path, split: str, cfg: dict, max_samples: int | None = None, seed: int = DEFAULT_SEED,
                  tflite_path=None, mirror: bool = False) -> EvalSet:
    """Read `<data_path>/<split>`; with max_samples, keep a seeded random subset of that many clips; mirror:
    every clip mirrored first (dataset.load_split)."""
    start = time.perf_counter()
    data = load_split(data_path, split, cfg, mirror=mirror)
    keypoints, masks, targets = data.padded(cfg)      # (N, 64, K, 2), (N, 64), (N,)
    seconds_per_clip = (time.perf_counter() - start) / len(data)
    keep = np.arange(len(data))
    if max_samples and max_samples < len(data):
        keep = np.sort(np.random.default_rng(seed).choice(len(data), max_samples, replace=False))
    labels, names = class_labels(data_path, tflite_path)
    return EvalSet(str(data_path), split, keypoints[keep], masks[keep], targets[keep],
                   [data.paths[i] for i in keep], labels, names, seconds_per_clip)


# ----------------------------------------------------------------------------------------------- evaluation
def model_file_info(tflite_path) -> dict:
    """Path, size and modification time: enough to tell whether a stored result still belongs to the file."""
    stat = Path(tflite_path).stat()
    return {"path": str(tflite_path), "size_bytes": stat.st_size, "size_mb": stat.st_size / 2**20,
            "mtime_ns": stat.st_mtime_ns}


def run_model(model, clips: EvalSet, desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits (N, C), invoke seconds (N,) and whole-run() seconds (N,), one clip at a time."""
    logits, invoke, wall = [], [], []
    for i in tqdm(range(len(clips)), desc=desc, leave=False, disable=len(clips) < 50):
        start = time.perf_counter()
        out, seconds = model.run(clips.keypoints[i:i + 1], clips.masks[i:i + 1])
        wall.append(time.perf_counter() - start)
        logits.append(out)
        invoke.append(seconds)
    return np.concatenate(logits), np.array(invoke), np.array(wall)


def check_input_size(model, clips: EvalSet) -> None:
    expected, got = int(model.keypoints_input["shape"][2]), clips.keypoints.shape[2]
    if expected != got:
        raise UserError(f"{model.source} takes {expected} keypoints per frame, but the config selects {got}")


def evaluate_tflite(tflite_path, clips: EvalSet, num_threads: int = 1) -> dict:
    """Every metric of one model on one EvalSet, as a JSON-able dict (see the module docstring for timings)."""
    start = time.perf_counter()
    model = open_model(tflite_path, num_threads=num_threads)
    load_seconds = time.perf_counter() - start
    check_input_size(model, clips)
    num_classes = int(model.output["shape"][-1])
    if num_classes != len(clips.labels):
        raise UserError(f"{tflite_path} outputs {num_classes} classes, but {clips.data_path} has {len(clips.labels)}")
    logits, invoke, wall = run_model(model, clips, Path(tflite_path).name)
    predictions = logits.argmax(axis=1)
    card = read_model_card(tflite_path)
    check_card_labels(card, clips.labels, tflite_path, clips.data_path)
    cm = metrics.confusion_matrix(clips.targets, predictions, num_classes)
    per_class = metrics.per_class_accuracy(cm)
    return {
        "model": model_file_info(tflite_path),
        "mode": card.get("mode", "unknown"),
        "integer_io": model.integer_io,
        "inputs": model.io_description("inputs"),
        "data_path": clips.data_path, "split": clips.split, "samples": len(clips), "num_classes": num_classes,
        "top1": metrics.topk_accuracy(logits, clips.targets, 1),
        "top5": metrics.topk_accuracy(logits, clips.targets, TOP_K),
        "loss": metrics.mean_cross_entropy(logits, clips.targets),
        "labels": clips.labels, "label_names": clips.label_names,
        "per_class_accuracy": {lab: (None if np.isnan(a) else float(a)) for lab, a in zip(clips.labels, per_class)},
        "confusion_matrix": cm.tolist(),
        "num_threads": num_threads,
        "invoke_ms": metrics.latency_summary(invoke),
        "end_to_end_ms": 1000.0 * (clips.seconds_per_clip + load_seconds / len(clips) + float(wall.mean())),
        "predictions": predictions.tolist(), "targets": clips.targets.tolist(), "paths": clips.paths,
        "evaluated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def format_results(results: dict) -> str:
    """Human-readable summary of one evaluate_tflite result (used by evaluate_tflite_single.py)."""
    names = display_names(results["labels"], results["label_names"])
    cm = np.asarray(results["confusion_matrix"])
    lines = [
        f"model     {results['model']['path']} ({results['mode']}, {results['model']['size_mb']:.3f} MB"
        f"{', integer I/O' if results['integer_io'] else ''})",
        f"data      {results['data_path']}/{results['split']}: {results['samples']} clips",
        f"top-1     {results['top1']:.2%}   top-{TOP_K} {results['top5']:.2%}   loss {results['loss']:.4f}",
        f"invoke    median {results['invoke_ms']['median_ms']:.2f} ms, p90 {results['invoke_ms']['p90_ms']:.2f} ms "
        f"per clip ({results['num_threads']} thread)",
        f"end2end   {results['end_to_end_ms']:.2f} ms per clip (read + preprocess + load model + run)",
        "per-class accuracy:",
    ]
    for name, row, acc in zip(names, cm, results["per_class_accuracy"].values()):
        lines.append(f"  {name:<28} {'n/a' if acc is None else f'{acc:7.2%}'}  ({row.sum()} clips)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- comparison tables
SUMMARY_METRICS = {  # row key -> (column title, format): the numbers every comparison table shows per model
    "top1_pct": ("Top-1 (%)", "{:.2f}"),
    "top5_pct": (f"Top-{TOP_K} (%)", "{:.2f}"),
    "agreement_pct": ("Agree FP32 (%)", "{:.2f}"),
    "size_mb": ("Size (MB)", "{:.3f}"),
    "invoke_median_ms": ("Invoke median (ms)", "{:.3f}"),
    "invoke_p90_ms": ("Invoke p90 (ms)", "{:.3f}"),
    "end_to_end_ms": ("End-to-end (ms)", "{:.3f}"),
    "loss": ("Loss", "{:.4f}"),
}


def summary_row(results: dict, reference: dict | None = None) -> dict:
    """SUMMARY_METRICS of one evaluate_tflite result; agreement with `reference` (the FP32 result on the same clips)."""
    same_clips = reference is not None and reference["paths"] == results["paths"]
    agreement = metrics.agreement(results["predictions"], reference["predictions"]) if same_clips else None
    return {
        "top1_pct": 100 * results["top1"], "top5_pct": 100 * results["top5"],
        "agreement_pct": None if agreement is None else 100 * agreement,
        "size_mb": results["model"]["size_mb"],
        "invoke_median_ms": results["invoke_ms"]["median_ms"], "invoke_p90_ms": results["invoke_ms"]["p90_ms"],
        "end_to_end_ms": results["end_to_end_ms"], "loss": results["loss"],
    }


def format_cell(value, fmt: str = "{}") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return fmt.format(value)


def text_table(header: list[str], rows: list[list]) -> str:
    """Left-aligned first column, right-aligned others; cells are strings."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """Rows as CSV text (csv module quoting); None and NaN become empty cells."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames or list(rows[0]), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and np.isnan(v)) else v for k, v in row.items()})
    return out.getvalue()
