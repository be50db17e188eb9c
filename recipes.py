"""The training and quantization recipes: every default number defined once, read by the scripts'
flags, the pipeline shell (through the CLI below) and the docs.

  FP32 training     80 epochs, AdamW lr 2e-4 (weight decay 0.01 unless the config sets it), batch 1
                    unless the config sets batch_size, ReduceLROnPlateau (x0.1 after 5 epochs without
                    progress, down to 1e-7), no label smoothing, augmentations.AugmentOptions(),
                    no length bucketing
  QAT fine-tuning   20 epochs (at most; early stop after 10 without progress), Adam lr 5e-5
                    (clipnorm 1.0), batch 4, the same ReduceLROnPlateau
  PTQ               mode `dynamic`; integer modes calibrated on 200 training clips
  ONNX              the pipeline also writes model_fp32.onnx for real data (not for the demo);
                    onnx_export.py mode fp32 (int8 on request: docs/onnx.md)
  preprocessing     no resting-hand rule (rest_hand_cutoff 0) and no mirroring of left-handed clips
                    (dominant_hand_ratio 0) unless the config sets them
  seed 42, holdouts user01,user08,user11, dataset name arabic_asl
  recognition       (predict_video.py, serve.py) top 3 classes listed; a window emits its sign at
                    probability >= 0.6; windows every 5 frames; predict_video classifies whole videos
                    (window 0), the live server windows of 30 frames (2 s at 15 fps)
  live server       (serve.py, docs/live.md) 127.0.0.1:8000, at most 2 clients at once, 6 frames
                    queued per client before the oldest is dropped, messages up to 1024 KiB, a clip
                    (the frames between two `end` messages) keeps its last 900 frames (60 s at 15 fps)
  sweeps (sweep.py)  stages train,ptq,qat,evaluate; experiment prefix {config}_seed{seed}; each
                    task 1 CPU (= its TensorFlow threads, as the pipeline's JOBS=<cores> gives)
                    and, where the cluster has GPUs, 1 GPU for training and QAT; a task whose
                    worker dies is retried twice
  devices           no distribution (one device); `--distribute mirrored` with --cpu_devices 0
                    (the real devices; N > 0 splits the CPU into N logical devices, for tests)
The demo pipeline (make_demo_dataset.py data) uses smaller budgets, chosen so that its LOSO models
are clearly above chance (10 %) in about 10 minutes on 2 CPU cores: 20 epochs at lr 5e-4 and
batch 8, QAT 2 epochs at batch 8, holdouts user01,user02, dataset name demo.

The settings whose default lives here and in no other module (a flag, a settings field, a config
key or a function parameter of that name; tests/test_recipe_defaults.py checks it): epochs, lr,
batch_size, weight_decay, schedule, warmup_epochs, min_lr, label_smoothing, bucket_batches,
scheduler_factor, scheduler_patience, qat_epochs, early_stop_patience, clipnorm, modes,
num_calibration_samples, seed, holdouts, dataset_name, rest_hand_cutoff, dominant_hand_ratio,
top_k, threshold, stride, window, host, port, max_clients, queue_frames, max_message_kb,
max_clip_frames, stages, cpus_per_task, gpus_per_task, max_retries, distribute, cpu_devices.

A config's `training:` block (config.py) replaces these FP32 defaults and an explicit command-line
flag replaces both: flag > config `training:` > recipe (`training_recipe` resolves them, once).

    python recipes.py            # the pipeline's defaults as NAME=value lines
    python recipes.py --demo     # the same for the demo dataset
    python config.py --recipe configs/arabic-asl-65kpts-signer-independent.yaml  # + its training:
"""
from __future__ import annotations

import argparse
import math
import sys

from util import HelpFormatter, UserError, cli

