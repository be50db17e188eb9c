"""Compare FP32, PTQ and QAT .tflite models (and any other export) side by side on the same clips.

One table: top-1, top-5, agreement of each model's predictions with the FP32 model's, file size, invoke time
(median and p90 per clip, one thread), end-to-end time per clip and loss. The split is read and preprocessed once
(as in training); the config comes from the FP32 model's card unless --config_path is given, and every other
model's card must agree with it.

    python test_tflite_models.py --data_path data/arabic-asl-65kpts_LOSO_user01 \\
        --fp32_tflite outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite \\
        --ptq_tflite outputs/arabic_asl/loso/exports/ptq/user01/model_dynamic_int8.tflite \\
        --qat_tflite outputs/arabic_asl/loso/exports/qat/user01/qat_dynamic_int8.tflite \\
        --tflite PTQ-int8=outputs/arabic_asl/loso/exports/ptq/user01/model_int8.tflite

--mirror evaluates every clip mirrored: right-handed signers as the left-handed signers they would be.
"""
from __future__ import annotations

import argparse

from evaluation import (SUMMARY_METRICS, add_evaluation_args, csv_text, evaluate_tflite,
                        format_cell, load_eval_set, summary_row, text_table)
from runs import require_file
from util import UserError, atomic_write_text, cli
from tflite_runtime import check_card_matches, resolve_config


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32_tflite", required=True, help="the FP32 model (the reference for agreement)")
    ap.add_argument("--ptq_tflite", default="", help="the PTQ model (default: none)")
    ap.add_argument("--qat_tflite", default="", help="the QAT model (default: none)")
    ap.add_argument("--tflite", action="append", default=[], metavar="TAG=PATH",
                    help="any further model, repeatable, e.g. PTQ-int8=.../model_int8.tflite")
    add_evaluation_args(ap, config_default="the FP32 model's card")
    ap.add_argument("--output_csv", default="", help="also write the table as CSV to this file (default: none)")
    ap.add_argument("--mirror", action="store_true",
                    help="mirror every clip first (x -> 1 - x, left/right points swapped): the clips as signers of "
                         "the other hand would give them, e.g. right-handed signers evaluated as left-handed ones")
    return ap.parse_args(argv)


def models_to_compare(args) -> dict:
    """{tag: path} in table order; every path must exist."""
    models = {"FP32": args.fp32_tflite, "PTQ": args.ptq_tflite, "QAT": args.qat_tflite}
    for item in args.tflite:
        tag, sep, path = item.partition("=")
        if not sep or not tag or not path:
            raise UserError(f"--tflite expects TAG=PATH, got {item!r}")
        if tag in models:
            raise UserError(f"--tflite: tag {tag!r} used twice")
        models[tag] = path
    return {tag: require_file(path, f"{tag} TFLite model") for tag, path in models.items() if path}


def comparison(models: dict, clips, num_threads: int) -> list[dict]:
    """One row per model: {'model', 'path', 'mode', 'samples', **SUMMARY_METRICS}."""
    reference, rows = None, []
    for tag, path in models.items():
        results = evaluate_tflite(path, clips, num_threads)
        reference = reference or results  # the first model (FP32) is the reference
        rows.append({"model": tag, "path": str(path), "mode": results["mode"], "samples": results["samples"]}
                    | summary_row(results, reference))
    return rows


@cli
def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    models = models_to_compare(args)
    cfg = resolve_config(models["FP32"], args.config_path)
    for path in models.values():
        check_card_matches(cfg, path)
    clips = load_eval_set(args.data_path, args.split, cfg, args.max_samples, args.seed, models["FP32"],
                          mirror=args.mirror)
    rows = comparison(models, clips, args.num_threads)
    print(f"{args.data_path}/{args.split}: {len(clips)} clips{', mirrored' if args.mirror else ''}, "
          f"{args.num_threads} interpreter thread(s)")
    header = ["Model", *(title for title, _ in SUMMARY_METRICS.values()), "Path"]
    print(text_table(header, [[r["model"], *(format_cell(r[k], fmt) for k, (_, fmt) in SUMMARY_METRICS.items()),
                               r["path"]] for r in rows]))
    if args.output_csv:
        atomic_write_text(args.output_csv, csv_text(rows))
        print(f"wrote {args.output_csv}")
    return rows


if __name__ == "__main__":
    main()
