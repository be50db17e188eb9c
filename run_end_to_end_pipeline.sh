#!/usr/bin/env bash
# End-to-end pipeline (foundation stage): install the environment, generate the embedded demo dataset and
# load/summarize it with the training preprocessing. Later stages (extraction, LOSO, training, PTQ/QAT, results)
# are added by the pipeline issue.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash setup_env.sh
PY=.venv/bin/python
DATA_DIR="${DATA_DIR:-data/demo-65kpts}"
CONFIG="${CONFIG:-configs/demo-65kpts.yaml}"
[[ -f "$DATA_DIR/label2id.json" ]] || $PY make_demo_dataset.py --output_dir "$DATA_DIR"
$PY dataset.py --config_path "$CONFIG" --data_path "$DATA_DIR"
