"""Keras callbacks and the curve plot of FP32 training (used by main_functional.py).

  EpochLogger        one line per epoch (metrics, lr, seconds) into the run log, which therefore holds the
                     whole history (the reference's .log never did); also collects wall seconds per epoch
  ResumeCheckpoint   after every epoch: model + optimizer + the dropout random generators (tf.train.Checkpoint)
                     and the callback state (epoch, ReduceLROnPlateau and best-model bookkeeping, the run's
                     config) under checkpoints/<exp>/resume/; `restore()` brings a run back to where it stopped
                     (--resume), so a resumed run ends with the same weights as an uninterrupted one
  FiniteLoss         fails the run (RunFailed) at the end of the first epoch whose loss is not
                     finite, before the checkpoint, CSV row or best model of that epoch is written
  WarmupCosine       the `cosine` learning-rate schedule, per optimizer step (recipes.cosine_lr in
                     TF ops): a function of the step counter only, so --resume continues it exactly
  plot_training_curves  training_curves.png from the epoch CSV (so a resumed run plots its whole history)
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

from runs import RESUME_STATE_FILE
from util import RunFailed, UserError, atomic_save, atomic_write_json
from tf_env import keras, tf


class EpochLogger(keras.callbacks.Callback):
    def __init__(self, logger, total_epochs: int):
        super().__init__()
        self.logger, self.total_epochs = logger, total_epochs
        self.seconds: list[float] = []

    def on_train_begin(self, logs=None):
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()  # wall time between epoch ends: the previous epoch's checkpointing counts too
        self.seconds.append(now - self._last)
        self._last = now
        lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        if logs is not None:  # ReduceLROnPlateau logs it; under a schedule, this does (for the CSV)
            logs.setdefault("lr", lr)
        metrics = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "lr")
        self.logger.info(f"epoch {epoch + 1}/{self.total_epochs} {metrics} lr={lr:.2e} ({self.seconds[-1]:.1f} s)")


class FiniteLoss(keras.callbacks.Callback):
    """Raises RunFailed at the end of the first epoch whose training or validation loss is NaN or
    infinite (a learning rate or weight decay too large, a mask value of -inf, ...): the weights
    are then garbage. Put it FIRST: the callbacks after it never see that epoch, so no resume
    checkpoint, CSV row or best model of it is written. (Keras' TerminateOnNaN only stops
    training, after which the run would be exported and recorded as a success.)"""

    def __init__(self, experiment: str):
        super().__init__()
        self.experiment = experiment

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
                raise RunFailed(f"{self.experiment}: the {key.replace('_', ' ')} is {float(value)} "
                                f"after epoch {epoch + 1} (learning rate {lr:.3g}): training "
                                "diverged, nothing is exported; lower the learning rate or check "
                                "the config")


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `total_steps`."""

    def __init__(self, lr: float, min_lr: float, warmup_steps: int, total_steps: int):
        self.lr, self.min_lr = lr, min_lr
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float64)
        warm = self.lr * (step + 1) / max(1, self.warmup_steps)
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = tf.minimum((step - self.warmup_steps) / decay_steps, tf.constant(1.0, tf.float64))
        decay = self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + tf.cos(math.pi * progress))
        return tf.cast(tf.where(step < self.warmup_steps, warm, decay), tf.float32)

    def get_config(self):
        return {"lr": self.lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def dropout_generators(model) -> list:
    """The tf.random.Generator of every dropout layer, in layer order (empty unless the model was built after
    keras.backend.experimental.enable_tf_random_generator()). Keras does not track them in a checkpoint
    itself, so ResumeCheckpoint saves them: their state is where the dropout masks of the next step come from."""
    generators = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            generators.append(generator)
    return generators


class ResumeCheckpoint(keras.callbacks.Callback):
    """Epoch-level checkpoint for --resume. Put it AFTER the callbacks it tracks: Keras resets
    ReduceLROnPlateau in on_train_begin, and this callback puts the saved state back right after.
    `run_config` (JSON-able) is stored with the state; a resume with a different one is refused."""

    def __init__(self, directory, model, optimizer, plateau=None, best_checkpoint=None, run_config=None):
        super().__init__()
        self.directory = Path(directory)
        self.plateau, self.best_checkpoint, self.run_config = plateau, best_checkpoint, run_config
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              dropout_generators=dropout_generators(model))
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=1)
        self.state_path = self.directory / RESUME_STATE_FILE
        self.pending: dict | None = None  # state restored by restore(), applied in on_train_begin

    def restore(self) -> int:
        """Load the last checkpoint; returns the number of completed epochs. Missing, unreadable or made with
        another config -> UserError naming the path."""
        if not self.state_path.is_file() or self.manager.latest_checkpoint is None:
            raise UserError(f"--resume: no checkpoint to resume from in {self.directory}")
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--resume: {self.state_path} is unreadable ({type(e).__name__}: {e})") from None
        epoch = self.check_state(state)
        if self.run_config is not None and state["run_config"] != self.run_config:
            raise UserError(f"--resume: {self.directory} was written by a run with another config or seed; "
                            "resume with the same flags, or train without --resume")
        try:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            raise UserError(f"--resume: the checkpoint in {self.directory} does not fit this model "
                            f"({str(e).splitlines()[0][:200]})") from None
        self.pending = state
        return epoch

    def state_keys(self) -> dict:
        """The keys state.json must hold for this run, and their types."""
        number = (int, float)
        keys = {"epoch": int} | ({"run_config": dict} if self.run_config is not None else {})
        if self.plateau is not None:
            keys |= {"plateau_wait": number, "plateau_cooldown": number, "plateau_best": number}
        if self.best_checkpoint is not None:
            keys["best_checkpoint_best"] = number
        return keys

    def check_state(self, state) -> int:
        """The completed epochs of a state.json that holds every key of state_keys, of its type."""
        if not isinstance(state, dict):
            raise UserError(f"--resume: {self.state_path}: not a JSON object")
        keys = self.state_keys()
        missing = [key for key in keys if key not in state]
        wrong = [key for key, kind in keys.items() if key in state
                 and (not isinstance(state[key], kind) or isinstance(state[key], bool))]
        if missing or wrong or state["epoch"] < 0:
            problem = (f"missing key(s) {missing}" if missing else
                       f"key(s) {wrong or ['epoch']} of the wrong type or value")
            raise UserError(f"--resume: {self.state_path}: {problem} (damaged, or written by "
                            "another version); train without --resume")
        return state["epoch"]

    def on_train_begin(self, logs=None):
        if not self.pending:
            return
        if self.plateau is not None:
            self.plateau.wait, self.plateau.cooldown_counter = self.pending["plateau_wait"], self.pending["plateau_cooldown"]
            self.plateau.best = self.pending["plateau_best"]
        if self.best_checkpoint is not None:
            self.best_checkpoint.best = self.pending["best_checkpoint_best"]

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)
        state = {"epoch": epoch + 1, "run_config": self.run_config}
        if self.plateau is not None:
            state |= {"plateau_wait": self.plateau.wait, "plateau_cooldown": self.plateau.cooldown_counter,
                      "plateau_best": float(self.plateau.best)}
        if self.best_checkpoint is not None:
            state["best_checkpoint_best"] = float(self.best_checkpoint.best)
        atomic_write_json(self.state_path, state)  # written after the checkpoint: state never points ahead of it


