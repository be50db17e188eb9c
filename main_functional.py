"""Core FP32 training of SignBART: one experiment = one model trained on one dataset folder.
train_loso_functional.py and train_full_dataset.py call `train()` in-process; this file is also a CLI.

A run, in order:
  1. read the training split once (dataset.load_split). A LOSO run first checks, from file names alone, that the
     held-out signer has no file in it. Validation is optional and carved from the TRAINING signers
     (--val_users or --val_fraction); the default is the reference pipelines' fixed epoch budget (--no_validation).
  2. build the model (model_functional.py); AdamW(lr, weight_decay), sparse cross-entropy from logits (with
     label smoothing when set), top-1/top-5 accuracy, and the schedule: ReduceLROnPlateau(factor 0.1,
     patience 5, min 1e-7) on the training loss (the validation loss when validating), or `cosine`
     (linear warm-up, then cosine decay to min_lr, per step).
  3. fit for --epochs; every epoch is re-augmented from a generator seeded with (seed, epoch), and a checkpoint
     (weights, optimizer, the dropout generators' state) is written after each epoch, so --resume continues an
     interrupted run on the same data and dropout sequence and ends with the same weights.
  4. the final weights (last epoch, or best validation epoch when validating) are saved as final_model.h5; that
     FILE is reloaded, exported to final_model_fp32.tflite (parity-checked against Keras on real clips) and
     evaluated on the test split. The test split is read once, before the first epoch (so a bad file stops the
     run before hours of training), and is used only now.

One owner per run folder, and a finished run is never damaged (run_lock.RunLock, RunPaths.staging): a
second run of an experiment that is running is refused; a new run of an experiment that finished
already is refused unless --overwrite (or --resume, which extends it), and then trains in a staging
tree whose artefacts replace the finished run's only once it succeeded. A run whose training loss
stops being finite, or whose FP32 export fails its parity check, fails (RunFailed: `success:
false`, exit 1).

Training hyperparameters: an explicit flag (--epochs, --lr, --batch_size) > the config's `training:` block
(config.py; `--set training.KEY=VALUE` changes it for one run) > the defaults of recipes.py; resolved once
(resolve_settings) and recorded in the run's metadata (`training`, `config_overrides`).

Outputs (runs.py) under <output_root>/<dataset>/<loso|full>/: checkpoints/<exp>/{final_model.h5,
final_model_fp32.tflite, final_model_fp32.json, labels.txt, metadata.json, resume/}, logs/run_logs/<exp>.log,
logs/training_csv/<exp>_training.csv, logs/tensorboard/<exp>/, out-imgs/<exp>/training_curves.png and
training_metadata/<exp>_<timestamp>.json + <exp>_latest.json.

    python main_functional.py --task train --experiment_name arabic_asl_LOSO_user01 --no_validation \\
        --config_path configs/arabic-asl-65kpts.yaml --data_path data/arabic-asl-65kpts_LOSO_user01
    python main_functional.py --task eval --experiment_name arabic_asl_LOSO_user01 \\
        --config_path configs/arabic-asl-65kpts.yaml --data_path data/arabic-asl-65kpts_LOSO_user01
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from augmentations import options_from_config
from config import TRAINING, load_config, model_hparams, num_keypoints
from dataset import SplitData, load_split, make_dataset, read_label_maps, read_label_names
from distribute import add_distribute_args, strategy_scope, unsharded
from recipes import (CPU_DEVICES, DEFAULT_SEED, DISTRIBUTE, FP32_EPOCHS, FP32_LR, PLATEAU_FACTOR,
                     PLATEAU_PATIENCE, training_recipe)
from run_lock import RunLock
from runs import (CHECKPOINT_METADATA, FINAL_MODEL, comma_list, discover_users,
    holds_success, parse_experiment_name, remove_path, require_file, run_paths)
from util import (HelpFormatter, UserError, add_verbose_flag, atomic_save, atomic_write_json, bounded, cli,
    git_commit, one_line, set_seed, setup_logging)
from tflite_runtime import MAX_PARITY_CLIPS

EVAL_BATCH = 32


@dataclass(kw_only=True)
class FitSettings:
    """What FP32 training (TrainSettings) and QAT fine-tuning (train_loso_functional_qat.QATSettings)
    share: the config, the data, the seed, validation carved from the training signers
    (carve_validation) and the ReduceLROnPlateau schedule."""
    config_path: str
    data_path: str
    seed: int = DEFAULT_SEED
    val_users: tuple = ()
    val_fraction: float = 0.0
    scheduler_factor: float = PLATEAU_FACTOR
    scheduler_patience: int = PLATEAU_PATIENCE

    @property
    def validating(self) -> bool:
        return bool(self.val_users) or self.val_fraction > 0


@dataclass(kw_only=True)
class TrainSettings(FitSettings):
    experiment_name: str
    dataset_name: str
    run_type: str                        # "loso" or "full"
    train_split: str = "train"
    test_split: str | None = "test"      # None: nothing held out (full-dataset training)
    holdout_user: str | None = None      # LOSO: must have no file in the training split
    # training hyperparameters; None: the config's training: block, else recipes.py (resolve_settings)
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None        # None: training.batch_size, else the config's batch_size (1)
    schedule: str | None = None          # plateau | cosine
    warmup_epochs: int | None = None
    min_lr: float | None = None
    label_smoothing: float | None = None
    bucket_batches: int | None = None    # length bucketing window in batches (0: off)
    overrides: tuple = ()                # --set training.KEY=VALUE items applied to the config
    pretrained_path: str = ""
    resume: bool = False
    overwrite: bool = False              # a finished run may be replaced (once the new one worked)
    output_root: str | None = None
    distribute: str = DISTRIBUTE         # none | mirrored (distribute.py); batch_size is global
    cpu_devices: int = CPU_DEVICES       # the CPU as N logical devices (testing mirroring)


# ----------------------------------------------------------------------------------------------- data
def subset(data: SplitData, indices, split: str) -> SplitData:
    pick = lambda values: [values[i] for i in indices]  # noqa: E731
    return dataclasses.replace(data, split=split, clips=pick(data.clips), labels=pick(data.labels),
                               users=pick(data.users), paths=pick(data.paths), skipped=[])


def carve_validation(data: SplitData, s: FitSettings) -> tuple[SplitData, SplitData | None]:
    """(fit, validation) from the training split: whole signers (--val_users) or a class-stratified fraction."""
    if s.val_users:
        unknown = sorted(set(s.val_users) - set(data.users))
        if unknown:
            raise UserError(f"--val_users {unknown} not among the training signers {sorted(set(data.users))}")
        val = [i for i, user in enumerate(data.users) if user in s.val_users]
    elif s.val_fraction > 0:
        rng, labels = np.random.default_rng(s.seed), np.asarray(data.labels)
        val = []
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            val += members[:max(1, round(s.val_fraction * len(members)))].tolist()
    else:
        return data, None
    chosen = set(val)
    fit = [i for i in range(len(data)) if i not in chosen]
    if not fit:
        raise UserError("validation would take every training sample; lower --val_fraction or --val_users")
    return subset(data, fit, data.split), subset(data, sorted(val), "validation")


def load_training_data(s: TrainSettings, cfg: dict) -> SplitData:
    if s.holdout_user and s.holdout_user in discover_users(s.data_path, s.train_split):  # names only, nothing opened
        raise UserError(f"{Path(s.data_path) / s.train_split}: contains files of the held-out signer "
                        f"{s.holdout_user}; rebuild the LOSO split")
    return load_split(s.data_path, s.train_split, cfg)


RECIPE_KEYS = ("epochs", "lr", "batch_size", "schedule", "warmup_epochs", "min_lr",
               "label_smoothing", "bucket_batches")


def resolve_settings(s: TrainSettings, cfg: dict) -> TrainSettings:
    """Every training hyperparameter filled in: flag > config training: block > recipes.py; each
    resolved value is checked with the config key's bounds (config.TRAINING), whoever gave it."""
    recipe = training_recipe(cfg, **{key: getattr(s, key) for key in RECIPE_KEYS})
    for key in RECIPE_KEYS:
        kind, ok, wants = TRAINING[key]
        value = recipe[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            recipe[key] = value = float(value)
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (isinstance(value, kind) and not isinstance(value, bool) and finite and ok(value)):
            raise UserError(f"--{key} (training.{key}) must be {wants}, got {value!r}")
    return dataclasses.replace(s, **{key: recipe[key] for key in RECIPE_KEYS})


def training_flag(key: str):
    """argparse type= of the flag of training key `key`: the type and bounds of config.TRAINING."""
    return bounded(*TRAINING[key])


def training_record(s: TrainSettings, cfg: dict) -> dict:
    """The resolved recipe of a run (settings already resolved), as recorded and compared by
    --resume (JSON types: what a resume reads back)."""
    record = {key: getattr(s, key) for key in RECIPE_KEYS} | {
        "weight_decay": cfg["weight_decay"],
        "augmentation": dataclasses.asdict(options_from_config(cfg))}
    return json.loads(json.dumps(record))


# ----------------------------------------------------------------------------------------------- model
def sparse_crossentropy(num_labels: int, label_smoothing: float | None = None):
    """Cross-entropy from logits on integer labels; with label smoothing (not None, > 0), one-hot
    inside."""
    from tf_env import keras, tf
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def smoothed_crossentropy(y_true, y_pred):
        one_hot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_labels)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, from_logits=True,
                                                     label_smoothing=label_smoothing)
    return smoothed_crossentropy


