"""Sign recognition on a stream of video frames: what predict_video.py (and any live front end) is built from.

  Recognizer(model_path)          a .tflite with the config and labels of its model card; .classify(raw) runs
                                  preprocessing.model_inputs + the interpreter on (T, N, 3) keypoints -> Prediction;
                                  with .prototypes set (a user's enrollment, video_enrollment.py) its probabilities
                                  are enrollment.score's; .descriptor(raw) is a clip's enrollment descriptor
  expand_sources / Source         video files, folders of videos, webcam indices -> frame iterators + fps
  resampled(frames, src, target)  keep about `target` frames per second of a `src` fps stream
  tracked_frames(frames, layout)  one fresh MediaPipe Holistic tracker (extraction.py) -> TrackedFrame per frame;
                                  Tracker: the same, fed one frame at a time (a live stream)
  classify_clip(recognizer, rows) a whole clip as predict_video classifies a video: Prediction + no_hand_warning
  no_hand_warning(rows, layout)   a clip without any hand names no sign: the warning that replaces it
  SlidingWindow                   classify the last N frames every S frames; confident windows -> sign events
  annotate / VideoSink            landmarks + caption on a frame; an .mp4 writer and/or a live window
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

import extraction
from enrollment import ModelKey, Prototypes, card_hands, describe, params_from_card, score
from keypoints import get_layout
from metrics import softmax
from preprocessing import model_inputs
from util import UserError
from model_runtime import open_model
from tflite_runtime import (display_names, output_labels, read_model_card,
                            resolve_config)

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
    """A .tflite model with the config and labels recorded in its card (or --config_path + labels.txt).
    `prototypes`: a user's enrollment (None: the classifier alone)."""

    def __init__(self, model_path, config_path: str = "", num_threads: int = 1):
        self.cfg = resolve_config(model_path, config_path)
        self.layout = get_layout(self.cfg["layout"])
        self.model_path = Path(model_path)
        self.model = open_model(model_path, num_threads=num_threads)
        self.card = read_model_card(model_path)
        self.labels = output_labels(self.model, model_path)
        self.names = self.card.get("label_names") or {}
        self.display = display_names(self.labels, self.names)
        self.params = params_from_card(self.card)
        self.prototypes: Prototypes | None = None

    def classify(self, raw: np.ndarray, start: int = 0) -> Prediction:
        """raw (T, N, 3) keypoints in the model's layout -> a Prediction of frames [start, start + T)."""
        t0 = time.perf_counter()
        keypoints, mask = model_inputs(raw, self.cfg)             # (1, 64, K, 2), (1, 64)
        t1 = time.perf_counter()
        if self.prototypes is None:
            logits, seconds = self.model.run(keypoints, mask)   # (1, C)
            probabilities = softmax(logits[0])
        else:
            logits, embedding, seconds = self.model.run_with_embedding(keypoints, mask)
            descriptor = describe(embedding[0], keypoints[0], mask[0], card_hands(self.card))
            probabilities = score(descriptor, logits[0], self.prototypes, self.params)
        return Prediction(start, start + len(raw), probabilities, logits[0], 1e3 * (t1 - t0), 1e3 * seconds)

    def descriptor(self, raw: np.ndarray) -> np.ndarray:
        """raw (T, N, 3) keypoints -> the clip's enrollment descriptor (enrollment.describe of the model's
        embedding and input)."""
        keypoints, mask = model_inputs(raw, self.cfg)
        _, embedding, _ = self.model.run_with_embedding(keypoints, mask)
        return describe(embedding[0], keypoints[0], mask[0], card_hands(self.card))

    def model_key(self) -> ModelKey:
        """The export a prototype file belongs to (a card without a personalization block: one line)."""
        return ModelKey.from_card(self.model_path, self.card)

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
        if self.webcam:
            frames, fps = extraction.read_camera(int(self.spec))
            return limited(frames, max_frames), fps
        frames, fps = extraction.read_video(self.spec)
        return limited(frames, max_frames), fps or 15.0


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
    """The class label named in the path (a folder name, else an _-separated part of the file name); None when
    there is none, or several (a recording of many signs)."""
    if source.webcam:
        return None
    path = Path(source.spec)
    for candidates in (path.parent.parts, path.stem.split("_")):
        named = {c for c in candidates if c in labels}
        if named:
            return named.pop() if len(named) == 1 else None
    return None


