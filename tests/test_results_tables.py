"""results_tables.py: publish copies a collected study out of outputs/ with the prefix dropped (its enrollment
evaluations as they are); merge joins published folders by (study, seed, holdout, model), keeps the first of a
duplicate and reports a difference, and its means are those of metrics.aggregate (over holdouts for one seed, over
the seeds' holdout means for several)."""
import csv
import json

import numpy as np
import pytest

import results_tables
from runs import loso_experiment_name, run_paths
from util import REPO_DIR

SUMMARY_FIELDS = ["holdout", "model", "n", "std_over", "top1_pct", "top5_pct", "agreement_pct", "size_mb"]


def publish_folder(folder, runs, recipe=None):
    """A published folder: runs = {holdout: {model: top1}}, one seed (recipe['seed'])."""
    recipe = {"config_path": "configs/arabic-asl-65kpts.yaml", "epochs": 80, "batch_size": 32,
              "learning_rate": 1e-3, "seed": 42} | (recipe or {})
    (folder / "training_metadata").mkdir(parents=True)
    rows = []
    for holdout, models in runs.items():
        (folder / "training_metadata" / f"arabic_asl_LOSO_{holdout}.json").write_text(
            json.dumps(recipe | {"holdout_user": holdout}))
        rows += [{"holdout": holdout, "model": m, "n": 1, "std_over": "seeds", "top1_pct": top1, "top5_pct": 100.0,
                  "agreement_pct": 100.0, "size_mb": 2.78} for m, top1 in models.items()]
    rows.append({"holdout": "ALL", "model": "FP32", "n": len(runs), "std_over": "holdouts", "top1_pct": 0})
    with open(folder / "summary_table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return folder


def merge(*argv):
    return results_tables.main(["merge", *map(str, argv)])


def row(result, holdout, model="FP32"):
    return next(r for r in result["rows"] if r["holdout"] == holdout and r["model"] == model)


def test_merge_joins_folders_and_reports_duplicates(tmp_path, capsys):
    a = publish_folder(tmp_path / "a", {"user01": {"FP32": 95.0, "QAT": 92.0}, "user02": {"FP32": 100.0},
                                        "user08": {"FP32": 98.0}})
    b = publish_folder(tmp_path / "b", {"user02": {"FP32": 100.0, "QAT": 99.0}, "user03": {"FP32": 51.0},
                                        "user08": {"FP32": 97.0}})
    result = merge(a, b, "--output_dir", tmp_path / "m", "--reference_holdouts", "user01,user08")
    assert result["agreeing"] == 1                                   # user02 FP32: 100 in both
    assert len(result["differences"]) == 1 and "user08" in result["differences"][0]
    assert row(result, "user08")["top1_pct"] == 98.0                 # the first folder is kept
    every = row(result, "ALL")
    assert every["n"] == 4 and every["top1_pct"] == pytest.approx(np.mean([95, 100, 51, 98]))
    assert every["top1_pct_std"] == pytest.approx(np.std([95, 100, 51, 98], ddof=1))
    assert row(result, "REF")["top1_pct"] == pytest.approx(96.5) and row(result, "REF")["n"] == 2
    assert row(result, "ALL", "QAT")["n"] == 2                       # user01 from a, user02 from b
    text = (tmp_path / "m" / "tables.md").read_text()
    assert "1 agree, 1 differ" in text and "| FP32 | 95 | 100 | 51 | 98 | 96.5 ± 2.1 | 86.0 ± 23.4 | 4 |" in text
    with open(tmp_path / "m" / "merged_summary.csv", newline="") as f:
        assert {r["holdout"] for r in csv.DictReader(f)} == {"user01", "user02", "user03", "user08", "ALL", "REF"}
    assert "wrote" in capsys.readouterr().out


def test_merge_over_seeds_and_studies(tmp_path):
    seeds = [publish_folder(tmp_path / f"s{seed}", {"user01": {"FP32": top1[0]}, "user08": {"FP32": top1[1]}},
                            {"seed": seed}) for seed, top1 in [(42, (95, 98)), (511, (93, 96)), (7, (97, 90))]]
    other = publish_folder(tmp_path / "b1", {"user01": {"FP32": 96.0}}, {"batch_size": 1, "learning_rate": 2e-4})
    result = merge(*seeds, other, "--output_dir", tmp_path / "m", "--holdouts", "user01,user08")
    studies = {r["study"] for r in result["rows"]}
    assert studies == {"arabic-asl-65kpts, 80 epochs, batch 32, lr 0.001", "arabic-asl-65kpts, 80 epochs, batch 1, lr 0.0002"}
    mine = [r for r in result["rows"] if "batch 32" in r["study"]]
    user01 = next(r for r in mine if r["holdout"] == "user01")
    assert user01["n"] == 3 and user01["top1_pct"] == pytest.approx(95.0) and user01["top1_pct_std"] == pytest.approx(2.0)
    every = next(r for r in mine if r["holdout"] == "ALL")            # per-seed means 96.5, 94.5, 93.5
    assert every["n"] == 3 and every["top1_pct"] == pytest.approx(np.mean([96.5, 94.5, 93.5]))
    assert every["top1_pct_std"] == pytest.approx(np.std([96.5, 94.5, 93.5], ddof=1))
    assert "seeds" in every["std_over"]
    text = (tmp_path / "m" / "tables.md").read_text()
    assert "| arabic-asl-65kpts, 80 epochs, batch 1, lr 0.0002 | 96.0 (1) |" in text     # the studies side by side


def test_merge_tells_apart_networks_of_one_config(tmp_path):
    """Two studies of one config and recipe whose network changed in between (the recorded parameter count
    differs) stay two studies, named by their parameter counts; runs of one network keep the plain name."""
    wide = publish_folder(tmp_path / "wide", {"user01": {"FP32": 95.0}}, {"model_parameters": 766378})
    narrow = publish_folder(tmp_path / "narrow", {"user01": {"FP32": 97.0}}, {"model_parameters": 363466})
    result = merge(wide, narrow, "--output_dir", tmp_path / "m")
    assert result["differences"] == [] and result["agreeing"] == 0       # not read as one run published twice
    base = "arabic-asl-65kpts, 80 epochs, batch 32, lr 0.001"
    top1 = {r["study"]: r["top1_pct"] for r in result["rows"] if r["holdout"] == "user01"}
    assert top1 == {f"{base}, 766,378 parameters": 95.0, f"{base}, 363,466 parameters": 97.0}
    alone = merge(narrow, "--output_dir", tmp_path / "one")
    assert {r["study"] for r in alone["rows"]} == {base}


def test_run_records_of_both_shapes_name_one_study(tmp_path):
    """Records written before the `training` block held the recipe (epochs, learning_rate, batch_size at the top
    level; the committed results/ folders) and records that hold it only there are one study."""
    old = publish_folder(tmp_path / "old", {"user01": {"FP32": 95.0}})
    new = publish_folder(tmp_path / "new", {"user08": {"FP32": 98.0}},
                         {"training": {"epochs": 80, "lr": 1e-3, "batch_size": 32}})
    for record in (new / "training_metadata").glob("*.json"):
        meta = json.loads(record.read_text())
        record.write_text(json.dumps({k: v for k, v in meta.items()
                                      if k not in ("epochs", "learning_rate", "batch_size")}))
    result = merge(old, new, "--output_dir", tmp_path / "m")
    assert {r["study"] for r in result["rows"]} == {"arabic-asl-65kpts, 80 epochs, batch 32, lr 0.001"}


def test_merge_errors_name_the_file(tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(SystemExit):
        merge(bare, "--output_dir", tmp_path / "m")
    assert f"{bare}/training_metadata: no training metadata" in capsys.readouterr().err
    seeds = publish_folder(tmp_path / "two", {"user01": {"FP32": 95.0}})
    text = (seeds / "summary_table.csv").read_text().replace("user01,FP32,1,", "user01,FP32,2,")
    (seeds / "summary_table.csv").write_text(text)
    with pytest.raises(SystemExit):
        merge(seeds, "--output_dir", tmp_path / "m")
    assert "is a mean over 2 seeds; publish each seed apart" in capsys.readouterr().err


def test_publish_copies_a_collected_study(tmp_path, capsys):
    paths = run_paths("arabic_asl", "loso", str(tmp_path / "outputs"))
    source = paths.results_dir() / "pre"
    (source / "confusion_matrices").mkdir(parents=True)
    for name in ("experiment_results_20260101_000000_evaluated.txt", "experiment_results_20260102_000000_evaluated.txt",
                 "per_class_accuracy.csv", "model_info.csv", "confusion_matrices/confusion_matrix_ALL_FP32.png",
                 "confusion_matrices/confusion_matrix_user01_FP32.png"):
        (source / name).write_text(name)
    (source / "enrollment_tflite-2.12").mkdir()                   # an evaluate_enrollment.py folder
    (source / "enrollment_tflite-2.12" / "report.txt").write_text("k-shot")
    (source / "summary_table.csv").write_text("holdout,model,n\nuser01,FP32,1\nALL,FP32,1\n")
    exp = loso_experiment_name("arabic_asl", "user01", "pre")
    paths.metadata_dir().mkdir(parents=True)
    (paths.metadata_dir() / f"{exp}_latest.json").write_text("{}")
    with pytest.raises(SystemExit):                  # the per-epoch CSV is missing
        results_tables.main(["publish", "--exp_prefix", "pre", "--name", "study", "--output_root",
                             str(paths.root), "--results_root", str(tmp_path / "results")])
    assert f"{exp}_training.csv: not found (holdout user01" in capsys.readouterr().err
    paths.training_csv(exp).parent.mkdir(parents=True)
    paths.training_csv(exp).write_text("epoch\n")
    results_tables.main(["publish", "--exp_prefix", "pre", "--name", "study", "--output_root", str(paths.root),
                         "--results_root", str(tmp_path / "results")])
    target = tmp_path / "results" / "study"
    assert (target / "report.txt").read_text() == "experiment_results_20260102_000000_evaluated.txt"   # the newest
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "confusion_matrix_ALL_FP32.png", "enrollment_tflite-2.12/report.txt", "model_info.csv",
        "per_class_accuracy.csv", "report.txt", "summary_table.csv", "training_csv/arabic_asl_LOSO_user01_training.csv",
        "training_metadata/arabic_asl_LOSO_user01.json"]                 # no QAT metadata: QAT was not run


def tables_below_header(folder):
    """A merged folder's tables.md without its first line (the 'Merged from:' paths, which name where it ran)."""
    return (folder / "tables.md").read_text().split("\n")[1:]


def test_committed_loso12_table_is_rebuilt_from_its_folders(tmp_path):
    """The LOSO-12 table of docs/results.md (and the README's headline table) comes out of the two committed folders
    by its documented merge command."""
    first, rerun = (REPO_DIR / "results" / name for name in ("mlr511-65kpts-loso-b32lr1e-3",
                                                             "mlr511-65kpts-loso-b32lr1e-3-qat8"))
    result = merge(first, rerun, "--output_dir", tmp_path / "m")
    assert result["agreeing"] == 32 and result["differences"] == []    # the re-run of 8 holdouts repeats the first
    fp32, qat = row(result, "ALL"), row(result, "ALL", "QAT")
    assert fp32["n"] == 12 and round(fp32["top1_pct"], 1) == 89.0 and round(fp32["top1_pct_std"], 1) == 14.6
    assert qat["n"] == 12 and round(qat["top1_pct"], 1) == 89.0 and round(qat["top1_pct_std"], 1) == 14.7
    assert round(row(result, "REF")["top1_pct"], 1) == 97.3
    assert tables_below_header(tmp_path / "m") == tables_below_header(REPO_DIR / "results" / "mlr511-65kpts-loso12")


VARIANT_FOLDERS = ("mlr511-65kpts-loso-b32lr1e-3", "mlr511-42kpts-hands-b32lr1e-3",
                   "mlr511-44kpts-hands-wrists-b32lr1e-3-user01", "mlr511-44kpts-hands-wrists-b32lr1e-3-user08-user11",
                   "mlr511-46kpts-hands-shoulders-wrists-b32lr1e-3",
                   "mlr511-48kpts-hands-shoulders-elbows-wrists-b32lr1e-3", "mlr511-90kpts-b32lr1e-3")


def test_committed_keypoint_variant_table_is_rebuilt_from_its_folders(tmp_path):
    """The keypoint-variant table of docs/results.md comes out of the committed folders by its documented merge
    command."""
    folders = [REPO_DIR / "results" / name for name in VARIANT_FOLDERS]
    result = merge(*folders, "--holdouts", "user01,user08,user11", "--output_dir", tmp_path / "m")
    fp32 = {r["study"].split(",")[0]: (r["n"], round(r["top1_pct"], 1)) for r in result["rows"]
            if r["holdout"] == "ALL" and r["model"] == "FP32"}
    assert fp32 == {"arabic-asl-42kpts-hands": (3, 92.7), "arabic-asl-44kpts-hands-wrists": (3, 94.3),
                    "arabic-asl-46kpts-hands-shoulders-wrists": (3, 94.0),
                    "arabic-asl-48kpts-hands-shoulders-elbows-wrists": (3, 95.0), "arabic-asl-65kpts": (3, 97.3),
                    "arabic-asl-90kpts": (3, 97.3)}
    assert tables_below_header(tmp_path / "m") == tables_below_header(REPO_DIR / "results" / "mlr511-keypoint-variants")
