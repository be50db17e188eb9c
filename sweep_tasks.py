"""What a sweep task runs (sweep.py's worker side; no Ray here): the pipeline's command for one fold
and stage (`plan`, with the pipeline's skip test), and running it tied to the Ray worker (`execute`):
its own process group, killed by the kernel when the worker dies (PR_SET_PDEATHSIG), a run-folder
lock of a dying or lost run waited for, every attempt logged (docs/scale.md)."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run_lock import LOCK_HEARTBEAT_SECONDS, LOCK_STALE_SECONDS, RunLock
from runs import (
    fold_resumable,
    fold_trained,
    loso_data_path,
    loso_experiment_name,
    parse_onnx_modes,
    parse_ptq_modes,
    ptq_done,
    qat_done,
    results_current,
    run_paths,
)

STAGES = ("train", "ptq", "qat", "evaluate")
GPU_STAGES = ("train", "qat")
RECIPE = ("EPOCHS", "LR", "BATCH_SIZE", "QAT_EPOCHS", "QAT_BATCH_SIZE", "QAT_LR", "PTQ_MODES", "ONNX",
          "ONNX_MODES")
PR_SET_PDEATHSIG = 1            # linux/prctl.h
TERM_GRACE_SECONDS = 30         # a command asked to stop (SIGTERM) gets this long, then SIGKILL
LOCAL_LOCK_WAIT_SECONDS = 60    # a retried training waits this long for a dying run of this node

@dataclass(frozen=True)
class Group:
    """One config x seed: the pipeline run it stands for (its settings, already resolved)."""
    config: str
    name: str                    # the config's file stem
    seed: int
    prefix: str
    dataset: str
    data_dir: str
    output_root: str
    holdouts: tuple
    recipe: dict                 # RECIPE names -> the pipeline's string values

    def exp(self, user: str) -> str:
        return loso_experiment_name(self.dataset, user, self.prefix)

    @property
    def paths(self):
        return run_paths(self.dataset, "loso", self.output_root)


# ----------------------------------------------------------------------------------- the commands
def plan(task: dict, python: str = sys.executable) -> tuple[list | None, str]:
    """(command, '') for a task that has work to do, else (None, why it is done already): the
    pipeline's command and skip test for this stage and fold."""
    stage, user = task["stage"], task["user"]
    if stage == "splits":
        missing = [u for u in task["users"] if not all(
            (loso_data_path(task["data_dir"], u) / split).is_dir() for split in ("train", "test"))]
        if not missing:
            return None, "LOSO splits exist"
        return [python, "fix_loso.py", "--base_root", task["data_dir"],
                "--holdouts", ",".join(task["users"])], ""
    g = Group(**task["group"])
    paths, r = g.paths, g.recipe
    where = ["--exp_prefix", g.prefix, "--dataset_name", g.dataset, "--output_root", g.output_root]
    data = ["--config_path", g.config, "--base_data_path", g.data_dir]
    ptq_dir, qat_dir = paths.export_dir("ptq", g.prefix), paths.export_dir("qat", g.prefix)
    if stage == "train":
        if fold_trained(paths, g.exp(user)):
            return None, "trained already"
        mode = "--resume" if fold_resumable(paths, g.exp(user)) else "--overwrite"
        return [python, "train_loso_functional.py", *data, "--epochs", r["EPOCHS"], "--lr", r["LR"],
                "--seed", str(g.seed), "--dataset_name", g.dataset, "--output_root", g.output_root,
                "--exp_prefix", g.prefix, "--no_validation",
                *(["--batch_size", r["BATCH_SIZE"]] if r["BATCH_SIZE"] else []), mode,
                "--holdout_only", user], ""
    if stage == "ptq":
        onnx = parse_onnx_modes(r["ONNX_MODES"]) if r["ONNX"] == "1" else []  # as the pipeline's ONNX=1
        if ptq_done(ptq_dir / user, parse_ptq_modes(r["PTQ_MODES"]), onnx):
            return None, "PTQ models exist"
        return [python, "ptq_export_batch.py", *data, *where, "--output_base_dir", str(ptq_dir),
                "--modes", r["PTQ_MODES"], *(["--onnx_modes", ",".join(onnx)] if onnx else []),
                "--seed", str(g.seed), "--holdout_only", user], ""
    if stage == "qat":
        if qat_done(qat_dir / user):
            return None, "QAT models exist"
        return [python, "train_loso_functional_qat_batch.py", *data, *where, "--output_base_dir",
                str(qat_dir), "--batch_size", r["QAT_BATCH_SIZE"], "--qat_epochs", r["QAT_EPOCHS"],
                "--lr", r["QAT_LR"], "--seed", str(g.seed), "--no_validation",
                "--holdout_only", user], ""
    folders = [d for u in g.holdouts
               for d in (paths.checkpoint_dir(g.exp(u)), ptq_dir / u, qat_dir / u)]
    if results_current(paths.results_dir(g.prefix) / "summary_table.csv", folders):
        return None, "results are newer than every model"
    return [python, "collect_results.py", "--run_evaluation", "--base_data_path", g.data_dir,
            "--dataset_name", g.dataset, "--output_root", g.output_root, "--exp_prefix", g.prefix,
            "--holdouts", ",".join(g.holdouts), "--ptq_base_dir", str(ptq_dir),
            "--qat_base_dir", str(qat_dir)], ""