@dataclass
class TrackedFrame:
    image: np.ndarray      # BGR (H, W, 3)
    results: object        # MediaPipe's landmarks of this frame
    row: np.ndarray        # (N, 3) keypoints in the layout
    seconds: float         # MediaPipe + conversion


class Tracker:
    """One fresh MediaPipe Holistic tracker fed one frame at a time (extraction.py's per-frame API): .track(image)
    -> TrackedFrame. Created lazily on the first frame; close() (or `with`) releases it. tracked_frames is this
    tracker over an iterator of frames; a live stream (live_stream.py) pushes its frames one by one."""

    def __init__(self, layout, min_confidence: float, mirror: bool):
        self.layout, self.min_confidence, self.mirror = layout, min_confidence, mirror
        self._stack = contextlib.ExitStack()
        self._holistic = None
        self._first = True

    def start(self) -> None:
        """Create the tracker now rather than on the first frame (a live stream does, before frames come)."""
        if self._holistic is None:
            with extraction.native_stderr_silenced():  # creation prints native banners
                self._holistic = self._stack.enter_context(extraction.open_holistic(self.min_confidence))
            self._first = True

    def track(self, image: np.ndarray) -> TrackedFrame:
        start = time.perf_counter()
        self.start()
        if self._first:  # the first frame prints native banners too
            with extraction.native_stderr_silenced():
                results = extraction.process_frame(self._holistic, image, self.mirror)
            self._first = False
        else:
            results = extraction.process_frame(self._holistic, image, self.mirror)
        row = extraction.frame_keypoints(results, self.layout)
        return TrackedFrame(image, results, row, time.perf_counter() - start)

    def close(self) -> None:
        self._stack.close()
        self._holistic = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracked_frames(frames, layout, min_confidence: float, mirror: bool):
    """One fresh Holistic tracker over a stream: yields a TrackedFrame per frame (extraction.py's per-frame API)."""
    with Tracker(layout, min_confidence, mirror) as tracker:
        for image in frames:
            yield tracker.track(image)


def classify_clip(recognizer: Recognizer, rows) -> tuple[Prediction, str]:
    """A whole clip, as predict_video classifies a video: its frames' keypoints (a list of (N, 3) rows or a
    (T, N, 3) array) -> (one Prediction, no_hand_warning); with a warning no sign is to be named."""
    rows = np.asarray(rows) if not isinstance(rows, list) else np.stack(rows)
    return recognizer.classify(rows), no_hand_warning(rows, recognizer.layout)


def no_hand_warning(rows: np.ndarray, layout) -> str:
    """'' when a hand is detected in some frame of a clip's (T, N, 3) keypoints, else the warning that replaces
    its sign: the model still answers for all-zero hands, and that is not a sign."""
    if extraction.hand_frames(rows, layout):
        return ""
    return f"no hand detected in any of {len(rows)} frames (no signer in view?); no sign named"


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

    def trim(self) -> None:
        """A stream without an end (a live connection) keeps no past windows, and of its events only the last,
        which the event rule extends."""
        del self.windows[:], self.events[:-1]

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
    """Landmarks (none when results is None) plus the caption in a dark band at the top (in place)."""
    import cv2
    if results is not None:
        extraction.draw_landmarks(image, results)
    if caption:
        cv2.rectangle(image, (0, 0), (image.shape[1], 44), (0, 0, 0), thickness=-1)
        cv2.putText(image, caption, (10, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.0, CAPTION_COLOR, 2, cv2.LINE_AA)
    return image


class VideoSink:
    """An optional annotated .mp4 and an optional live window; both no-ops when not asked for. A
    path OpenCV cannot take (extraction.opencv_name_ok) is written under a temporary name and moved
    there on close."""

    def __init__(self, path: Path | None, fps: float, display: bool):
        self.path, self.fps, self.display, self.writer = path, fps, display, None
        self.stopped = False
        self.target = path  # what OpenCV writes

    def write(self, image: np.ndarray) -> None:
        import cv2
        if self.path is not None:
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not extraction.opencv_name_ok(self.path):
                    self.target = Path(tempfile.mkdtemp(prefix="signbart-video-")) / "annotated.mp4"
                self.writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"),
                                              self.fps, (image.shape[1], image.shape[0]))
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
            self.writer = None
            if self.target != self.path:
                shutil.move(self.target, self.path)
                self.target.parent.rmdir()