def compile_model(model: keras.Model, cfg: dict, lr,
                  optimizer: keras.optimizers.Optimizer | None = None,
                  label_smoothing: float | None = None, jit_compile: bool = False) -> keras.Model:
    """Loss and metrics of every SignBART model; the optimizer is AdamW(lr, config weight_decay)
    (Keras's, its step built faster: optimizers.py) unless given (lr: a number or a schedule).
    jit_compile: XLA on the train step (measured slower on CPU: docs/training.md#speed;
    bench/bench_training.py --recipes today+xla)."""
    from optimizers import AdamW
    from tf_env import keras
    model.compile(
        optimizer=optimizer or AdamW(learning_rate=lr, weight_decay=cfg["weight_decay"]),
        loss=sparse_crossentropy(cfg["num_labels"], label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                 keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, cfg["num_labels"]), name="top5_accuracy")],
        jit_compile=jit_compile)
    return model


def evaluate(model: keras.Model, data: SplitData, cfg: dict) -> dict:
    """{'loss', 'accuracy', 'top5_accuracy', 'samples'} on length-masked, unaugmented clips."""
    results = model.evaluate(make_dataset(data, cfg, EVAL_BATCH), verbose=0, return_dict=True)
    return {k: float(v) for k, v in results.items()} | {"samples": len(data)}


