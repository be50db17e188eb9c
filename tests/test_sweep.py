"""sweep.py on a loopback-only Ray cluster, and --distribute mirrored (issue #36).

- The test starts its own Ray head (a session of its own; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps
  every listener on 127.0.0.1, checked with ss) and runs a 2-fold sweep of a tiny model on it. Once
  user01 has an epoch checkpoint, the test kills the Ray worker that runs it: the training process
  it started dies with it, Ray retries the task, the retry resumes the fold (taking over the dead
  process's run-folder lock), and both folds end with the numbers of the same folds trained by the
  pipeline's command in one local process (1 TensorFlow thread each, as JOBS=2 on 2 cores):
  bit-identical records and weights. A second sweep skips every fold. Only the test's own cluster
  is stopped (its process session), never with `ray stop`.
- A half-written fold never looks finished; a run-folder lock from another pid space is judged by
  its heartbeat only.
- --distribute mirrored on 2 logical CPU devices gives the per-epoch losses of one device within
  rtol 1e-5 (dropout off: only the order of the sums differs); a global batch smaller than the
  replicas and QAT under mirroring are refused with one line.
Skips when ray is not installed, except under CI=true.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import run_lock
import runs
from conftest import REPO, background_fixture, run_process, spawn, stop
from make_demo_dataset import make_demo_dataset

if importlib.util.find_spec("ray") is None and os.environ.get("CI") != "true":
    pytest.skip("ray is not installed (requirements-dev.txt)", allow_module_level=True)

HOLDOUTS = ("user01", "user02")
EPOCHS = 5
TIMEOUT = 600  # seconds per step: only a guard against a hang (the machine may be shared)
LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")
# loopback only, and no token in ~/.ray (a token there would switch every later cluster of the user
# to token authentication)
# to be fair to a local run, workers at the niceness of the test (Ray's default is nice 15)
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
             "RAY_worker_niceness": "0", "TF_NUM_INTRAOP_THREADS": "1",
             "TF_NUM_INTEROP_THREADS": "1"}
RAY_CLI = "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"


# ------------------------------------------------------------------------------- processes, ports
def session_of(pid: int) -> int | None:
    """The session of a live process (None: gone, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[3])


def session_pids(sid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and session_of(int(p.name)) == sid]


def listeners() -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket of this user's processes (ss)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        found += [(fields[3], int(pid)) for pid in re.findall(r"pid=(\d+)", line)]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what: str, timeout: float = TIMEOUT, proc=None):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert proc is None or proc.poll() is None, f"{what}: the process ended first"
        assert time.time() < deadline, f"{what}: not in time"
        time.sleep(0.1)
    return value


