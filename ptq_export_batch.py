"""Post-training quantization of every LOSO model: ptq_export.py for each held-out signer.

For each holdout user the checkpoint is exactly <root>/<dataset>/loso/checkpoints/[<prefix>_]<dataset>_LOSO_<user>/
final_model.h5 (a missing one is an error naming that path, never another run's model), the data folder is
<base_data_path>_LOSO_<user> (calibration from its train/, parity on its test/), and the models go to
<output_base_dir>/<user>/, by default <root>/<dataset>/loso/exports/ptq[_<prefix>]/<user>/. The folds run in this
process one after the other; a failing fold is reported without stopping the others (exit code 1 if any failed).

    python ptq_export_batch.py --config_path configs/arabic-asl-65kpts.yaml \\
        --base_data_path data/arabic-asl-65kpts --holdouts user01,user08,user11 --modes all
"""
from __future__ import annotations

import argparse
import sys

from ptq_export import add_quantization_args, parse_modes, run_ptq
from runs import add_loso_args, parse_onnx_modes, run_loso_batch
from util import HelpFormatter, cli


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_loso_args(ap, "ptq")
    add_quantization_args(ap)
    args = ap.parse_args(argv)
    modes = parse_modes(args.modes)
    onnx_modes = parse_onnx_modes(args.onnx_modes) if args.onnx_modes else []

    def export(fold, logger):
        from tf_env import keras
        keras.backend.clear_session()
        run_ptq(args.config_path, fold.checkpoint, fold.data_path, fold.output_dir, modes,
                args.num_calibration_samples, args.seed, log=logger.info, onnx_modes=onnx_modes)
    return run_loso_batch(args, "ptq", f"PTQ ({', '.join(modes)})", export)


if __name__ == "__main__":
    sys.exit(main())