DEFAULT_HOLDOUTS = "user01,user08,user11"  # the reference's three held-out signers
EVERY_TRAINED_HOLDOUT = "all"    # evaluate_enrollment.py: every trained fold of a prefix
DEFAULT_SEED = 42
DEFAULT_DATASET_NAME = "arabic_asl"
SETTINGS = ("epochs", "lr", "batch_size", "weight_decay", "schedule", "warmup_epochs", "min_lr",
            "label_smoothing", "bucket_batches", "scheduler_factor", "scheduler_patience",
            "qat_epochs", "early_stop_patience", "clipnorm", "modes", "num_calibration_samples",
            "seed", "holdouts", "dataset_name", "rest_hand_cutoff", "dominant_hand_ratio",
            "top_k", "threshold", "stride", "window", "host", "port", "max_clients", "queue_frames",
            "max_message_kb", "max_clip_frames",
            "stages", "cpus_per_task", "gpus_per_task", "max_retries", "distribute", "cpu_devices")

FP32_EPOCHS = 80
FP32_LR = 2e-4
FP32_BATCH_SIZE = 1              # a config's batch_size when it sets none (the reference's)
WEIGHT_DECAY = 0.01              # a config's AdamW weight decay when it sets none
FP32_SCHEDULE = "plateau"        # or "cosine": linear warm-up, then cosine decay to min_lr
FP32_WARMUP_EPOCHS = 0
MIN_LR = 1e-7                    # floor of ReduceLROnPlateau; end of the cosine decay
FP32_LABEL_SMOOTHING = 0.0
FP32_BUCKET_BATCHES = 0          # length bucketing off: batches are consecutive clips of the shuffle
PLATEAU_FACTOR = 0.1             # ReduceLROnPlateau of FP32 training and QAT: lr x 0.1 ...
PLATEAU_PATIENCE = 5             # ... after 5 epochs without progress
QAT_EPOCHS = 20
QAT_BATCH_SIZE = 4
QAT_LR = 5e-5
QAT_CLIPNORM = 1.0               # Adam's gradient-norm clipping in QAT
QAT_EARLY_STOP_PATIENCE = 10     # EarlyStopping (best weights restored) after 10 epochs without progress
PTQ_MODES = "dynamic"
CALIBRATION_CLIPS = 200
ONNX = 1                        # the pipeline exports ONNX_MODES beside its PTQ models (demo: off)
ONNX_MODES = "fp32"              # onnx_export.py and the pipeline (int8: opt-in, it failed parity on 1 of 12 folds)
REST_HAND_CUTOFF = 0.0           # a config's resting-hand rule when it sets none: off
DOMINANT_HAND_RATIO = 0.0        # a config's left-handed-clip mirroring when it sets none: off

TOP_K = 3                        # classes listed per clip or window
SIGN_THRESHOLD = 0.6             # a window emits its sign at this top probability
WINDOW_STRIDE = 5                # frames between sliding windows
VIDEO_WINDOW = 0                 # predict_video.py: 0 = one prediction per whole video
LIVE_WINDOW = 30                 # serve.py: frames per window (2 s at 15 fps; MLR511 signs last 25-75 frames)
LIVE_HOST = "127.0.0.1"          # the live server listens on the loopback only unless told otherwise
LIVE_PORT = 8000
LIVE_MAX_CLIENTS = 2             # connections served at once (each runs its own tracker on the CPU)
LIVE_QUEUE_FRAMES = 6            # frames waiting per connection; when full the oldest is dropped
LIVE_MAX_MESSAGE_KB = 1024       # a larger message is refused (a 960x540 JPEG is ~50-150 KiB)
LIVE_MAX_CLIP_FRAMES = 900       # frames kept for an `end` clip (60 s at 15 fps): the last ones
SWEEP_STAGES = "train,ptq,qat,evaluate"   # sweep.py --stages: the LOSO stages of the pipeline
SWEEP_EXP_PREFIX = "{config}_seed{seed}"  # sweep.py --exp_prefix: per config (file stem) and seed
SWEEP_CPUS_PER_TASK = 1          # CPUs a sweep task asks Ray for = its TensorFlow thread pools
SWEEP_GPUS_PER_TASK = "auto"     # training/QAT tasks: 1 GPU where the cluster has GPUs, else 0
SWEEP_MAX_RETRIES = 2            # re-runs of a task whose Ray worker died (not of a failed command)
DISTRIBUTE = "none"              # --distribute: none (one device) | mirrored (every visible device)
CPU_DEVICES = 0                  # --cpu_devices N: split the CPU into N logical devices (0: don't)