def start_cluster(temp: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """A Ray head on 127.0.0.1 only, 2 CPUs, in a session of its own; (process, address)."""
    with open(temp.with_suffix(".log"), "w") as log:
        head = spawn([sys.executable, "-c", RAY_CLI, "start", "--head", "--block",
                      "--node-ip-address", "127.0.0.1", "--port", "0", "--ray-client-server-port",
                      str(free_port()), "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard",
                      "false", "--disable-usage-stats", "--temp-dir", str(temp)], env=env,
                     stdout=log, stderr=subprocess.STDOUT)
    marker = temp / "ray_current_cluster"
    wait_for(lambda: "Ray runtime started" in temp.with_suffix(".log").read_text()
             and marker.is_file(), "the Ray head", proc=head)
    return head, marker.read_text().strip()


def stop_cluster(head: subprocess.Popen) -> list[int]:
    """SIGTERM to the head (it stops what it started), then SIGKILL to whatever of its session is
    left; returns the pids that were left after the SIGTERM."""
    sid = head.pid
    stop(head)
    deadline = time.time() + 30
    while session_pids(sid) and time.time() < deadline:
        time.sleep(0.2)
    left = session_pids(sid)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def kill_worker_of(lock: Path) -> dict:
    """SIGKILL the Ray worker whose training holds `lock`; how the training process ended."""
    pid = json.loads(wait_for(lambda: lock.is_file() and lock.read_text(), "the lock"))["pid"]
    stat = Path(f"/proc/{pid}/stat").read_text()
    worker = int(stat[stat.rindex(")") + 2:].split()[1])
    worker_cmd = Path(f"/proc/{worker}/cmdline").read_bytes().decode(errors="replace")
    os.kill(worker, signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: session_of(pid) is None, "the training to die with its worker", 30)
    return {"training": pid, "worker": worker, "worker_cmd": worker_cmd,
            "training_gone_after": time.time() - killed}


# ------------------------------------------------------------------------------------ the sweep
@background_fixture
def ray_sweep(tmp_path_factory, tiny_config_path):
    """The loopback cluster, a local reference run, the sweep with a killed worker, its re-run."""
    tmp = tmp_path_factory.mktemp("sweep")
    data = tmp / "demo-65kpts"
    make_demo_dataset(data, signers=3, signs=10, reps=2, seed=0)  # 40 training clips per fold
    env = {k: v for k, v in os.environ.items() if k != "SIGNBART_OUTPUT_ROOT"} | LOCAL_ENV
    done = run_process([sys.executable, "fix_loso.py", "--base_root", str(data), "--holdouts",
                        ",".join(HOLDOUTS)], timeout=TIMEOUT, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    recipe = ["--epochs", str(EPOCHS), "--lr", "3e-3", "--batch_size", "8"]
    local = spawn([sys.executable, "train_loso_functional.py", "--config_path", str(tiny_config_path),
                   "--base_data_path", str(data), *recipe, "--seed", "42", "--dataset_name", "demo",
                   "--output_root", str(tmp / "local"), "--exp_prefix", "s", "--no_validation",
                   "--overwrite", "--holdouts", ",".join(HOLDOUTS)], cwd=REPO, env=env,
                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    head, address = start_cluster(temp, env)
    try:
        result = {"address": address, "head": head.pid}
        result["listen_idle"] = [(a, p) for a, p in listeners() if session_of(p) == head.pid]
        sweep = [sys.executable, "sweep.py", "--address", address, "--data_dir", str(data),
                 "--configs", str(tiny_config_path), "--demo", "--holdouts", ",".join(HOLDOUTS),
                 "--stages", "train", "--exp_prefix", "s", "--output_root", str(tmp / "ray"),
                 *recipe, "--cpus_per_task", "1"]
        with open(tmp / "sweep.out", "w") as out:
            proc = spawn(sweep, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            lock = runs.run_paths("demo", "loso", str(tmp / "ray")).lock_file("s_demo_LOSO_user01")
            state = lock.parent / "s_demo_LOSO_user01" / runs.RESUME_STATE
            wait_for(state.is_file, "user01's first epoch checkpoint", proc=proc)
            result["listen_busy"] = [(a, p) for a, p in listeners()
                                     if session_of(p) in (head.pid, proc.pid)]
            result["kill"] = kill_worker_of(lock)
            proc.wait(timeout=TIMEOUT)
        result["sweep"] = (proc.returncode, (tmp / "sweep.out").read_text())
        rerun = run_process(sweep, timeout=TIMEOUT, cwd=REPO, env=env)
        result["rerun"] = (rerun.returncode, rerun.stdout + rerun.stderr)
    finally:
        result_left = stop_cluster(head)
        shutil.rmtree(temp, ignore_errors=True)
    _, local_err = local.communicate(timeout=TIMEOUT)
    assert local.returncode == 0, local_err[-3000:]
    return result | {"left": result_left, "tmp": tmp}


def test_the_cluster_listens_on_loopback_only(ray_sweep):
    for when in ("listen_idle", "listen_busy"):
        assert ray_sweep[when], f"{when}: no listener of the test's cluster found"
        assert all(address.startswith(LOOPBACK) for address, _ in ray_sweep[when]), ray_sweep[when]


def test_a_killed_worker_takes_its_training_along_and_the_task_is_retried(ray_sweep):
    code, out = ray_sweep["sweep"]
    assert code == 0, out[-3000:]
    kill = ray_sweep["kill"]
    assert "ray::" in kill["worker_cmd"] or "default_worker" in kill["worker_cmd"], kill
    assert kill["training_gone_after"] < 30, kill  # (waited for: SIGKILL, then the kernel's exit)
    assert re.search(r"s/user01/train\s+ran\s+2\s+\d+\s+retried after its worker died", out), out
    assert re.search(r"s/user02/train\s+ran\s+1\s", out), out
    log = runs.run_paths("demo", "loso", str(ray_sweep["tmp"] / "ray")).sweep_log(
        "s", "train", "user01").read_text()
    first = log.split("=== attempt 1 of sweep")[1]  # the rerun appends its own attempt 1
    assert "=== attempt 2 of sweep" in first and "--resume --holdout_only user01" in first
    run_log = (ray_sweep["tmp"] / "ray" / "demo" / "loso" / "logs" / "run_logs" /
               "s_demo_LOSO_user01.log").read_text()
    assert "taking over the lock of experiment s_demo_LOSO_user01" in run_log
    assert f"pid {kill['training']} is not running" in run_log


def h5_weights(path: Path) -> dict:
    import h5py
    weights = {}
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(lambda name, item: weights.__setitem__(name, item[()])
                                      if isinstance(item, h5py.Dataset) else None)
    return weights


def test_each_fold_has_the_numbers_of_a_local_run(ray_sweep):
    tmp = ray_sweep["tmp"]
    for user in HOLDOUTS:
        exp = f"s_demo_LOSO_{user}"
        ray, local = (runs.run_paths("demo", "loso", str(tmp / tree)) for tree in ("ray", "local"))
        records = [json.loads(p.latest_record(exp).read_text()) for p in (ray, local)]
        for key in ("test", "train", "tf_threads", "training"):
            assert records[0][key] == records[1][key], (user, key)
        assert records[0]["tf_threads"]["intra_op"] == 1
        mine, theirs = (h5_weights(p.final_model(exp)) for p in (ray, local))
        assert mine.keys() == theirs.keys()
        assert all(np.array_equal(mine[k], theirs[k]) for k in mine), user


def test_a_rerun_skips_every_finished_fold(ray_sweep):
    code, out = ray_sweep["rerun"]
    assert code == 0, out[-3000:]
    for user in HOLDOUTS:
        assert re.search(rf"s/{user}/train\s+skipped\s+1\s+0\s+trained already", out), out


def test_only_the_tests_own_cluster_was_stopped(ray_sweep):
    """Everything of its session ended with the head's SIGTERM: nothing needed a SIGKILL."""
    assert ray_sweep["left"] == []
    assert session_pids(ray_sweep["head"]) == []


# --------------------------------------------------------------------- finished folds and locks
def test_a_half_written_fold_never_looks_finished(tmp_path):
    paths, exp = runs.run_paths("demo", "loso", str(tmp_path)), "demo_LOSO_user01"
    ckpt = paths.checkpoint_dir(exp)
    ckpt.mkdir(parents=True)
    for name in (runs.FINAL_MODEL, runs.FP32_TFLITE):
        (ckpt / name).write_bytes(b"x")
    assert not runs.fold_trained(paths, exp)          # no card, no record
    runs.card_path(ckpt / runs.FP32_TFLITE).write_text("{}")
    paths.latest_record(exp).parent.mkdir(parents=True)
    paths.latest_record(exp).write_text('{"success": false}')
    assert not runs.fold_trained(paths, exp)          # a failed run's record
    paths.latest_record(exp).write_text('{"success": tr')
    assert not runs.fold_trained(paths, exp)          # a torn record
    assert runs.stage_state("train", ckpt) == "todo"
    (paths.resume_dir(exp)).mkdir()
    (ckpt / runs.RESUME_STATE).write_text("{}")
    assert runs.stage_state("train", ckpt) == "resume"  # the pipeline shells ask the same (runs.py state)
    paths.latest_record(exp).write_text('{"success": true}')
    assert runs.fold_trained(paths, exp) and runs.stage_state("train", ckpt) == "done"
    export = tmp_path / "ptq" / "user01"
    export.mkdir(parents=True)
    (export / runs.PTQ_FILES["dynamic"]).write_bytes(b"x")
    assert not runs.ptq_done(export, ["dynamic"])     # the model without its card
    runs.card_path(export / runs.PTQ_FILES["dynamic"]).write_text("{}")
    assert runs.ptq_done(export, ["dynamic"]) and not runs.ptq_done(export, ["dynamic", "int8"])
    assert runs.stage_state("ptq", export, ["dynamic"], ["fp32"]) == "todo"  # its ONNX model missing


def test_a_lock_from_another_pid_space_goes_by_its_heartbeat(tmp_path):
    """Same host name, another machine boot or container: its pid means nothing here, so even a
    dead-looking pid is busy until the lock is LOCK_STALE_SECONDS old."""
    path, lines = tmp_path / "exp.lock", []
    with run_lock.RunLock(path):
        me = json.loads(path.read_text())
    assert me["pid_space"] == run_lock.pid_space() != ""
    path.write_text(json.dumps(me | {"pid": 2 ** 22 + 1, "pid_space": "another-boot/pid:[1]"}))
    with pytest.raises(run_lock.RunBusy, match="is being run by pid"):
        run_lock.RunLock(path).acquire()
    os.utime(path, (time.time() - run_lock.LOCK_STALE_SECONDS - 5,) * 2)
    with run_lock.RunLock(path, log=lines.append):
        assert "not touched for" in lines[-1]


def test_dry_run_prints_the_pipelines_commands(demo_root, tiny_config_path, tmp_path):
    """The pipeline's commands; a --data_dir that is a symlink keeps its path (the LOSO splits go
    beside the link, as the pipeline puts them, never beside the folder it points to)."""
    link = tmp_path / "data-link"
    link.symlink_to(demo_root)
    done = run_process([sys.executable, "sweep.py", "--data_dir", str(link), "--configs",
                        f"{tiny_config_path},{tiny_config_path}", "--seeds", "42,43", "--holdouts",
                        "user03", "--output_root", str(tmp_path), "--stages", "train,qat",
                        "--dry_run"], timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    stem = tiny_config_path.stem
    train = next(line for line in done.stdout.splitlines()
                 if line.startswith(f"{stem}_seed43/user03/train: "))
    assert train.split(": ", 1)[1] == " ".join([
        "python", "train_loso_functional.py", "--config_path", str(tiny_config_path),
        "--base_data_path", str(link), "--epochs", "80", "--lr", "0.0002", "--seed", "43",
        "--dataset_name", "arabic_asl", "--output_root", str(tmp_path), "--exp_prefix",
        f"{stem}_seed43", "--no_validation", "--overwrite", "--holdout_only", "user03"])
    assert f"{stem}_seed42/user03/qat: python train_loso_functional_qat_batch.py" in done.stdout
    assert f"splits: python fix_loso.py --base_root {link} --holdouts user03\n" in done.stdout
    bad = run_process([sys.executable, "sweep.py", "--data_dir", str(demo_root), "--configs",
                       str(tiny_config_path), "--seeds", "1,2", "--exp_prefix", "x", "--dry_run"],
                      timeout=60, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --exp_prefix 'x' lacks {seed}: the runs of several configs/seeds would share one "
        "experiment name")


# ------------------------------------------------------------------------------ several devices
@background_fixture
def mirrored_runs(tmp_path_factory, tiny_config_path):
    """One tiny fold without dropout trained on one device and mirrored on 2 logical CPUs."""
    tmp = tmp_path_factory.mktemp("mirrored")
    data = tmp / "demo-65kpts"
    make_demo_dataset(data, signers=3, signs=10, reps=2, seed=0)
    config = tmp / "tiny-no-dropout.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load(tiny_config_path.read_text()) | dict.fromkeys(
        ("dropout", "classifier_dropout", "activation_dropout", "attention_dropout",
         "encoder_layerdrop", "decoder_layerdrop"), 0.0)))
    env = {k: v for k, v in os.environ.items() if k != "SIGNBART_OUTPUT_ROOT"} | LOCAL_ENV
    base = [sys.executable, "main_functional.py", "--experiment_name", "demo_full",
            "--config_path", str(config), "--data_path", str(data), "--train_split", "all",
            "--test_split", "", "--no_validation", "--epochs", "3", "--lr", "3e-3", "--batch_size", "8",
            "--cpu_devices", "2"]
    procs = {mode: spawn(base + ["--distribute", mode, "--output_root", str(tmp / mode)], cwd=REPO,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for mode in ("none", "mirrored")}
    refused = run_process(base + ["--distribute", "mirrored", "--batch_size", "1", "--output_root",
                                  str(tmp / "refused")], timeout=TIMEOUT, cwd=REPO, env=env)
    qat = run_process([sys.executable, "train_loso_functional_qat.py", "--config_path", str(config),
                       "--data_path", str(data), "--checkpoint", "x.h5", "--distribute", "mirrored"],
                      timeout=TIMEOUT, cwd=REPO, env=env)
    for mode, proc in procs.items():
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, f"{mode}: {err[-3000:]}"
    return {"tmp": tmp, "refused": refused, "qat": qat,
            "stderr": {mode: proc.stderr for mode, proc in procs.items()}}


def test_mirrored_on_two_cpu_devices_matches_one_device(mirrored_runs):
    tmp = mirrored_runs["tmp"]
    records, losses = {}, {}
    for mode in ("none", "mirrored"):
        paths = runs.run_paths("demo", "full", str(tmp / mode))
        records[mode] = json.loads(paths.latest_record("demo_full").read_text())
        rows = paths.training_csv("demo_full").read_text().splitlines()
        column = rows[0].split(",").index("loss")
        losses[mode] = [float(row.split(",")[column]) for row in rows[1:]]
    assert records["none"]["replicas"] == 1 and records["mirrored"]["replicas"] == 2
    assert len(losses["none"]) == 3
    np.testing.assert_allclose(losses["mirrored"], losses["none"], rtol=1e-5)


def test_mirroring_refuses_a_batch_smaller_than_the_replicas_and_qat(mirrored_runs):
    refused, qat = mirrored_runs["refused"], mirrored_runs["qat"]
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: --batch_size 1 is smaller than the 2 replicas of --distribute mirrored: the batch "
        "is global, split among the replicas, so it needs at least one clip per replica")
    assert qat.returncode == 2 and qat.stderr.strip() == (
        "error: --distribute mirrored: QAT trains on one device only (tensorflow-model-optimization "
        "does not support tf.distribute); drop the flag")
