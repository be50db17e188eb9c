"""Recognise signs in video files or a webcam with an exported .tflite model: the app's pipeline on a computer.

Every frame goes through MediaPipe Holistic with the extractor's own code (extraction.py), each clip through the
app contract (preprocessing.model_inputs) and the model through tflite_runtime. The keypoint layout, selection,
normalization groups and labels come from the model card beside the .tflite, so --model is all it needs.

  whole clip (default)      one prediction per video: the top-k classes with probabilities
  --window N [--stride S]   sliding window over the stream: every S frames the last N frames are classified, and
                            a sign is emitted when its probability >= --threshold (consecutive windows agreeing on
                            a sign make one event). A video shorter than N frames is classified once, whole.
                            Required for a webcam.

It reports extraction ms per frame (MediaPipe + keypoint conversion; the first frame, which starts the tracker,
is reported apart) and model ms per window (preprocessing + the interpreter's invoke). Videos are read from a
folder recursively; a label in the path (a folder `G05/` or a file `user01_G05_R01.mp4`) is taken as the truth.

    python predict_video.py --model outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite \\
        ../shared/data/mlr511-videos/user01
    python predict_video.py --model M.tflite clip.mp4 --window 40 --stride 5 --annotate_dir annotated/
    python predict_video.py --model M.tflite 0 --window 40 --fps 15 --display        # webcam 0; q stops
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import extraction

with extraction.native_stderr_silenced():  # TensorFlow's C++ start-up chatter (CUDA probing) on first import
    import tf_env  # noqa: F401
from evaluation import display_names, resolve_config
from keypoints import get_layout
from metrics import latency_summary, softmax
from preprocessing import model_inputs
from runs import UserError, atomic_write_json, cli
from tflite_export import read_model_card
from tflite_runtime import TFLiteModel

DEFAULT_TOP_K = 3
DEFAULT_THRESHOLD = 0.6
CAPTION_COLOR = (40, 220, 40)  # BGR


# ----------------------------------------------------------------------------------------------- the model
@dataclass
class Prediction:
    """One classified clip or window: probabilities over the classes and the model's time."""
    start: int                  # first frame (of the sampled stream) of the clip/window
    end: int                    # one past its last frame
    probabilities: np.ndarray   # (C,)
    logits: np.ndarray          # (C,)
    preprocess_ms: float
    invoke_ms: float

    @property
    def top1(self) -> int:
        return int(np.argmax(self.probabilities))


class Recognizer:
    """A .tflite model with the config and labels recorded in its card (or --config_path + labels.txt)."""

    def __init__(self, model_path, config_path: str = "", num_threads: int = 1):
        self.cfg = resolve_config(model_path, config_path)
        self.layout = get_layout(self.cfg["layout"])
        self.model = TFLiteModel(model_path, num_threads=num_threads)
        card = read_model_card(model_path)
        self.labels = card.get("labels") or self._labels_file(model_path)
        self.names = card.get("label_names", {})
        self.display = display_names(self.labels, self.names)

    def _labels_file(self, model_path) -> list[str]:
        path = Path(model_path).parent / "labels.txt"
        if path.is_file():
            return path.read_text().split()
        return [f"class_{i}" for i in range(int(self.model.output["shape"][-1]))]

    def classify(self, raw: np.ndarray, start: int = 0) -> Prediction:
        """raw (T, N, 3) keypoints in the model's layout -> a Prediction of frames [start, start + T)."""
        t0 = time.perf_counter()
        keypoints, mask = model_inputs(raw, self.cfg)             # (1, 64, K, 2), (1, 64)
        t1 = time.perf_counter()
        logits, seconds = self.model.run(keypoints, mask)       # (1, C)
        return Prediction(start, start + len(raw), softmax(logits[0]), logits[0], 1e3 * (t1 - t0), 1e3 * seconds)

    def top_k(self, prediction: Prediction, k: int) -> list[dict]:
        ranked = np.argsort(-prediction.probabilities, kind="stable")[:k]
        return [{"id": int(c), "label": self.labels[c], "name": self.names.get(self.labels[c], ""),
                 "probability": float(prediction.probabilities[c])} for c in ranked]

    def caption(self, prediction: Prediction) -> str:
        c = prediction.top1
        return f"{self.display[c]} {prediction.probabilities[c]:.0%}"


