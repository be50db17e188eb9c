"""The training and quantization recipes: every default number defined once, read by the scripts'
flags, the pipeline shell (through the CLI below) and the docs.

  FP32 training     80 epochs, AdamW lr 2e-4, batch = the config's batch_size (1)
  QAT fine-tuning   20 epochs (at most), Adam lr 5e-5 (clipnorm 1.0), batch 4
  PTQ               mode `dynamic`; integer modes calibrated on 200 training clips
  seed 42, holdouts user01,user08,user11, dataset name arabic_asl
The demo pipeline (make_demo_dataset.py data) uses smaller budgets, chosen so that its LOSO models
are clearly above chance (10 %) in about 10 minutes on 2 CPU cores: 20 epochs at lr 5e-4 and
batch 8, QAT 2 epochs at batch 8, holdouts user01,user02, dataset name demo.

    python recipes.py            # the pipeline's defaults as NAME=value lines
    python recipes.py --demo     # the same for the demo dataset
"""
from __future__ import annotations

import argparse
import sys

from runs import DEFAULT_DATASET_NAME, DEFAULT_HOLDOUTS, DEFAULT_SEED, HelpFormatter

FP32_EPOCHS = 80
FP32_LR = 2e-4
QAT_EPOCHS = 20
QAT_BATCH_SIZE = 4
QAT_LR = 5e-5
PTQ_MODES = "dynamic"
CALIBRATION_CLIPS = 200

DEMO = {"EPOCHS": 20, "LR": 5e-4, "BATCH_SIZE": 8, "QAT_EPOCHS": 2, "QAT_BATCH_SIZE": 8,
        "HOLDOUTS": "user01,user02", "DATASET_NAME": "demo"}


def pipeline_defaults(demo: bool = False) -> dict[str, str]:
    """The pipeline shell's settings that have a recipe default, by variable name
    (BATCH_SIZE '' = the config's batch_size)."""
    defaults = {"EPOCHS": FP32_EPOCHS, "LR": FP32_LR, "BATCH_SIZE": "", "QAT_EPOCHS": QAT_EPOCHS,
                "QAT_BATCH_SIZE": QAT_BATCH_SIZE, "QAT_LR": QAT_LR, "PTQ_MODES": PTQ_MODES,
                "SEED": DEFAULT_SEED, "HOLDOUTS": DEFAULT_HOLDOUTS,
                "DATASET_NAME": DEFAULT_DATASET_NAME}
    if demo:
        defaults |= DEMO
    return {name: str(value) for name, value in defaults.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--demo", action="store_true", help="the demo dataset's budgets")
    args = ap.parse_args(argv)
    for name, value in pipeline_defaults(args.demo).items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
