"""Time one .tflite (or .onnx: ONNX Runtime) model in THIS process: invoke latency per clip and the peak memory of
running it.

bench_tflite.py runs this once per model, each in a fresh process, so no model's memory is counted for another.
It also works alone:

    python bench/time_tflite.py MODEL.tflite --clips CLIPS.npz [--warmup 5 --repeats 5 --num_threads 1]

CLIPS.npz holds `keypoints` (N, 64, K, 2) and `masks` (N, 64) float32: normalized clips zero-padded with their
length masks, as the app feeds the model (dataset.SplitData.padded). Each clip is invoked once per repeat after
--warmup untimed invokes; the times are invoke() alone (tflite_runtime.TFLiteModel.run), summarized by
metrics.latency_summary.

Memory (Linux, /proc/self/status): rss_before_mb is the resident memory after the imports (Python, numpy and the
LiteRT interpreter: tflite_runtime imports no TensorFlow); the peak is then reset (/proc/self/clear_refs)
so peak_rss_mb is the high-water mark of loading the model and every invoke; model_rss_mb = peak - before.
Where the peak cannot be reset, peak_rss_mb includes the imports and `peak_reset` is false. `runtime` names the
package that ran the model and `tensorflow_loaded` says whether TensorFlow was imported (it never is).

A .onnx (dynamic batch axis) is also timed the way a server would batch requests: batch_ms_per_clip is the median
over --repeats passes of (seconds of one run on --batch clips at once) / --batch, after one untimed batch.

Prints one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401  (makes the repo's modules importable)
from metrics import latency_summary
from util import UserError, cli
from model_runtime import is_onnx, open_model

STATUS = Path("/proc/self/status")


def memory_mb() -> dict:
    """{'rss': current resident MB, 'peak': high-water resident MB} of this process."""
    if STATUS.is_file():
        fields = dict(line.split(":", 1) for line in STATUS.read_text().splitlines() if ":" in line)
        kb = lambda name: int(fields[name].split()[0])  # noqa: E731  ("123456 kB")
        return {"rss": kb("VmRSS") / 1024, "peak": kb("VmHWM") / 1024}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"rss": peak, "peak": peak}


def reset_peak_memory() -> bool:
    """Make the high-water mark restart from the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def load_clips(path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as clips:
            keypoints, masks = clips["keypoints"], clips["masks"]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: not a .npz with 'keypoints' (N, 64, K, 2) and 'masks' (N, 64) ({e})") from None
    if keypoints.ndim != 4 or masks.shape != keypoints.shape[:2] or not len(keypoints):
        raise UserError(f"{path}: keypoints {keypoints.shape} and masks {masks.shape} are not (N, T, K, 2), (N, T)")
    return keypoints.astype(np.float32), masks.astype(np.float32)


def runtime_name(model_path) -> str:
    from importlib.metadata import version
    return (f"onnxruntime {version('onnxruntime')}" if is_onnx(model_path)
            else f"ai-edge-litert {version('ai-edge-litert')}")


def batched_ms_per_clip(model, keypoints: np.ndarray, masks: np.ndarray, batch: int, repeats: int) -> float:
    """ONNX Runtime on `batch` clips in one run: median ms per clip over `repeats` runs (one untimed first)."""
    keypoints, masks = np.resize(keypoints, (batch, *keypoints.shape[1:])), np.resize(masks, (batch, masks.shape[1]))
    model.run(keypoints, masks)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.run(keypoints, masks)
        seconds.append(time.perf_counter() - start)
    return 1000 * float(np.median(seconds)) / batch


def time_model(model_path, keypoints: np.ndarray, masks: np.ndarray, warmup: int, repeats: int,
               num_threads: int, batch: int = 0) -> dict:
    """Load the model, invoke every clip `repeats` times after `warmup` invokes; latency and memory figures."""
    before = memory_mb()["rss"]
    peak_reset = reset_peak_memory()
    model = open_model(model_path, num_threads=num_threads)
    for i in range(warmup):
        model.run(keypoints[i % len(keypoints)][None], masks[i % len(masks)][None])
    seconds = np.concatenate([model.predict(keypoints, masks)[1] for _ in range(repeats)])
    batched = (batched_ms_per_clip(model, keypoints, masks, batch, repeats)
               if batch and is_onnx(model_path) else None)
    peak = memory_mb()["peak"]
    return {"model": str(model_path), "runtime": runtime_name(model_path),
            "tensorflow_loaded": "tensorflow" in sys.modules, "batch_ms_per_clip": batched, "batch": batch,
            "size_bytes": Path(model_path).stat().st_size, "num_threads": num_threads,
            "warmup": warmup, "repeats": repeats, **latency_summary(seconds),
            "rss_before_mb": before, "peak_rss_mb": peak, "model_rss_mb": peak - before, "peak_reset": peak_reset}


@cli
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help=".tflite or .onnx model with the app signature (tflite_export, onnx_convert)")
    ap.add_argument("--clips", required=True, help=".npz with keypoints (N, 64, K, 2) and masks (N, 64)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed invokes first (default: 5)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the clips (default: 5)")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default: 1)")
    ap.add_argument("--batch", type=int, default=0, help="a .onnx: also time runs of this many clips (default: 0)")
    args = ap.parse_args(argv)
    if args.warmup < 0 or args.repeats < 1 or args.num_threads < 1:
        raise UserError("need --warmup >= 0, --repeats >= 1 and --num_threads >= 1")
    result = time_model(args.model, *load_clips(args.clips), args.warmup, args.repeats, args.num_threads,
                        max(0, args.batch))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