# ----------------------------------------------------------------------------------------------- frames in
@dataclass
class Source:
    """A video file or a webcam index; `name` labels its output."""
    spec: str
    name: str
    webcam: bool = False

    def open(self, max_frames: int = 0):
        """(frames iterator, frames per second). VideoError when it cannot be opened."""
        import cv2
        if self.webcam:
            frames, fps = extraction.read_camera(int(self.spec))
            return limited(frames, max_frames), fps
        frames = extraction.read_frames(self.spec)
        capture = cv2.VideoCapture(self.spec)
        fps = capture.get(cv2.CAP_PROP_FPS) or 15.0
        capture.release()
        return limited(frames, max_frames), fps


def limited(frames, max_frames: int):
    for i, frame in enumerate(frames):
        if max_frames and i >= max_frames:
            return
        yield frame


def resampled(frames, source_fps: float, target_fps: float):
    """Keep about target_fps of a source_fps stream: frame i is kept when floor(i * target / source) advances
    (all frames when target_fps is 0 or not below the source rate)."""
    if not target_fps or target_fps >= source_fps:
        yield from frames
        return
    last = -1
    for i, frame in enumerate(frames):
        slot = int(i * target_fps / source_fps)
        if slot != last:
            last = slot
            yield frame


def expand_sources(specs: list[str]) -> list[Source]:
    """Webcam indices, video files, and folders (searched recursively for VIDEO_SUFFIXES, sorted)."""
    sources = []
    for spec in specs:
        path = Path(spec)
        if spec.isdigit() and not path.exists():
            sources.append(Source(spec, f"webcam{spec}", webcam=True))
        elif path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.suffix.lower() in extraction.VIDEO_SUFFIXES)
            if not videos:
                raise UserError(f"{path}: no videos ({', '.join(extraction.VIDEO_SUFFIXES)}) in this folder")
            sources += [Source(str(v), "_".join(v.relative_to(path).with_suffix("").parts)) for v in videos]
        elif path.is_file():
            sources.append(Source(spec, path.stem))
        else:
            raise extraction.VideoError(f"{path}: video file not found")
    return sources


def true_label(source: Source, labels: list[str]) -> str | None:
    """A class label that appears in the path as a folder name or as an _-separated part of the file name."""
    if source.webcam:
        return None
    path = Path(source.spec)
    candidates = [*reversed(path.parent.parts), *path.stem.split("_")]
    return next((c for c in candidates if c in labels), None)


@dataclass
class TrackedFrame:
    image: np.ndarray      # BGR (H, W, 3)
    results: object        # MediaPipe's landmarks of this frame
    row: np.ndarray        # (N, 3) keypoints in the layout
    seconds: float         # MediaPipe + conversion