def parity_clips(data: SplitData, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to MAX_PARITY_CLIPS real clips, padded: keypoints (N, 64, K, 2), masks (N, 64), labels (N,)."""
    return subset(data, range(min(len(data), MAX_PARITY_CLIPS)), data.split).padded(cfg)


# ----------------------------------------------------------------------------------------------- training
@contextlib.contextmanager
def dropout_generators_enabled():
    """Dropout layers built inside draw their masks from a tf.random.Generator (a variable that a checkpoint can
    save and restore) instead of TensorFlow's stateful ops, whose position cannot be saved. The setting is
    global in Keras, so it is restored afterwards; layers keep the generator they were built with."""
    from tf_env import keras
    experimental = keras.backend.experimental
    was_enabled = experimental.is_tf_random_generator_enabled()
    experimental.enable_tf_random_generator()
    try:
        yield
    finally:
        if not was_enabled:
            experimental.disable_tf_random_generator()


def resume_key(s: TrainSettings, cfg: dict) -> dict:
    """What a --resume must share with the run it continues: the whole resolved recipe, except that
    more --epochs is fine under the plateau schedule (the cosine schedule depends on the epochs)."""
    recipe = training_record(s, cfg)
    if s.schedule != "cosine":
        del recipe["epochs"]
    preprocessing = {k: cfg[k] for k in ("rest_hand_cutoff", "dominant_hand_ratio") if cfg[k]}
    return {"model_config": model_hparams(cfg), "joint_idx": cfg["joint_idx"], "seed": s.seed,
            "validating": s.validating} | preprocessing | recipe


def learning_rate(s: TrainSettings, steps_per_epoch: int):
    """The optimizer's learning rate: s.lr (ReduceLROnPlateau changes it) or the cosine schedule."""
    if s.schedule != "cosine":
        return s.lr
    from training_callbacks import WarmupCosine
    return WarmupCosine(s.lr, s.min_lr, s.warmup_epochs * steps_per_epoch,
                        s.epochs * steps_per_epoch)


def make_callbacks(s: TrainSettings, cfg: dict, paths, model: keras.Model,
                   logger) -> tuple[list, ResumeCheckpoint, EpochLogger]:
    from tf_env import keras
    from training_callbacks import EpochLogger, FiniteLoss, ResumeCheckpoint
    exp, ckpt_dir = s.experiment_name, paths.checkpoint_dir(s.experiment_name)
    monitor = "val_loss" if s.validating else "loss"
    plateau = (keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=s.scheduler_factor,
                                                 patience=s.scheduler_patience, min_lr=s.min_lr)
               if s.schedule == "plateau" else None)
    best = (keras.callbacks.ModelCheckpoint(str(ckpt_dir / "best_model.weights.h5"), monitor="val_loss",
                                            save_best_only=True, save_weights_only=True) if s.validating else None)
    paths.training_csv(exp).parent.mkdir(parents=True, exist_ok=True)
    epoch_logger = EpochLogger(logger, s.epochs)
    resume = ResumeCheckpoint(paths.resume_dir(exp), model, model.optimizer, plateau, best,
                              run_config=resume_key(s, cfg))
    callbacks = [FiniteLoss(exp),  # first: a NaN epoch fails the run before any callback records it
                 *([plateau] if plateau else []), *([best] if best else []), epoch_logger,
                 keras.callbacks.CSVLogger(str(paths.training_csv(exp)), append=s.resume),
                 keras.callbacks.TensorBoard(str(paths.tensorboard_dir(exp)), histogram_freq=0, write_graph=False,
                                             profile_batch=0),
                 resume]  # last: it restores the plateau/best state after Keras resets it in on_train_begin
    return callbacks, resume, epoch_logger


