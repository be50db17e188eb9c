"""End-to-end latency of predict_video.py: per frame (MediaPipe) and per window (the model), and the whole run.

Runs predict_video.main in this process on the given videos (default: the 20-video MLR511 subset in
data/mlr511-videos-20) in its sliding-window mode (--window 40 --stride 5 by default, the live mode of a webcam; --window 0 = one prediction per
whole video), with --model, or with a freshly built model when none is given (seeded random weights, exported by
tflite_export.export_tflite with its card; the latency does not depend on the weights' values).

Figures (predict_video's own timings, summarized by metrics.latency_summary):
  extraction ms/frame   MediaPipe + keypoint conversion of one frame (each video's first frame excluded)
  start-up ms           that first frame: tracker creation + first MediaPipe call (mean per video)
  model ms/window       preprocessing (the app contract) + invoke of one window; invoke ms/window alone
  wall ms/frame         the whole run (reading and decoding the videos, MediaPipe, every window) / frames
  fps                   frames per second the whole pipeline sustains = 1000 / wall ms/frame

    python bench/bench_predict_video.py                            # fresh 65-kpt model, 20 videos
    python bench/bench_predict_video.py --model outputs/.../final_model_fp32.tflite VIDEOS/user08
    python bench/bench_predict_video.py VIDEO.mp4 --max_frames 12 --window 8 --stride 4 --config_path CFG \\
        --data_path DATA --output_dir /tmp/bench                    # smallest setting (test_bench.py)

Results: common.py (--output_dir).
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import common
import predict_video
from config import load_config
from dataset import read_label_maps, read_label_names
from model_functional import build_model
from recipes import DEFAULT_SEED
from util import HelpFormatter, UserError, cli, set_seed
from tflite_export import export_tflite

BENCH = "predict_video"
COLUMNS = {"clips": "videos", "frames": "frames", "extraction_median_ms": "extract ms/frame",
           "extraction_p90_ms": "p90", "startup_ms": "start-up ms", "windows": "windows",
           "model_median_ms": "model ms/window", "model_p90_ms": "p90", "invoke_median_ms": "invoke ms/window",
           "wall_ms_per_frame": "wall ms/frame", "fps": "fps"}


def fresh_model(args, folder: Path) -> Path:
    """A seeded, untrained model of --config_path exported as FP32 with its card (labels from --data_path)."""
    cfg = load_config(args.config_path)
    set_seed(args.seed)
    path = folder / "fresh_model_fp32.tflite"
    _, id2label = read_label_maps(args.data_path)
    export_tflite(build_model(cfg), cfg, path, id2label, label_names=read_label_names(args.data_path), log=print)
    return path


def predict_video_args(args, model: Path) -> list[str]:
    argv = [*args.videos, "--model", str(model), "--window", str(args.window), "--stride", str(args.stride),
            "--max_frames", str(args.max_frames), "--num_threads", str(args.num_threads)]
    return argv + (["--fps", str(args.fps)] if args.fps else [])


def measure(args, model: Path) -> dict:
    """Run predict_video once; its per-stage timings and the wall time per frame."""
    start = time.perf_counter()
    report = predict_video.main(predict_video_args(args, model))["summary"]
    wall_ms_per_frame = 1e3 * (time.perf_counter() - start) / report["frames"]
    extraction = report["extraction_ms_per_frame"] or {}
    model_ms, invoke_ms = report["model_ms_per_window"], report["invoke_ms_per_window"]
    return {"clips": report["clips"], "frames": report["frames"], "windows": report["windows"],
            "extraction_median_ms": extraction.get("median_ms"), "extraction_p90_ms": extraction.get("p90_ms"),
            "startup_ms": report["startup_ms"], "model_median_ms": model_ms["median_ms"],
            "model_p90_ms": model_ms["p90_ms"], "invoke_median_ms": invoke_ms["median_ms"],
            "invoke_p90_ms": invoke_ms["p90_ms"], "wall_ms_per_frame": wall_ms_per_frame,
            "fps": 1e3 / wall_ms_per_frame}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("videos", nargs="*", default=[str(common.DEFAULT_VIDEOS)], help="video files or folders")
    ap.add_argument("--model", default="", help="a .tflite with its card ('': a fresh model of --config_path)")
    ap.add_argument("--config_path", default=str(common.DEFAULT_CONFIG), help="config of the fresh model")
    ap.add_argument("--data_path", default=str(common.DEFAULT_KEYPOINTS), help="label maps of the fresh model")
    ap.add_argument("--window", type=int, default=40, help="sliding-window frames (0 = one prediction per video)")
    ap.add_argument("--stride", type=int, default=5, help="frames between windows")
    ap.add_argument("--fps", type=float, default=0.0, help="sample the videos at this rate first (0 = every frame)")
    ap.add_argument("--max_frames", type=int, default=0, help="stop each video after N frames (0 = all)")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the fresh model")
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    if args.max_frames < 0:
        raise UserError("need --max_frames >= 0")
    return args


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = common.machine_info()
    with contextlib.ExitStack() as stack:
        model = Path(args.model) if args.model else fresh_model(
            args, Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_predict_"))))
        row = measure(args, model)
    settings = {"videos": args.videos, "model": args.model or f"fresh model of {args.config_path} (seed {args.seed})",
                "window": args.window, "stride": args.stride, "fps": args.fps, "max_frames": args.max_frames,
                "num_threads": args.num_threads}
    return common.report(args, BENCH, machine, settings, [row], COLUMNS)


if __name__ == "__main__":
    main()
