"""Quick QAT demo for smoke-testing an install: toy model -> QAT -> export.

Builds an untrained SignBART from --config_path, wraps it for quantization-aware training (quantization.py),
checks that every Dense kernel is fake-quantized, runs one short epoch of QAT on random toy clips (so the quantizer
ranges are set), and writes into --output_dir:
  signbart_fp32.tflite            the float model, no optimization
  signbart_dynamic_range.tflite   the float model, dynamic-range int8 weights
  signbart_qat_int8.tflite        the QAT graph, full integer (calibrated on the toy clips)
each with its card (<name>.json: size, ops, parity against Keras on the toy clips). --save_keras also writes
signbart_fp32.h5 and signbart_qat_weights.h5 (QAT models are saved as weights; quantization.load_qat_model).
Random clips, random labels: this checks the tool chain, not accuracy. Real exports: ptq_export.py and
train_loso_functional_qat.py.

    python run_qat_export.py --config_path configs/arabic-asl-90kpts.yaml --output_dir exports/qat_demo \\
        --save_keras --seed 42
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from config import load_config, num_keypoints
from main_functional import compile_model
from preprocessing import pad_clip
from recipes import DEFAULT_SEED, QAT_CLIPNORM
from util import HelpFormatter, add_verbose_flag, atomic_save, bounded, cli, set_seed

DEMO_EXPORTS = {  # file -> (model, converter mode)
    "signbart_fp32.tflite": ("fp32", "fp32"),
    "signbart_dynamic_range.tflite": ("fp32", "dynamic"),
    "signbart_qat_int8.tflite": ("qat", "int8"),
}


def toy_clips(cfg: dict, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random clips of 8..64 frames in [0, 1], padded with their length masks, and random labels."""
    rng = np.random.default_rng(seed)
    pairs = [pad_clip(rng.uniform(0, 1, (rng.integers(8, 65), num_keypoints(cfg), 2))) for _ in range(count)]
    labels = rng.integers(0, cfg["num_labels"], count).astype(np.int32)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), labels


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    ap.add_argument("--output_dir", default="exports/qat_demo", help="output folder")
    ap.add_argument("--save_keras", action="store_true", help="also save the FP32 .h5 and the QAT weights")
    ap.add_argument("--clips", type=bounded(int, lambda v: v >= 1, ">= 1"), default=32,
                    help="random toy clips (QAT steps, calibration, parity)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the weights and the toy clips")
    add_verbose_flag(ap)
    args = ap.parse_args(argv)
    from model_functional import build_model
    from quantization import (dense_kernels, fake_quantized_kernels, quantize_for_training,
                              save_qat_weights)
    from optimizers import Adam
    from tflite_export import Exportable, export_tflite, require_parity
    cfg, output_dir = load_config(args.config_path), Path(args.output_dir)
    set_seed(args.seed)
    keypoints, masks, labels = toy_clips(cfg, args.clips, args.seed)
    models = {"fp32": build_model(cfg)}
    models["qat"] = compile_model(quantize_for_training(models["fp32"]), cfg, 1e-4,
                                  optimizer=Adam(learning_rate=1e-4, clipnorm=QAT_CLIPNORM))
    covered = fake_quantized_kernels(models["qat"])
    print(f"QAT graph: {len(covered)}/{len(dense_kernels(models['qat']))} Dense kernels fake-quantized")
    models["qat"].fit({"keypoints": keypoints, "attention_mask": masks}, labels, batch_size=4, epochs=1, verbose=0)

    id2label = {i: f"class_{i}" for i in range(cfg["num_labels"])}
    sources = {name: Exportable(model) for name, model in models.items()}  # fp32 exports twice: one trace
    cards = {output_dir / filename: export_tflite(
        sources[source], cfg, output_dir / filename, id2label, mode=mode,
        parity_data=(keypoints, masks), representative_data=(keypoints, masks),
        training={"demo": "untrained toy model, random clips"})
        for filename, (source, mode) in DEMO_EXPORTS.items()}
    if args.save_keras:
        atomic_save(output_dir / "signbart_fp32.h5", lambda p: models["fp32"].save(p, include_optimizer=False))
        atomic_save(output_dir / "signbart_qat_weights.h5", lambda p: save_qat_weights(models["qat"], p))
        print(f"wrote {output_dir / 'signbart_fp32.h5'} and {output_dir / 'signbart_qat_weights.h5'}")
    require_parity(cards)  # after every file is written: one line naming a failed export, exit 1


if __name__ == "__main__":
    sys.exit(main())
