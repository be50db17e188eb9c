"""Training speed of the recipes on one LOSO fold, as the LOSO pipeline runs them: s/epoch, clips/s,
achieved GFLOP/s against this machine's matmul peak, and the projected wall time of a LOSO-12 study.

Recipes (--recipes, any of):
  default    the recommended recipe: the network and the training: block of --default_config
             (configs/arabic-asl-65kpts-signer-independent.yaml)
  today      the recipe of the first published LOSO-12: --reference_config at batch 32, lr 1e-3,
             no length bucketing (the baseline every speed-up is compared with, in the same run)
  reference  --reference_config as it is (configs/arabic-asl-65kpts.yaml: the reference's batch 1)
A recipe name may carry changes, each measured against its recipe in the same run:
  +bucket / +nobucket   length bucketing on (8 batches) / off       e.g. today+bucket
  +b64, +b128 ...       another batch size (same lr)                 e.g. today+b128
  +bf16                 mixed bfloat16 precision (Keras policy)
  +xla                  jit_compile=True on the train step
Each recipe runs in --jobs worker processes side by side, each with cores/jobs TensorFlow threads,
as run_end_to_end_pipeline.sh runs LOSO folds (JOBS, default: one per core). A worker trains a fresh
model the way main_functional.py does (dropout generators, AdamW, the recipe's schedule, label
smoothing, augmentation and length bucketing; no checkpoint or log writes) for --warmup + --epochs
epochs on the fold's training clips (every clip but --holdout's) and times each epoch.

Figures (per recipe; s/epoch = the mean over the workers' timed epochs: a run's wall time is their sum, and
workers side by side take turns at slow and fast epochs, so a median or a short run hides the slow ones):
  clips/s        jobs x clips / s_epoch: the machine's training throughput
  GFLOP/s        3 x forward FLOPs per frame (model_functional.count_flops at 64 frames / 64) x the
                 frames the epoch's batches really hold (padding included) x jobs / s_epoch. The 3x
                 (forward + backward) is the usual estimate, not a count.
  % peak         GFLOP/s / the GFLOP/s of a 2048x2048 float32 matmul on all cores, measured first
  LOSO-12 min    ceil(12 / jobs) x (first epoch + (epochs - 1) x s_epoch) for the recipe's epochs:
                 training only (reading data, the TFLite export and evaluation add ~15 s per fold)
  vs today       today's projected LOSO-12 / this recipe's (> 1: faster)

    python bench/bench_training.py                                    # MLR511, holdout user01
    python bench/bench_training.py --recipes default,today --epochs 3
    python bench/bench_training.py --reference_config CFG --default_config CFG --data_path DATA \\
        --max_clips 24 --epochs 1 --jobs 1 --output_dir /tmp/bench     # seconds (test_bench.py)

The data folder is a dataset root with all/GXX/*.pkl (the fold leaves --holdout out) or a LOSO fold
made by fix_loso.py (its train/ split is read). Results: common.py (--output_dir).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import common
from recipes import DEFAULT_SEED
from runs import comma_list
from util import HelpFormatter, UserError, cli

BENCH = "training"
REPO = common.REPO_DIR
DEFAULT_RECIPE_CONFIG = REPO / "configs" / "arabic-asl-65kpts-signer-independent.yaml"
TODAY = {"batch_size": 32, "lr": 1e-3, "schedule": "plateau", "bucket_batches": 0}
RECIPES = ("default", "today", "reference")
CHANGES = ("bucket", "nobucket", "bf16", "xla")
BUCKET_BATCHES = 8
LOSO_FOLDS = 12
COLUMNS = {"recipe": "recipe", "batch_size": "batch", "bucket_batches": "bucket", "epochs": "epochs",
           "s_per_epoch": "s/epoch", "clips_per_s": "clips/s", "gflops": "GFLOP/s",
           "peak_share": "% peak", "loso12_min": "LOSO-12 min", "vs_today": "vs today"}


# ----------------------------------------------------------------------------------------------- recipes
def batch_change(change: str) -> int | None:
    """'b128' -> 128; None when the change is not a batch size."""
    return int(change[1:]) if change[:1] == "b" and change[1:].isdigit() and int(change[1:]) > 0 else None


def split_name(name: str) -> tuple[str, list[str]]:
    """'today+b128+bf16' -> ('today', ['b128', 'bf16']); UserError for an unknown recipe or change."""
    base, *changes = name.split("+")
    if base not in RECIPES:
        raise UserError(f"--recipes: unknown recipe {base!r}; choose from {', '.join(RECIPES)}")
    for change in changes:
        if change not in CHANGES and batch_change(change) is None:
            raise UserError(f"--recipes: unknown change +{change} in {name!r}; use +bucket, +nobucket, "
                            "+b<batch>, +bf16 or +xla")
    return base, changes


def resolved_recipe(name: str, args) -> tuple[dict, dict]:
    """(config, the resolved training hyperparameters) of a named recipe with its changes."""
    from config import load_config
    from recipes import training_recipe
    base, changes = split_name(name)
    cfg = load_config(args.default_config if base == "default" else args.reference_config)
    flags = dict(TODAY) if base == "today" else {}
    for change in changes:
        if change in ("bucket", "nobucket"):
            flags["bucket_batches"] = BUCKET_BATCHES if change == "bucket" else 0
        elif batch_change(change):
            flags["batch_size"] = batch_change(change)
    return cfg, training_recipe(cfg, **flags)


# ----------------------------------------------------------------------------------------------- worker
def load_fold(args, cfg: dict):
    from dataset import load_split
    split = "train" if (Path(args.data_path) / "train").is_dir() else "all"
    return load_split(args.data_path, split, cfg, max_samples=args.max_clips or None,
                      exclude_users=(args.holdout,))


def epoch_frames(ds) -> int:
    """Frames (padding included) that one epoch's batches hold: what the model computes on."""
    return int(sum(int(x["keypoints"].shape[0]) * int(x["keypoints"].shape[1]) for x, _ in ds))


