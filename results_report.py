"""The text report and the model_info table of collect_results.py.

Everything in the prose comes from the runs: dataset name, classes, recipe and data from the training metadata
(training_metadata/<exp>_latest.json written by main_functional.py), the network from the model config, numbers
from the aggregated tables (metrics.aggregate: mean ± sample std, with n and what the std runs over).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import metrics
from evaluation import SUMMARY_METRICS, TOP_K, text_table
from runs import RECORD_RECIPE_KEYS, recorded_recipe
from util import NUMBER, ListOf, atomic_write_text, check_fields, read_json

RECIPE_KEYS = {  # training metadata key (epochs, lr, batch_size: runs.recorded_recipe) -> label in the report
    "epochs": "epochs", "lr": "learning rate (AdamW)", "batch_size": "batch size", "seed": "seed",
    "no_validation": "no validation", "val_users": "validation signers", "train_samples": "training clips",
    "config_path": "config", "tensorflow_version": "TensorFlow", "git_commit": "git commit",
}
REPORT_METRICS = ("top1_pct", "top5_pct", "agreement_pct", "size_mb", "invoke_median_ms", "end_to_end_ms")
TRAINING_RECORD = {  # what the results use of a training record (main_functional.py), with JSON types
    "dataset_name": str, "data_path": str, "holdout_user": str, "config_path": str,
    "seed": (int, str), "epochs": int, "batch_size": int, "learning_rate": NUMBER,
    "model_parameters": int, "rest_hand_cutoff": NUMBER, "dominant_hand_ratio": NUMBER,
    "train_users": ListOf(str),
    "test": {"samples": int, "accuracy": NUMBER, "top5_accuracy": NUMBER, "loss": NUMBER},
    "training": {"epochs": int, "batch_size": int, "lr": NUMBER},   # the recipe, in newer records
}
KERAS_TEST = ("samples", "accuracy", "top5_accuracy", "loss")  # the record's test result, if whole


def read_training_record(path, required=()) -> dict:
    """training_metadata/<exp>.json with TRAINING_RECORD's JSON types (and the `required` keys): a
    record of the wrong type is one UserError naming the file, not a traceback in the middle of a
    table. The recipe is read from either record shape (runs.recorded_recipe) and returned at the
    top level too (epochs, batch_size, learning_rate), so readers need not know the shape."""
    record = check_fields(read_json(path, "training metadata"), TRAINING_RECORD, str(path))
    recipe = recorded_recipe(record)
    flat = {old: recipe[key] for key, old in RECORD_RECIPE_KEYS.items() if recipe.get(key) is not None}
    return check_fields(record | flat, {}, str(path), required)


# ----------------------------------------------------------------------------------------------- model_info.csv
def model_info_rows(model: dict) -> list[dict]:
    """Rows metric, value, std, n, unit: parameters, FLOPs (plain numbers) and the mean file size of each model."""
    rows = [{"metric": f"Parameters ({group})", "value": count, "std": None, "n": 1, "unit": "params"}
            for group, count in model["parameters"].items()]
    rows += [{"metric": "FLOPs per clip (forward pass)", "value": model["flops"], "std": None, "n": 1,
              "unit": "FLOPs"},
             {"metric": "FLOPs per clip (forward pass)", "value": round(model["flops"] / 1e6, 3), "std": None,
              "n": 1, "unit": "MFLOPs"}]
    for tag, sizes in model["sizes_mb"].items():
        mean, std, n = metrics.mean_std(sizes)
        rows.append({"metric": f"File size ({tag})", "value": round(mean, 4), "std": std if n > 1 else None,
                     "n": n, "unit": "MB"})
    return rows


# ----------------------------------------------------------------------------------------------- helpers
def mean_pm_std(row: dict, key: str, fmt: str, missing: str = "-") -> str:
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return missing
    return fmt.format(value) + ("" if std is None or np.isnan(std) else " ± " + fmt.format(std))


def distinct(runs, key: str) -> str:
    values = []
    for run in runs:
        record = recorded_recipe(run.metadata) if key in RECORD_RECIPE_KEYS else run.metadata
        value = record.get(key)
        if value is not None and value not in values:
            values.append(value)
    return " / ".join(map(str, values)) if values else "(not recorded)"


def class_list(runs) -> list[str]:
    for run in runs:
        for result in run.evaluations.values():
            names = result["label_names"]
            return [f"{label} ({names[label]})" if names.get(label) else label for label in result["labels"]]
    return []


# ----------------------------------------------------------------------------------------------- sections
def header(runs, args) -> list[str]:
    dataset = distinct(runs, "dataset_name") if any(r.metadata for r in runs) else args.dataset_name
    seeds = sorted({r.seed for r in runs if r.seed}, key=str)
    unfinished = sorted({r.holdout for r in runs if not r.finished})
    holdouts = sorted({r.holdout for r in runs} - set(unfinished))
    return [
        "=" * 100,
        f"{dataset.upper()} - SIGN RECOGNITION RESULTS",
        f"Leave-one-signer-out, {len(holdouts)} trained test signer(s): {', '.join(holdouts)}"
        + (f"; training not finished: {', '.join(unfinished)}" if unfinished else "")
        + (f"; seeds {', '.join(seeds)}" if seeds else ""),
        f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        + ("models evaluated now" if args.run_evaluation else "stored evaluations (collect_results --run_evaluation "
                                                                "re-evaluates)")
        + f"; split '{args.split}'" + (f", subset of {args.max_samples} clips" if args.max_samples else ""),
        "=" * 100,
    ]


def runs_section(runs) -> list[str]:
    rows = [[r.seed or "-", r.holdout, r.experiment, ", ".join(r.models) or "none",
             str((r.metadata.get("test") or {}).get("samples", "-"))] for r in runs]
    lines = ["", "1. RUNS COLLECTED", text_table(["Seed", "Holdout", "Experiment", "Models found", "Test clips"], rows)]
    missing = [f"  {r.experiment}: {note}" for r in runs for note in r.missing]
    lines += ["Missing or not evaluated:", *missing] if missing else ["Nothing missing."]
    return lines


def recipe_section(runs) -> list[str]:
    classes = class_list(runs)
    lines = ["", "2. DATA AND TRAINING RECIPE (from the training metadata)",
             f"  data (test = held-out signer): {distinct(runs, 'data_path')}",
             f"  classes: {len(classes)}" + (f" - {', '.join(classes)}" if classes else "")]
    train_users = {r.holdout: r.metadata.get("train_users") for r in runs if r.metadata.get("train_users")}
    if train_users:
        lines.append("  training signers: " + "; ".join(f"{h} held out -> {len(u)} signers" for h, u in
                                                         sorted(train_users.items())))
    lines += [f"  {label}: {distinct(runs, key)}" for key, label in RECIPE_KEYS.items()]
    return lines


def network_section(model: dict) -> list[str]:
    h = model["hparams"]
    lines = ["", "3. NETWORK, SIZE AND COST",
             f"  SignBART: {h['num_keypoints']} keypoints (x -> encoder, y -> decoder), d_model {h['d_model']}, "
             f"{h['encoder_layers']}+{h['decoder_layers']} layers, {h['encoder_attention_heads']} heads, "
             f"FFN {h['encoder_ffn_dim']}, {h['num_labels']} classes, input [1, 64, {h['num_keypoints']}, 2] + mask",
             "  parameters: " + ", ".join(f"{k} {v:,}" for k, v in model["parameters"].items()),
             f"  FLOPs per clip: {model['flops']:,} ({model['flops'] / 1e6:.2f} MFLOPs)",
             f"    method: {metrics.FLOPS_METHOD}",
             "  file sizes (MB, mean over runs): " + ", ".join(
                 f"{tag} {np.mean(sizes):.3f}" for tag, sizes in model["sizes_mb"].items())]
    return lines


def results_sections(summary: list[dict]) -> list[str]:
    columns = [SUMMARY_METRICS[k] for k in REPORT_METRICS]
    cells = lambda row: [mean_pm_std(row, k, SUMMARY_METRICS[k][1]) for k in REPORT_METRICS]  # noqa: E731
    per_holdout = [[r["model"], r["holdout"], str(r["n"]), *cells(r)] for r in summary
                   if r["holdout"] != metrics.ALL_HOLDOUTS]
    overall = [[r["model"], str(r["n"]), r["std_over"], *cells(r)] for r in summary
               if r["holdout"] == metrics.ALL_HOLDOUTS]
    return ["", "4. RESULTS PER TEST SIGNER (mean ± std over seeds; n = seeds)",
            f"  top-{TOP_K}, agreement = share of clips with the FP32 TFLite prediction; invoke = interpreter "
            "alone, 1 thread, median per clip; end-to-end adds reading, preprocessing and model load",
            text_table(["Model", "Holdout", "n", *(t for t, _ in columns)], per_holdout),
            "", f"5. SUMMARY OVER TEST SIGNERS (mean ± sample std, ddof {metrics.STD_DDOF})",
            text_table(["Model", "n", "std over", *(t for t, _ in columns)], overall)]


def per_class_section(per_class: list[dict]) -> list[str]:
    """Class x model over all test signers, then class x test signer for each model when there are several."""
    label = lambda r: f"{r['class']} ({r['name']})" if r["name"] else r["class"]  # noqa: E731
    models = list(dict.fromkeys(r["model"] for r in per_class))
    holdouts = list(dict.fromkeys(r["holdout"] for r in per_class if r["holdout"] != metrics.ALL_HOLDOUTS))

    def grid(rows, column_key, columns):
        cells = {}
        for r in rows:
            cells.setdefault(label(r), {})[r[column_key]] = mean_pm_std(r, "accuracy_pct", "{:.1f}")
        return text_table(["Class", *columns], [[c, *(v.get(col, "-") for col in columns)] for c, v in cells.items()])

    lines = ["", "6. PER-CLASS ACCURACY (%)", "  mean over test signers (± std as in section 5)",
             grid([r for r in per_class if r["holdout"] == metrics.ALL_HOLDOUTS], "model", models)]
    if len(holdouts) > 1:
        for model in models:
            lines += [f"  {model} per test signer (mean over seeds)",
                      grid([r for r in per_class if r["model"] == model and r["holdout"] != metrics.ALL_HOLDOUTS],
                           "holdout", holdouts)]
    return lines


def write_report(path: Path, runs, tables: dict, model: dict, args, written: list) -> str:
    """Assemble, write atomically and return the report text."""
    lines = header(runs, args) + runs_section(runs) + recipe_section(runs) + network_section(model)
    lines += results_sections(tables["summary_table"]) + per_class_section(tables["per_class_accuracy"])
    lines += ["", "7. FILES", *(f"  {p}" for p in written), f"  {path}", ""]
    text = "\n".join(lines)
    atomic_write_text(path, text)
    return text
