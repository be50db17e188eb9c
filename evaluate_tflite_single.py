"""Evaluate one .tflite model (any export mode: float or integer I/O) on one dataset split.

Prints top-1, top-5, loss, per-class accuracy, file size, the interpreter's invoke time alone (median and p90 per
clip, one thread) and the end-to-end time per clip (reading + preprocessing + model load + run); with --output, the
full result (including the confusion matrix and every prediction) is written as JSON. Clips go through the same
preprocessing as training (dataset.load_split). The config and labels come from the model card beside the .tflite
unless --config_path is given.

    python evaluate_tflite_single.py --data_path data/arabic-asl-65kpts_LOSO_user01 --split test \\
        --tflite_path outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite
"""
from __future__ import annotations

import argparse

from evaluation import add_evaluation_args, evaluate_tflite, format_results, load_eval_set
from util import atomic_write_json, cli
from tflite_runtime import resolve_config


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tflite_path", required=True, help="the .tflite model")
    add_evaluation_args(ap)
    ap.add_argument("--output", default="", help="write the full result as JSON to this file (default: none)")
    return ap.parse_args(argv)


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = resolve_config(args.tflite_path, args.config_path)
    clips = load_eval_set(args.data_path, args.split, cfg, args.max_samples, args.seed, args.tflite_path)
    results = evaluate_tflite(args.tflite_path, clips, args.num_threads)
    print(format_results(results))
    if args.output:
        atomic_write_json(args.output, results)
        print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
