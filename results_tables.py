"""Make measured LOSO results lasting: publish a study into results/, and merge published studies into one table.

Trained models live in outputs/ (never committed) and a long study (12 holdouts, several seeds, several keypoint
layouts) does not fit in one sitting of a 2-core machine. So each sitting publishes what it measured, and the
tables are built from the published folders:

  publish  collect_results.py's report and CSVs, the ALL confusion matrices, and each run's training metadata,
           per-epoch CSV and QAT metadata, copied from outputs/ into results/<name>/ (names drop the prefix);
           also every enrollment evaluation folder (evaluate_enrollment.py: enrollment[_<runtime>]/), as it is.
  merge    the per-holdout rows of several published summary_table.csv files. Each row is keyed by (study, seed,
           holdout, model); study (config + epochs, batch, lr) and seed come from the folder's training metadata;
           a config whose network changed between studies (another recorded parameter count) makes two studies.
           A run published twice must agree: the first folder named is kept and every difference is printed.
           Per study the tables give top-1 per holdout and the mean ± sample std over holdouts (one seed) or over
           the seeds' means (several seeds), as metrics.aggregate does; REF is the same over --reference_holdouts.

    python results_tables.py publish --exp_prefix b32lr1e-3 --name mlr511-65kpts-loso-b32lr1e-3-qat8
    python results_tables.py merge results/mlr511-65kpts-loso-b32lr1e-3 results/mlr511-65kpts-loso-b32lr1e-3-qat8 \\
        --output_dir results/mlr511-65kpts-loso12

merge writes <output_dir>/merged_summary.csv (one row per study, model and holdout, plus ALL and REF) and
<output_dir>/tables.md (the same as markdown tables, also printed).
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import metrics
from evaluation import csv_text
from results_report import mean_pm_std, read_training_record
from recipes import DEFAULT_DATASET_NAME, DEFAULT_HOLDOUTS, DOMINANT_HAND_RATIO, REST_HAND_CUTOFF
from runs import ENROLLMENT_DIR, QAT_METADATA, comma_list, loso_experiment_name, recorded_recipe, run_paths
from util import UserError, atomic_save, atomic_write_text, brief, cli

VALUES = ("top1_pct", "top5_pct", "agreement_pct", "size_mb")   # taken from summary_table.csv
ROW_KEYS = ("holdout", "model", "n")                              # and the columns that name a row
RUN_KEYS = ("holdout_user", "seed", "config_path", "epochs", "batch_size",  # what a training
            "learning_rate")                                                  # record must hold
REFERENCE = "REF"                                                # the --reference_holdouts row


# ----------------------------------------------------------------------------------------------- publish
def copy_file(src: Path, dst: Path) -> Path:
    return atomic_save(dst, lambda tmp: shutil.copyfile(src, tmp))


def newest_report(results_dir: Path) -> Path:
    reports = sorted(results_dir.glob("experiment_results_*_evaluated.txt"))
    if not reports:
        raise UserError(f"{results_dir}: no experiment_results_*_evaluated.txt; run collect_results.py "
                        f"--run_evaluation first")
    return reports[-1]


def read_rows(path: Path) -> list[dict]:
    """The rows of a summary_table.csv; one UserError when it is missing, not a CSV text or lacks
    ROW_KEYS."""
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: not a CSV table ({str(e)[:80]})") from None
    missing = [k for k in ROW_KEYS if k not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: no column(s) {missing}; expected collect_results.py's "
                        "summary_table.csv")
    return rows


def number(row: dict, key: str, where: str) -> float | None:
    """A numeric cell of a results table (None when empty); a text that is not a number is one
    UserError."""
    text = row.get(key) or ""
    try:
        return float(text) if text else None
    except ValueError:
        raise UserError(f"{where}: {key} {brief(text, 40)} is not a number") from None


def publish(args) -> list[Path]:
    """Copy one collected study from outputs/ into results/<name>/; returns the files written."""
    paths = run_paths(args.dataset_name, "loso", args.output_root or None)
    source = paths.results_dir(args.exp_prefix)
    target = Path(args.results_root) / args.name
    written = [copy_file(newest_report(source), target / "report.txt")]
    for name in ("summary_table.csv", "per_class_accuracy.csv", "model_info.csv"):
        written.append(copy_file(source / name, target / name))
    for png in sorted((source / "confusion_matrices").glob("confusion_matrix_ALL_*.png")):
        written.append(copy_file(png, target / png.name))
    for folder in sorted(p for p in source.glob(f"{ENROLLMENT_DIR}*") if p.is_dir()):
        written += [copy_file(f, target / folder.name / f.name) for f in sorted(folder.iterdir()) if f.is_file()]
    holdouts = sorted({r["holdout"] for r in read_rows(source / "summary_table.csv")} - {metrics.ALL_HOLDOUTS})
    for user in holdouts:
        exp, short = (loso_experiment_name(args.dataset_name, user, args.exp_prefix),
                      loso_experiment_name(args.dataset_name, user))
        copies = [(paths.latest_record(exp), target / "training_metadata" / f"{short}.json"),
                  (paths.training_csv(exp), target / "training_csv" / f"{short}_training.csv"),
                  (paths.export_dir("qat", args.exp_prefix, user) / QAT_METADATA,
                   target / "qat_metadata" / f"{user}.json")]
        for src, dst in copies:
            if src.is_file():
                written.append(copy_file(src, dst))
            elif "qat_metadata" not in dst.parts:   # QAT is optional, training records are not
                raise UserError(f"{src}: not found (holdout {user} of {source / 'summary_table.csv'})")
    return written


# ----------------------------------------------------------------------------------------------- merge
def study_name(meta: dict) -> str:
    """Config and recipe of a training run: runs that share it are one study (seeds and holdouts vary)."""
    rest = meta.get("rest_hand_cutoff", REST_HAND_CUTOFF)  # another preprocessing: another study
    ratio = meta.get("dominant_hand_ratio", DOMINANT_HAND_RATIO)
    rules = ", ".join(([f"resting hands > {rest:g}"] if rest else []) + ([f"left hand > {ratio:g}x"] if ratio else []))
    recipe = recorded_recipe(meta)
    return (f"{Path(meta['config_path']).stem}{f' ({rules})' if rules else ''}, "
            f"{recipe['epochs']} epochs, batch {recipe['batch_size']}, lr {recipe['lr']:g}")


def network_name(meta: dict) -> str:
    """The network's size as recorded by training ('' in records older than the field): merge tells apart two
    studies of one config whose network changed between them (e.g. a narrower d_model)."""
    return f"{meta['model_parameters']:,} parameters" if meta.get("model_parameters") else ""


def run_keys(folder: Path) -> dict:
    """holdout -> (study name, seed, network) from the folder's training_metadata/*.json."""
    keys = {}
    for meta_file in sorted((folder / "training_metadata").glob("*.json")):
        meta = read_training_record(meta_file, RUN_KEYS)
        user = meta["holdout_user"]
        key = (study_name(meta), str(meta["seed"]), network_name(meta))
        if keys.get(user, key) != key:
            raise UserError(f"{meta_file}: holdout {user} appears with two configs/seeds; publish each seed apart")
        keys[user] = key
    if not keys:
        raise UserError(f"{folder}/training_metadata: no training metadata (*.json); publish the study with "
                        f"'results_tables.py publish'")
    return keys


