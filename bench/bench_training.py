"""Training throughput on one LOSO fold: s/epoch and clips/s at batch 1 and at a larger batch, and the share of an
epoch that the input pipeline takes.

The fold's training clips are every clip of --data_path except the held-out signer's (which are never read). For
each batch size a fresh model is trained the way main_functional.py trains (build_model + compile_model: AdamW
with the config's weight decay; set_seed, which also switches on TensorFlow's deterministic ops) and three things
are timed, each over --epochs epochs after --warmup epochs (the first epoch traces the graph):
  fit       model.fit over dataset.make_dataset(training=True): augmentation, normalization, padding, batching
            and the model, as in training (without training's per-epoch checkpoint, CSV and TensorBoard writes)
  pipeline  the same tf.data iterated alone, no model
  model     model.fit over the batches of one epoch cached in memory: the model alone
input_share = pipeline / fit, model_share = model / fit. Prefetching overlaps part of the pipeline with the model,
so input_share is an upper bound of the time the pipeline costs a real epoch. Reading the pickles happens once
per run, before the first epoch; it is reported apart (load_s).

    python bench/bench_training.py                       # MLR511 (65 kpts), holdout user01, batch 1 and 32
    python bench/bench_training.py --batch_sizes 1,8,32 --epochs 3
    python bench/bench_training.py --config_path CFG --data_path DATA --max_clips 24 --batch_sizes 1,4 \\
        --epochs 1 --output_dir /tmp/bench                # smallest setting: seconds (test_bench.py)

The data folder is a dataset root with all/GXX/*.pkl (the fold is made by leaving --holdout out) or a LOSO
fold made by fix_loso.py (its train/ split is read). Results: common.py (--output_dir).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import common
from config import load_config
from dataset import load_split, make_dataset
from main_functional import compile_model
from model_functional import build_model
from recipes import FP32_LR
from runs import DEFAULT_SEED, HelpFormatter, UserError, cli, comma_list, set_seed
from tf_env import keras

BENCH = "training"
COLUMNS = {"batch_size": "batch", "steps": "steps/epoch", "fit_s_per_epoch": "fit s/epoch",
           "fit_clips_per_s": "clips/s", "pipeline_s_per_epoch": "pipeline s/epoch",
           "model_s_per_epoch": "model s/epoch", "input_share": "input share", "model_share": "model share"}


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of every epoch of a fit."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start = [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def fit_seconds(model: keras.Model, ds, warmup: int, epochs: int) -> float:
    """Mean seconds of the epochs after the warm-up ones."""
    timer = EpochTimer()
    model.fit(ds, epochs=warmup + epochs, callbacks=[timer], verbose=0)
    return float(np.mean(timer.seconds[warmup:]))


def pipeline_seconds(ds, warmup: int, epochs: int) -> float:
    """Mean seconds to produce every batch of one epoch, after the warm-up passes. The batches are consumed inside
    the tf.data runtime (Dataset.reduce), as fit consumes them, not one by one in Python."""
    seconds = []
    for _ in range(warmup + epochs):
        start = time.perf_counter()
        ds.reduce(np.int64(0), lambda count, *batch: count + 1)
        seconds.append(time.perf_counter() - start)
    return float(np.mean(seconds[warmup:]))


def measure_batch_size(data, cfg: dict, batch_size: int, args) -> dict:
    """fit / pipeline / model seconds per epoch for one batch size, each with a fresh seeded model."""
    keras.backend.clear_session()
    set_seed(args.seed)
    model = compile_model(build_model(cfg), cfg, FP32_LR)
    ds = make_dataset(data, cfg, batch_size, training=True, seed=args.seed)  # ({keypoints (B,T,K,2), mask (B,T)}, (B,))
    fit_s = fit_seconds(model, ds, args.warmup, args.epochs)
    pipeline_s = pipeline_seconds(ds, args.warmup, args.epochs)
    model_s = fit_seconds(model, ds.cache(), args.warmup, args.epochs)  # the first (warm-up) epoch fills the cache
    return {"batch_size": batch_size, "clips": len(data), "steps": -(-len(data) // batch_size),
            "fit_s_per_epoch": fit_s, "fit_clips_per_s": len(data) / fit_s,
            "pipeline_s_per_epoch": pipeline_s, "model_s_per_epoch": model_s,
            "input_share": pipeline_s / fit_s, "model_share": model_s / fit_s}


def load_fold(args, cfg: dict):
    """The fold's training clips: train/ of a LOSO fold, else all/ without the held-out signer."""
    split = "train" if (Path(args.data_path) / "train").is_dir() else "all"
    start = time.perf_counter()
    data = load_split(args.data_path, split, cfg, max_samples=args.max_clips or None, exclude_users=(args.holdout,))
    return data, time.perf_counter() - start


def parse_batch_sizes(arg: str) -> list[int]:
    try:
        sizes = [int(b) for b in comma_list(arg)]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch_sizes {arg!r}: expected a comma list of positive integers, e.g. 1,32")
    return sizes


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config_path", default=str(common.DEFAULT_CONFIG), help="YAML config (configs/)")
    ap.add_argument("--data_path", default=str(common.DEFAULT_KEYPOINTS),
                    help="dataset root (all/GXX/*.pkl) or a LOSO fold (train/GXX/*.pkl)")
    ap.add_argument("--holdout", default="user01", help="held-out signer: none of its clips is read")
    ap.add_argument("--batch_sizes", default="1,32", help="comma list of batch sizes to time")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first (>= 1: the first traces the graph)")
    ap.add_argument("--max_clips", type=int, default=0, help="read only the first N pickles of the split (0 = all)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the model and the augmentation")
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.warmup < 1 or args.max_clips < 0:
        raise UserError("need --epochs >= 1, --warmup >= 1 and --max_clips >= 0")
    args.batch_sizes = parse_batch_sizes(args.batch_sizes)
    return args


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = common.machine_info()
    cfg = load_config(args.config_path)
    data, load_s = load_fold(args, cfg)
    print(f"{args.data_path}: {len(data)} training clips of {len(set(data.users))} signers (holdout {args.holdout} "
          f"left out), read in {load_s:.1f} s; timing {args.epochs} epoch(s) after {args.warmup} warm-up")
    rows = []
    for batch_size in args.batch_sizes:
        rows.append(measure_batch_size(data, cfg, batch_size, args))
        print(f"  batch {batch_size}: {rows[-1]['fit_s_per_epoch']:.2f} s/epoch", flush=True)
    settings = {"config_path": args.config_path, "data_path": args.data_path, "holdout": args.holdout,
                "train_signers": len(set(data.users)), "epochs": args.epochs, "warmup": args.warmup,
                "max_clips": args.max_clips, "seed": args.seed, "load_s": load_s}
    return common.report(args, BENCH, machine, settings, rows, COLUMNS)


if __name__ == "__main__":
    main()
