"""Reliability, second round (issue #31): run folders, training failures and videos.

- A run folder has one owner (run_lock.RunLock): a second run of a running experiment is refused; a
  lock whose owner died is taken over; a run that fails or is killed never changes a finished run's
  files (--overwrite stages).
- A training whose loss is not finite, or whose FP32 export fails its parity check, is recorded as
  failed and exits 1; flags get the bounds of the config keys; a damaged resume state and a full
  disk are one line, exit 2.
- Parity says PASS or FAIL against the mode's expectation; a quantized export below it fails its
  step (exit 1) after writing every model.
- Videos: a file name that is not UTF-8 is read (it used to crash the process in OpenCV); one bad
  video among many is counted and skipped; the outputs are checked before the first video.
"""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import evaluate_tflite_single
import extract_65_keypoints
import fix_loso
import main_functional
import predict_video
import ptq_export
import run_lock
import runs
import tflite_export
import train_loso_functional
import train_loso_functional_qat
from conftest import REPO
from main_functional import TrainSettings, train
from run_lock import RunBusy, RunLock
from runs import loso_data_path, run_paths
from safe_pickle import load_pickle
from util import UserError, cli, disk_full

HOLDOUT = "user01"
EXP = f"demo_LOSO_{HOLDOUT}"
WEIRD = b"clip_\xff\xfe.mp4"          # a file name that is not UTF-8
DEADLINE = 900                        # seconds a subprocess may take to get somewhere (shared CPUs)


# ----------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def loso_base(demo_root):
    fix_loso.main(["--base_root", str(demo_root), "--holdouts", HOLDOUT])
    return demo_root


def loso_argv(loso_base, config, out, *extra) -> list[str]:
    return ["--config_path", str(config), "--base_data_path", str(loso_base),
            "--holdout_only", HOLDOUT, "--batch_size", "16", "--no_validation",
            "--dataset_name", "demo", "--output_root", str(out), *map(str, extra)]


