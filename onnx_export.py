"""ONNX export of one trained checkpoint: model_fp32.onnx and model_int8.onnx beside its PTQ models, for ONNX
Runtime (servers, ONNX Runtime Mobile and Web, C#/Java/C++ back ends).

  fp32   model_fp32.onnx   tf2onnx, opset 17, the app signature with a dynamic batch axis: keypoints [batch, 64,
                           K, 2], attention_mask [batch, 64] -> logits [batch, C] (index 0), embedding [batch, D]
  int8   model_int8.onnx   ONNX Runtime static QDQ quantization (uint8 activations, int8 weights) calibrated on
                           the same real training clips as the TFLite PTQ (--num_calibration_samples, --seed)
Each file is loaded and run in ONNX Runtime and compared with Keras on the held-out clips (fp32: max |dlogit| <=
1e-4; int8: Keras's class on >= 99 % of the clips Keras decides; embeddings within bounds). A file that fails is
not kept, and the run ends with one line naming it and exit code 1. Each kept file gets its own model card
(<name>.onnx.json) and labels.txt. onnx_convert.py has the details; docs/onnx.md the figures.

The dataset folder is --data_path, else the one training recorded in the checkpoint folder's metadata.json. The
output folder is --output_dir, else exports/ptq[_<prefix>][/<user>] of the run tree holding the checkpoint, as
ptq_export.py (which writes the same files with --onnx_modes, in the pipeline: ONNX=1).

    python onnx_export.py --config_path configs/arabic-asl-65kpts.yaml \\
        --checkpoint outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model.h5
    python evaluate_tflite_single.py --data_path data/arabic-asl-90kpts_LOSO_user01 \\
        --tflite_path outputs/arabic_asl/loso/exports/ptq/user01/model_fp32.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptq_export import run_ptq
from recipes import CALIBRATION_CLIPS, DEFAULT_SEED, ONNX_MODES
from runs import export_dir_for, parse_onnx_modes
from util import HelpFormatter, add_verbose_flag, bounded, cli


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="trained final_model.h5")
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    ap.add_argument("--data_path", default="", help="dataset folder ('': the one in the checkpoint's metadata.json)")
    ap.add_argument("--output_dir", default="",
                    help="output folder ('': exports/ptq[_<prefix>][/<user>] of the checkpoint's run tree)")
    ap.add_argument("--modes", default=ONNX_MODES, help="comma list of fp32, int8, or 'all'")
    ap.add_argument("--num_calibration_samples", type=bounded(int, lambda v: v >= 1, ">= 1"),
                    default=CALIBRATION_CLIPS, help="training clips calibrating the int8 model")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed choosing the calibration clips")
    add_verbose_flag(ap)
    args = ap.parse_args(argv)
    modes = parse_onnx_modes(args.modes)
    output_dir = Path(args.output_dir) if args.output_dir else export_dir_for(args.checkpoint, "ptq")
    run_ptq(args.config_path, args.checkpoint, args.data_path, output_dir, [], args.num_calibration_samples,
            args.seed, onnx_modes=modes)


if __name__ == "__main__":
    sys.exit(main())
