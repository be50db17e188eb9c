"""Quantization-aware training of every LOSO model: train_loso_functional_qat.py per holdout.

For each holdout user: the FP32 checkpoint is exactly <root>/<dataset>/loso/checkpoints/[<prefix>_]<dataset>_LOSO_<user>/
final_model.h5 (a missing one is an error naming that path), the data folder is <base_data_path>_LOSO_<user>
(fine-tuning on its train/, optional validation carved from its TRAINING signers, evaluation on its test/), and
the outputs go to <output_base_dir>/<user>/, by default <root>/<dataset>/loso/exports/qat[_<prefix>]/<user>/.
The folds run in this process one after the other (each re-seeded, Keras session cleared); a failing fold is
reported without stopping the others (exit code 1 if any failed).

    python train_loso_functional_qat_batch.py --config_path configs/arabic-asl-65kpts.yaml \\
        --base_data_path data/arabic-asl-65kpts --batch_size 4 --qat_epochs 20 --lr 5e-5 --no_validation
"""
from __future__ import annotations

import argparse
import sys

from distribute import refuse_for_qat
from main_functional import settings_from_args
from runs import add_loso_args, run_loso_batch
from util import HelpFormatter, cli
from train_loso_functional_qat import QATSettings, add_qat_args, run_qat


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_loso_args(ap, "qat")
    add_qat_args(ap)
    args = ap.parse_args(argv)
    refuse_for_qat(args.distribute)

    def fine_tune(fold, logger):
        run_qat(settings_from_args(args, QATSettings, data_path=str(fold.data_path),
                                   checkpoint=str(fold.checkpoint), output_dir=str(fold.output_dir)))
    return run_loso_batch(args, "qat", "QAT", fine_tune)


if __name__ == "__main__":
    sys.exit(main())