def script(name: str, *argv) -> subprocess.Popen:
    """A repository script in a process of its own; its output goes to a temporary file."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, str(REPO / name), *map(str, argv)], cwd=REPO,
                            text=True, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def output(proc: subprocess.Popen) -> str:
    """Wait for the process; its output (stdout and stderr)."""
    proc.wait(timeout=DEADLINE)
    proc.log.seek(0)
    return proc.log.read()


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    """Until `path` exists (the process is then where the test needs it); fail if it ended first."""
    deadline = time.time() + DEADLINE
    while not path.exists():
        assert proc.poll() is None, f"ended before {path} existed:\n{output(proc)[-3000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def tree_digest(paths, exp: str = EXP) -> dict[str, str]:
    """sha256 of every file a run of `exp` owns (run_artefacts): what a failed or killed run must
    not change."""
    digest = {}
    for artefact in paths.run_artefacts(exp):
        files = sorted(artefact.rglob("*")) if artefact.is_dir() else [artefact]
        for f in files:
            if f.is_file():
                digest[str(f.relative_to(paths.base))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digest


def latest(paths, exp: str = EXP) -> dict:
    return json.loads(paths.latest_record(exp).read_text())


@pytest.fixture(scope="module")
def finished_run(loso_base, tiny_config_path, tmp_path_factory):
    """The output root of a finished 1-epoch run of EXP (seed 1); tests change only copies of it."""
    out = tmp_path_factory.mktemp("finished")
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 1, "--seed", 1)
    assert train_loso_functional.main(argv) == 0
    return out


@pytest.fixture
def finished(finished_run, tmp_path):
    """A private copy of the finished run: (output root, its RunPaths, digest of its files)."""
    out = tmp_path / "outputs"
    shutil.copytree(finished_run, out)
    paths = run_paths("demo", "loso", str(out))
    assert paths.finished(EXP) and latest(paths)["seed"] == 1
    return out, paths, tree_digest(paths)


# ------------------------------------------------------------------------------------- run folders
def test_a_second_run_of_a_running_experiment_is_refused(loso_base, tiny_config_path, tmp_path):
    """Two trainings of one experiment at once (seeds 1 and 2): the second is refused with one line
    and exit 2, and every artefact comes from the first."""
    out = tmp_path / "outputs"
    paths = run_paths("demo", "loso", str(out))
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 2)
    first = script("train_loso_functional.py", *argv, "--seed", 1)
    wait_for(paths.lock_file(EXP), first)
    second = script("train_loso_functional.py", *argv, "--seed", 2)
    second_out = output(second)
    assert second.returncode == 2, second_out
    busy = f"{paths.lock_file(EXP)}: experiment {EXP} is being run by pid {first.pid} on "
    assert busy in second_out
    first_out = output(first)
    assert first.returncode == 0, first_out
    record = latest(paths)
    assert record["success"] and record["seed"] == 1
    card = json.loads((paths.checkpoint_dir(EXP) / "final_model_fp32.json").read_text())
    assert card["training"]["seed"] == 1
    state = json.loads((paths.resume_dir(EXP) / "state.json").read_text())
    assert state["run_config"]["seed"] == 1 and state["epoch"] == 2
    assert len(paths.training_csv(EXP).read_text().splitlines()) == 3  # header + 2 epochs
    assert not paths.lock_file(EXP).exists()  # released


def test_a_finished_run_is_kept_unless_overwrite(finished, loso_base, tiny_config_path, capsys):
    out, paths, before = finished
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 2, "--seed", 2)
    assert train_loso_functional.main(argv) == 2
    assert (f"{paths.latest_record(EXP)}: experiment {EXP} has finished already; pass --overwrite"
            in capsys.readouterr().out)
    assert tree_digest(paths) == before
    assert train_loso_functional.main([*argv, "--overwrite"]) == 0
    record = latest(paths)
    assert record["success"] and record["seed"] == 2
    assert record["final_model"] == str(paths.final_model(EXP))
    assert len(paths.training_csv(EXP).read_text().splitlines()) == 3
    assert json.loads((paths.resume_dir(EXP) / "state.json").read_text())["epoch"] == 2
    summary = json.loads((paths.checkpoint_dir(EXP) / "metadata.json").read_text())
    assert summary["timestamp"] == record["timestamp"]
    assert paths.curves_png(EXP).is_file() and not (paths.base / runs.STAGING_DIR).exists()


def test_a_killed_overwrite_never_touches_the_finished_run(finished, loso_base, tiny_config_path):
    """SIGTERM in the middle of a re-run with other settings: the finished run's files are
    unchanged; the next run takes the dead run's lock over."""
    out, paths, before = finished
    argv = loso_argv(loso_base, tiny_config_path, out, "--overwrite")
    proc = script("train_loso_functional.py", *argv, "--epochs", 50, "--seed", 2)
    wait_for(paths.staging(EXP).resume_dir(EXP) / "state.json", proc)  # a new epoch is done
    proc.terminate()
    output(proc)
    assert tree_digest(paths) == before and latest(paths)["seed"] == 1
    assert json.loads(paths.lock_file(EXP).read_text())["pid"] == proc.pid  # left by the killed run
    assert train_loso_functional.main([*argv, "--epochs", "1", "--seed", "3"]) == 0
    assert latest(paths)["seed"] == 3
    log = paths.run_log(EXP).read_text()
    assert f"taking over the lock of experiment {EXP} from pid {proc.pid}" in log
    assert f"pid {proc.pid} is not running" in log
    assert not paths.lock_file(EXP).exists() and not (paths.base / runs.STAGING_DIR).exists()


def test_a_failed_overwrite_keeps_the_finished_run(finished, loso_base, tiny_config_path):
    out, paths, before = finished
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 2, "--seed", 2, "--lr", 1e30,
                     "--overwrite")
    assert train_loso_functional.main(argv) == 1
    assert tree_digest(paths) == before and not (paths.base / runs.STAGING_DIR).exists()
    failed = [json.loads(r.read_text()) for r in paths.metadata_dir().glob(f"{EXP}_2*.json")]
    assert sorted(r["success"] for r in failed) == [False, True]
    assert "the loss is nan after epoch 1" in next(r for r in failed if not r["success"])["error"]