def run_worker(args) -> dict:
    """Train the recipe for warmup + epochs epochs; the seconds of every epoch and the frame count."""
    from dataset import make_dataset
    from main_functional import compile_model, dropout_generators_enabled, learning_rate
    from model_functional import build_model
    from util import set_seed
    from tf_env import keras
    cfg, recipe = resolved_recipe(args.worker, args)
    changes = split_name(args.worker)[1]
    data = load_fold(args, cfg)
    set_seed(args.seed)
    if "bf16" in changes:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    lr = learning_rate(SimpleNamespace(**recipe), steps_per_epoch=-(-len(data) // recipe["batch_size"]))
    with dropout_generators_enabled():
        model = build_model(cfg)
    compile_model(model, cfg, lr, label_smoothing=recipe["label_smoothing"], jit_compile="xla" in changes)
    ds = make_dataset(data, cfg, recipe["batch_size"], training=True, seed=args.seed,
                      bucket_batches=recipe["bucket_batches"])
    frames = epoch_frames(make_dataset(data, cfg, recipe["batch_size"], training=True,
                                       seed=args.seed, bucket_batches=recipe["bucket_batches"]))
    seconds = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(ds, epochs=args.warmup + args.epochs, callbacks=[EpochTimer()], verbose=0)
    return {"seconds": seconds, "frames": frames, "clips": len(data),
            "signers": len(set(data.users))}


def spawn_workers(name: str, args, threads: int) -> list[dict]:
    """args.jobs copies of this script with --worker NAME, side by side; their JSON results."""
    env = os.environ | {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", name] + worker_flags(args)
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(args.jobs)]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise UserError(f"bench worker for recipe {name} failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def worker_flags(args) -> list[str]:
    return ["--data_path", str(args.data_path), "--holdout", args.holdout,
            "--default_config", str(args.default_config),
            "--reference_config", str(args.reference_config), "--epochs", str(args.epochs),
            "--warmup", str(args.warmup), "--max_clips", str(args.max_clips), "--seed", str(args.seed)]


# ----------------------------------------------------------------------------------------------- figures
def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an n x n float32 matmul on all cores: the peak this bench compares against."""
    from tf_env import tf
    a = tf.random.normal((n, n))
    tf.linalg.matmul(a, a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        b = tf.linalg.matmul(a, a)
    b.numpy()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def forward_flops_per_frame(cfg: dict) -> float:
    from preprocessing import MAX_FRAMES
    from model_functional import count_flops
    return count_flops(cfg) / MAX_FRAMES


def measure_recipe(name: str, args, threads: int, peak: float) -> dict:
    cfg, recipe = resolved_recipe(name, args)
    workers = spawn_workers(name, args, threads)
    timed = [s for w in workers for s in w["seconds"][args.warmup:]]
    first = statistics.median(w["seconds"][0] for w in workers)
    s_epoch = statistics.mean(timed)
    clips, frames = workers[0]["clips"], workers[0]["frames"]
    gflops = 3 * forward_flops_per_frame(cfg) * frames * args.jobs / s_epoch / 1e9
    rounds = math.ceil(LOSO_FOLDS / args.jobs)
    return {"recipe": name, "batch_size": recipe["batch_size"], "bucket_batches": recipe["bucket_batches"],
            "epochs": recipe["epochs"], "lr": recipe["lr"], "schedule": recipe["schedule"],
            "jobs": args.jobs, "threads_per_job": threads, "clips": clips,
            "signers": workers[0]["signers"], "frames_per_epoch": frames, "first_epoch_s": first,
            "s_per_epoch": s_epoch, "clips_per_s": args.jobs * clips / s_epoch, "gflops": gflops,
            "peak_gflops": peak, "peak_share": 100 * gflops / peak,
            "loso12_min": rounds * (first + (recipe["epochs"] - 1) * s_epoch) / 60}


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma list of recipes to time")
    ap.add_argument("--default_config", default=str(DEFAULT_RECIPE_CONFIG),
                    help="config of the default recipe (its training: block)")
    ap.add_argument("--reference_config", default=str(common.DEFAULT_CONFIG),
                    help="config of the reference and today recipes")
    ap.add_argument("--data_path", default=str(common.DEFAULT_KEYPOINTS),
                    help="dataset root (all/GXX/*.pkl) or a LOSO fold (train/GXX/*.pkl)")
    ap.add_argument("--holdout", default="user01", help="held-out signer: none of its clips is read")
    ap.add_argument("--jobs", type=int, default=common.usable_cores(),
                    help="worker processes side by side (the pipeline's JOBS: one per core)")
    ap.add_argument("--epochs", type=int, default=8, help="timed epochs per worker")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first (>= 1: tracing)")
    ap.add_argument("--max_clips", type=int, default=0, help="read only the first N pickles (0 = all)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of model and augmentation")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.warmup < 1 or args.max_clips < 0 or args.jobs < 1:
        raise UserError("need --epochs >= 1, --warmup >= 1, --jobs >= 1 and --max_clips >= 0")
    args.recipes = comma_list(args.recipes)
    if not args.recipes:
        raise UserError(f"--recipes: name at least one of {', '.join(RECIPES)}")
    for name in args.recipes:
        split_name(name)
    return args


@cli
def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return None
    machine = common.machine_info()
    threads = max(1, common.usable_cores() // args.jobs)
    peak = matmul_gflops()
    print(f"{args.data_path}, holdout {args.holdout}: {args.jobs} worker(s) x {threads} thread(s), "
          f"{args.epochs} timed epoch(s) after {args.warmup}; matmul peak {peak:.0f} GFLOP/s")
    rows = []
    for name in args.recipes:
        rows.append(measure_recipe(name, args, threads, peak))
        print(f"  {name}: {rows[-1]['s_per_epoch']:.2f} s/epoch", flush=True)
    today = next((r for r in rows if r["recipe"] == "today"), None)
    for row in rows:
        row["vs_today"] = today["loso12_min"] / row["loso12_min"] if today else None
    settings = {"data_path": args.data_path, "holdout": args.holdout, "jobs": args.jobs,
                "threads_per_job": threads, "epochs": args.epochs, "warmup": args.warmup,
                "max_clips": args.max_clips, "seed": args.seed,
                "default_config": args.default_config, "reference_config": args.reference_config}
    return common.report(args, BENCH, machine, settings, rows, COLUMNS)


if __name__ == "__main__":
    main()
