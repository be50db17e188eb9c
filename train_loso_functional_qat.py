"""Quantization-aware training (QAT) of a trained FP32 checkpoint, then its integer TFLite exports.

Unlike the reference, every Dense layer really is fake-quantized: proj_x1, proj_y1, the q/k/v/out
projections of every attention, fc1, fc2 and the classifier get 8-bit kernel and output quantizers
(quantization.py); the script checks the traced graph and stops if any Dense kernel lacks its FakeQuant op.

A run, in order:
  1. read the dataset folder: `train` (or `all` for a full-dataset model) is fine-tuned on, `test` is only
     evaluated. Optional validation for early stopping is carved from the TRAINING signers (--val_users or
     --val_fraction, as main_functional); the default is the reference pipelines' --no_validation.
  2. load the FP32 checkpoint, wrap it for QAT, and fine-tune: Adam(--lr, clipnorm 1.0), batch --batch_size,
     augmented clips, ReduceLROnPlateau(--scheduler_factor, --scheduler_patience) and EarlyStopping
     (--early_stop_patience, best weights restored) on the validation loss, or on the training loss without validation.
  3. save qat_model_weights.h5 (a QAT model does not reload from .keras/.h5), rebuild
     the QAT graph, load the file back, and export from that reloaded model:
       qat_dynamic_int8.tflite  the QAT weights in the float graph, dynamic-range converted (name of seed 001)
       qat_int8.tflite          the QAT graph itself, full integer: its FakeQuant ranges plus calibration on real
                                training clips for the tensors without one; float32 input/output
     each with a card (size, ops, parity vs its Keras model on the held-out clips).
  4. write qat_metadata.json (settings, seed, signers, history, test accuracy, exports) and qat.log;
     an export that failed its parity check (tflite_export.check_parity) then ends the run with one
     line and exit 1.

--output_dir defaults to exports/qat[_<prefix>][/<user>] of the run tree holding the checkpoint.

    python train_loso_functional_qat.py --config_path configs/arabic-asl-65kpts.yaml \\
        --data_path data/arabic-asl-65kpts_LOSO_user01 \\
        --checkpoint outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model.h5 \\
        --batch_size 4 --qat_epochs 20 --lr 5e-5 --no_validation

--export_only (same flags) skips steps 1-2: it reloads the qat_model_weights.h5 of an earlier run from the output
folder and writes step 3's exports again with the current exporter (e.g. after an exporter fix).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from config import load_config, model_hparams
from dataset import make_dataset, read_label_maps, read_label_names
from distribute import CHOICES, refuse_for_qat
from main_functional import (EVAL_BATCH, FitSettings, add_validation_args, carve_validation, compile_model,
                             evaluate, other_settings, settings_from_args, training_flag)
from recipes import (CALIBRATION_CLIPS, DEFAULT_SEED, DISTRIBUTE, MIN_LR, QAT_BATCH_SIZE, QAT_CLIPNORM,
                     QAT_EARLY_STOP_PATIENCE, QAT_EPOCHS, QAT_LR)
from runs import FP32_TFLITE, QAT_FILES, QAT_METADATA, QAT_WEIGHTS, export_dir_for, require_file
from util import (HelpFormatter, add_verbose_flag, atomic_save, atomic_write_json, bounded, cli, git_commit,
    read_json, set_seed, setup_logging)


@dataclass(kw_only=True)
class QATSettings(FitSettings):
    checkpoint: str
    output_dir: str
    batch_size: int = QAT_BATCH_SIZE
    qat_epochs: int = QAT_EPOCHS
    lr: float = QAT_LR
    early_stop_patience: int = QAT_EARLY_STOP_PATIENCE
    num_calibration_samples: int = CALIBRATION_CLIPS


# ----------------------------------------------------------------------------------------------- steps
def check_fake_quant(qat_model: keras.Model, logger) -> dict:
    """Every Dense kernel must be read through a FakeQuant op (what the reference's QAT never had)."""
    from quantization import dense_kernels, fake_quantized_kernels
    kernels, covered = set(dense_kernels(qat_model)), fake_quantized_kernels(qat_model)
    if kernels - covered:
        raise RuntimeError(f"QAT graph: Dense kernels without FakeQuant: {sorted(kernels - covered)}")
    logger.info(f"QAT graph: all {len(kernels)} Dense kernels are fake-quantized")
    return {"dense_kernels": len(kernels), "fake_quantized": len(covered)}


def fine_tune(qat_model, s: QATSettings, cfg: dict, fit_data, val_data, logger, csv_path: Path) -> dict:
    """QAT fine-tuning; returns {'epochs_run', 'best_epoch', 'history'}."""
    from tf_env import keras
    from training_callbacks import EpochLogger
    monitor = "val_loss" if val_data is not None else "loss"
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=s.early_stop_patience, restore_best_weights=True)
    callbacks = [keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=s.scheduler_factor,
                                                   patience=s.scheduler_patience, min_lr=MIN_LR),
                 stopper, EpochLogger(logger, s.qat_epochs), keras.callbacks.CSVLogger(str(csv_path))]
    train_ds = make_dataset(fit_data, cfg, s.batch_size, training=True, seed=s.seed)
    val_ds = make_dataset(val_data, cfg, EVAL_BATCH) if val_data is not None else None
    history = qat_model.fit(train_ds, validation_data=val_ds, epochs=s.qat_epochs, callbacks=callbacks, verbose=0)
    epochs_run = len(history.history["loss"])
    logger.info(f"fine-tuned {epochs_run} epoch(s); weights of epoch {stopper.best_epoch + 1} kept "
                f"(best {monitor} {stopper.best:.4f})")
    return {"epochs_run": epochs_run, "best_epoch": stopper.best_epoch + 1, "monitor": monitor,
            "history": {k: [float(v) for v in values] for k, values in history.history.items()}}