def test_resume_with_a_damaged_state_is_one_line(finished, loso_base, tiny_config_path, capsys):
    out, paths, before = finished
    state_file = paths.resume_dir(EXP) / "state.json"
    state = json.loads(state_file.read_text())
    del state["plateau_wait"]
    state_file.write_text(json.dumps(state))
    before = tree_digest(paths)
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 2, "--seed", 1, "--resume")
    assert train_loso_functional.main(argv) == 2
    assert (f"--resume: {paths.resume_dir(EXP) / 'state.json'}: missing key(s) ['plateau_wait']"
            in capsys.readouterr().out)
    assert tree_digest(paths) == before


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_lock_owners(tmp_path, monkeypatch):
    path, lines = tmp_path / "exp.lock", []
    with RunLock(path, "experiment x"):
        held = json.loads(path.read_text())
        assert held["pid"] == os.getpid() and held["host"]
        with pytest.raises(RunBusy, match=f"experiment x is being run by pid {os.getpid()} on "):
            RunLock(path, "experiment x").acquire()
    assert not path.exists()
    # a dead owner on this host, a pid reused by another process, an owner elsewhere that stopped
    me = json.loads(json.dumps(held))
    for owner, reason in (({"pid": dead_pid()}, "is not running"),
                          ({"pid": os.getpid(), "process_start": "-1"}, "is another process now")):
        path.write_text(json.dumps(me | owner))
        with RunLock(path, "experiment x", log=lines.append):
            pass
        assert reason in lines[-1] and "taking over the lock of experiment x" in lines[-1]
    path.write_text(json.dumps(me | {"host": "elsewhere", "pid": 1}))
    with pytest.raises(RunBusy, match="on elsewhere since"):
        RunLock(path).acquire()
    os.utime(path, (time.time() - run_lock.LOCK_STALE_SECONDS - 5,) * 2)
    with RunLock(path, log=lines.append):
        assert "not touched for" in lines[-1]
    # the owner keeps its lock fresh, and a release never removes another run's lock
    monkeypatch.setattr(run_lock, "LOCK_HEARTBEAT_SECONDS", 0.05)
    with RunLock(path) as lock:
        os.utime(path, (0, 0))
        deadline = time.time() + 60
        while path.stat().st_mtime == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert path.stat().st_mtime > 0
        path.write_text(json.dumps(me | {"token": "another run"}))
        lock.release()
        assert path.exists()


