"""Leave-one-signer-out training: one FP32 SignBART per held-out signer.

For each holdout user, trains on <base_data_path>_LOSO_<user>/train (the held-out signer's files are never read
while training) and, after training, evaluates once on <base_data_path>_LOSO_<user>/test. Experiment name:
[<exp_prefix>_]<dataset_name>_LOSO_<user>; outputs go to <output_root>/<dataset_name>/loso/ (see main_functional.py).

The folds run in this process, one after the other (`main_functional.train`, which clears the Keras session and
re-seeds for every fold): no TensorFlow re-import per fold, and one failing fold is reported, in one
line unless it is a bug, without stopping the others. Exit code: 0 when every fold trained; 1 when
a fold failed in training (a bug, a loss that is not finite, a failed parity check); 2 when every
failed fold was refused or had bad input (another run owns its folder, a finished experiment
without --overwrite, a missing split, a full disk).

    python train_loso_functional.py --config_path configs/arabic-asl-65kpts.yaml \\
        --base_data_path data/arabic-asl-65kpts --holdout_only user01 --epochs 80 --lr 2e-4 --no_validation \\
        --dataset_name arabic_asl --output_root outputs
"""
from __future__ import annotations

import argparse
import sys

from main_functional import add_training_args, settings_from_args, train
from recipes import DEFAULT_DATASET_NAME
from runs import add_fold_args, loso_data_path, loso_experiment_name, parse_holdouts
from util import HelpFormatter, UserError, cli, exit_code, one_line, setup_logging


def train_fold(args, user: str, logger) -> dict | int:
    """Train one holdout; returns its metadata record, or the exit code of its failure (logged)."""
    data_path = loso_data_path(args.base_data_path, user)
    experiment = loso_experiment_name(args.dataset_name, user, args.exp_prefix)
    try:
        if not data_path.is_dir():
            raise UserError(f"LOSO split for {user} not found: {data_path} (build it with fix_loso.py)")
        settings = settings_from_args(args, experiment_name=experiment, data_path=str(data_path),
                                      dataset_name=args.dataset_name, run_type="loso", holdout_user=user)
        return train(settings)
    except Exception as e:  # a failing fold must not cost the other folds
        line = one_line(e)
        if line is None:  # a bug: its traceback
            logger.exception(f"{experiment}: training failed")
            return 1
        logger.error(f"{experiment}: {line}")
        return exit_code(e)


def summary_line(user: str, record: dict | int) -> str:
    if isinstance(record, int):
        return f"{user}: FAILED"
    test = record.get("test", {})
    return (f"{user}: test top-1 {test.get('accuracy', float('nan')):.4f}, top-5 {test.get('top5_accuracy', float('nan')):.4f}"
            f" ({test.get('samples', 0)} clips), {record['seconds_per_epoch'] or 0:.1f} s/epoch, {record['checkpoint_dir']}")


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_fold_args(ap)
    add_training_args(ap)
    ap.set_defaults(dataset_name=DEFAULT_DATASET_NAME)
    args = ap.parse_args(argv)
    users = parse_holdouts(args.holdouts, args.base_data_path, args.holdout_only)
    logger = setup_logging(name="signbart.loso")
    logger.info(f"LOSO training for {len(users)} holdout(s): {', '.join(users)}")
    records = {user: train_fold(args, user, logger) for user in users}
    for user, record in records.items():
        logger.info(summary_line(user, record))
    failures = [r for r in records.values() if isinstance(r, int)]
    return min(failures) if failures else 0  # 1 if any fold failed in training, else 2


if __name__ == "__main__":
    sys.exit(main())
