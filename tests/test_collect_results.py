"""collect_results.py on a copy of the trained demo fold's output tree, with PTQ exports (dynamic-range and
integer-I/O) and no QAT export: only the trained holdout is collected, the missing QAT is reported, and every table
agrees with an independent evaluation."""
import csv
import json
import shutil

import numpy as np
import pytest

from runs import loso_experiment_name, run_paths
from test_evaluation import independent_predictions


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def add_ptq_exports(paths, fold, models, prefix=""):
    """The dynamic-range and integer-I/O exports, without their cards (conftest.cardless_models)."""
    folder = paths.export_dir("ptq", prefix, fold.holdout)
    folder.mkdir(parents=True, exist_ok=True)
    for mode in ("dynamic", "int8_io"):
        shutil.copy(models[mode], folder / models[mode].name)


@pytest.fixture
def output_tree(trained_fold, cardless_models, tmp_path):
    """A private copy of the fold's outputs (checkpoints + metadata) with PTQ exports added."""
    out = tmp_path / "outputs"
    shutil.copytree(trained_fold.output_root, out)
    paths = run_paths(trained_fold.dataset, "loso", str(out))
    add_ptq_exports(paths, trained_fold, cardless_models)
    return paths


def collect(paths, *extra):
    import collect_results
    return collect_results.main(["--dataset_name", paths.dataset, "--output_root", str(paths.root), "--no-console",
                                 *extra])


def test_collect_single_seed_matches_independent_evaluation_and_reuses_it(trained_fold, output_tree):
    out = collect(output_tree, "--run_evaluation")
    results = output_tree.results_dir()
    assert [r.holdout for r in out["runs"]] == ["user01"]  # the demo data has 4 signers; only user01 was trained
    assert any(note.startswith("QAT:") and "not found" in note for note in out["runs"][0].missing)

    predictions, labels = independent_predictions(trained_fold.tflite, trained_fold.data_path, trained_fold.cfg)
    summary = {(r["holdout"], r["model"]): r for r in read_csv(results / "summary_table.csv")}
    assert {h for h, _ in summary} == {"user01", "ALL"}
    assert {m for _, m in summary} == {"Keras FP32 (training)", "FP32", "PTQ", "PTQ-int8_io"}
    assert float(summary["user01", "FP32"]["top1_pct"]) == pytest.approx(100 * np.mean(predictions == labels))
    assert float(summary["user01", "Keras FP32 (training)"]["top1_pct"]) == pytest.approx(
        100 * trained_fold.record["test"]["accuracy"])
    assert float(summary["user01", "PTQ"]["size_mb"]) < float(summary["user01", "FP32"]["size_mb"])
    assert summary["ALL", "FP32"]["n"] == "1" and summary["ALL", "FP32"]["top1_pct_std"] == ""

    fp32 = json.loads((results / "evaluations" / loso_experiment_name("demo", "user01") / "FP32.json").read_text())
    assert np.sum(fp32["confusion_matrix"]) == len(labels)
    per_class = [r for r in read_csv(results / "per_class_accuracy.csv")
                 if (r["holdout"], r["model"]) == ("user01", "FP32")]
    assert len(per_class) == trained_fold.cfg["num_labels"]
    for row in per_class:
        c = fp32["labels"].index(row["class"])
        assert float(row["accuracy_pct"]) == pytest.approx(100 * np.mean(predictions[labels == c] == c))

    info = read_csv(results / "model_info.csv")
    assert all(float(r["value"]) >= 0 for r in info)  # plain numbers, no thousands separators
    total = next(r for r in info if r["metric"] == "Parameters (total)")
    assert int(total["value"]) == trained_fold.record["model_parameters"]

    pngs = {p.name for p in (results / "confusion_matrices").glob("*.png")}
    assert {"confusion_matrix_user01_FP32.png", "confusion_matrix_user01_PTQ.png",
            "confusion_matrix_ALL_PTQ_int8_io.png"} <= pngs
    report = out["report"].read_text()
    assert "DEMO" in report and "G01 (Wave)" in report and "qat_dynamic_int8.tflite not found" in report
    assert "epochs: 8" in report and "user02" not in report.split("4. RESULTS")[1]

    again = collect(output_tree)  # without --run_evaluation: the stored evaluations are reused ...
    assert set(again["runs"][0].evaluations) == {"FP32", "PTQ", "PTQ-int8_io"}
    ptq = output_tree.export_dir("ptq", "", "user01") / "model_dynamic_int8.tflite"
    ptq.write_bytes(ptq.read_bytes())  # ... until the file changes (same bytes, new modification time)
    stale = collect(output_tree)
    assert "PTQ" not in stale["runs"][0].evaluations
    assert "PTQ: not evaluated yet (run with --run_evaluation)" in stale["runs"][0].missing


def test_unfinished_training_is_named_and_not_counted_as_trained(output_tree):
    (output_tree.checkpoint_dir(loso_experiment_name("demo", "user02")) / "resume").mkdir(parents=True)
    out = collect(output_tree)
    assert "training not finished: no final_model.h5" in out["runs"][1].missing[0]
    assert "1 trained test signer(s): user01; training not finished: user02" in out["report"].read_text()