def execute(task: dict, upstream) -> dict:
    """Run one task's command, if its stage is not done and nothing before it failed."""
    result = {"key": task["key"], "host": socket.gethostname(), "attempts": 0, "seconds": 0.0}
    failed = [u["key"] for u in upstream if u["status"] in ("failed", "not run")]
    if failed:
        return result | {"status": "not run", "why": f"{failed[0]} did not finish"}
    log = Path(task["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    mark = f" of sweep {task['sweep']} "  # attempts of this sweep (the log keeps every sweep's)
    attempt = (log.read_text(errors="replace").count(mark) if log.is_file() else 0) + 1
    with log.open("a") as out:
        out.write(f"=== attempt {attempt}{mark}on {result['host']} (pid {os.getpid()}, nice "
                  f"{os.nice(0)}) {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    result["attempts"] = attempt
    if not Path(task["probe"]).is_file():
        return result | {"status": "failed", "why": f"{task['probe']} not found on this node: "
                         "--output_root must be one shared filesystem path on every node"}
    command, done = plan(task)
    if command is None:
        return result | {"status": "skipped", "why": done}
    if task["stage"] == "train":
        group = Group(**task["group"])
        wait_for_lock(RunLock(group.paths.lock_file(group.exp(task["user"]))), log)
    env = os.environ | {"PYTHONUNBUFFERED": "1", "TF_NUM_INTRAOP_THREADS": str(task["threads"]),
                        "TF_NUM_INTEROP_THREADS": str(task["threads"])}
    start = time.time()
    with log.open("a") as out:
        out.write("+ " + " ".join(command) + "\n")
        out.flush()
        code = run_tied(command, env, task["repo"], out)
    result |= {"seconds": round(time.time() - start, 1), "exit": code}
    if code == 0:
        return result | {"status": "ran", "why": "retried after its worker died" if attempt > 1
                         else ""}
    return result | {"status": "failed", "why": last_error(log, code)}


def run_tied(command: list, env: dict, cwd: str, out) -> int:
    """Run `command` in its own process group, tied to this process: the kernel kills it if this
    process dies (PR_SET_PDEATHSIG), and its group is stopped if this function is left early."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def tie():  # in the child, before exec
        os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the tie was made
            os._exit(1)

    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=tie)  # noqa: PLW1509 (only a prctl)
    try:
        return proc.wait()
    finally:
        for sig, grace in ((signal.SIGTERM, TERM_GRACE_SECONDS), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)


def wait_for_lock(lock: RunLock, log: Path) -> None:
    """Wait until the run folder's lock is free or stale before a (retried) training starts: a
    training killed with its worker takes a moment to die (up to LOCAL_LOCK_WAIT_SECONDS); one on
    a lost node holds its lock until it is stale (no heartbeat for LOCK_STALE_SECONDS). Then the
    training takes it over; a lock still busy after the wait is the training's to refuse."""
    start, said = time.time(), False
    while (held := lock.holder()) is not None and not lock.stale(held):
        limit = (LOCK_STALE_SECONDS + 2 * LOCK_HEARTBEAT_SECONDS if lock.elsewhere(held)
                 else LOCAL_LOCK_WAIT_SECONDS)
        if time.time() - start > limit:
            return
        if not said:
            with log.open("a") as out:
                out.write(f"waiting for {lock.path} (pid {held.get('pid')} on {held.get('host')})"
                          " to be released or stale\n")
            said = True
        time.sleep(1)


def last_error(log: Path, code: int) -> str:
    """The command's last 'error:' line (util.cli), else the last line, with its exit code."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()[-200:]]
    lines = [line for line in lines if line and not line.startswith(("=== attempt", "+ "))]
    errors = [line for line in lines if "error:" in line.lower() or "FAILED" in line]
    line = (errors or lines or [""])[-1]
    return f"exit {code}: {line[:160]}" if line else f"exit {code}"
