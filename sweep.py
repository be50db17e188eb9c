"""LOSO sweeps on a Ray cluster: configs x seeds x held-out signers x the stages train, ptq, qat,
evaluate. Every task runs, in a subprocess, exactly the command that run_end_to_end_pipeline.sh runs
for that fold and stage (with --holdout_only <user> and the thread count of the pipeline's JOBS),
so a fold trained here gives the numbers of the same fold trained by the pipeline. Outputs go to
the pipeline's run tree (runs.py) under --output_root, which every node must see at the same path
(a shared filesystem), so collect_results.py and results_tables.py read them unchanged
(docs/scale.md).

    python sweep.py --data_dir data/arabic-asl-90kpts \\
        --configs configs/arabic-asl-65kpts-signer-independent.yaml --seeds 42,43 --holdouts all \\
        --ptq_modes dynamic,int8 --stages train,ptq,evaluate --output_root /shared/outputs \\
        --address HEAD_IP:6379            # no --address: a Ray started in this process
    python sweep.py ... --dry_run         # the commands of the tasks, nothing run

Per config C and seed S (a "group", experiment prefix --exp_prefix, default {config}_seed{seed}):
the budgets come from C as the pipeline reads them (`config.py --recipe C`), unless a flag is given;
then for each holdout U: train(U) -> ptq(U), qat(U) -> evaluate (collect_results over the group's
holdouts, once all of its folds are done). LOSO splits that are missing are made first (fix_loso).

Resources: each task asks Ray for --cpus_per_task CPUs and runs TensorFlow with that many threads
(TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS: the pipeline with JOBS=N on C cores gives C/N);
training and QAT tasks ask for --gpus_per_task GPUs (auto: 1 where the cluster has GPUs).

Faults: a task whose Ray worker dies (node lost, OOM kill) is retried --max_retries times; the
command it ran dies with it (it is killed by the kernel when the worker goes: PR_SET_PDEATHSIG, and
its process group is killed when the task ends). A retried training continues from its last epoch
(--resume) and takes over the run folder's lock of the dead process (run_lock.RunLock: a dead pid of
this node; a lock written on another node once it is stale, no heartbeat for
run_lock.LOCK_STALE_SECONDS, which the task waits for). A stage
whose artefacts are complete (the pipeline's tests: runs.fold_trained, ptq_done, qat_done,
results_current) is skipped, so re-running a sweep resumes it; a stage killed half-way never looks
complete. A failed command is not retried (it would fail again); the stages after it are not run.
The sweep ends with a table of every task (ran / skipped / failed / not run, attempts, seconds,
why) and writes it to <output_root>/sweeps/<id>.json; exit code 1 when a task failed.

Progress: one console bar (folds done / running / failed); each task's output, every attempt, goes
to <run tree>/logs/sweep/<prefix>/<stage>_<user>.log (runs.RunPaths.sweep_log).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import sys
import time
from pathlib import Path

from config import load_config
from recipes import (
    SWEEP_CPUS_PER_TASK,
    SWEEP_EXP_PREFIX,
    SWEEP_GPUS_PER_TASK,
    SWEEP_MAX_RETRIES,
    SWEEP_STAGES,
    pipeline_defaults,
)
from runs import comma_list, output_root, parse_holdouts, sweeps_dir
from sweep_tasks import GPU_STAGES, RECIPE, STAGES, Group, plan
from util import (
    REPO_DIR,
    HelpFormatter,
    UserError,
    atomic_write_json,
    atomic_write_text,
    cli,
)


# ------------------------------------------------------------------------------ inside a Ray task
def run_task(task: dict, *upstream):
    """The Ray task. Self-contained (Ray ships it by value): it imports its work, sweep_tasks.py,
    from the repository, which must be at the same path on every node."""
    import sys
    if task["repo"] not in sys.path:
        sys.path.insert(0, task["repo"])
    import sweep_tasks
    return sweep_tasks.execute(task, upstream)

# ----------------------------------------------------------------------------------- the sweep
def groups_of(args) -> list[Group]:
    """Every config x seed, its settings resolved as the pipeline resolves them."""
    data_dir = Path(args.data_dir).absolute()  # not resolve(): splits go beside a symlink
    if not (data_dir / "label2id.json").is_file():
        raise UserError(f"{data_dir}/label2id.json not found: --data_dir must be an extracted dataset")
    configs, seeds = comma_list(args.configs), comma_list(args.seeds)
    try:
        [int(seed) for seed in seeds]
    except ValueError:
        raise UserError(f"--seeds must be a comma list of integers, got {args.seeds!r}") from None
    for field, many in (("{config}", len(configs) > 1), ("{seed}", len(seeds) > 1)):
        if many and field not in args.exp_prefix:
            raise UserError(f"--exp_prefix {args.exp_prefix!r} lacks {field}: the runs of several "
                            "configs/seeds would share one experiment name")
    groups, root = [], str(output_root(args.output_root or None).absolute())
    for config in configs:
        path = Path(config).absolute()
        defaults = pipeline_defaults(args.demo, load_config(path))
        given = {"EPOCHS": args.epochs, "LR": args.lr, "BATCH_SIZE": args.batch_size,
                 "QAT_EPOCHS": args.qat_epochs, "QAT_BATCH_SIZE": args.qat_batch_size,
                 "QAT_LR": args.qat_lr, "PTQ_MODES": args.ptq_modes, "ONNX": args.onnx,
                 "ONNX_MODES": args.onnx_modes}
        recipe = {name: given[name] if given[name] is not None else defaults[name] for name in RECIPE}
        holdouts = tuple(parse_holdouts(args.holdouts or defaults["HOLDOUTS"], data_dir))
        for seed in seeds:
            try:
                prefix = args.exp_prefix.format(config=path.stem, seed=seed)
            except (KeyError, IndexError, ValueError) as e:
                raise UserError(f"--exp_prefix {args.exp_prefix!r}: only {{config}} and {{seed}} "
                                f"may be filled in ({e})") from None
            groups.append(Group(str(path), path.stem, int(seed), prefix,
                                args.dataset_name or defaults["DATASET_NAME"], str(data_dir), root,
                                holdouts, recipe))
    return groups


def tasks_of(groups: list[Group], stages: list[str], args, probe: Path) -> list[dict]:
    """The tasks in dependency order, each with its upstream keys (`after`)."""
    common = {"repo": str(REPO_DIR), "probe": str(probe), "sweep": probe.stem,
              "threads": args.cpus_per_task}
    users = sorted({u for g in groups for u in g.holdouts})
    splits = {"key": "splits", "stage": "splits", "user": "all", "users": users,
              "data_dir": groups[0].data_dir, "after": [],
              "log": str(sweeps_dir(groups[0].output_root) / f"{probe.stem}_splits.log")} | common
    tasks = [splits]
    for g in groups:
        fold_keys = []
        for user in g.holdouts:
            for stage in (s for s in STAGES[:3] if s in stages):
                after = [f"{g.prefix}/{user}/train"] if stage != "train" and "train" in stages \
                    else ["splits"]
                tasks.append({"key": f"{g.prefix}/{user}/{stage}", "stage": stage, "user": user,
                              "group": dataclasses.asdict(g), "after": after,
                              "log": str(g.paths.sweep_log(g.prefix, stage, user))} | common)
                fold_keys.append(tasks[-1]["key"])
        if "evaluate" in stages:
            tasks.append({"key": f"{g.prefix}/evaluate", "stage": "evaluate", "user": "all",
                          "group": dataclasses.asdict(g), "after": fold_keys or ["splits"],
                          "log": str(g.paths.sweep_log(g.prefix, "evaluate", "all"))} | common)
    return tasks


def start_ray(address: str):
    """Connect to the cluster at `address`, or start Ray in this process (loopback only)."""
    try:
        import ray
    except ImportError:
        raise UserError("ray is not installed: .venv/bin/pip install -r requirements-dev.txt "
                        "(docs/scale.md)") from None
    options = {"logging_level": "ERROR", "log_to_driver": False}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **options)
    return ray


def submit(ray, tasks: list[dict], args) -> dict:
    """key -> ObjectRef; a task starts once the tasks it comes after have ended."""
    gpus = args.gpus_per_task
    if gpus == "auto":
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote, refs = ray.remote(run_task), {}
    for task in tasks:
        options = {"num_cpus": args.cpus_per_task, "max_retries": args.max_retries,
                   "num_gpus": float(gpus) if task["stage"] in GPU_STAGES else 0}
        refs[task["key"]] = remote.options(name=task["key"], **options).remote(
            task, *(refs[key] for key in task["after"]))
    return refs


def watch(ray, refs: dict, tasks: dict) -> dict:
    """Wait for every task with one progress bar; key -> result (a lost task: failed, why). A
    task is running once it has written to its log in this sweep."""
    from tqdm import tqdm
    start = time.time()

    def running(key: str) -> bool:
        with contextlib.suppress(OSError):
            return key != "splits" and Path(tasks[key]["log"]).stat().st_mtime >= start
        return False
    results, pending = {}, dict(refs)
    counts = dict.fromkeys(("ran", "skipped", "failed", "not run"), 0)
    with tqdm(total=len(refs), desc="sweep", unit="task", dynamic_ncols=True) as bar:
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=2.0)
            for ref in ready:
                key = next(k for k, r in pending.items() if r == ref)
                del pending[key]
                try:
                    results[key] = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a worker lost more than max_retries times
                    results[key] = {"key": key, "status": "failed", "attempts": "?",
                                    "seconds": 0.0, "why": f"{type(e).__name__}: "
                                    + (str(e).strip().splitlines() or [""])[0][:160]}
                counts[results[key]["status"]] += 1
                bar.update(1)
            bar.set_postfix_str(f"done {counts['ran']} skipped {counts['skipped']} running "
                                f"{sum(map(running, pending))} failed {counts['failed'] + counts['not run']}")
    return results


def table(tasks: list[dict], results: dict) -> str:
    rows = [("task", "status", "attempts", "seconds", "why")]
    for task in tasks:
        r = results[task["key"]]
        rows.append((task["key"], r["status"], str(r.get("attempts", "")),
                     f"{r.get('seconds', 0):.0f}", r.get("why", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4]
                     for row in rows)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data_dir", required=True, help="dataset root (all/GYY/*.pkl + label maps); "
                    "the LOSO splits <data_dir>_LOSO_<user> are made beside it when missing")
    ap.add_argument("--configs", required=True, help="comma list of config files")
    ap.add_argument("--seeds", default=None, help="comma list of seeds (None: the recipe's)")
    ap.add_argument("--holdouts", default="",
                    help="comma list of users, or 'all' ('': the recipe's, as the pipeline)")
    ap.add_argument("--stages", default=SWEEP_STAGES, help="comma list of " + ",".join(STAGES))
    ap.add_argument("--exp_prefix", default=SWEEP_EXP_PREFIX,
                    help="experiment prefix per group; {config} (file stem) and {seed} filled in")
    ap.add_argument("--output_root", default="", help="output root, the same path on every node "
                    "('': $SIGNBART_OUTPUT_ROOT, else outputs)")
    ap.add_argument("--dataset_name", default="", help="('': the recipe's, as the pipeline)")
    ap.add_argument("--demo", action="store_true", help="the demo dataset's budgets (as DEMO=1)")
    for flag, what in (("epochs", "EPOCHS"), ("lr", "LR"), ("batch_size", "BATCH_SIZE"),
                       ("qat_epochs", "QAT_EPOCHS"), ("qat_batch_size", "QAT_BATCH_SIZE"),
                       ("qat_lr", "QAT_LR"), ("ptq_modes", "PTQ_MODES"), ("onnx", "ONNX"),
                       ("onnx_modes", "ONNX_MODES")):
        ap.add_argument(f"--{flag}", default=None,
                        help=f"the pipeline's {what} (None: the config's, else recipes.py)")
    ap.add_argument("--address", default="", help="Ray cluster address HOST:PORT ('': start Ray "
                    "in this process, on this machine only)")
    ap.add_argument("--cpus_per_task", type=int, default=SWEEP_CPUS_PER_TASK,
                    help="CPUs per task = its TensorFlow threads")
    ap.add_argument("--gpus_per_task", default=SWEEP_GPUS_PER_TASK,
                    help="GPUs per training/QAT task (a number; auto: 1 where the cluster has GPUs)")
    ap.add_argument("--max_retries", type=int, default=SWEEP_MAX_RETRIES,
                    help="re-runs of a task whose worker died")
    ap.add_argument("--dry_run", action="store_true", help="print the tasks' commands, run nothing")
    args = ap.parse_args(argv)
    args.seeds = args.seeds or pipeline_defaults(args.demo)["SEED"]
    stages = comma_list(args.stages)
    if not stages or set(stages) - set(STAGES):
        raise UserError(f"--stages {args.stages!r}: choose from {','.join(STAGES)}")
    if args.cpus_per_task < 1 or args.max_retries < 0:
        raise UserError("--cpus_per_task must be >= 1 and --max_retries >= 0")
    if args.gpus_per_task != "auto":
        try:
            args.gpus_per_task = float(args.gpus_per_task)
        except ValueError:
            raise UserError(f"--gpus_per_task must be a number or auto, got "
                            f"{args.gpus_per_task!r}") from None
    args.stage_list = stages
    return args


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    groups = groups_of(args)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    probe = sweeps_dir(groups[0].output_root) / f"{stamp}_{os.getpid()}.shared"
    tasks = tasks_of(groups, args.stage_list, args, probe)
    if args.dry_run:
        for task in tasks:
            command, done = plan(task, "python")
            print(f"{task['key']}: " + (" ".join(command) if command else f"skip ({done})"))
        return 0
    if not args.address:  # Ray's in-process cluster: on 127.0.0.1 only, and no token written
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # into ~/.ray (docs/scale.md)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's workers run at nice 15 otherwise
    ray = start_ray(args.address)
    atomic_write_text(probe, f"{socket.gethostname()} {stamp}\n")
    print(f"sweep: {len(groups)} group(s) x {len(groups[0].holdouts)} holdout(s), stages "
          f"{','.join(args.stage_list)}; {len(tasks)} tasks on {ray.cluster_resources().get('CPU', 0):.0f}"
          f" CPUs; task logs in <run tree>/logs/sweep/, outputs in {groups[0].output_root}",
          flush=True)
    try:
        results = watch(ray, submit(ray, tasks, args), {t["key"]: t for t in tasks})
    finally:
        probe.unlink(missing_ok=True)
    print(table(tasks, results))
    record = sweeps_dir(groups[0].output_root) / f"{stamp}_{os.getpid()}.json"
    atomic_write_json(record, {"argv": sys.argv[1:] if argv is None else list(argv),
                               "tasks": [results[t["key"]] | {"log": t["log"]} for t in tasks]})
    failed = [r for r in results.values() if r["status"] in ("failed", "not run")]
    print(f"{len(results) - len(failed)}/{len(results)} tasks ran or were done already"
          + (f"; {len(failed)} failed or not run" if failed else "") + f"; table: {record}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