def test_multi_seed_mean_and_std(trained_fold, cardless_models, tmp_path):
    out = tmp_path / "outputs"
    src = run_paths(trained_fold.dataset, "loso", str(trained_fold.output_root))
    paths = run_paths(trained_fold.dataset, "loso", str(out))
    exp = loso_experiment_name("demo", "user01")
    for seed in ("1", "2"):  # two "seeds" that are copies of the same model: std over seeds must be 0
        seeded = loso_experiment_name("demo", "user01", f"tiny_seed{seed}")
        shutil.copytree(src.checkpoint_dir(exp), paths.checkpoint_dir(seeded))
        paths.metadata_dir().mkdir(parents=True, exist_ok=True)
        shutil.copy(src.metadata_dir() / f"{exp}_latest.json", paths.metadata_dir() / f"{seeded}_latest.json")
        add_ptq_exports(paths, trained_fold, cardless_models, prefix=f"tiny_seed{seed}")
    result = collect(paths, "--run_evaluation", "--seed_list", "1,2", "--exp_prefix_base", "tiny")
    assert sorted((r.seed, r.holdout) for r in result["runs"]) == [("1", "user01"), ("2", "user01")]
    results = paths.results_dir() / "tiny"
    summary = {(r["holdout"], r["model"]): r for r in read_csv(results / "summary_table.csv")}
    for key in [("ALL", "FP32"), ("user01", "PTQ")]:
        assert summary[key]["n"] == "2" and float(summary[key]["top1_pct_std"]) == 0.0
    assert summary["ALL", "FP32"]["std_over"].startswith("seeds")
    per_class = read_csv(results / "per_class_accuracy.csv")
    assert all(r["n"] == "2" and float(r["accuracy_pct_std"]) == 0.0 for r in per_class if r["accuracy_pct"])
    pngs = {p.name for p in (results / "confusion_matrices").glob("*.png")}
    assert {"confusion_matrix_user01_FP32_seed1.png", "confusion_matrix_user01_FP32_seed2.png"} <= pngs


def test_clear_errors(output_tree, tmp_path, capsys):
    with pytest.raises(SystemExit):
        collect(output_tree, "--seed_list", "1,2")
    assert "--exp_prefix_base" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        collect(run_paths("demo", "loso", str(tmp_path / "empty")))
    assert "no trained LOSO experiment" in capsys.readouterr().err
    result = collect(output_tree, "--holdouts", "user01,user03")
    assert [r.holdout for r in result["runs"]] == ["user01"]
    assert "holdout user03" in capsys.readouterr().out


def test_full_run_type_reports_size_card_parity_flops_and_labels_training_data(trained_fold,
                                                                                tmp_path):
    """--run_type full on a full-dataset tree (the trained model placed as demo_full, PTQ exported
    by ptq_export.py, no QAT): sizes, the cards' parity, FLOPs; an evaluation on signers it trained
    on is labelled TRAINING DATA, one on the others 'held-out signers'."""
    import collect_results
    import ptq_export
    loso, full = run_paths("demo", "loso", str(trained_fold.output_root)), run_paths("demo", "full",
                                                                                    str(tmp_path))
    exp = loso_experiment_name("demo", "user01")
    shutil.copytree(loso.checkpoint_dir(exp), full.checkpoint_dir("demo_full"))
    full.metadata_dir().mkdir(parents=True)
    shutil.copy(loso.latest_record(exp), full.latest_record("demo_full"))
    ptq_export.main(["--config_path", str(trained_fold.config_path), "--modes", "dynamic",
                     "--checkpoint", str(full.final_model("demo_full")),
                     "--data_path", str(trained_fold.data_path)])
    base = ["--run_type", "full", "--dataset_name", "demo", "--output_root", str(tmp_path),
            "--no-console"]
    out = collect_results.main(base)
    rows = {r["model"]: r for r in read_csv(full.results_dir() / "full_models.csv")}
    assert set(rows) == {"FP32", "PTQ"}
    assert any(note.startswith("QAT:") and "not found" in note for note in out["run"].missing)
    assert all(r["card_agrees"] == "True" and r["parity_passed"] == "True" for r in rows.values())
    assert float(rows["PTQ"]["size_mb"]) < float(rows["FP32"]["size_mb"])
    info = {r["metric"]: r for r in read_csv(full.results_dir() / "model_info.csv")}
    assert float(info["FLOPs per clip (forward pass)"]["value"]) > 0
    assert "no held-out" in out["report"].read_text()

    data = ["--data_path", str(trained_fold.data_path), "--split"]
    on_train = collect_results.main(base + data + ["train"])
    assert {r["eval_is"] for r in on_train["rows"]} == {"TRAINING DATA (not a test accuracy)"}
    on_test = collect_results.main(base + data + ["test"])
    assert {r["eval_is"] for r in on_test["rows"]} == {"held-out signers"}
    fp32 = next(r for r in on_test["rows"] if r["model"] == "FP32")
    keras_test_top1 = 100 * trained_fold.record["test"]["accuracy"]
    assert fp32["eval_top1_pct"] == pytest.approx(keras_test_top1, abs=0.01)
    assert "TRAINING DATA" in on_train["report"].read_text()
