"""The shell pipelines end to end on a tiny demo configuration (tiny model, 40 training clips, few epochs).

One pipeline run is interrupted during FP32 training and re-run: the re-run continues the interrupted fold from
its epoch checkpoint, finishes every stage, and a third run skips everything. The variants script runs one
variant x one seed x one holdout. Both script runs are background fixtures (conftest): they start with the session.
"""
import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY, background_fixture, run_process, spawn, stop
from make_demo_dataset import make_demo_dataset

HOLDOUTS = ["user01", "user02"]
EPOCHS = 3
TIMEOUT = 3600  # seconds per script run: only a guard against a hang (the machine may be shared)


def pipeline_env(tmp: Path, config: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SIGNBART_OUTPUT_ROOT"}
    return env | {"DEMO": "1", "DATA_DIR": str(tmp / "demo-65kpts"), "OUTPUT_ROOT": str(tmp / "outputs"),
                  "CONFIG": str(config), "HOLDOUTS": ",".join(HOLDOUTS), "EPOCHS": str(EPOCHS), "LR": "3e-3",
                  "BATCH_SIZE": "8", "QAT_EPOCHS": "1", "QAT_BATCH_SIZE": "8", "FULL_EPOCHS": "1"} | extra


def run_script(script: str, env: dict):
    result = run_process(["bash", str(REPO / script)], env=env, timeout=TIMEOUT)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def interrupt_during_training(env: dict, state_file: Path) -> None:
    """Start the pipeline and kill its whole process group once the first epoch checkpoint exists."""
    proc = spawn(["bash", str(REPO / "run_end_to_end_pipeline.sh")], env=env, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not state_file.exists():
        assert proc.poll() is None, "the pipeline ended before the first epoch checkpoint"
        assert time.time() < deadline, "no epoch checkpoint in time"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    stop(proc)
    wait_for_group_to_end(proc.pid)


def wait_for_group_to_end(pgid: int, timeout: float = 60) -> None:
    """The shell ends at once; the training it started ends its epoch and releases the run folder's
    lock first: the re-run must not start before (it would be refused as a second run)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)


@background_fixture
def tiny_run(tmp_path_factory, tiny_config_path):
    """A pipeline interrupted during the first fold's training, then re-run to the end."""
    tmp = tmp_path_factory.mktemp("pipeline")
    make_demo_dataset(tmp / "demo-65kpts", signers=3, signs=10, reps=2, seed=0)  # 60 clips: 40 train / 20 test
    env = pipeline_env(tmp, tiny_config_path)
    loso = tmp / "outputs" / "demo" / "loso"
    interrupt_during_training(env, loso / "checkpoints" / "demo_LOSO_user01" / "resume" / "state.json")
    resumed = run_script("run_end_to_end_pipeline.sh", env)
    return {"tmp": tmp, "env": env, "loso": loso, "full": tmp / "outputs" / "demo" / "full", "resumed": resumed}


def test_output_tree(tiny_run):
    loso, full = tiny_run["loso"], tiny_run["full"]
    for user in HOLDOUTS:
        exp = f"demo_LOSO_{user}"
        for path in [loso / "checkpoints" / exp / name for name in
                     ("final_model.h5", "final_model_fp32.tflite", "final_model_fp32.json", "labels.txt")] + [
                loso / "logs" / "run_logs" / f"{exp}.log", loso / "logs" / "training_csv" / f"{exp}_training.csv",
                loso / "out-imgs" / exp / "training_curves.png", loso / "training_metadata" / f"{exp}_latest.json",
                loso / "exports" / "ptq" / user / "model_dynamic_int8.tflite",
                loso / "exports" / "qat" / user / "qat_dynamic_int8.tflite",
                loso / "exports" / "qat" / user / "qat_metadata.json",
                loso / "results" / "confusion_matrices" / f"confusion_matrix_{user}_FP32.png"]:
            assert path.is_file(), path
    for path in [full / "checkpoints" / "demo_full" / "final_model_fp32.tflite",
                 full / "exports" / "ptq" / "model_dynamic_int8.tflite",
                 full / "exports" / "qat" / "qat_dynamic_int8.tflite"] + [
            loso / "results" / f"{name}.csv" for name in ("summary_table", "per_class_accuracy", "model_info")]:
        assert path.is_file(), path
    assert len(list((loso / "results").glob("experiment_results_*_evaluated.txt"))) == 1
    out = tiny_run["resumed"].stdout
    assert f"app model        {full / 'exports' / 'qat' / 'qat_dynamic_int8.tflite'}" in out


def test_summary_has_one_row_per_holdout_plus_mean_std(tiny_run):
    with open(tiny_run["loso"] / "results" / "summary_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for model in ("FP32", "PTQ", "QAT"):
        mine = {r["holdout"]: r for r in rows if r["model"] == model}
        assert sorted(mine) == sorted(HOLDOUTS + ["ALL"]), model
        per_holdout = [float(mine[u]["top1_pct"]) for u in HOLDOUTS]
        assert mine["ALL"]["n"] == "2" and mine["ALL"]["std_over"] == "holdouts"
        assert float(mine["ALL"]["top1_pct"]) == pytest.approx(sum(per_holdout) / 2)
        assert float(mine["ALL"]["top1_pct_std"]) == pytest.approx(abs(per_holdout[0] - per_holdout[1]) / 2 ** 0.5)


def test_interrupted_training_continues_where_it_stopped(tiny_run):
    """user01 (killed after its first epoch checkpoint) resumes; no finished epoch of any holdout is trained again.
    The holdouts train in parallel (JOBS = cores), so user02 may have been interrupted too."""
    out, loso = tiny_run["resumed"].stdout, tiny_run["loso"]
    assert "=== [keypoints] skipped" in out and "=== [splits] skipped" in out
    assert "continue the interrupted FP32 training of user01" in out
    assert "train_loso_functional.py" in out and "--resume --holdouts user01" in out
    for user in HOLDOUTS:
        record = json.loads((loso / "training_metadata" / f"demo_LOSO_{user}_latest.json").read_text())
        assert record["success"]
        assert record["initial_epoch"] + record["epochs_this_session"] == EPOCHS, user  # nothing trained twice
        log = (loso / "logs" / "run_logs" / f"demo_LOSO_{user}.log").read_text()
        assert (f"resuming after epoch {record['initial_epoch']}" in log) == (record["initial_epoch"] > 0), user
    user01 = json.loads((loso / "training_metadata" / "demo_LOSO_user01_latest.json").read_text())
    assert user01["initial_epoch"] >= 1


def test_rerun_skips_every_stage(tiny_run):
    report = next((tiny_run["loso"] / "results").glob("experiment_results_*.txt"))
    out = run_script("run_end_to_end_pipeline.sh", tiny_run["env"]).stdout
    for stage in ("keypoints", "splits", "train_loso", "ptq_loso", "qat_loso", "train_full", "ptq_full", "qat_full",
                  "collect"):
        assert f"=== [{stage}] skipped" in out, stage
    assert [line for line in out.splitlines() if line.startswith("+ ")] == ["+ env VENV=.venv bash setup_env.sh"]
    assert f"report           {report}" in out


def test_failing_stage_is_named(tmp_path, tiny_config_path):
    env = pipeline_env(tmp_path, tiny_config_path, DEMO="0", DATA_DIR=str(tmp_path / "no-such-dataset"))
    result = subprocess.run(["bash", str(REPO / "run_end_to_end_pipeline.sh")], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "no-such-dataset/label2id.json not found" in result.stderr
    assert "pipeline FAILED in stage [keypoints]" in result.stderr


@background_fixture
def variants_run(tmp_path_factory, tiny_config_path):
    """run_end_to_end_variants.sh: one variant (65 points) x one seed x one holdout, 1 epoch, PTQ (and, as for any
    real-data run, ONNX fp32) only, the 90-point variant skipped (no 90-point data): (its folder, its output)."""
    tmp_path = tmp_path_factory.mktemp("variants")
    make_demo_dataset(tmp_path / "demo-65kpts", signers=3, signs=10, reps=2, seed=0)
    for variant in ("65kpts", "90kpts"):
        raw = yaml.safe_load((REPO / "configs" / f"arabic-asl-{variant}.yaml").read_text()) | TINY
        (tmp_path / f"tiny-{variant}.yaml").write_text(yaml.safe_dump(raw))
    env = pipeline_env(tmp_path, tiny_config_path) | {
        "VARIANTS": "65kpts 90kpts", "SEED_LIST": "7", "HOLDOUTS": "user01", "EPOCHS": "1",
        "RUN_QAT": "0", "RUN_FULL_DATASET": "0", "DATASET_NAME": "demo",
        "CONFIG_TEMPLATE": str(tmp_path / "tiny-{variant}.yaml"),
        "DATA_DIR_65": str(tmp_path / "demo-65kpts"), "DATA_DIR_90": str(tmp_path / "none")}
    return tmp_path, run_script("run_end_to_end_variants.sh", env).stdout


def test_variants_script(variants_run):
    """The variants run (above); the cross-variant table; the reference README's multi-seed collect_results
    command and deploy path, as written, find what the script wrote."""
    tmp_path, out = variants_run
    assert f"variant 90kpts skipped: needs 90-point keypoints, {tmp_path / 'none'} has none" in out
    loso = tmp_path / "outputs" / "demo" / "loso"
    prefix = "demo_65kpts_pose_hands"  # the reference README's arabic_asl_65kpts_pose_hands
    exp = f"{prefix}_seed7_demo_LOSO_user01"
    assert (loso / "checkpoints" / exp / "final_model_fp32.tflite").is_file()
    ptq = "model_dynamic_int8.tflite"
    assert (loso / "exports" / f"ptq_{prefix}_seed7" / "user01" / ptq).is_file()
    assert (loso / "exports" / f"ptq_{prefix}" / "user01" / ptq).is_file()  # the seed-less link
    assert (loso / "exports" / f"ptq_{prefix}_seed7" / "user01" / "model_fp32.onnx").is_file()  # real data: ONNX=1
    with open(loso / "results" / prefix / "summary_table.csv", newline="") as f:
        per_variant = {(r["holdout"], r["model"]): r for r in csv.DictReader(f)}
    with open(loso / "results" / "variants_summary.csv", newline="") as f:
        summary = {r["model"]: r for r in csv.DictReader(f)}
    for model in ("FP32", "PTQ"):
        assert summary[model]["variant"] == "65kpts"
        assert float(summary[model]["top1_pct"]) == pytest.approx(float(per_variant["ALL", model]["top1_pct"]))
    assert "65kpts" in (loso / "results" / "variants_summary.txt").read_text()
    assert "variants done" in out
    import collect_results  # the reference README's multi-seed command, with this tree's names
    seed_command = collect_results.main([
        "--config_path", str(tmp_path / "tiny-65kpts.yaml"),
        "--base_data_path", str(tmp_path / "demo-65kpts"),
        "--seed_list", "7", "--exp_prefix_base", prefix,
        "--ptq_base_dir", str(loso / "exports" / f"ptq_{prefix}_seed{{seed}}"),
        "--qat_base_dir", str(loso / "exports" / f"qat_{prefix}_seed{{seed}}"),
        "--dataset_name", "demo", "--output_root", str(tmp_path / "outputs"), "--no-console"])
    assert [(r.seed, r.holdout, sorted(r.models)) for r in seed_command["runs"]] == [
        ("7", "user01", ["FP32", "ONNX-fp32", "PTQ"])]  # a real-data run (DEMO=0) exports ONNX fp32 too
