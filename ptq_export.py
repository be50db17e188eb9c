"""Post-training quantization (PTQ) of one trained checkpoint into every TFLite mode.

Modes (--modes, comma list; default `dynamic` as the reference) and the files they write in --output_dir:
  fp32      model_fp32.tflite          no optimization
  dynamic   model_dynamic_int8.tflite  int8 weights, float activations (dynamic range)
  float16   model_float16.tflite       float16 weights, float32 arithmetic
  int8      model_int8.tflite          full integer: int8 weights and activations, float32 input/output
  int8_io   model_int8_io.tflite       full integer with int8 input/output too (NPUs, Edge TPU)
  int16x8   model_int16x8.tflite       int16 activations, int8 weights
All use builtin ops only, batch 1, T = 64 and the named signature of tflite_export.py. --onnx_modes fp32,int8 also
writes model_fp32.onnx / model_int8.onnx (onnx_convert.py: ONNX Runtime, dynamic batch; int8 calibrated on the
same clips) in the same folder, each checked against Keras and kept only if it passes. The integer modes are
calibrated on REAL training clips of the checkpoint's dataset (normalized, padded, with their length masks;
never the held-out signer's). Every model gets a card (<model>.json) with its size, ops and parity against the
Keras model on the held-out clips: max |dlogit|, argmax agreement, top-1 of both. A model that
fails its parity check (tflite_export.check_parity) is still written, with FAIL in its card; the
run then ends with one line naming it and exit code 1.

The dataset folder is --data_path, else the one training recorded in the checkpoint folder's metadata.json. The
output folder is --output_dir, else exports/ptq[_<prefix>][/<user>] of the run tree holding the checkpoint
(<root>/<dataset>/<run_type>/checkpoints/<experiment>/final_model.h5 -> <root>/<dataset>/<run_type>/exports/..., runs.py).

    python ptq_export.py --config_path configs/arabic-asl-65kpts.yaml --modes all \\
        --checkpoint outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model.h5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import load_config
from dataset import read_label_maps, read_label_names
from recipes import CALIBRATION_CLIPS, ONNX_MODES, PTQ_MODES
from recipes import DEFAULT_SEED
from runs import (CHECKPOINT_METADATA, FP32_TFLITE, PTQ_FILES, export_dir_for, parse_onnx_modes,
                  parse_ptq_modes, require_file)
from util import HelpFormatter, UserError, add_verbose_flag, bounded, cli, read_json, set_seed


def parse_modes(arg: str) -> list[str]:
    """'dynamic,int8' or 'all' -> mode list (runs.parse_ptq_modes), each a tflite_export converter mode."""
    from tflite_export import CONVERTER_MODES
    modes = parse_ptq_modes(arg, "--modes")
    unknown = [m for m in modes if m not in CONVERTER_MODES]
    if unknown:
        raise UserError(f"--modes: unknown mode(s) {unknown}; choose from {list(CONVERTER_MODES)}")
    return modes


def recorded_data_path(checkpoint: Path) -> str:
    """The data_path training recorded in <checkpoint folder>/metadata.json."""
    meta = checkpoint.parent / CHECKPOINT_METADATA
    if not meta.is_file():
        raise UserError(f"no --data_path given and {meta} not found: pass --data_path")
    record = read_json(meta, "training metadata")
    data_path = record.get("data_path") if isinstance(record, dict) else None
    if not isinstance(data_path, str):
        raise UserError(f"{meta}: records no data_path: pass --data_path")
    return data_path


def export_ptq(model: keras.Model | Exportable, cfg: dict, data: QuantizationData, output_dir: Path,
               modes: list[str], provenance: dict, log=print) -> dict:
    """Write one .tflite (+ card) per mode into output_dir; returns {mode: card}. `model`: an
    Exportable shares its trace and parity reference with the caller's other exports (ONNX)."""
    from tflite_export import export_tflite
    _, id2label = read_label_maps(data.data_path)
    cards = {}
    for mode in modes:
        cards[mode] = export_tflite(model, cfg, output_dir / PTQ_FILES[mode], id2label, mode=mode,
                                    parity_data=data.parity_inputs(), parity_labels=data.parity_labels(),
                                    representative_data=data.representative, training=provenance,
                                    label_names=read_label_names(data.data_path), log=log)
    return cards


