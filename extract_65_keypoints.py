"""Extract MediaPipe Holistic keypoints from a folder of sign videos into the dataset.py format.

    python extract_65_keypoints.py --input_dir MLR511-ArabicSignLanguage-Dataset-MP4 --output_dir data/arabic-asl-65kpts
    python extract_65_keypoints.py --layout 90 --input_dir VIDEOS --output_dir data/arabic-asl-90kpts --workers 2
    python extract_65_keypoints.py --input_dir VIDEOS --output_dir OUT --flip_users user01,user02 --overwrite
    python extract_63_keypoints.py --input_dir LSA64/all --output_dir data/lsa64-63kpts --source lsa64

Input   --source (layouts.py; default auto: detected from the folder):
        tree   <input_dir>/<user>/<GYY>/<rep>.mp4 (also .avi, .mov). Every sub-folder of
               input_dir is a signer; its sub-folders whose name starts with "G" are signs.
        lsa64  the LSA64 release: a flat folder of <sign>_<signer>_<rep>.mp4 -> user0001.., G01..G64
        karsl  the KArSL release: <signer>/<train|test>/<NNNN>/*.mp4 -> user01.., G0001..G0502
Output  <output_dir>/all/<GYY>/<user>_<GYY>_<rep>.pkl   one pickle per video: keypoints (T, N, 3) float32 in the
        layout of --layout (keypoints.py) plus metadata (class, user, num_keypoints, num_frames, video_file,
        original_path, flipped, keypoint_structure, face_mesh_indices for layouts with face points)
        <output_dir>/label2id.json, id2label.json       sorted sign folder names -> 0..C-1 (for every layout;
        signs extracted into output_dir by an earlier run with another --input_dir are kept)
        <output_dir>/label2name.json                    the signs' names where the release has them
Each video goes through extraction.extract_video: a fresh tracker per video, every frame kept, missing parts zeros.

Left-handed signers: --flip_users mirrors the listed signers' frames before MediaPipe (samples get flipped=True).
Decide from the data, not from a dataset card: the summary reports, per signer, the share of frames in which
each hand slot is detected, and warns when a signer's dominant slot differs from the other signers'.

Resumable: a video whose pickle already exists (readable, same layout, same flip) is skipped unless --overwrite.
Pickles are written atomically (temp file + rename), so an interrupted run leaves no half-written file.
An unreadable or empty video is reported by name and counted, never saved; the exit status is then 1.
With --workers > 1 the videos are split over processes; the pickles are identical to --workers 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from extraction import (DEFAULT_MIN_CONFIDENCE, check_min_confidence, detected_frames, extract_video,
                        person_frames)
from keypoints import Layout, get_layout
from layouts import SOURCES, Video, detect_source, find_videos, sign_names
from runs import USER_RE, comma_list
from util import UserError, atomic_write_json, atomic_write_pickle, check_output, cli, one_line
from safe_pickle import UnsafePickleError, load_pickle


@dataclass(frozen=True)
class VideoResult:
    """What happened to one video, with its hand-slot counts for the summary."""
    video: str
    user: str
    sign: str
    status: str  # "done" (extracted now), "skipped" (pickle of an earlier run reused) or "failed"
    frames: int = 0
    left: int = 0    # frames with the left hand slot detected
    right: int = 0   # frames with the right hand slot detected
    either: int = 0  # frames with at least one hand
    error: str = ""


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs to extract one video (picklable)."""
    video: Video
    out_path: Path
    layout_size: int
    min_confidence: float
    flipped: bool


# ----------------------------------------------------------------------------------------------- inputs
def parse_flip_users(arg: str, users: set[str]) -> set[str]:
    """'user01,user02' -> {'user01', 'user02'}; every name must be a signer of the input tree."""
    wanted = set(comma_list(arg))
    unknown = sorted(wanted - users)
    if unknown:
        raise UserError(f"--flip_users: {', '.join(unknown)} not found in --input_dir (signers: {', '.join(sorted(users))})")
    return wanted