def folder_records(folder: Path, holdouts: set) -> list[dict]:
    """One record per (holdout, model) of a published folder: {study, seed, network, holdout, model, *VALUES,
    source}."""
    keys, records, table = run_keys(folder), [], folder / "summary_table.csv"
    for line, row in enumerate(read_rows(table), start=2):
        if row["holdout"] == metrics.ALL_HOLDOUTS or (holdouts and row["holdout"] not in holdouts):
            continue
        if row["holdout"] not in keys:
            raise UserError(f"{folder}/summary_table.csv: holdout {row['holdout']} has no training metadata")
        if row["n"] != "1":
            raise UserError(f"{folder}/summary_table.csv: {row['holdout']} {row['model']} is a mean over "
                            f"{row['n']} seeds; publish each seed apart")
        study, seed, network = keys[row["holdout"]]
        records.append({"study": study, "seed": seed, "network": network, "holdout": row["holdout"],
                        "model": row["model"],
                        **{v: number(row, v, f"{table}: line {line}") for v in VALUES},
                        "source": str(folder)})
    return records


def merge_records(folders: list[Path], holdouts: set) -> tuple[list[dict], list[str], int]:
    """(records, differences, agreeing duplicates): on a duplicate run the first folder's record is kept."""
    kept, differences, agreeing = {}, [], 0
    for folder in folders:
        for r in folder_records(folder, holdouts):
            key = (r["study"], r["network"], r["seed"], r["holdout"], r["model"])
            if key not in kept:
                kept[key] = r
                continue
            first = kept[key]
            changed = [v for v in ("top1_pct", "top5_pct") if first[v] != r[v]]
            if changed:
                differences.append(f"{key[0]}, seed {key[2]}, {key[3]}, {key[4]}: " + ", ".join(
                    f"{v} {first[v]:g} in {first['source']} vs {r[v]:g} in {r['source']}" for v in changed))
            else:
                agreeing += 1
    return name_networks(list(kept.values())), differences, agreeing


