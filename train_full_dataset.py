"""Full-dataset training: one FP32 SignBART on every clip of <base_data_path>/all.

Nothing is held out, so nothing is evaluated after training except the TFLite parity check (on training clips).
Experiment name: --exp_name, else <dataset_name>_full; outputs go to <output_root>/<dataset_name>/full/
(checkpoints/<exp>/final_model.h5, final_model_fp32.tflite, ...; see main_functional.py).

    python train_full_dataset.py --config_path configs/arabic-asl-65kpts.yaml \\
        --base_data_path data/arabic-asl-65kpts --epochs 80 --lr 2e-4 --seed 42 \\
        --dataset_name arabic_asl --output_root outputs
"""
from __future__ import annotations

import argparse
import sys

from main_functional import add_training_args, settings_from_args, train
from recipes import DEFAULT_DATASET_NAME
from runs import full_experiment_name
from util import HelpFormatter, cli


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--base_data_path", required=True, help="dataset root holding all/GXX/*.pkl and the label maps")
    ap.add_argument("--exp_name", default="", help="experiment name ('': <dataset_name>_full)")
    add_training_args(ap)
    ap.set_defaults(dataset_name=DEFAULT_DATASET_NAME)
    args = ap.parse_args(argv)
    settings = settings_from_args(args, experiment_name=args.exp_name or full_experiment_name(args.dataset_name),
                                  data_path=args.base_data_path, dataset_name=args.dataset_name, run_type="full",
                                  train_split="all", test_split=None)
    record = train(settings)
    print(f"done: {record['checkpoint_dir']} ({record['duration_seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