def read_history(csv_path) -> dict[str, list[float]]:
    """Columns of a Keras CSVLogger file as float lists ({} when the file is missing). CSVLogger writes val_*
    columns filled with 'NA' when there is no validation; those columns are dropped."""
    if not Path(csv_path).is_file():
        return {}
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [key for key in (rows[0] if rows else {}) if all(r[key] != "NA" for r in rows)]
    return {key: [float(r[key]) for r in rows] for key in columns}


def plot_training_curves(csv_path, png_path, title: str) -> Path:
    """Loss and accuracy per epoch (train dashed/solid, validation if present), styled like the reference."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    history = read_history(csv_path)
    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    styles = {"loss": ("--", "#D64436", "Train loss"), "accuracy": ("-", "#00B09B", "Train accuracy"),
              "val_loss": ("--", "#FF6B6B", "Val loss"), "val_accuracy": ("-", "#E0A938", "Val accuracy")}
    for key, (line, colour, label) in styles.items():
        if key in history:
            ax.plot(epochs, history[key], line, color=colour, label=label)
    ax.set_xlabel("Epoch")
    ax.set_title(f"Training Curves - {title}")
    ax.legend(loc="upper center", ncol=4)
    ax.grid(alpha=0.3)
    atomic_save(png_path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(png_path)