def tracked_frames(frames, layout, min_confidence: float, mirror: bool):
    """One fresh Holistic tracker over a stream: yields a TrackedFrame per frame (extraction.py's per-frame API)."""
    with contextlib.ExitStack() as stack:
        holistic = None
        for image in frames:
            start = time.perf_counter()
            if holistic is None:  # tracker start-up: creation + first frame print native banners
                with extraction.native_stderr_silenced():
                    holistic = stack.enter_context(extraction.open_holistic(min_confidence))
                    results = extraction.process_frame(holistic, image, mirror)
            else:
                results = extraction.process_frame(holistic, image, mirror)
            row = extraction.frame_keypoints(results, layout)
            yield TrackedFrame(image, results, row, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------- sliding window
@dataclass
class SlidingWindow:
    """Classifies the last `window` frames every `stride` frames and turns confident windows into sign events."""
    recognizer: Recognizer
    window: int
    stride: int
    threshold: float
    rows: deque = field(default_factory=deque)
    frames_seen: int = 0
    windows: list = field(default_factory=list)   # every Prediction
    events: list = field(default_factory=list)    # {'label', 'start', 'end', 'probability'}

    def push(self, row: np.ndarray) -> Prediction | None:
        """Add one frame's (N, 3) keypoints; returns the window's Prediction when one was classified."""
        self.rows.append(row)
        if len(self.rows) > self.window:
            self.rows.popleft()
        self.frames_seen += 1
        if len(self.rows) < self.window or (self.frames_seen - self.window) % self.stride:
            return None
        return self._classify()

    def finish(self) -> None:
        """A stream shorter than one window is classified once, whole."""
        if not self.windows and self.rows:
            self._classify()

    def _classify(self) -> Prediction:
        prediction = self.recognizer.classify(np.stack(self.rows), start=self.frames_seen - len(self.rows))
        self.windows.append(prediction)
        if self.confident(prediction):
            self._record_event(prediction)
        return prediction

    def confident(self, prediction: Prediction) -> bool:
        return prediction.probabilities[prediction.top1] >= self.threshold

    def _record_event(self, p: Prediction) -> None:
        label, probability = self.recognizer.labels[p.top1], float(p.probabilities[p.top1])
        last = self.events[-1] if self.events else None
        if last and last["label"] == label and p.start <= last["end"]:  # the same sign, still going on
            last["end"], last["probability"] = p.end, max(last["probability"], probability)
        else:
            self.events.append({"label": label, "name": self.recognizer.names.get(label, ""), "start": p.start,
                                "end": p.end, "probability": probability})


# ----------------------------------------------------------------------------------------------- frames out
def annotate(image: np.ndarray, results, caption: str) -> np.ndarray:
    """Landmarks plus the caption in a dark band at the top (in place)."""
    import cv2
    extraction.draw_landmarks(image, results)
    if caption:
        cv2.rectangle(image, (0, 0), (image.shape[1], 44), (0, 0, 0), thickness=-1)
        cv2.putText(image, caption, (10, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.0, CAPTION_COLOR, 2, cv2.LINE_AA)
    return image


class VideoSink:
    """An optional annotated .mp4 and an optional live window; both no-ops when not asked for."""

    def __init__(self, path: Path | None, fps: float, display: bool):
        self.path, self.fps, self.display, self.writer = path, fps, display, None
        self.stopped = False

    def write(self, image: np.ndarray) -> None:
        import cv2
        if self.path is not None:
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                              (image.shape[1], image.shape[0]))
                if not self.writer.isOpened():
                    raise UserError(f"{self.path}: cannot write an .mp4 video here")
            self.writer.write(image)
        if self.display:
            try:
                cv2.imshow("predict_video (q stops)", image)
            except cv2.error as e:
                raise UserError(f"--display: no window can be opened here ({str(e).strip()[:80]})") from None
            self.stopped = (cv2.waitKey(1) & 0xFF) == ord("q")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


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

    @property
    def predicted(self) -> str | None:
        return self.top_k[0]["label"] if self.top_k else None


def run_source(source: Source, recognizer: Recognizer, args) -> ClipResult:
    frames, fps = source.open(args.max_frames)
    fps_out = min(fps, args.fps) if args.fps else fps
    path = Path(args.annotate_dir) / f"{source.name}.annotated.mp4" if args.annotate_dir else None
    sink = VideoSink(path, fps_out, args.display)
    sliding = SlidingWindow(recognizer, args.window, args.stride, args.threshold) if args.window else None
    rows, seconds, results, caption = [], [], [], ""
    try:
        for tracked in tracked_frames(resampled(frames, fps, args.fps), recognizer.layout, args.min_confidence,
                                      args.mirror):
            rows.append(tracked.row)
            seconds.append(tracked.seconds)
            if sliding is None:
                results.append(tracked.results)  # drawn once the clip's label is known (second pass below)
                continue
            prediction = sliding.push(tracked.row)
            if prediction is not None:
                caption = recognizer.caption(prediction) if sliding.confident(prediction) else ""
            sink.write(annotate(tracked.image, tracked.results, caption))
            if sink.stopped:
                break
        if not rows:
            raise extraction.VideoError(f"{source.spec}: no frames could be read (empty or corrupt video)")
        if sliding is None:
            predictions = [recognizer.classify(np.stack(rows))]
            if sink.path or sink.display:
                annotate_again(source, args, fps, results, recognizer.caption(predictions[0]), sink)
        else:
            sliding.finish()
            predictions = sliding.windows
    finally:
        sink.close()
    best = max(predictions, key=lambda p: p.probabilities[p.top1])
    return ClipResult(source.spec, true_label(source, recognizer.labels), len(rows),
                      [1e3 * s for s in seconds[1:]], 1e3 * seconds[0], predictions,
                      recognizer.top_k(predictions[0] if sliding is None else best, args.top_k),
                      sliding.events if sliding else [], str(path) if path else None)


def annotate_again(source: Source, args, fps: float, results: list, caption: str, sink: VideoSink) -> None:
    """Whole-clip mode: read the (same, deterministic) frames again and draw the stored landmarks + the label."""
    frames, _ = source.open(args.max_frames)
    for image, frame_results in zip(resampled(frames, fps, args.fps), results):
        sink.write(annotate(image, frame_results, caption))


# ----------------------------------------------------------------------------------------------- report
def describe(result: ClipResult, recognizer: Recognizer) -> str:
    verdict = "" if result.true_label is None else (
        f"  [true {result.true_label}: {'correct' if result.predicted == result.true_label else 'WRONG'}]")
    ranked = "  ".join(f"{i}. {t['label']}{' ' + t['name'] if t['name'] else ''} {t['probability']:.1%}"
                       for i, t in enumerate(result.top_k, 1))
    lines = [f"{result.source} ({result.frames} frames): {ranked}{verdict}"]
    if len(result.predictions) > 1 or result.events:
        events = ", ".join(f"{e['label']} frames {e['start']}-{e['end']} ({e['probability']:.0%})"
                           for e in result.events) or "none above the threshold"
        lines.append(f"  {len(result.predictions)} windows; signs emitted: {events}")
    if result.annotated:
        lines.append(f"  wrote {result.annotated}")
    return "\n".join(lines)


def summary(results: list[ClipResult]) -> dict:
    """Accuracy over clips with a known label, and the per-stage timings over all clips."""
    labelled = [r for r in results if r.true_label is not None]
    windows = [p for r in results for p in r.predictions]
    out = {"clips": len(results), "frames": sum(r.frames for r in results),
           "extraction_ms_per_frame": latency_summary(np.concatenate([r.extraction_ms for r in results]) / 1e3)
           if any(r.extraction_ms for r in results) else None,
           "startup_ms": float(np.mean([r.startup_ms for r in results])),
           "model_ms_per_window": latency_summary([(p.preprocess_ms + p.invoke_ms) / 1e3 for p in windows]),
           "invoke_ms_per_window": latency_summary([p.invoke_ms / 1e3 for p in windows]),
           "windows": len(windows)}
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
    return "\n".join(lines)


def result_json(result: ClipResult) -> dict:
    return {"source": result.source, "true_label": result.true_label, "predicted": result.predicted,
            "frames": result.frames, "top_k": result.top_k, "events": result.events,
            "windows": [{"start": p.start, "end": p.end, "probabilities": p.probabilities.tolist(),
                         "logits": p.logits.tolist(), "preprocess_ms": p.preprocess_ms, "invoke_ms": p.invoke_ms}
                        for p in result.predictions],
            "extraction_ms": result.extraction_ms, "startup_ms": result.startup_ms, "annotated": result.annotated}


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", help="video files, folders of videos (recursive), or a webcam index (0)")
    ap.add_argument("--model", required=True, help="the .tflite model (its card beside it gives config + labels)")
    ap.add_argument("--config_path", default="", help="YAML config (default: the model card)")
    ap.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help=f"classes listed (default: {DEFAULT_TOP_K})")
    ap.add_argument("--window", type=int, default=0,
                    help="sliding-window length in frames (default: 0 = one prediction per whole video)")
    ap.add_argument("--stride", type=int, default=5, help="frames between sliding windows (default: 5)")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                    help=f"probability at which a window emits its sign (default: {DEFAULT_THRESHOLD})")
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
    args = ap.parse_args(argv)
    if args.window < 0 or args.stride < 1 or args.top_k < 1 or not 0.0 <= args.threshold <= 1.0 or args.fps < 0:
        raise UserError("need --window >= 0, --stride >= 1, --top_k >= 1, --threshold in [0, 1], --fps >= 0")
    return args


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    sources = expand_sources(args.sources)
    recognizer = Recognizer(args.model, args.config_path, args.num_threads)
    if any(s.webcam for s in sources) and not args.window:
        raise UserError("a webcam stream needs --window (frames per classified window), e.g. --window 40")
    print(f"model {args.model}: layout {recognizer.layout.name}, {len(recognizer.cfg['joint_idx'])} keypoints, "
          f"{len(recognizer.labels)} classes; {len(sources)} source(s)")
    results = []
    for source in tqdm(sources, desc="videos", disable=len(sources) < 2, leave=False):
        try:
            results.append(run_source(source, recognizer, args))
        except KeyboardInterrupt:
            break
        tqdm.write(describe(results[-1], recognizer))
    if not results:
        raise UserError("nothing was processed")
    report = summary(results)
    print(format_summary(report))
    if args.output_json:
        atomic_write_json(args.output_json, {"model": args.model, "settings": vars(args), "summary": report,
                                             "clips": [result_json(r) for r in results]})
        print(f"wrote {args.output_json}")
    return {"summary": report, "clips": results}


if __name__ == "__main__":
    main()