def fit(model, s: TrainSettings, cfg: dict, fit_data: SplitData, val_data, paths, logger) -> dict:
    """Train (or resume) up to s.epochs; returns the epoch bookkeeping for the metadata record."""
    callbacks, resume, epoch_logger = make_callbacks(s, cfg, paths, model, logger)
    model.optimizer.build(model.trainable_variables)  # slots exist before a restore
    initial_epoch = resume.restore() if s.resume else 0
    if s.resume:
        logger.info(f"resuming after epoch {initial_epoch} from {resume.directory}")
    train_ds = make_dataset(fit_data, cfg, s.batch_size, training=True, seed=s.seed,
                            start_epoch=initial_epoch, bucket_batches=s.bucket_batches)
    train_ds = unsharded(train_ds, s.distribute)
    val_ds = make_dataset(val_data, cfg, EVAL_BATCH) if val_data is not None else None
    if initial_epoch < s.epochs:
        model.fit(train_ds, validation_data=val_ds, epochs=s.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=0)
    seconds = epoch_logger.seconds
    return {"initial_epoch": initial_epoch, "epochs_this_session": len(seconds),
            "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
            "first_epoch_seconds": seconds[0] if seconds else None}


def finalize(model, s: TrainSettings, cfg: dict, fit_data: SplitData, test_data: SplitData | None, paths, logger,
             training_info: dict) -> dict:
    """Save final_model.h5, read it back, export + parity-check the TFLite, then evaluate the test split."""
    from tflite_export import export_tflite, require_parity
    ckpt_dir = paths.checkpoint_dir(s.experiment_name)
    if s.validating:
        model.load_weights(str(require_file(ckpt_dir / "best_model.weights.h5", "best validation checkpoint")))
        logger.info("final weights = best validation epoch")
    with warnings.catch_warnings():  # Keras calls .h5 "legacy"; it is the artefact format of the reference
        warnings.simplefilter("ignore", UserWarning)
        final_h5 = atomic_save(paths.final_model(s.experiment_name),
                               lambda p: model.save(p, include_optimizer=False))
    model = saved_weights(model, final_h5, s, cfg)  # everything below uses exactly the saved file
    _, id2label = read_label_maps(s.data_path)
    keypoints, masks, labels = parity_clips(fit_data if test_data is None else test_data, cfg)
    card = export_tflite(model, cfg, paths.fp32_tflite(s.experiment_name), id2label, mode="fp32",
                         parity_data=(keypoints, masks), parity_labels=labels, training=training_info,
                         label_names=read_label_names(s.data_path), log=logger.info)
    require_parity({paths.fp32_tflite(s.experiment_name): card})  # a failed export fails the run
    results = {"final_model": str(final_h5), "tflite": str(paths.fp32_tflite(s.experiment_name)),
               "tflite_parity": card["parity"], "train": evaluate(model, fit_data, cfg)}
    if test_data is not None:
        results["test"] = evaluate(model, test_data, cfg)
        results["test_users"] = sorted(set(test_data.users))
        logger.info(f"test ({results['test']['samples']} clips, {results['test_users']}): "
                    f"top-1 {results['test']['accuracy']:.4f}, top-5 {results['test']['top5_accuracy']:.4f}")
    return results


