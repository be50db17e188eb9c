"""Keypoint extraction throughput: frames per second with 1 worker process and with all cores.

Every video of --input_dir (<user>/<GYY>/<rep>.mp4, as extract_65_keypoints.py reads it) is extracted with the
extractor's own per-video job (extract_65_keypoints.extract_one: a fresh MediaPipe Holistic tracker per video,
every frame, pickle written) into a temporary folder, once per worker count. The workers are spawned processes,
as in `extract_65_keypoints.py --workers N`; each imports MediaPipe and runs its first frame before the clock
starts, so frames/s is the steady rate (the start-up is reported apart as startup_s). One worker is timed in a
spawned process too, so the two figures differ only by the number of workers.

    python bench/bench_extraction.py                                     # the 20 MLR511 videos, 1 worker and all cores
    python bench/bench_extraction.py --workers 1,2,4 --layout 90
    python bench/bench_extraction.py --max_videos 1 --workers 1 --output_dir /tmp/bench   # smallest (test_bench.py)

Results: common.py (--output_dir).
"""
from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import common
from extract_65_keypoints import Job, extract_one, find_videos
from extraction import DEFAULT_MIN_CONFIDENCE, native_stderr_silenced, open_holistic, process_frame
from keypoints import LAYOUTS, get_layout
from runs import comma_list
from util import HelpFormatter, UserError, cli

BENCH = "extraction"
COLUMNS = {"workers": "workers", "videos": "videos", "frames": "frames", "seconds": "seconds",
           "frames_per_s": "frames/s", "ms_per_frame": "ms/frame (wall)", "speedup": "speedup",
           "startup_s": "start-up s"}
WARMUP_FRAME = np.zeros((540, 960, 3), dtype=np.uint8)  # the size of the MLR511 videos
STARTUP_TIMEOUT_S = 600  # a worker that cannot start (e.g. MediaPipe fails to load) must not hang the run


def warm_worker(ready) -> None:
    """Pool initializer: load MediaPipe and run one tracker on a blank frame, then wait for the other workers."""
    with native_stderr_silenced(), open_holistic() as holistic:
        process_frame(holistic, WARMUP_FRAME)
    ready.wait()


def extract_all(jobs: list[Job], workers: int) -> dict:
    """Extract every job with `workers` spawned processes; the clock starts once every worker is warm."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(workers + 1)
    start = time.perf_counter()
    with context.Pool(workers, initializer=warm_worker, initargs=(ready,)) as pool:
        try:
            ready.wait(timeout=STARTUP_TIMEOUT_S)
        except threading.BrokenBarrierError:
            raise UserError(f"{workers} extraction worker(s) not ready after {STARTUP_TIMEOUT_S} s") from None
        warm = time.perf_counter()
        results = list(pool.imap_unordered(extract_one, jobs))
        seconds = time.perf_counter() - warm
    failed = [r.error for r in results if r.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} video(s) failed, first: {failed[0]}")
    frames = sum(r.frames for r in results)
    return {"workers": workers, "videos": len(results), "frames": frames, "seconds": seconds,
            "frames_per_s": frames / seconds, "ms_per_frame": 1e3 * seconds / frames, "startup_s": warm - start}


def parse_workers(arg: str) -> list[int]:
    """'1,all' -> [1, usable cores]."""
    counts = []
    for item in comma_list(arg):
        if item == "all":
            counts.append(common.usable_cores())
        elif item.isdigit() and int(item) > 0:
            counts.append(int(item))
        else:
            raise UserError(f"--workers {arg!r}: expected a comma list of positive integers or 'all', e.g. 1,all")
    return list(dict.fromkeys(counts))  # 'all' may equal a listed count


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--input_dir", default=str(common.DEFAULT_VIDEOS), help="videos as <user>/<GYY>/<rep>.mp4")
    ap.add_argument("--workers", default="1,all", help="comma list of worker counts; 'all' = the usable cores")
    ap.add_argument("--layout", type=int, default=65, choices=sorted(LAYOUTS),
                    help="stored keypoint layout (keypoints.py)")
    ap.add_argument("--max_videos", type=int, default=0, help="extract only the first N videos (0 = all)")
    ap.add_argument("--min_confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                    help="MediaPipe detection/tracking confidence")
    common.add_output_args(ap)
    args = ap.parse_args(argv)
    if args.max_videos < 0:
        raise UserError("need --max_videos >= 0")
    args.workers = parse_workers(args.workers)
    return args


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    layout = get_layout(args.layout)
    machine = common.machine_info()
    videos = find_videos(Path(args.input_dir))[:args.max_videos or None]
    print(f"{args.input_dir}: {len(videos)} videos, layout {layout.size}; worker counts {args.workers}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_extraction_") as tmp:
        jobs = [Job(v, v.pickle_path(Path(tmp)), layout.size, args.min_confidence, flipped=False) for v in videos]
        for workers in args.workers:
            rows.append(extract_all(jobs, workers))
            print(f"  {workers} worker(s): {rows[-1]['frames_per_s']:.1f} frames/s", flush=True)
    for row in rows:
        row["speedup"] = row["frames_per_s"] / rows[0]["frames_per_s"]
    settings = {"input_dir": args.input_dir, "layout": layout.size, "max_videos": args.max_videos,
                "min_confidence": args.min_confidence}
    return common.report(args, BENCH, machine, settings, rows, COLUMNS)


if __name__ == "__main__":
    main()