def name_networks(records: list[dict]) -> list[dict]:
    """A study name that covers more than one network gets the network's size appended, one study each."""
    networks = {}
    for r in records:
        networks.setdefault(r["study"], set()).add(r["network"])
    return [r | {"study": f"{r['study']}, {r['network'] or 'network not recorded'}"}
            if len(networks[r["study"]]) > 1 else r for r in records]


def merged_rows(records: list[dict], reference: list[str]) -> list[dict]:
    """metrics.aggregate per study (per holdout, ALL) + ALL over the reference holdouts alone (holdout REF)."""
    rows = []
    for study in dict.fromkeys(r["study"] for r in records):
        mine = [r for r in records if r["study"] == study]
        rows += [{"study": study, **row} for row in metrics.aggregate(mine, ("model",), VALUES)]
        subset = [r for r in mine if r["holdout"] in reference]
        if subset and len({r["holdout"] for r in subset}) < len({r["holdout"] for r in mine}):
            rows += [{"study": study, **row, "holdout": REFERENCE} for row in
                     metrics.aggregate(subset, ("model",), VALUES) if row["holdout"] == metrics.ALL_HOLDOUTS]
    return rows


def pm(row: dict | None, key: str, fmt: str) -> str:
    """'mean ± std' of a merged row ('mean' when n = 1, '–' when absent)."""
    return mean_pm_std(row or {}, key, fmt, missing="–")


def markdown_tables(rows: list[dict], reference: list[str]) -> str:
    """Per study: model x holdout top-1, then REF and ALL mean ± std with n, agreement with FP32 and size."""
    out = []
    for study in dict.fromkeys(r["study"] for r in rows):
        mine = [r for r in rows if r["study"] == study]
        holdouts = sorted({r["holdout"] for r in mine} - {metrics.ALL_HOLDOUTS, REFERENCE})
        has_ref = any(r["holdout"] == REFERENCE for r in mine)
        over = {r["std_over"] for r in mine if r["holdout"] == metrics.ALL_HOLDOUTS}
        out += [f"### {study}", "", "Top-1 (%) on the held-out signer. A holdout's cell is the mean over its seeds; "
                f"ALL is the mean ± std over {' / '.join(sorted(over))}, n of them"
                + (f"; REF the same over {', '.join(reference)}." if has_ref else "."), ""]
        header = ["model", *holdouts, *(["REF"] if has_ref else []), "ALL", "n", "agrees with FP32 (%)", "size (MB)"]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model in dict.fromkeys(r["model"] for r in mine):
            cell = {r["holdout"]: r for r in mine if r["model"] == model}
            every = cell[metrics.ALL_HOLDOUTS]
            line = [model, *(pm(cell.get(h), "top1_pct", "{:.1f}" if cell.get(h, {}).get("n", 1) > 1 else "{:.0f}")
                             for h in holdouts)]
            line += [pm(cell.get(REFERENCE), "top1_pct", "{:.1f}")] if has_ref else []
            line += [pm(every, "top1_pct", "{:.1f}"), str(every["n"]), pm(every, "agreement_pct", "{:.1f}"),
                     pm(every, "size_mb", "{:.2f}")]
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out + (studies_table(rows) if len({r["study"] for r in rows}) > 1 else []))