def saved_weights(model, final_h5: Path, s: TrainSettings, cfg: dict):
    """The trained model with the weights read back from final_h5, compiled for evaluation (loss
    without label smoothing). A model trained on several devices is rebuilt on one instead, so
    that its evaluation runs as a one-device run's (building costs ~1 s: reused otherwise)."""
    from model_functional import load_model
    if s.distribute == "none":
        model.load_weights(str(final_h5))
    else:
        model = load_model(final_h5, cfg)
    return compile_model(model, cfg, s.lr)


def other_settings(s: FitSettings, record: dict, elsewhere=()) -> dict:
    """The run's settings that its record does not hold already (at its top level, or under the
    names `elsewhere`): each setting is recorded once."""
    skip = set(record) | set(elsewhere)
    return {key: value for key, value in dataclasses.asdict(s).items() if key not in skip}


def card_training(s: TrainSettings, record: dict) -> dict:
    """The `training` entry of the exported model's card (its keys are part of the card format)."""
    return {"experiment_name": s.experiment_name, "data_path": s.data_path, "epochs": s.epochs,
            "learning_rate": s.lr, "seed": s.seed, "batch_size": s.batch_size,
            "train_users": record["train_users"], "holdout_user": s.holdout_user,
            "git_commit": record["git_commit"]}


def write_metadata(s: TrainSettings, cfg: dict, paths, record: dict, logger=None, out=None) -> None:
    """training_metadata/<exp>_<timestamp>.json always; checkpoints/<exp>/metadata.json and <exp>_latest.json
    too (in `out`, the tree the run writes: `paths` or a staging tree), unless this run failed and
    they record a successful run (a failed run never replaces that record)."""
    exp, out = s.experiment_name, out or paths
    stamped = atomic_write_json(paths.new_record(exp, record["timestamp"]), record)
    summary, latest = out.checkpoint_dir(exp) / CHECKPOINT_METADATA, out.latest_record(exp)
    if not record["success"] and (holds_success(latest) or holds_success(summary)):
        if logger:
            logger.info(f"run failed: its record is {stamped}; {latest.name} and {summary.name} still "
                        "describe the earlier successful run")
        return
    atomic_write_json(summary, {
        "experiment_name": exp, "config_path": s.config_path, "data_path": s.data_path,
        "num_keypoints": num_keypoints(cfg), "timestamp": record["timestamp"], "success": record["success"]})
    atomic_write_json(latest, record)


def train(s: TrainSettings) -> dict:
    """Run one experiment end to end; returns the metadata record (also written to
    training_metadata/). The run owns its folder (run_lock.RunLock) from start to end; see the module
    docstring for finished runs."""
    cfg = load_config(s.config_path, s.overrides)
    s = resolve_settings(s, cfg)
    paths = run_paths(s.dataset_name, s.run_type, s.output_root)
    exp = s.experiment_name
    with RunLock(paths.lock_file(exp), f"experiment {exp}") as lock:
        finished = paths.finished(exp)
        if finished and not (s.overwrite or s.resume):
            raise UserError(f"{paths.latest_record(exp)}: experiment {exp} has finished already; "
                            "pass --overwrite to train it again (the finished run is replaced only "
                            "once the new one succeeded), --resume to extend it, or another "
                            "experiment name")
        out = paths.staging(exp) if finished else paths  # where this run writes
        logger = setup_logging(paths.run_log(exp), name=f"signbart.{exp}")
        if lock.took_over:
            logger.info(lock.took_over)
        try:
            if finished:
                stage(paths, out, exp, s.resume, logger)
            record = train_in(s, cfg, paths, out, logger)
            if finished:
                paths.promote(out, exp)
                logger.info(f"{exp}: the new run replaced the finished one")
        except UserError as e:  # name the run's own files, not their staged copies
            if finished and str(out.base) in str(e):
                raise type(e)(str(e).replace(str(out.base), str(paths.base))) from None
            raise
        finally:
            if finished:
                remove_path(out.root)
                with contextlib.suppress(OSError):
                    out.root.parent.rmdir()  # .staging/, once no other run stages there
    return record


