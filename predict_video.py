"""Recognise signs in video files or a webcam with an exported .tflite model: the app's pipeline on a computer.

Every frame goes through MediaPipe Holistic with the extractor's own code (extraction.py), each clip through the
app contract (preprocessing.model_inputs) and the model through tflite_runtime. The keypoint layout, selection,
normalization groups and labels come from the model card beside the .tflite, so --model is all it needs.

  whole clip (default)      one prediction per video: the top-k classes with probabilities
  --window N [--stride S]   sliding window over the stream: every S frames the last N frames are classified, and
                            a sign is emitted when its probability >= --threshold (consecutive windows agreeing on
                            a sign make one event). A video shorter than N frames is classified once, whole.
                            Required for a webcam.

Few-shot enrollment (docs/personalization.md): the user's own clips of some signs become prototypes that every
prediction blends in (enrollment.score); video_enrollment.py does the work, on this very video path.
  --enroll DIR|FILE         DIR/<sign>/... videos (GYY/ as in the data, or the card's labels or names), or a text
                            file of `video_path label` lines: prototypes built, checked (warnings printed) and saved
                            as <model stem>.prototypes.json beside the model (or --enroll_out)
  --enroll_file PATH        prototypes saved before (another model's or layout's file is refused)
  --enroll_guided           the first source (a webcam, or a video file standing in for it) asks for each sign in
                            turn (--enroll_signs): --enroll_pause frames to get ready, then --enroll_frames recorded
                            (after --fps), one clip per sign; then the sources are recognised with the prototypes

It reports extraction ms per frame (MediaPipe + keypoint conversion; the first frame, which starts the tracker,
is reported apart) and model ms per window (preprocessing + the interpreter's invoke). Videos are read from a
folder recursively; a label in the path (a folder `G05/` or a file `user01_G05_R01.mp4`) is taken as the truth.

A video that cannot be processed (unreadable, no frames) is reported as FAILED and skipped; the
others' results are still printed and written, and the summary counts the failures. The outputs
(--output_json, --annotate_dir) are checked before the first video. Exit status: 0 when every video
was processed, 1 when some failed, 2 on bad input (flags, model, outputs) or when no video could be
processed at all.

    python predict_video.py --model outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite \\
        MLR511-ArabicSignLanguage-Dataset-MP4/user01
    python predict_video.py --model M.tflite clip.mp4 --window 40 --stride 5 --annotate_dir annotated/
    python predict_video.py --model M.tflite 0 --window 40 --fps 15 --display        # webcam 0; q stops
    python predict_video.py --model M.tflite --enroll my_signs/ clip.mp4              # my_signs/G05/take1.mp4 ...
    python predict_video.py --model M.tflite --enroll_file M.prototypes.json clip.mp4
    python predict_video.py --model M.tflite 0 --enroll_guided --enroll_signs G01,G05 --fps 15 --window 40 --display
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import extraction
import video_enrollment
from metrics import latency_summary
from recipes import SIGN_THRESHOLD, TOP_K, VIDEO_WINDOW, WINDOW_STRIDE
from runs import comma_list
from util import UserError, atomic_write_json, check_output, cli, one_line
from video_recognition import (Recognizer, SlidingWindow, Source, VideoSink, annotate, classify_clip,
                               expand_sources, no_hand_warning, resampled, tracked_frames, true_label)



# ----------------------------------------------------------------------------------------------- one source
@dataclass
class ClipResult:
    source: str
    true_label: str | None
    frames: int
    extraction_ms: list          # per frame after the first
    startup_ms: float            # the first frame (tracker creation + first MediaPipe call)
    predictions: list            # Predictions (one in whole-clip mode)
    top_k: list                  # top-k of the clip (whole-clip mode) or of the most confident window
    events: list = field(default_factory=list)
    annotated: str | None = None
    warning: str = ""            # e.g. no hand in any frame: then no sign is named

    @property
    def predicted(self) -> str | None:
        return self.top_k[0]["label"] if self.top_k else None


def follow(frames, recognizer: Recognizer, args, sliding: SlidingWindow | None, sink: VideoSink):
    """Track every frame; in sliding mode also classify and draw as frames arrive. Ends with the stream, on q in
    the --display window, or on Ctrl-C (what was seen so far still counts). Returns rows, seconds, results."""
    rows, seconds, results, caption = [], [], [], ""
    try:
        for tracked in tracked_frames(frames, recognizer.layout, args.min_confidence, args.mirror):
            rows.append(tracked.row)
            seconds.append(tracked.seconds)
            if sliding is None:
                results.append(tracked.results)  # drawn once the clip's label is known (annotate_again)
                continue
            prediction = sliding.push(tracked.row)
            if prediction is not None:
                caption = recognizer.caption(prediction) if sliding.confident(prediction) else ""
            sink.write(annotate(tracked.image, tracked.results, caption))
            if sink.stopped:
                break
    except KeyboardInterrupt:
        pass
    return rows, seconds, results


def run_source(source: Source, recognizer: Recognizer, args) -> ClipResult:
    frames, fps = source.open(args.max_frames)
    path = Path(args.annotate_dir) / f"{source.name}.annotated.mp4" if args.annotate_dir else None
    sink = VideoSink(path, min(fps, args.fps) if args.fps else fps, args.display)
    sliding = SlidingWindow(recognizer, args.window, args.stride, args.threshold) if args.window else None
    try:
        rows, seconds, results = follow(resampled(frames, fps, args.fps), recognizer, args, sliding, sink)
        if not rows:
            raise extraction.VideoError(f"{source.spec}: no frames could be read (empty or corrupt video)")
        if sliding is None:
            prediction, warning = classify_clip(recognizer, rows)    # (T, N, 3) -> one prediction
            predictions = [prediction]
            if sink.path or sink.display:
                caption = "no hand detected" if warning else recognizer.caption(prediction)
                annotate_again(source, args, fps, results, caption, sink)
        else:
            warning = no_hand_warning(np.stack(rows), recognizer.layout)
            sliding.finish()
            predictions = sliding.windows
    finally:
        sink.close()
    result = ClipResult(source.spec, true_label(source, recognizer.labels), len(rows),
                        [1e3 * s for s in seconds[1:]], 1e3 * seconds[0], predictions, [], [],
                        str(path) if path else None)
    if warning:  # the model still answers for all-zero hands; that is not a sign (its timings still count)
        result.warning = warning
        return result
    shown = predictions[0] if sliding is None else max(predictions, key=lambda p: p.probabilities[p.top1])
    result.top_k, result.events = recognizer.top_k(shown, args.top_k), sliding.events if sliding else []
    return result


def annotate_again(source: Source, args, fps: float, results: list, caption: str, sink: VideoSink) -> None:
    """Whole-clip mode: read the (same, deterministic) frames again and draw the stored landmarks + the label."""
    frames, _ = source.open(args.max_frames)
    for image, frame_results in zip(resampled(frames, fps, args.fps), results):
        sink.write(annotate(image, frame_results, caption))


# ----------------------------------------------------------------------------------------------- enrollment
def personalize(args, recognizer: Recognizer, sources: list[Source]) -> dict | None:
    """--enroll / --enroll_guided: build, check, save and use prototypes; --enroll_file: load and use them.
    Returns what the JSON report records (None without enrollment)."""
    if args.enroll_file:
        recognizer.prototypes = video_enrollment.load(args.enroll_file, recognizer)
        print(f"enrollment {args.enroll_file}: {enrolled_signs(recognizer)}")
        return {"prototypes": args.enroll_file, "counts": recognizer.prototypes.counts.tolist()}
    if args.enroll:
        enrolled = video_enrollment.enroll_videos(video_enrollment.enrollment_videos(args.enroll, recognizer),
                                                  recognizer, args)
    elif args.enroll_guided:
        signs = [video_enrollment.sign_id(name, recognizer, "--enroll_signs") for name in
                 comma_list(args.enroll_signs)] or list(range(len(recognizer.labels)))
        enrolled = video_enrollment.guided_enrollment(sources[0], recognizer, signs, args, args.enroll_frames,
                                                      args.enroll_pause, VideoSink(None, 0.0, args.display))
    else:
        return None
    for warning in enrolled.warnings:
        print(f"WARNING: {warning}")
    path = video_enrollment.save(enrolled, recognizer, args.enroll_out or None)
    recognizer.prototypes = enrolled.prototypes
    print(f"enrolled {len(enrolled.clips)} clip(s): {enrolled_signs(recognizer)}; wrote {path}")
    return {"prototypes": str(path), "counts": enrolled.prototypes.counts.tolist(), "clips": enrolled.clips,
            "warnings": enrolled.warnings}


def enrolled_signs(recognizer: Recognizer) -> str:
    counts = recognizer.prototypes.counts
    return f"{int((counts > 0).sum())} sign(s) enrolled (" + ", ".join(
        f"{recognizer.display[c]} x{counts[c]}" for c in np.flatnonzero(counts)) + ")"


# ----------------------------------------------------------------------------------------------- report
def describe(result: ClipResult) -> str:
    verdict = "" if result.true_label is None else (
        f"  [true {result.true_label}: {'correct' if result.predicted == result.true_label else 'WRONG'}]")
    ranked = "  ".join(f"{i}. {t['label']}{' ' + t['name'] if t['name'] else ''} {t['probability']:.1%}"
                       for i, t in enumerate(result.top_k, 1))
    if result.warning:
        return f"{result.source} ({result.frames} frames): WARNING {result.warning}{verdict}"
    lines = [f"{result.source} ({result.frames} frames): {ranked}{verdict}"]
    if len(result.predictions) > 1 or result.events:
        events = ", ".join(f"{e['label']} frames {e['start']}-{e['end']} ({e['probability']:.0%})"
                           for e in result.events) or "none above the threshold"
        lines.append(f"  {len(result.predictions)} windows; signs emitted: {events}")
    if result.annotated:
        lines.append(f"  wrote {result.annotated}")
    return "\n".join(lines)


def summary(results: list[ClipResult], failed: list[dict] = ()) -> dict:
    """Accuracy over clips with a known label, and the per-stage timings over all clips; `failed`:
    the videos that could not be processed ({'source', 'error'})."""
    labelled = [r for r in results if r.true_label is not None]
    windows = [p for r in results for p in r.predictions]
    out = {"clips": len(results), "failed": len(failed), "frames": sum(r.frames for r in results),
           "extraction_ms_per_frame": latency_summary(np.concatenate([r.extraction_ms for r in results]) / 1e3)
           if any(r.extraction_ms for r in results) else None,
           "startup_ms": float(np.mean([r.startup_ms for r in results])),
           "model_ms_per_window": latency_summary([(p.preprocess_ms + p.invoke_ms) / 1e3 for p in windows]),
           "invoke_ms_per_window": latency_summary([p.invoke_ms / 1e3 for p in windows]),
           "windows": len(windows), "no_sign_named": sum(bool(r.warning) for r in results)}
    if labelled:
        correct = sum(r.predicted == r.true_label for r in labelled)
        out |= {"labelled_clips": len(labelled), "correct": correct, "accuracy": correct / len(labelled)}
    return out


def format_summary(s: dict) -> str:
    lines = []
    if "accuracy" in s:
        lines.append(f"accuracy  {s['correct']}/{s['labelled_clips']} = {s['accuracy']:.1%} (top-1 of each clip)")
    if s["extraction_ms_per_frame"]:
        e = s["extraction_ms_per_frame"]
        lines.append(f"extraction  median {e['median_ms']:.1f} ms/frame, mean {e['mean_ms']:.1f}, p90 "
                     f"{e['p90_ms']:.1f} over {e['clips']} frames (+ {s['startup_ms']:.0f} ms tracker start-up "
                     f"per clip)")
    m, i = s["model_ms_per_window"], s["invoke_ms_per_window"]
    lines.append(f"model       median {m['median_ms']:.2f} ms/window (preprocessing + invoke; invoke alone "
                 f"{i['median_ms']:.2f}) over {s['windows']} windows")
    if s["no_sign_named"]:
        lines.append(f"WARNING: {s['no_sign_named']} clip(s) without any detected hand: no sign named")
    if s["failed"]:
        lines.append(f"FAILED: {s['failed']} of {s['clips'] + s['failed']} video(s) could not be "
                     "processed (listed above); the others' results are complete")
    return "\n".join(lines)


def result_json(result: ClipResult) -> dict:
    return {"source": result.source, "true_label": result.true_label, "predicted": result.predicted,
            "frames": result.frames, "top_k": result.top_k, "events": result.events,
            "windows": [{"start": p.start, "end": p.end, "probabilities": p.probabilities.tolist(),
                         "logits": p.logits.tolist(), "preprocess_ms": p.preprocess_ms, "invoke_ms": p.invoke_ms}
                        for p in result.predictions],
            "extraction_ms": result.extraction_ms, "startup_ms": result.startup_ms, "annotated": result.annotated,
            "warning": result.warning}


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", help="video files, folders of videos (recursive), or a webcam index (0)")
    ap.add_argument("--model", required=True, help="the .tflite model (its card beside it gives config + labels)")
    ap.add_argument("--config_path", default="", help="YAML config (default: the model card)")
    ap.add_argument("--top_k", type=int, default=TOP_K, help=f"classes listed (default: {TOP_K})")
    ap.add_argument("--window", type=int, default=VIDEO_WINDOW,
                    help=f"sliding-window length in frames (default: {VIDEO_WINDOW} = one prediction per whole "
                         "video)")
    ap.add_argument("--stride", type=int, default=WINDOW_STRIDE,
                    help=f"frames between sliding windows (default: {WINDOW_STRIDE})")
    ap.add_argument("--threshold", type=float, default=SIGN_THRESHOLD,
                    help=f"probability at which a window emits its sign (default: {SIGN_THRESHOLD})")
    ap.add_argument("--fps", type=float, default=0.0,
                    help="sample the input at this rate first (default: 0 = every frame; training videos: 15 fps)")
    ap.add_argument("--max_frames", type=int, default=0, help="stop each source after this many frames (default: 0 = "
                                                              "all; a webcam runs until q or Ctrl-C)")
    ap.add_argument("--mirror", action="store_true", help="flip frames horizontally before MediaPipe (default: off)")
    ap.add_argument("--min_confidence", type=float, default=extraction.DEFAULT_MIN_CONFIDENCE,
                    help=f"MediaPipe detection/tracking confidence (default: {extraction.DEFAULT_MIN_CONFIDENCE})")
    ap.add_argument("--annotate_dir", default="",
                    help="write <name>.annotated.mp4 with landmarks and the predicted sign here (default: none)")
    ap.add_argument("--display", action="store_true", help="show the annotated frames in a window (default: off)")
    ap.add_argument("--output_json", default="", help="write every prediction and timing as JSON (default: none)")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default: 1)")
    add_enrollment_args(ap)
    args = ap.parse_args(argv)
    if args.window < 0 or args.stride < 1 or args.top_k < 1 or not 0.0 <= args.threshold <= 1.0 or args.fps < 0:
        raise UserError("need --window >= 0, --stride >= 1, --top_k >= 1, --threshold in [0, 1], --fps >= 0")
    if args.enroll_frames < 1 or args.enroll_pause < 0:
        raise UserError("need --enroll_frames >= 1 and --enroll_pause >= 0")
    extraction.check_min_confidence(args.min_confidence)
    if args.output_json:
        check_output(args.output_json, "--output_json")
    if args.annotate_dir:
        check_output(args.annotate_dir, "--annotate_dir", folder=True)
    return args


def failure(source: Source, e: Exception) -> dict:
    """A video that could not be processed: {'source', 'error'} (one line, naming the file)."""
    error = one_line(e) or f"{source.spec}: {type(e).__name__}: {e}"
    return {"source": source.spec, "error": error}


def add_enrollment_args(ap) -> None:
    group = ap.add_argument_group("enrollment (docs/personalization.md)")
    how = group.add_mutually_exclusive_group()
    how.add_argument("--enroll", default="", metavar="DIR|FILE",
                     help="enroll the user's videos: DIR/<sign>/... or a text file of 'video_path label' lines "
                          "(default: none)")
    how.add_argument("--enroll_file", default="", metavar="PATH",
                     help="use prototypes saved before by --enroll / --enroll_guided (default: none)")
    how.add_argument("--enroll_guided", action="store_true",
                     help="record one clip per sign from the first source (a webcam or a video file), "
                          "asking for each sign in turn (default: off)")
    group.add_argument("--enroll_out", default="",
                       help="where --enroll / --enroll_guided save the prototypes "
                            "(default: <model stem>.prototypes.json beside the model)")
    group.add_argument("--enroll_signs", default="",
                       help="--enroll_guided: comma list of signs (labels or names) in the order asked "
                            "(default: every sign of the model)")
    group.add_argument("--enroll_frames", type=int, default=video_enrollment.GUIDED_CLIP_FRAMES,
                       help="--enroll_guided: frames recorded per sign, after --fps "
                            f"(default: {video_enrollment.GUIDED_CLIP_FRAMES})")
    group.add_argument("--enroll_pause", type=int, default=video_enrollment.GUIDED_PAUSE_FRAMES,
                       help="--enroll_guided: frames to get ready before each sign "
                            f"(default: {video_enrollment.GUIDED_PAUSE_FRAMES})")


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    sources = expand_sources(args.sources)
    recognizer = Recognizer(args.model, args.config_path, args.num_threads)
    if any(s.webcam for s in sources) and not args.window:
        raise UserError("a webcam stream needs --window (frames per classified window), e.g. --window 40")
    print(f"model {args.model}: layout {recognizer.layout.name}, {len(recognizer.cfg['joint_idx'])} keypoints, "
          f"{len(recognizer.labels)} classes; {len(sources)} source(s)")
    enrollment = personalize(args, recognizer, sources)
    results, failed = [], []
    for source in tqdm(sources, desc="videos", disable=len(sources) < 2, leave=False):
        try:
            results.append(run_source(source, recognizer, args))
        except Exception as e:  # one bad video must not cost the others' results
            if len(sources) == 1:
                raise  # the error itself: one line, exit 2, for a bad video
            failed.append(failure(source, e))
            tqdm.write(f"FAILED {failed[-1]['error']}")
            continue
        tqdm.write(describe(results[-1]))
    if not results:
        raise UserError(f"none of the {len(sources)} videos could be processed (the FAILED lines "
                        "above say why)")
    report = summary(results, failed)
    print(format_summary(report))
    if args.output_json:
        atomic_write_json(args.output_json, {"model": args.model, "settings": vars(args),
                                             "summary": report, "failed": failed, "enrollment": enrollment,
                                             "clips": [result_json(r) for r in results]})
        print(f"wrote {args.output_json}")
    return {"summary": report, "clips": results, "failed": failed, "enrollment": enrollment}


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
