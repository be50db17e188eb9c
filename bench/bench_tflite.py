"""TFLite and ONNX Runtime latency of every export mode: median and p90 invoke ms per clip, model size and peak
memory, side by side in one run.

The models are converted here with the exports' own converter and file names (tflite_export.convert,
ptq_export.PTQ_FILES; modes fp32, dynamic, float16, int8, int8_io, int16x8) from --checkpoint, or from a freshly
built model with seeded random weights when no checkpoint is given (latency and size depend on the architecture,
not on the weights' values). The integer modes are calibrated on --calibration_clips real clips of every signer
but --holdout (quantization.representative_clips); the invokes are timed on the held-out signer's real clips,
normalized and zero-padded to 64 frames as the app feeds them. --models times existing .tflite files instead
(e.g. a QAT export, or .onnx files; --config_path must then match their keypoints).

--onnx_modes (default fp32,int8) also converts the model to ONNX with the export's own code (onnx_convert.py:
onnx-fp32, and onnx-int8 calibrated on the same clips) and times each .onnx in ONNX Runtime the same way, one
intra-op thread, same clips, fresh process; '' leaves ONNX out. An .onnx is also timed in batches of --batch clips
(batch ms/clip: what a server that batches requests pays per clip; the .tflite exports take batch 1).

Each model is timed by bench/time_tflite.py in a FRESH process, one after another, at --num_threads
(default 1: two threads never helped this model on a 2-core machine and were very noisy), so no
model's memory is counted for another. That file's docstring defines the memory
figures: model_rss_mb is what loading and running the model adds to the process; peak_rss_mb includes the Python,
numpy and TensorFlow imports.

    python bench/bench_tflite.py                                          # fresh 65-kpt model, MLR511 clips
    python bench/bench_tflite.py --checkpoint outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model.h5
    python bench/bench_tflite.py --models a.tflite,b.tflite --holdout user01
    python bench/bench_tflite.py --config_path CFG --data_path DATA --modes fp32 --clips 4 --repeats 1 \\
        --calibration_clips 4 --output_dir /tmp/bench                     # smallest setting (test_bench.py)

Results: common.py (--output_dir).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import common
from config import load_config
from dataset import load_split
from main_functional import subset
from model_functional import build_model, load_model
from ptq_export import PTQ_FILES, parse_modes
from quantization import representative_clips
from recipes import CALIBRATION_CLIPS, ONNX_MODES
from recipes import DEFAULT_SEED
from runs import ONNX_FILES, comma_list, parse_onnx_modes, require_file
from util import HelpFormatter, UserError, atomic_write_bytes, cli, set_seed
from tflite_export import convert

BENCH = "tflite"
WORKER = Path(__file__).resolve().parent / "time_tflite.py"
COLUMNS = {"model": "model", "runtime": "runtime", "size_mb": "size MB", "median_ms": "median ms",
           "p90_ms": "p90 ms", "mean_ms": "mean ms", "clips": "invokes", "batch_ms_per_clip": "batch ms/clip",
           "model_rss_mb": "model RSS MB", "peak_rss_mb": "peak RSS MB"}


def load_clips(args, cfg: dict) -> tuple[tuple, tuple]:
    """(timing clips of the held-out signer, calibration clips of the others), each (keypoints, masks) padded."""
    data = load_split(args.data_path, "all", cfg)
    held_out = [i for i, user in enumerate(data.users) if user == args.holdout]
    if not held_out:
        raise UserError(f"{args.data_path}: no clip of --holdout {args.holdout} (signers: {sorted(set(data.users))})")
    others = [i for i, user in enumerate(data.users) if user != args.holdout]
    keypoints, masks, _ = subset(data, held_out[:args.clips or None], "test").padded(cfg)  # (N, 64, K, 2), (N, 64)
    calibration = representative_clips(subset(data, others, "train"), cfg, args.calibration_clips, args.seed)
    return (keypoints, masks), calibration


def convert_models(args, cfg: dict, calibration: tuple, folder: Path) -> list[tuple[str, Path]]:
    """[(mode, <folder>/<ptq_export file name of the mode>)], from the checkpoint or a fresh seeded model."""
    set_seed(args.seed)
    model = load_model(require_file(args.checkpoint, "checkpoint"), cfg) if args.checkpoint else build_model(cfg)
    models = []
    for mode in args.modes:
        path = folder / PTQ_FILES[mode]
        atomic_write_bytes(path, convert(model, cfg, mode, calibration))
        models.append((mode, path))
        print(f"converted {mode}: {path.stat().st_size / 2**20:.2f} MB", flush=True)
    if args.onnx_modes:
        from onnx_convert import convert_fp32, quantize_int8
        fp32 = convert_fp32(model, cfg)
        for mode in args.onnx_modes:
            path = folder / ONNX_FILES[f"onnx-{mode}"]
            atomic_write_bytes(path, fp32 if mode == "fp32" else quantize_int8(fp32, calibration))
            models.append((f"onnx-{mode}", path))
            print(f"converted onnx-{mode}: {path.stat().st_size / 2**20:.2f} MB", flush=True)
    return models


def time_in_fresh_process(model: Path, clips_file: Path, args) -> dict:
    """Run time_tflite.py on one model in a new Python process; its JSON result."""
    command = [sys.executable, str(WORKER), str(model), "--clips", str(clips_file), "--warmup", str(args.warmup),
               "--repeats", str(args.repeats), "--num_threads", str(args.num_threads), "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"timing {model} failed (exit {done.returncode}): {last_line}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config_path", default=str(common.DEFAULT_CONFIG), help="YAML config (configs/)")
    ap.add_argument("--data_path", default=str(common.DEFAULT_KEYPOINTS), help="dataset root with all/GXX/*.pkl")
    ap.add_argument("--holdout", default="user01", help="signer whose clips are timed (never used to calibrate)")
    ap.add_argument("--checkpoint", default="", help="trained final_model.h5 ('': a fresh model, seeded)")
    ap.add_argument("--modes", default="all", help=f"comma list of {list(PTQ_FILES)}, or 'all'")
    ap.add_argument("--onnx_modes", default=ONNX_MODES,
                    help="ONNX modes converted and timed too (comma list of fp32, int8; '': none)")
    ap.add_argument("--batch", type=int, default=32, help="clips per run in the batched ONNX timing")
    ap.add_argument("--models", default="", help="comma list of existing .tflite files to time instead of converting")
    ap.add_argument("--clips", type=int, default=0, help="time the first N clips of the holdout (0 = all)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the clips")
    ap.add_argument("--warmup", type=int, default=5, help="untimed invokes before timing")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads")
    ap.add_argument("--calibration_clips", type=int, default=CALIBRATION_CLIPS,
                    help="clips calibrating the integer modes")
    ap.add_argument("--keep_dir", default="", help="keep the converted models here ('': a temporary folder)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the fresh model and the calibration clips")
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    if args.clips < 0 or args.repeats < 1 or args.warmup < 0 or args.num_threads < 1 or args.calibration_clips < 1:
        raise UserError("need --clips >= 0, --repeats >= 1, --warmup >= 0, --num_threads >= 1 "
                        "and --calibration_clips >= 1")
    args.modes = [] if args.models else parse_modes(args.modes)
    args.onnx_modes = [] if args.models or not args.onnx_modes else parse_onnx_modes(args.onnx_modes)
    return args


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = common.machine_info()
    cfg = load_config(args.config_path)
    timing, calibration = load_clips(args, cfg)
    print(f"timing {len(timing[0])} clips of {args.holdout} x {args.repeats} at {args.num_threads} thread(s); "
          f"calibrating on {len(calibration[0])} clips of the other signers", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_tflite_") as tmp:
        folder = Path(args.keep_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.models:
            paths = [require_file(m, "--models file") for m in comma_list(args.models)]
            models = [(path.name if path.suffix == ".onnx" else path.stem, path) for path in paths]
        else:
            models = convert_models(args, cfg, calibration, folder)
        clips_file = Path(tmp) / "clips.npz"
        np.savez(clips_file, keypoints=timing[0], masks=timing[1])
        rows = []
        for name, path in models:
            result = time_in_fresh_process(path, clips_file, args)
            rows.append({**result, "model": name, "path": str(path), "size_mb": result["size_bytes"] / 2**20})
            print(f"  {name}: median {result['median_ms']:.2f} ms/clip", flush=True)
    settings = {"config_path": args.config_path, "data_path": args.data_path, "holdout": args.holdout,
                "models_from": args.models or args.checkpoint or f"fresh model (seed {args.seed})",
                "calibration_clips": len(calibration[0]), "keep_dir": args.keep_dir}
    return common.report(args, BENCH, machine, settings, rows, COLUMNS)


if __name__ == "__main__":
    main()