DEMO = {"EPOCHS": 20, "LR": 5e-4, "BATCH_SIZE": 8, "QAT_EPOCHS": 2, "QAT_BATCH_SIZE": 8,
        "HOLDOUTS": "user01,user02", "DATASET_NAME": "demo", "ONNX": 0}


def training_recipe(cfg: dict, **flags) -> dict:
    """The resolved FP32 training hyperparameters of a loaded config: for each key, an explicit
    flag (a value that is not None) > the config's `training:` block > the recipe default above."""
    block = cfg.get("training", {})
    defaults = {"epochs": FP32_EPOCHS, "lr": FP32_LR, "batch_size": cfg["batch_size"],
                "weight_decay": cfg["weight_decay"], "schedule": FP32_SCHEDULE,
                "warmup_epochs": FP32_WARMUP_EPOCHS, "min_lr": MIN_LR,
                "label_smoothing": FP32_LABEL_SMOOTHING, "bucket_batches": FP32_BUCKET_BATCHES}
    unknown = set(flags) - set(defaults)
    if unknown:
        raise TypeError(f"training_recipe: unknown flag(s) {sorted(unknown)}")
    recipe = {key: flags[key] if flags.get(key) is not None else block.get(key, default)
              for key, default in defaults.items()}
    if recipe["schedule"] == "cosine" and recipe["warmup_epochs"] >= recipe["epochs"]:
        raise UserError(f"warm-up ({recipe['warmup_epochs']} epochs) must be shorter than the "
                        f"{recipe['epochs']} training epochs")
    return recipe


def cosine_lr(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The `cosine` schedule at optimizer step `step` (0-based): linear warm-up
    lr*(step+1)/warmup_steps, then min_lr + (lr - min_lr)(1 + cos(pi p))/2, p = the fraction of the
    post-warm-up steps done."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def pipeline_defaults(demo: bool = False, cfg: dict | None = None) -> dict[str, str]:
    """The pipeline shell's settings that have a recipe default, by variable name
    (BATCH_SIZE '' = the config's batch_size). With a loaded config, its `training:` block's
    epochs, lr and batch_size replace EPOCHS, LR and BATCH_SIZE (`python config.py --recipe`)."""
    defaults = {"EPOCHS": FP32_EPOCHS, "LR": FP32_LR, "BATCH_SIZE": "", "QAT_EPOCHS": QAT_EPOCHS,
                "QAT_BATCH_SIZE": QAT_BATCH_SIZE, "QAT_LR": QAT_LR, "PTQ_MODES": PTQ_MODES,
                "ONNX": ONNX, "ONNX_MODES": ONNX_MODES,
                "SEED": DEFAULT_SEED, "HOLDOUTS": DEFAULT_HOLDOUTS,
                "DATASET_NAME": DEFAULT_DATASET_NAME}
    if demo:
        defaults |= DEMO
    block = (cfg or {}).get("training", {})
    defaults |= {name: block[key] for name, key in
                 (("EPOCHS", "epochs"), ("LR", "lr"), ("BATCH_SIZE", "batch_size")) if key in block}
    return {name: str(value) for name, value in defaults.items()}


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--demo", action="store_true", help="the demo dataset's budgets")
    args = ap.parse_args(argv)
    print_settings(pipeline_defaults(args.demo))
    return 0


def print_settings(settings: dict[str, str]) -> None:
    """NAME=value lines, as the pipeline shell reads them."""
    for name, value in settings.items():
        print(f"{name}={value}")


if __name__ == "__main__":
    sys.exit(main())