def studies_table(rows: list[dict]) -> list[str]:
    """One line per study: each model's ALL top-1 mean ± std (n), to compare recipes or keypoint layouts."""
    every = [r for r in rows if r["holdout"] == metrics.ALL_HOLDOUTS]
    models = list(dict.fromkeys(r["model"] for r in every))
    out = ["### All studies: ALL top-1 (%), mean ± std (n)", "", "| study | " + " | ".join(models) + " |",
           "|" + "---|" * (len(models) + 1)]
    for study in dict.fromkeys(r["study"] for r in every):
        cell = {r["model"]: r for r in every if r["study"] == study}
        out.append(f"| {study} | " + " | ".join(f"{pm(cell[m], 'top1_pct', '{:.1f}')} ({cell[m]['n']})"
                                                if m in cell else "–" for m in models) + " |")
    return out + [""]


def merge(args) -> dict:
    folders = [Path(f) for f in args.folders]
    reference = comma_list(args.reference_holdouts)
    holdouts = set(comma_list(args.holdouts))
    records, differences, agreeing = merge_records(folders, holdouts)
    if not records:
        raise UserError(f"no per-holdout rows in {', '.join(map(str, folders))}"
                        + (f" for holdouts {args.holdouts}" if holdouts else ""))
    rows = merged_rows(records, reference)
    notes = [f"runs published in more than one folder: {agreeing} agree, {len(differences)} differ"
             + (":" if differences else ""), *[f"  {d}" for d in differences]]
    text = "\n".join([f"Merged from: {', '.join(map(str, folders))}", *notes, "", markdown_tables(rows, reference)])
    out = Path(args.output_dir)
    atomic_write_text(out / "merged_summary.csv", csv_text(rows))
    atomic_write_text(out / "tables.md", text + "\n")
    print(text)
    print(f"wrote {out / 'merged_summary.csv'} and {out / 'tables.md'}")
    return {"records": records, "rows": rows, "differences": differences, "agreeing": agreeing}


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="copy a collected study from outputs/ into results/<name>/")
    p.add_argument("--name", required=True, help="folder under --results_root")
    p.add_argument("--exp_prefix", default="", help="experiment prefix of the runs (default: none)")
    p.add_argument("--dataset_name", default=DEFAULT_DATASET_NAME,
                   help=f"output folder name (default: {DEFAULT_DATASET_NAME})")
    p.add_argument("--output_root", default="", help="output root (default: $SIGNBART_OUTPUT_ROOT or outputs)")
    p.add_argument("--results_root", default="results", help="committed results tree (default: results)")
    m = sub.add_parser("merge", help="one table from several published folders")
    m.add_argument("folders", nargs="+", help="published folders (results/<name>); the first wins on duplicates")
    m.add_argument("--output_dir", required=True, help="where merged_summary.csv and tables.md go")
    m.add_argument("--holdouts", default="", help="comma list: merge only these holdouts (default: all)")
    m.add_argument("--reference_holdouts", default=DEFAULT_HOLDOUTS,
                   help=f"holdouts of the REF mean; empty = none (default: {DEFAULT_HOLDOUTS})")
    return ap.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    if args.command == "publish":
        written = publish(args)
        print(f"published {len(written)} files into {Path(args.results_root) / args.name}")
        return written
    return merge(args)


if __name__ == "__main__":
    main()