def run_ptq(config_path: str, checkpoint: str, data_path: str, output_dir: Path, modes: list[str],
            num_calibration_samples: int, seed: int, log=print, onnx_modes: list[str] = ()) -> dict:
    """Load the checkpoint and its dataset, then export every mode (and every ONNX mode: onnx_convert);
    returns {mode: card} of the TFLite models. One ParityFailed line names every export that failed."""
    from model_functional import load_model
    from quantization import QuantizationData
    from tflite_runtime import read_model_card
    cfg = load_config(config_path)
    checkpoint = require_file(checkpoint, "checkpoint")
    set_seed(seed)
    data = QuantizationData.load(data_path or recorded_data_path(checkpoint), cfg, num_calibration_samples, seed)
    log(data.describe())
    provenance = {"source_checkpoint": str(checkpoint), "quantization": "post-training", **data.provenance(),
                  "fp32_training": read_model_card(checkpoint.parent / FP32_TFLITE).get("training",
                                                                                         {})}
    from tflite_export import Exportable, ParityFailed, require_parity
    model = Exportable(load_model(checkpoint, cfg))  # every export below shares its traces
    cards = export_ptq(model, cfg, data, output_dir, modes, provenance, log)
    failed = []
    if onnx_modes:
        try:
            export_onnx_models(model, cfg, data, output_dir, onnx_modes, provenance, log)
        except ParityFailed as e:
            failed.append(str(e))
    try:
        require_parity({output_dir / PTQ_FILES[mode]: card for mode, card in cards.items()})
    except ParityFailed as e:
        failed.insert(0, str(e))
    if failed:
        raise ParityFailed("; ".join(failed))
    return cards


def export_onnx_models(model: keras.Model | Exportable, cfg: dict, data: QuantizationData, output_dir: Path,
                       modes: list[str], provenance: dict, log=print) -> dict:
    """onnx_convert.export_onnx with the PTQ's data: the same calibration and parity clips."""
    from onnx_convert import export_onnx
    _, id2label = read_label_maps(data.data_path)
    return export_onnx(model, cfg, output_dir, id2label, modes, parity_data=data.parity_inputs(),
                       parity_labels=data.parity_labels(), representative_data=data.representative,
                       label_names=read_label_names(data.data_path), training=provenance, log=log)


def add_quantization_args(ap: argparse.ArgumentParser) -> None:
    """Flags shared with ptq_export_batch.py."""
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    ap.add_argument("--modes", default=PTQ_MODES, help=f"comma list of {list(PTQ_FILES)}, or 'all'")
    ap.add_argument("--num_calibration_samples", type=bounded(int, lambda v: v >= 1, ">= 1"),
                    default=CALIBRATION_CLIPS,
                    help="training clips calibrating the integer modes (int8, int8_io, int16x8)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed choosing the calibration clips")
    ap.add_argument("--onnx_modes", default="",
                    help=f"also these ONNX models (comma list, e.g. {ONNX_MODES}; '': none; onnx_export.py)")
    add_verbose_flag(ap)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="trained final_model.h5")
    ap.add_argument("--data_path", default="", help="dataset folder ('': the one in the checkpoint's metadata.json)")
    ap.add_argument("--output_dir", default="",
                    help="output folder ('': exports/ptq[_<prefix>][/<user>] of the checkpoint's run tree)")
    add_quantization_args(ap)
    args = ap.parse_args(argv)
    modes = parse_modes(args.modes)
    onnx_modes = parse_onnx_modes(args.onnx_modes) if args.onnx_modes else []
    output_dir = Path(args.output_dir) if args.output_dir else export_dir_for(args.checkpoint, "ptq")
    run_ptq(args.config_path, args.checkpoint, args.data_path, output_dir, modes, args.num_calibration_samples,
            args.seed, onnx_modes=onnx_modes)


if __name__ == "__main__":
    sys.exit(main())