def log_to_file(logger, message: str) -> None:
    """An ERROR line in the run log file only."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None,
                                             None))


def stage(paths, out, exp: str, resume: bool, logger) -> None:
    """A fresh staging tree for a run replacing a finished one; a --resume starts from copies of the
    finished run's checkpoint folder, epoch CSV and TensorBoard logs."""
    remove_path(out.root)  # a killed earlier run's leftovers (this run holds the lock)
    logger.info(f"{exp} has finished already: this run writes into {out.root} and replaces the "
                "finished run's files only once it succeeded")
    if resume:
        for src, dst in ((paths.checkpoint_dir(exp), out.checkpoint_dir(exp)),
                         (paths.training_csv(exp), out.training_csv(exp)),
                         (paths.tensorboard_dir(exp), out.tensorboard_dir(exp))):
            if src.is_dir():
                shutil.copytree(src, dst)
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


def train_in(s: TrainSettings, cfg: dict, paths, out, logger) -> dict:
    """train() once the run owns its folder: artefacts go to `out` (`paths`, or the staging tree of
    a run replacing a finished one); the run log and time-stamped records to `paths`."""
    from model_functional import build_model, load_pretrained, parameter_breakdown
    from tf_env import keras, tf, thread_settings
    from training_callbacks import plot_training_curves
    start = time.time()
    scope, replicas = strategy_scope(s.distribute, s.batch_size, s.cpu_devices)  # before any op
    record = {"experiment_name": s.experiment_name, "dataset_name": s.dataset_name, "run_type": s.run_type,
              "holdout_user": s.holdout_user, "config_path": s.config_path, "data_path": s.data_path,
              "seed": s.seed, "no_validation": not s.validating,
              "training": training_record(s, cfg), "config_overrides": list(s.overrides),
              "framework": "tensorflow", "tensorflow_version": tf.__version__,
              "tf_threads": thread_settings(), "replicas": replicas, "git_commit": git_commit(),
              "model_config": model_hparams(cfg), "rest_hand_cutoff": cfg["rest_hand_cutoff"],
              "dominant_hand_ratio": cfg["dominant_hand_ratio"],
              "log_file": str(paths.run_log(s.experiment_name)),
              "checkpoint_dir": str(paths.checkpoint_dir(s.experiment_name)),
              "start_time": time.strftime("%Y-%m-%d %H:%M:%S"), "success": False}
    # the settings not recorded above: the recipe is in `training`, the --set items in config_overrides
    record["settings"] = other_settings(s, record, elsewhere=(*RECIPE_KEYS, "overrides"))
    try:
        keras.backend.clear_session()
        set_seed(s.seed)
        fit_data, val_data = carve_validation(load_training_data(s, cfg), s)
        # read and checked now, so a bad test file stops the run before the epochs; used only after training
        test_data = load_split(s.data_path, s.test_split, cfg) if s.test_split else None
        record |= {"train_users": sorted(set(fit_data.users)), "train_samples": len(fit_data),
                   "val_users": sorted(set(val_data.users)) if val_data else [],
                   "val_samples": len(val_data) if val_data else 0}
        logger.info(f"{s.experiment_name}: {len(fit_data)} training clips from {record['train_users']}"
                    + (f", {len(val_data)} validation clips" if val_data else ", no validation"))
        with scope:  # --distribute: the model's variables, its optimizer and fit on every replica
            with dropout_generators_enabled():  # their state is saved with each epoch checkpoint, for --resume
                if s.pretrained_path:
                    model, taken = load_pretrained(require_file(s.pretrained_path, "--pretrained_path weights"), cfg)
                    logger.info(f"starting from {s.pretrained_path}: {taken}")
                    record["pretrained"] = {"path": s.pretrained_path, "taken": taken}
                else:
                    model = build_model(cfg)
            compile_model(model, cfg, learning_rate(s, math.ceil(len(fit_data) / s.batch_size)),
                          label_smoothing=s.label_smoothing)
            record |= {"model_parameters": model.count_params(), "parameter_breakdown": parameter_breakdown(model)}
            logger.info(f"model {model.name}: {model.count_params():,} parameters; {s.epochs} epochs, "
                        f"lr {s.lr} ({s.schedule}), batch {s.batch_size}, seed {s.seed}"
                        + (f", --set {' '.join(s.overrides)}" if s.overrides else "")
                        + (f", {s.distribute} over {replicas} replicas" if replicas > 1 else ""))
            record |= fit(model, s, cfg, fit_data, val_data, out, logger)
        training_info = card_training(s, record)
        record |= finalize(model, s, cfg, fit_data, test_data, out, logger, training_info)
        record |= {"final_model": str(paths.final_model(s.experiment_name)),  # where they end up
                   "tflite": str(paths.fp32_tflite(s.experiment_name))}
        plot_training_curves(out.training_csv(s.experiment_name), out.curves_png(s.experiment_name),
                             s.experiment_name)
        record["success"] = True
    except Exception as e:
        record["error"] = one_line(e) or f"{type(e).__name__}: {e}"
        log_to_file(logger, f"run failed: {record['error']}")  # the caller shows the error itself
        raise
    finally:
        record |= {"end_time": time.strftime("%Y-%m-%d %H:%M:%S"), "duration_seconds": round(time.time() - start, 1),
                   "timestamp": time.strftime("%Y%m%d_%H%M%S")}
        write_metadata(s, cfg, paths, record, logger, out)
    return record