def export_qat(qat_model, cfg: dict, data: QuantizationData, output_dir: Path, provenance: dict, log) -> dict:
    """qat_dynamic_int8.tflite from the float copy, qat_int8.tflite from the QAT graph; returns {file: card}."""
    from quantization import float_model_from_qat
    from tflite_export import export_tflite
    _, id2label = read_label_maps(data.data_path)
    sources = {"dynamic": float_model_from_qat(qat_model, cfg), "int8": qat_model}
    cards = {}
    for mode, filename in QAT_FILES.items():
        cards[filename] = export_tflite(sources[mode], cfg, output_dir / filename, id2label, mode=mode,
                                        parity_data=data.parity_inputs(), parity_labels=data.parity_labels(),
                                        representative_data=data.representative, training=provenance,
                                        label_names=read_label_names(data.data_path), log=log)
    return cards


def run_qat(s: QATSettings) -> dict:
    """One QAT run end to end; returns the metadata record (also written to <output_dir>/qat_metadata.json)."""
    from model_functional import load_model
    from optimizers import Adam
    from quantization import QuantizationData, quantize_for_training, save_qat_weights
    from tf_env import keras, tf
    output_dir = Path(s.output_dir)
    logger = setup_logging(output_dir / "qat.log", name=f"signbart.qat.{output_dir.name}")
    cfg = load_config(s.config_path)
    checkpoint = require_file(s.checkpoint, "FP32 checkpoint")
    start = time.time()
    keras.backend.clear_session()
    set_seed(s.seed)
    data = QuantizationData.load(s.data_path, cfg, s.num_calibration_samples, s.seed)
    fit_data, val_data = carve_validation(data.train, s)
    logger.info(f"QAT of {checkpoint}: {len(fit_data)} clips of {sorted(set(fit_data.users))}"
                + (f", {len(val_data)} validation clips of {sorted(set(val_data.users))}" if val_data else
                   ", no validation"))
    qat_model = compile_model(quantize_for_training(load_model(checkpoint, cfg)), cfg, s.lr,
                              optimizer=Adam(learning_rate=s.lr, clipnorm=QAT_CLIPNORM))
    record = {"checkpoint": str(checkpoint), "seed": s.seed,
              "config_path": s.config_path, "model_config": model_hparams(cfg), "git_commit": git_commit(),
              "tensorflow_version": tf.__version__, "fit_users": sorted(set(fit_data.users)),
              "fit_samples": len(fit_data), "val_users": sorted(set(val_data.users)) if val_data else [],
              "fake_quant": check_fake_quant(qat_model, logger)}
    record["settings"] = other_settings(s, record)
    record |= fine_tune(qat_model, s, cfg, fit_data, val_data, logger, output_dir / "qat_training.csv")

    weights = atomic_save(output_dir / QAT_WEIGHTS, lambda p: save_qat_weights(qat_model, p))
    qat_model.load_weights(str(weights))  # everything below uses the saved file's weights, as --export_only
    # does (which rebuilds the QAT graph from it: load_qat_model; the round trip is exact, tests/test_qat.py)
    if data.test is not None:
        record["test"] = evaluate(qat_model, data.test, cfg)
        logger.info(f"QAT Keras model on {data.test.split} ({record['test']['samples']} clips): "
                    f"top-1 {record['test']['accuracy']:.4f}, top-5 {record['test']['top5_accuracy']:.4f}")
    cards = export_qat(qat_model, cfg, data, output_dir, qat_provenance(s, checkpoint, weights, record, data),
                       logger.info)
    record |= {"weights": str(weights), "exports": export_summary(cards),
               "duration_seconds": round(time.time() - start, 1)}
    atomic_write_json(output_dir / QAT_METADATA, record)
    logger.info(f"done: {output_dir} ({record['duration_seconds']:.0f} s)")
    require_exports_parity(cards, output_dir)
    return record