# ------------------------------------------------------------------------------- training failures
@pytest.mark.parametrize("module, argv, message", [
    (train_loso_functional, ["--lr", "-1"], "--lr: must be finite and > 0, got -1"),
    (train_loso_functional, ["--lr", "inf"], "--lr: must be finite and > 0, got inf"),
    (train_loso_functional, ["--epochs", "0"], "--epochs: must be >= 1, got 0"),
    (train_loso_functional, ["--batch_size", "0"], "--batch_size: must be >= 1, got 0"),
    (main_functional, ["--lr", "nan"], "--lr: must be finite and > 0, got nan"),
    (main_functional, ["--scheduler_factor", "1.5"],
     "--scheduler_factor: must be finite and in (0, 1), got 1.5"),
    (train_loso_functional_qat, ["--qat_epochs", "0"], "--qat_epochs: must be >= 1, got 0"),
    (train_loso_functional_qat, ["--lr=-1e-5"], "--lr: must be finite and > 0, got -1e-5"),
    (train_loso_functional_qat, ["--batch_size", "-2"], "--batch_size: must be >= 1, got -2"),
    (evaluate_tflite_single, ["--max_samples", "-3"], "--max_samples: must be >= 1, got -3"),
    (ptq_export, ["--num_calibration_samples", "0"],
     "--num_calibration_samples: must be >= 1, got 0"),
])
def test_flags_have_the_bounds_of_the_config_keys(module, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and last.endswith(f"error: argument {message}")


def test_settings_out_of_bounds_are_refused_before_anything_runs(loso_base, tiny_config_path,
                                                                  tmp_path):
    settings = TrainSettings(experiment_name=EXP, config_path=str(tiny_config_path),
                             data_path=str(loso_base), dataset_name="demo", run_type="loso",
                             epochs=0, output_root=str(tmp_path))
    with pytest.raises(UserError, match=r"--epochs \(training.epochs\) must be >= 1, got 0"):
        train(settings)
    assert not any(tmp_path.iterdir())


def test_a_diverging_training_fails_with_one_line(loso_base, tiny_config_path, tmp_path, capsys):
    """lr 1e30 is finite and positive, and the loss is NaN after the first epoch: exit 1, success
    false, nothing of that epoch written, nothing exported."""
    out = tmp_path / "outputs"
    with pytest.raises(SystemExit) as exit_info:
        main_functional.main(["--experiment_name", EXP,
                              "--data_path", str(loso_data_path(loso_base, HOLDOUT)),
                              "--config_path", str(tiny_config_path), "--epochs", "3",
                              "--lr", "1e30", "--batch_size", "16", "--output_root", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1
    assert err[0].startswith(f"error: {EXP}: the loss is nan after epoch 1 (learning rate 1e+30)")
    paths = run_paths("demo", "loso", str(out))
    record = latest(paths)
    assert not record["success"] and "the loss is nan" in record["error"]
    csv = paths.training_csv(EXP)
    assert not csv.exists() or "nan" not in csv.read_text()  # no row of the diverged epoch
    assert not paths.final_model(EXP).exists() and not paths.fp32_tflite(EXP).exists()
    assert not (paths.resume_dir(EXP) / "state.json").exists()
    assert "ERROR run failed: " in paths.run_log(EXP).read_text()


def test_an_fp32_export_failing_parity_fails_the_run(loso_base, tiny_config_path, tmp_path,
                                                     monkeypatch, capsys):
    monkeypatch.setitem(tflite_export.PARITY_TOLERANCE, "fp32", -1.0)  # no export can meet it
    out = tmp_path / "outputs"
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 1)
    assert train_loso_functional.main(argv) == 1
    paths = run_paths("demo", "loso", str(out))
    record = latest(paths)
    assert not record["success"] and "the fp32 export failed its parity check" in record["error"]
    card = json.loads((paths.checkpoint_dir(EXP) / "final_model_fp32.json").read_text())
    assert card["parity"]["passed"] is False
    printed = capsys.readouterr().out
    assert ("expected: max |dlogit| <= -1e+00 and Keras's class on every clip Keras decides"
            in printed)
    assert printed.count(": FAIL\n") == 1
    assert f"{paths.fp32_tflite(EXP)}: the fp32 export failed" in printed


class KerasStub:
    """The model with its embedding output (tflite_export.embedding_model): logits and embeddings."""
    def __init__(self, logits):
        self.logits = np.asarray(logits, dtype=np.float32)
        self.embeddings = np.eye(len(self.logits), dtype=np.float32)

    def predict(self, inputs, **kwargs):
        return self.logits, self.embeddings


class TFLiteStub(KerasStub):
    def predict_with_embedding(self, keypoints, masks):
        return self.logits, self.embeddings, 0.0


@pytest.mark.parametrize("tflite_logits, passed", [
    ([[5, 0, 0], [1.0, 1.02, 0], [0, 0, 9]], True),    # the flip is a near tie: not counted
    ([[0, 5, 0], [1.0, 1.02, 0], [0, 0, 9]], False),   # a flip on a clip Keras decides
    ([[np.nan, 0, 0], [1.02, 1.0, 0], [0, 0, 9]], False),
])
def test_parity_counts_the_clips_keras_decides(tflite_logits, passed, monkeypatch):
    monkeypatch.setattr(tflite_export, "embedding_model", lambda model: model)
    keras_logits = [[5, 0, 0], [1.02, 1.0, 0], [0, 0, 9]]
    clips = np.zeros((3, 64, 1, 2)), np.ones((3, 64))
    parity = tflite_export.check_parity(KerasStub(keras_logits), TFLiteStub(tflite_logits), *clips,
                                        tolerance=None, min_agreement=0.95)
    assert parity["passed"] is passed and parity["decided_clips"] == 2
    assert tflite_export.parity_line("int8", parity).endswith("PASS" if passed else "FAIL")


def test_a_quantized_export_below_its_expectation_fails_the_step(trained_fold, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setitem(tflite_export.PARITY_TOLERANCE, "dynamic", -1.0)  # no export can meet it
    out = tmp_path / "ptq"
    with pytest.raises(SystemExit) as exit_info:
        ptq_export.main(["--config_path", str(trained_fold.config_path),
                         "--checkpoint", str(trained_fold.h5), "--modes", "dynamic,fp32",
                         "--output_dir", str(out)])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1
    failed = f"error: {out / 'model_dynamic_int8.tflite'}: the dynamic export failed its parity"
    assert err[0].startswith(failed)
    assert (out / "model_fp32.tflite").is_file() and (out / "model_dynamic_int8.tflite").is_file()
    assert json.loads((out / "model_dynamic_int8.json").read_text())["parity"]["passed"] is False
    lines = [line for line in captured.out.splitlines() if line.startswith("TFLite ")]
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["FAIL", "PASS"]


# ------------------------------------------------------------------------------------- a full disk
def test_disk_full_errors_are_one_line_wherever_they_come_from(capsys):
    from tf_env import tf
    wrapped = tf.errors.ResourceExhaustedError(None, None, "/o/ckpt; No space left on device\n x")
    h5py_like = OSError("Unable to synchronously write data (file write failed: errno = 28, "
                        "error message = 'No space left on device')")
    for error in (OSError(errno.ENOSPC, "No space left on device", "/out/final_model.h5"), wrapped,
                  h5py_like):
        @cli
        def main():
            raise error
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and "no space left on device" in err[0]
    assert disk_full(RuntimeError("other")) is None


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 KiB tmpfs (root only); skips where it cannot be mounted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated full disk test runs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_training_on_a_full_disk_is_one_line(loso_base, tiny_config_path, tiny_disk, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_functional.main(["--experiment_name", EXP,
                              "--data_path", str(loso_data_path(loso_base, HOLDOUT)),
                              "--config_path", str(tiny_config_path), "--epochs", "2",
                              "--batch_size", "16", "--output_root", str(tiny_disk)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "no space left on device" in err[0], err


def test_a_simulated_full_disk_in_a_fold_is_one_line(loso_base, tiny_config_path, tmp_path,
                                                     monkeypatch, capsys):
    def no_space(path, save_fn):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(main_functional, "atomic_save", no_space)
    out = tmp_path / "outputs"
    argv = loso_argv(loso_base, tiny_config_path, out, "--epochs", 1)
    assert train_loso_functional.main(argv) == 2
    printed = capsys.readouterr().out
    final_model = run_paths("demo", "loso", str(out)).final_model(EXP)
    assert f"ERROR {EXP}: {final_model}: no space left on device" in printed
    assert "Traceback" not in printed


# ------------------------------------------------------------------------------------------ videos
VIDEO = "mlr511-videos/user01/G09/R01.mp4"  # 32 frames


def weird_copy(source: Path, folder: Path) -> Path:
    """A copy of `source` in `folder` named WEIRD (bytes, not UTF-8); its path as Python has it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = os.path.join(os.fsencode(folder), WEIRD)
    shutil.copyfile(os.fsencode(source), target)
    return Path(os.fsdecode(target))


def test_predict_video_reads_a_name_that_is_not_utf8_and_skips_a_bad_one(trained_fold, shared_data,
                                                                          tmp_path):
    videos = tmp_path / "videos" / "G09"
    weird = weird_copy(shared_data / VIDEO, videos)
    (videos / "broken.mp4").write_bytes(b"not a video")
    report, annotated = tmp_path / "report.json", tmp_path / "annotated"
    proc = script("predict_video.py", "--model", trained_fold.tflite, videos.parent,
                  "--output_json", report, "--annotate_dir", annotated)
    out = output(proc)
    assert proc.returncode == 1, out  # not 139: OpenCV never sees the name
    assert f"FAILED {videos / 'broken.mp4'}: cannot open video" in out
    assert "FAILED: 1 of 2 video(s) could not be processed" in out
    written = json.loads(report.read_text())
    assert written["summary"]["failed"] == 1
    assert written["failed"][0]["source"] == str(videos / "broken.mp4")
    [clip] = written["clips"]
    assert clip["source"] == str(weird) and clip["frames"] == 32 and clip["true_label"] == "G09"
    assert (annotated / f"G09_{weird.stem}.annotated.mp4").is_file()


def test_the_extractor_reads_a_name_that_is_not_utf8(shared_data, tmp_path):
    """Three videos, the second with a name that is not UTF-8 (it used to kill the extractor after
    the first) and the third broken: two pickles, the second equal to the shared one of that
    video."""
    videos = tmp_path / "videos" / "user01"
    shutil.copytree(shared_data / "mlr511-videos" / "user01" / "G01", videos / "G01")
    weird = weird_copy(shared_data / "mlr511-videos" / "user01" / "G02" / "R01.mp4", videos / "G02")
    (videos / "G03").mkdir()
    (videos / "G03" / "R01.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    proc = script("extract_65_keypoints.py", "--input_dir", videos.parent, "--output_dir", out,
                  "--layout", 90, "--workers", 1)
    stdout = output(proc)
    assert proc.returncode == 1, stdout
    assert "3 videos: 2 extracted, 0 skipped (already extracted), 1 failed" in stdout
    assert "G03/R01.mp4: cannot open video" in stdout
    pickle = out / "all" / "G02" / f"user01_G02_{weird.stem}.pkl"
    shared = shared_data / "mlr511-90kpts" / "all" / "G02" / "user01_G02_R01.pkl"
    expected = load_pickle(shared)["keypoints"]
    ours = load_pickle(pickle)["keypoints"]  # reproduced by mediapipe 0.10.21 (shared data README)
    assert ours.shape == expected.shape and np.abs(ours - expected).max() < 0.01
    assert (out / "all" / "G01" / "user01_G01_R01.pkl").is_file()


def never(*args, **kwargs):
    pytest.fail("a video was processed")


@pytest.mark.parametrize("flag, target, message", [
    ("--output_json", "folder", "--output_json {path}: is a folder, not a file"),
    ("--output_json", "under a file", "--output_json {path}: cannot be created, {file} is a file"),
    ("--annotate_dir", "file", "--annotate_dir {path}: is a file, not a folder"),
    ("--annotate_dir", "not writable", "--annotate_dir {path}: {parent} is not writable"),
])
def test_predict_video_checks_its_outputs_before_the_first_video(tmp_path, monkeypatch, capsys,
                                                                  flag, target, message):
    monkeypatch.setattr(predict_video, "run_source", never)
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "locked").mkdir()
    path = {"folder": tmp_path / "folder", "under a file": tmp_path / "file" / "report.json",
            "file": tmp_path / "file", "not writable": tmp_path / "locked" / "annotated"}[target]
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda p, mode: Path(p) != tmp_path / "locked" and real_access(p, mode))
    with pytest.raises(SystemExit) as exit_info:
        predict_video.main(["--model", str(tmp_path / "model.tflite"), str(tmp_path / "clip.mp4"),
                            flag, str(path)])
    expected = message.format(path=path, file=tmp_path / "file", parent=tmp_path / "locked")
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == f"error: {expected}"


def test_the_extractor_checks_its_output_before_the_first_video(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extract_65_keypoints, "run_jobs", never)
    (tmp_path / "file").write_text("x")
    (tmp_path / "videos" / "user01" / "G01").mkdir(parents=True)
    (tmp_path / "videos" / "user01" / "G01" / "R01.mp4").write_bytes(b"x")
    out = tmp_path / "file" / "dataset"
    with pytest.raises(SystemExit) as exit_info:
        extract_65_keypoints.main(["--input_dir", str(tmp_path / "videos"),
                                   "--output_dir", str(out)])
    assert exit_info.value.code == 2
    expected = f"error: --output_dir {out}: cannot be created, {tmp_path / 'file'} is a file"
    assert capsys.readouterr().err.strip() == expected