# ----------------------------------------------------------------------------------------------- CLI
def add_training_args(ap: argparse.ArgumentParser) -> None:
    """Flags shared by main_functional.py, train_loso_functional.py and train_full_dataset.py. A
    training hyperparameter flag given explicitly beats the config's training: block, which beats
    recipes.py."""
    ap.epilog = ((ap.epilog or "") + "Training hyperparameters: an explicit flag > the config's "
                 "training: block (and --set training.KEY=VALUE) > the defaults of recipes.py.")
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="change a training: key of the config for this run, with its checks; "
                         "repeatable, e.g. --set training.augmentation.flip=mirror_only "
                         "--set training.label_smoothing=0.1")
    ap.add_argument("--epochs", type=training_flag("epochs"), default=None,
                    help=f"training epochs; None: training.epochs of the config, else {FP32_EPOCHS}")
    ap.add_argument("--lr", type=training_flag("lr"), default=None,
                    help=f"AdamW (peak) learning rate; None: training.lr of the config, "
                         f"else {FP32_LR}")
    ap.add_argument("--batch_size", type=training_flag("batch_size"), default=None,
                    help="batch size; None: training.batch_size of the config, else its "
                         "batch_size (1)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of weights, shuffling, augmentation, dropout")
    add_validation_args(ap)
    ap.add_argument("--pretrained_path", default="",
                    help="a .h5 of the same network to start from; one trained on another label set "
                         "(pre-training on another dataset) gives all but its classification head")
    ap.add_argument("--resume", action="store_true", help="continue from the experiment's last epoch checkpoint")
    ap.add_argument("--overwrite", action="store_true",
                    help="train an experiment that has finished already again; its files are "
                         "replaced only once the new run succeeded")
    ap.add_argument("--dataset_name", default="", help="output folder name <output_root>/<dataset_name>/")
    ap.add_argument("--output_root", default="", help="output root ('': $SIGNBART_OUTPUT_ROOT, else outputs)")
    add_distribute_args(ap)
    add_verbose_flag(ap)


def add_validation_args(ap: argparse.ArgumentParser) -> None:
    """Validation (carved from the training signers) and LR-schedule flags; read back by validation_from_args."""
    ap.add_argument("--no_validation", action="store_true",
                    help="fixed epoch budget, no validation (the default unless --val_users/--val_fraction)")
    ap.add_argument("--val_users", default="", help="comma list of TRAINING signers held out for validation")
    ap.add_argument("--val_fraction", type=float, default=0.0,
                    help="fraction of the training clips (per class) held out for validation")
    ap.add_argument("--scheduler_factor", type=bounded(float, lambda v: 0 < v < 1, "in (0, 1)"),
                    default=PLATEAU_FACTOR, help="ReduceLROnPlateau factor")
    ap.add_argument("--scheduler_patience", type=bounded(int, lambda v: v >= 0, ">= 0"),
                    default=PLATEAU_PATIENCE,
                    help="ReduceLROnPlateau patience (epochs)")