def require_exports_parity(cards: dict, output_dir: Path) -> None:
    """{file name: card} of the QAT exports: an error naming those that failed parity."""
    from tflite_export import require_parity
    require_parity({output_dir / name: card for name, card in cards.items()})


def qat_provenance(s: QATSettings, checkpoint: Path, weights: Path, record: dict, data: QuantizationData) -> dict:
    """What the cards of the QAT exports record about their training."""
    from tflite_runtime import read_model_card
    return {"source_checkpoint": str(checkpoint), "quantization": "quantization-aware training",
            "qat_weights": str(weights), "qat_epochs_run": record["epochs_run"], "qat_lr": s.lr,
            "qat_batch_size": s.batch_size, "qat_seed": s.seed, "qat_fit_users": record["fit_users"],
            **data.provenance(),
            "fp32_training": read_model_card(checkpoint.parent / FP32_TFLITE).get("training", {})}


def export_summary(cards: dict) -> dict:
    return {name: {"size_bytes": card.get("size_bytes"), "parity": card["parity"]} for name, card in cards.items()}


def reexport_qat(s: QATSettings) -> dict:
    """--export_only: rebuild the QAT model from <output_dir>/qat_model_weights.h5 of an earlier run and export it
    again with the current exporter (no training); updates the exports in qat_metadata.json."""
    from quantization import QuantizationData, load_qat_model
    output_dir = Path(s.output_dir)
    meta_path = require_file(output_dir / QAT_METADATA, "QAT metadata of an earlier run")
    weights = require_file(output_dir / QAT_WEIGHTS, "QAT weights of an earlier run")
    record = read_json(meta_path, "QAT metadata")
    cfg = load_config(s.config_path)
    set_seed(s.seed)
    data = QuantizationData.load(s.data_path, cfg, s.num_calibration_samples, s.seed)
    qat_model = compile_model(load_qat_model(cfg, weights), cfg, s.lr)
    provenance = qat_provenance(s, Path(s.checkpoint), weights, record, data)
    cards = export_qat(qat_model, cfg, data, output_dir, provenance, print)
    record["exports"] = export_summary(cards)
    record["reexported"] = {"git_commit": git_commit(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_json(meta_path, record)
    require_exports_parity(cards, output_dir)
    return record


# ----------------------------------------------------------------------------------------------- CLI
def add_qat_args(ap: argparse.ArgumentParser) -> None:
    """Flags shared with train_loso_functional_qat_batch.py."""
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    ap.add_argument("--batch_size", type=training_flag("batch_size"), default=QAT_BATCH_SIZE,
                    help="QAT batch size")
    ap.add_argument("--qat_epochs", type=training_flag("epochs"), default=QAT_EPOCHS,
                    help="QAT fine-tuning epochs (at most)")
    ap.add_argument("--lr", type=training_flag("lr"), default=QAT_LR,
                    help=f"Adam learning rate (clipnorm {QAT_CLIPNORM})")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of shuffling, augmentation and calibration clips")
    add_validation_args(ap)
    ap.add_argument("--early_stop_patience", type=bounded(int, lambda v: v >= 0, ">= 0"),
                    default=QAT_EARLY_STOP_PATIENCE, help="EarlyStopping patience (epochs)")
    ap.add_argument("--num_calibration_samples", type=bounded(int, lambda v: v >= 1, ">= 1"),
                    default=CALIBRATION_CLIPS,
                    help="training clips calibrating qat_int8.tflite's tensors that have no FakeQuant range")
    ap.add_argument("--distribute", choices=CHOICES, default=DISTRIBUTE,
                    help="QAT runs on one device: mirrored is refused (tfmot does not support "
                         "tf.distribute)")
    add_verbose_flag(ap)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--data_path", required=True, help="dataset folder with train/ and test/ (LOSO) or all/ (full)")
    ap.add_argument("--checkpoint", required=True, help="trained FP32 final_model.h5")
    ap.add_argument("--output_dir", default="",
                    help="output folder ('': exports/qat[_<prefix>][/<user>] of the checkpoint's run tree)")
    add_qat_args(ap)
    ap.add_argument("--export_only", action="store_true",
                    help="no training: re-export the QAT weights an earlier run saved in the output folder")
    args = ap.parse_args(argv)
    refuse_for_qat(args.distribute)
    output_dir = args.output_dir or str(export_dir_for(args.checkpoint, "qat"))
    settings = settings_from_args(args, QATSettings, data_path=args.data_path, checkpoint=args.checkpoint,
                                  output_dir=output_dir)
    record = (reexport_qat if args.export_only else run_qat)(settings)
    print(f"QAT exports in {output_dir}: {', '.join(record['exports'])}")


if __name__ == "__main__":
    sys.exit(main())