def write_label_maps(output_dir: Path, videos: list[Video], source: str = "tree") -> list[str]:
    """label2id/id2label over the sorted sign folder names of the input, plus signs already extracted into
    output_dir by earlier runs (so extracting a dataset in parts still gives one label map);
    label2name.json when the release names its signs."""
    existing = {d.name for d in (output_dir / "all").glob("G*") if any(d.glob("*.pkl"))}
    signs = sorted({v.sign for v in videos} | existing)
    atomic_write_json(output_dir / "label2id.json", {s: i for i, s in enumerate(signs)})
    atomic_write_json(output_dir / "id2label.json", {str(i): s for i, s in enumerate(signs)})
    names = sign_names(source, signs)
    if names:
        atomic_write_json(output_dir / "label2name.json", names)
    return signs


def remove_interrupted_writes(output_dir: Path) -> int:
    """Temp files left by a killed run (runs.atomic_write_bytes names them .<name>.<random>.tmp)."""
    stale = list((output_dir / "all").glob("*/.*.pkl.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


# ----------------------------------------------------------------------------------------------- one video
def sample_dict(video: Video, keypoints, layout: Layout, flipped: bool) -> dict:
    """The pickle's content; keypoints (T, N, 3) float32."""
    sample = {
        "keypoints": keypoints,
        "class": video.sign,
        "user": video.user,
        "num_keypoints": layout.size,
        "num_frames": int(len(keypoints)),
        "video_file": video.path.name,
        "original_path": video.relative,
        "flipped": bool(flipped),
        "keypoint_structure": layout.describe(),
    }
    if layout.part_slice("face"):
        sample["face_mesh_indices"] = layout.part_sources("face")
    return sample


def result_of(video: Video, keypoints, layout: Layout, status: str) -> VideoResult:
    left = detected_frames(keypoints, layout, "left_hand")
    right = detected_frames(keypoints, layout, "right_hand")
    return VideoResult(video.relative, video.user, video.sign, status, frames=len(keypoints),
                       left=int(left.sum()), right=int(right.sum()), either=int((left | right).sum()))


def extract_one(job: Job) -> VideoResult:
    """Worker: extract one video and write its pickle atomically; failures (its pickle's too, e.g.
    a full disk) are returned, not raised."""
    layout, video = get_layout(job.layout_size), job.video
    try:
        keypoints = extract_video(video.path, layout, job.min_confidence, mirror=job.flipped)  # (T, N, 3)
        result = result_of(video, keypoints, layout, "done")
        if person_frames(keypoints) == 0:  # an all-zero sample would train and test as a real one
            error = f"{video.path}: no person detected in any of {result.frames} frames"
            return dataclasses.replace(result, status="failed", error=f"{error}; no pickle written")
        atomic_write_pickle(job.out_path, sample_dict(video, keypoints, layout, job.flipped))
    except Exception as e:  # one bad video must not stop a 1,200-video run; it is reported by name instead
        message = one_line(e) or f"{video.path}: {type(e).__name__}: {e}"
        return VideoResult(video.relative, video.user, video.sign, "failed", error=message)
    return result


def reuse_existing(job: Job) -> VideoResult | None:
    """The result of an earlier run when its pickle is readable and made with the same layout and flip; else None."""
    try:
        sample = load_pickle(job.out_path)
        keypoints = sample["keypoints"]
        if keypoints.shape[1:] != (job.layout_size, 3) or sample.get("flipped", False) != job.flipped:
            return None
    except (OSError, UnsafePickleError, KeyError, AttributeError, IndexError, TypeError, ValueError):
        return None
    if person_frames(keypoints) == 0:  # an all-zero pickle of an older version: extracted (and failed) again
        return None
    return result_of(job.video, keypoints, get_layout(job.layout_size), "skipped")


# ----------------------------------------------------------------------------------------------- the run
def run_jobs(jobs: list[Job], workers: int) -> list[VideoResult]:
    """Extract every job, in this process (workers=1) or in a pool of fresh processes, with a progress bar."""
    if not jobs:
        return []
    bar = dict(total=len(jobs), unit="video", desc="extracting", dynamic_ncols=True)
    if workers == 1:
        return [extract_one(job) for job in tqdm(jobs, **bar)]
    # spawn: clean workers that import MediaPipe themselves (forking a process that already runs TensorFlow or
    # MediaPipe threads can deadlock)
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        return list(tqdm(pool.imap_unordered(extract_one, jobs), **bar))


def plan(videos: list[Video], output_dir: Path, layout: Layout, args, flip: set[str]):
    """-> (jobs to run, results of videos already extracted)."""
    todo, reused = [], []
    for video in videos:
        job = Job(video, video.pickle_path(output_dir), layout.size, args.min_confidence, video.user in flip)
        previous = None if args.overwrite else reuse_existing(job)
        if previous is None:
            todo.append(job)
        else:
            reused.append(previous)
    return todo, reused


# ----------------------------------------------------------------------------------------------- summary
def _share(count: int, total: int) -> str:
    return f"{count / total:6.1%}" if total else "   n/a"


def dominant_slot(left: int, right: int) -> str:
    return "left" if left > right else "right" if right > left else "none"


def hand_slots_by_signer(results: list[VideoResult]) -> dict[str, dict]:
    """{user: {videos, frames, left, right, slot}} over the extracted and skipped videos."""
    table = defaultdict(Counter)
    for r in results:
        if r.status != "failed":
            table[r.user].update(videos=1, frames=r.frames, left=r.left, right=r.right)
    return {u: dict(c, slot=dominant_slot(c["left"], c["right"])) for u, c in sorted(table.items())}


def hand_slot_warnings(by_signer: dict[str, dict], flipped: set[str]) -> list[str]:
    """Signers whose dominant hand slot differs from the other signers' (the left-handed-signer check)."""
    slots = Counter(row["slot"] for row in by_signer.values() if row["slot"] != "none")
    if len(slots) < 2:
        return []
    (majority, n), (_, runner_up) = slots.most_common(2)
    if n == runner_up:
        groups = "; ".join(f"{slot}: {', '.join(u for u, r in by_signer.items() if r['slot'] == slot)}"
                           for slot in sorted(slots))
        return [f"signers disagree on the dominant hand slot and no slot has a majority ({groups})"]
    warnings = []
    for user, row in by_signer.items():
        if row["slot"] not in (majority, "none"):
            fix = ("it is mirrored by --flip_users: drop it from the list" if user in flipped
                   else f"if this is a left-handed signer, add --flip_users {user} --overwrite")
            warnings.append(f"{user} signs mainly in the {row['slot'].upper()} hand slot (left "
                            f"{_share(row['left'], row['frames']).strip()}, right "
                            f"{_share(row['right'], row['frames']).strip()} of frames) while {n} of "
                            f"{sum(slots.values())} signers use the {majority.upper()} slot; {fix}")
    return warnings


def print_summary(results: list[VideoResult], seconds: float, flipped: set[str]) -> None:
    status = Counter(r.status for r in results)
    done_frames = sum(r.frames for r in results if r.status == "done")
    print(f"\nsummary: {len(results)} videos: {status['done']} extracted, {status['skipped']} skipped (already "
          f"extracted), {status['failed']} failed; {sum(r.frames for r in results)} frames in total")
    if status["done"]:
        print(f"extracted {done_frames} frames in {seconds:.1f} s wall time, MediaPipe start-up included "
              f"({done_frames / seconds:.1f} frames/s)")
    for r in results:
        if r.status == "failed":
            print(f"  FAILED {r.error}")

    print("hand detection per sign (share of frames with the left / right / any hand):")
    for sign in sorted({r.sign for r in results}):
        rows = [r for r in results if r.sign == sign and r.status != "failed"]
        frames = sum(r.frames for r in rows)
        print(f"  {sign:8s} left {_share(sum(r.left for r in rows), frames)}  right "
              f"{_share(sum(r.right for r in rows), frames)}  any {_share(sum(r.either for r in rows), frames)}")

    by_signer = hand_slots_by_signer(results)
    print("hand slots per signer (share of frames with each hand detected; * = mirrored by --flip_users):")
    for user, row in by_signer.items():
        print(f"  {user + ('*' if user in flipped else ''):10s} videos {row['videos']:4d}  frames {row['frames']:6d}  "
              f"left {_share(row['left'], row['frames'])}  right {_share(row['right'], row['frames'])}  "
              f"dominant: {row['slot']}")
    for warning in hand_slot_warnings(by_signer, flipped):
        print(f"WARNING: {warning}")


def parse_args(argv=None, layout_default: int = 65):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Exit status: 0 when every video was extracted or skipped, 1 when some video failed, 2 on bad input.")
    parser.add_argument("--input_dir", required=True,
                        help="videos: <user>/<GYY>/<rep>.mp4|.avi|.mov, or a release of LSA64 or KArSL")
    parser.add_argument("--source", default="auto", choices=("auto", *SOURCES),
                        help="layout of --input_dir (layouts.py): auto = detected, "
                             "tree = <user>/<GYY>/<rep>, lsa64 = flat <sign>_<signer>_<rep>.mp4, "
                             "karsl = <signer>/<train|test>/<NNNN>/")
    parser.add_argument("--output_dir", required=True, help="dataset root to write (all/GYY/*.pkl + label maps)")
    parser.add_argument("--layout", type=int, choices=(65, 90, 63), default=layout_default,
                        help="stored keypoint layout (keypoints.py): 65 body+hands, 90 +25 face points, 63 compact")
    parser.add_argument("--min_confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                        help="MediaPipe detection and tracking confidence")
    parser.add_argument("--flip_users", default="",
                        help="comma list of signers whose frames are mirrored before MediaPipe; empty: nobody")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (all cores of this machine)")
    parser.add_argument("--overwrite", action="store_true", help="re-extract videos whose pickle already exists")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    check_min_confidence(args.min_confidence)
    return args


@cli
def main(argv=None, layout_default: int = 65) -> int:
    args = parse_args(argv, layout_default)
    layout = get_layout(args.layout)
    input_dir, output_dir = Path(args.input_dir), Path(args.output_dir)
    check_output(output_dir, "--output_dir", folder=True)
    source = args.source
    if source == "auto" and input_dir.is_dir():
        source = detect_source(input_dir)
    videos = find_videos(input_dir, source)
    flip = parse_flip_users(args.flip_users, {v.user for v in videos})
    odd_names = sorted({v.user for v in videos if not USER_RE.match(v.user)})
    if odd_names:
        print(f"note: signer folders not named userNN: {', '.join(odd_names)} (fix_loso.py and --holdouts all "
              f"find signers by userNN_GYY_*.pkl file names)")
    write_label_maps(output_dir, videos, source)
    if remove_interrupted_writes(output_dir):
        print("removed temp files of an interrupted earlier run")
    todo, reused = plan(videos, output_dir, layout, args, flip)
    users, signs = {v.user for v in videos}, {v.sign for v in videos}
    print(f"{len(videos)} videos of {len(users)} signers and {len(signs)} signs in {input_dir} "
          f"(--source {source}); layout {layout.size}; "
          f"{len(reused)} already extracted, {len(todo)} to extract with {args.workers} worker(s); "
          f"mirrored signers: {', '.join(sorted(flip)) or 'none'}")
    start = time.perf_counter()
    results = sorted(reused + run_jobs(todo, args.workers), key=lambda r: r.video)
    print_summary(results, seconds=time.perf_counter() - start, flipped=flip)
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