def validation_from_args(args) -> tuple[tuple, float]:
    """(val_users, val_fraction) from add_validation_args flags, checked."""
    val_users = tuple(comma_list(args.val_users))
    if args.no_validation and (val_users or args.val_fraction):
        raise UserError("--no_validation contradicts --val_users/--val_fraction")
    if not 0 <= args.val_fraction < 1:
        raise UserError(f"--val_fraction must be in [0, 1), got {args.val_fraction}")
    return val_users, args.val_fraction


def settings_from_args(args, settings_class: type = TrainSettings, **fixed):
    """A settings dataclass (TrainSettings, or train_loso_functional_qat.QATSettings) from parsed
    flags: each field takes the flag of its name, the validation flags are checked
    (validation_from_args), and `fixed` supplies the run-specific fields."""
    val_users, val_fraction = validation_from_args(args)
    flags = vars(args) | {"val_users": val_users, "val_fraction": val_fraction}
    if "overrides" in flags:
        flags["overrides"] = tuple(flags["overrides"])
    if "output_root" in flags:
        flags["output_root"] = flags["output_root"] or None
    fields = {f.name for f in dataclasses.fields(settings_class)}
    return settings_class(**{k: v for k, v in flags.items() if k in fields} | fixed)


def infer_run(experiment_name: str, dataset_name: str, run_type: str) -> tuple[str, str, str | None]:
    """(dataset, run_type, holdout user): the flags, else what runs.parse_experiment_name reads."""
    parsed = parse_experiment_name(experiment_name)
    if parsed:
        return dataset_name or parsed.dataset, run_type or parsed.run_type, parsed.user or None
    if not (dataset_name and run_type):
        raise UserError(f"cannot infer dataset/run type from --experiment_name {experiment_name!r}; "
                        "pass --dataset_name and --run_type")
    return dataset_name, run_type, None


def evaluate_checkpoint(s: TrainSettings, checkpoint: str) -> dict:
    """--task eval: the experiment's final_model.h5 (or the given file/folder) on the test split."""
    from model_functional import load_model
    if not s.test_split:
        raise UserError("--task eval needs a --test_split to evaluate")
    cfg = load_config(s.config_path, s.overrides)
    s = resolve_settings(s, cfg)
    path = Path(checkpoint) if checkpoint else run_paths(s.dataset_name, s.run_type, s.output_root).checkpoint_dir(
        s.experiment_name)
    path = require_file(path / FINAL_MODEL if path.is_dir() else path, "checkpoint")
    model = compile_model(load_model(path, cfg), cfg, s.lr)
    results = evaluate(model, load_split(s.data_path, s.test_split, cfg), cfg)
    print(f"{path} on {Path(s.data_path) / s.test_split}: {results['samples']} clips, "
          f"top-1 {results['accuracy']:.4f}, top-5 {results['top5_accuracy']:.4f}, loss {results['loss']:.4f}")
    return results


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--experiment_name", required=True, help="e.g. arabic_asl_LOSO_user01 or arabic_asl_full")
    ap.add_argument("--data_path", required=True, help="dataset folder with train/ (and test/) or all/")
    ap.add_argument("--task", choices=("train", "eval"), default="train", help="train, or evaluate a checkpoint")
    ap.add_argument("--run_type", default="", help="loso or full ('': inferred from the experiment name)")
    ap.add_argument("--train_split", default="train", help="split folder to train on")
    ap.add_argument("--test_split", default="test", help="split evaluated after training ('' for none)")
    ap.add_argument("--resume_checkpoints", default="",
                    help="--task eval: final_model.h5 or its folder ('': the experiment's checkpoint folder)")
    add_training_args(ap)
    args = ap.parse_args(argv)
    dataset, run_type, holdout = infer_run(args.experiment_name, args.dataset_name, args.run_type)
    s = settings_from_args(args, experiment_name=args.experiment_name, data_path=args.data_path,
                           dataset_name=dataset, run_type=run_type, holdout_user=holdout,
                           train_split=args.train_split, test_split=args.test_split or None)
    if args.task == "eval":
        evaluate_checkpoint(s, args.resume_checkpoints)
        return
    record = train(s)
    print(f"done: {record['checkpoint_dir']} ({record['duration_seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
