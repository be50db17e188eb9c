"""One live recognition stream: the frames of one WebSocket connection through video_recognition.py, the code
predict_video.py runs, in a worker thread of its own. serve.py is the web front; the protocol is docs/live.md.

  LiveSettings               the stream's settings (serve.py's flags)
  LiveStream(model, s, send) one connection: .frame(data) for each binary message, .control(message) for each
                             parsed text message (both return at once, from the event loop); the worker thread
                             decodes each JPEG, tracks it with a fresh MediaPipe Holistic tracker of its own
                             (video_recognition.Tracker), pushes its keypoints through a SlidingWindow and keeps
                             them for the clip that the next `end` classifies (video_recognition.classify_clip)
                             or enrolls (video_enrollment); every answer goes out through send(dict)
  FrameQueue                 bounded: at most `max_frames` frames wait; a new frame pushes out the OLDEST one
                             (counted in `dropped`); control messages are never dropped and keep their place
  parse_control(text)        a text message -> {'type': ..., ...}, or ProtocolError
  decode_frame(data)         a JPEG -> BGR image; FrameError for anything else (checked before decoding)

    from live_stream import LiveSettings, LiveStream
    stream = LiveStream("model.tflite", LiveSettings(), send=print)   # the worker starts, sends `ready`
    stream.frame(open("frame.jpg", "rb").read())     # -> `landmarks`, and `prediction` when a window is due
    stream.control({"type": "end"})                  # -> `clip`: every frame since the last end, classified
    stream.close()
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

import extraction
import video_enrollment
from recipes import (
    LIVE_MAX_CLIP_FRAMES,
    LIVE_QUEUE_FRAMES,
    LIVE_WINDOW,
    SIGN_THRESHOLD,
    TOP_K,
    WINDOW_STRIDE,
)
from util import UserError
from video_recognition import Recognizer, SlidingWindow, Tracker, classify_clip

MAX_FRAME_PIXELS = 1920 * 1080    # a JPEG announcing more pixels is refused before it is decoded
MAX_CONTROLS = 16                 # control messages waiting at once; more are refused
CONTROL_TYPES = ("end", "enroll", "reset_enrollment")
SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
LOG = logging.getLogger("signbart.live")


class ProtocolError(ValueError):
    """A message the protocol does not know: answered with an `error`, the connection stays up."""


class FrameError(ValueError):
    """A binary message that is not a usable JPEG frame: answered with an `error` and skipped."""


@dataclass
class LiveSettings:
    """What serve.py's flags set for every stream (defaults: recipes.py)."""
    config_path: str = ""
    num_threads: int = 1
    window: int = LIVE_WINDOW
    stride: int = WINDOW_STRIDE
    threshold: float = SIGN_THRESHOLD
    top_k: int = TOP_K
    queue_frames: int = LIVE_QUEUE_FRAMES
    max_clip_frames: int = LIVE_MAX_CLIP_FRAMES
    min_confidence: float = extraction.DEFAULT_MIN_CONFIDENCE
    mirror: bool = False


# ----------------------------------------------------------------------------------------------- messages in
def parse_control(text: str) -> dict:
    """A text message: a JSON object whose `type` is one of CONTROL_TYPES (enroll needs a `sign` string)."""
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError(f"a text message must be a JSON object, got {text[:40]!r}") from None
    if not isinstance(message, dict) or message.get("type") not in CONTROL_TYPES:
        kind = message.get("type") if isinstance(message, dict) else type(message).__name__
        raise ProtocolError(f"unknown message type {str(kind)[:40]!r}; the client sends JPEG frames (binary) "
                            f"and text messages of type {', '.join(CONTROL_TYPES)}")
    if message["type"] == "enroll" and not isinstance(message.get("sign"), str):
        raise ProtocolError("enroll needs a `sign`: a label or a name of the model's signs")
    return message


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn); None when `data` is not a JPEG with one."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:                      # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in SOF_MARKERS:
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def decode_frame(data: bytes, max_pixels: int = MAX_FRAME_PIXELS) -> np.ndarray:
    """A JPEG's bytes -> a BGR image (H, W, 3); FrameError when it is not a JPEG, announces more than
    max_pixels pixels (checked before decoding) or cannot be decoded."""
    import cv2
    size = jpeg_size(data)
    if size is None:
        raise FrameError(f"not a JPEG image ({len(data)} bytes; each binary message is one JPEG frame)")
    width, height = size
    if not 0 < width * height <= max_pixels:
        raise FrameError(f"a {width}x{height} JPEG; frames may have at most {max_pixels} pixels (e.g. 1920x1080)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"a corrupt JPEG ({len(data)} bytes) that cannot be decoded")
    return image


# ----------------------------------------------------------------------------------------------- the queue
@dataclass
class Item:
    kind: str           # "frame" | "control"
    seq: int = -1       # frames: the frame's number on this connection (0, 1, ...: order of arrival)
    data: bytes = b""
    arrived: float = 0.0
    message: dict | None = None


class FrameQueue:
    """What waits for the worker: frames (at most max_frames; a new one pushes out the oldest) and control
    messages (at most MAX_CONTROLS; never pushed out), in order of arrival."""

    def __init__(self, max_frames: int):
        self.max_frames = max_frames
        self.items: deque[Item] = deque()
        self.frames = 0
        self.dropped = 0
        self.closed = False
        self.cond = threading.Condition()

    def put(self, item: Item) -> bool:
        """False when a control message is refused (too many waiting)."""
        with self.cond:
            if item.kind == "frame":
                if self.frames >= self.max_frames:
                    oldest = next(i for i, queued in enumerate(self.items) if queued.kind == "frame")
                    del self.items[oldest]
                    self.frames -= 1
                    self.dropped += 1
                self.frames += 1
            elif len(self.items) - self.frames >= MAX_CONTROLS:
                return False
            self.items.append(item)
            self.cond.notify()
            return True

    def get(self) -> Item | None:
        """The next item (blocks); None once closed."""
        with self.cond:
            while not self.items and not self.closed:
                self.cond.wait()
            if self.closed:
                return None
            item = self.items.popleft()
            self.frames -= item.kind == "frame"
            return item

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


# ----------------------------------------------------------------------------------------------- the stream
class LiveStream:
    """One connection's recognition (module docstring). `send(message: dict)` must be thread-safe."""

    def __init__(self, model_path, settings: LiveSettings, send):
        self.model_path, self.s, self.send = model_path, settings, send
        self.queue = FrameQueue(settings.queue_frames)
        self.received = 0
        self.clip: deque = deque(maxlen=settings.max_clip_frames)   # keypoint rows since the last `end`
        self.clip_frames = 0                                         # ... counted, kept or not
        self.enrolling: int | None = None                            # the sign being recorded
        self.descriptors, self.signs, self.clips = [], [], []        # this connection's enrollment
        self.thread = threading.Thread(target=self._run, name="live stream", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ event loop side (never blocks)
    def frame(self, data: bytes) -> None:
        self.queue.put(Item("frame", self.received, data, time.perf_counter()))
        self.received += 1

    def control(self, message: dict) -> None:
        if not self.queue.put(Item("control", message=message)):
            self.send(error(f"{message['type']}: more than {MAX_CONTROLS} control messages waiting; refused"))

    def close(self) -> None:
        self.queue.close()

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        try:
            self.recognizer = Recognizer(self.model_path, self.s.config_path, self.s.num_threads)
            self.sliding = SlidingWindow(self.recognizer, self.s.window, self.s.stride, self.s.threshold)
            with Tracker(self.recognizer.layout, self.s.min_confidence, self.s.mirror) as tracker:
                tracker.start()
                self.send({"type": "ready"})
                while (item := self.queue.get()) is not None:
                    if item.kind == "frame":
                        self._frame(tracker, item)
                    else:
                        self._control(item.message)
        except Exception as e:
            LOG.exception("live stream failed")
            self.send(error(f"the server could not go on with this stream: {type(e).__name__}: {e}", fatal=True))

    def _frame(self, tracker: Tracker, item: Item) -> None:
        try:
            image = decode_frame(item.data)
        except FrameError as e:
            self.send(error(f"frame {item.seq}: {e}; skipped", frame=item.seq))
            return
        tracked = tracker.track(image)
        self.clip.append(tracked.row)
        self.clip_frames += 1
        dropped = self.queue.dropped
        self.send({"type": "landmarks", "frame": item.seq, "width": image.shape[1], "height": image.shape[0],
                   "points": points(tracked.row), "track_ms": round(1e3 * tracked.seconds, 2),
                   "dropped": dropped})
        last_event = self.sliding.events[-1] if self.sliding.events else None
        prediction = self.sliding.push(tracked.row)
        if prediction is None:
            return
        window = np.stack(self.sliding.rows)
        self.send({"type": "prediction", "frame": item.seq, "start": prediction.start, "end": prediction.end,
                   "top": self.top(prediction), "hand_frames": extraction.hand_frames(window, tracker.layout),
                   "enrolled": self.recognizer.prototypes is not None,
                   "preprocess_ms": round(prediction.preprocess_ms, 3), "invoke_ms": round(prediction.invoke_ms, 3),
                   "latency_ms": round(1e3 * (time.perf_counter() - item.arrived), 2), "dropped": dropped})
        if self.sliding.events and self.sliding.events[-1] is not last_event:
            event = self.sliding.events[-1]
            self.send({"type": "sign", "label": event["label"], "name": event["name"], "frame": item.seq,
                       "probability": round(event["probability"], 4)})
        self.sliding.trim()

    def top(self, prediction) -> list[dict]:
        return [{"label": t["label"], "name": t["name"], "probability": round(t["probability"], 4)}
                for t in self.recognizer.top_k(prediction, self.s.top_k)]

    def _control(self, message: dict) -> None:
        try:
            if message["type"] == "end":
                self._end()
            elif message["type"] == "enroll":
                self._enroll(message["sign"])
            else:
                self._reset_enrollment()
        except UserError as e:
            self.send(error(f"{message['type']}: {e}"))

    def _end(self) -> None:
        rows, frames, sign = list(self.clip), self.clip_frames, self.enrolling
        self.clip.clear()
        self.clip_frames, self.enrolling = 0, None
        if not rows:
            raise UserError("no frame since the last end (or since the connection opened)")
        truncated = frames - len(rows)
        if sign is not None:
            self._enrolled(sign, np.stack(rows), truncated)
            return
        prediction, warning = classify_clip(self.recognizer, rows)
        self.send({"type": "clip", "frames": len(rows), "truncated": truncated,
                   "top": [] if warning else self.top(prediction), "warning": warning,
                   "enrolled": self.recognizer.prototypes is not None,
                   "preprocess_ms": round(prediction.preprocess_ms, 3), "invoke_ms": round(prediction.invoke_ms, 3)})

    def _enroll(self, name: str) -> None:
        sign = video_enrollment.sign_id(name, self.recognizer, "enroll")
        self.recognizer.model_key()          # a model without the embedding output cannot enroll: one line
        self.enrolling = sign
        self.clip.clear()
        self.clip_frames = 0
        self.send({"type": "enrolling", "label": self.recognizer.labels[sign],
                   "name": self.recognizer.names.get(self.recognizer.labels[sign], "")})

    def _enrolled(self, sign: int, rows: np.ndarray, truncated: int) -> None:
        label = self.recognizer.labels[sign]
        if not video_enrollment.has_hand(rows, self.recognizer):
            raise UserError(f"no hand detected in the {len(rows)} frames recorded for "
                            f"{self.recognizer.display[sign]}; record it again")
        self.descriptors.append(self.recognizer.descriptor(rows))
        self.signs.append(sign)
        self.clips.append({"source": "live", "label": label, "frames": len(rows)})
        enrolled = video_enrollment.build(self.descriptors, self.signs, self.recognizer, self.clips)
        self.recognizer.prototypes = enrolled.prototypes
        counts = enrolled.prototypes.counts
        self.send({"type": "enrolled", "label": label, "name": self.recognizer.names.get(label, ""),
                   "frames": len(rows), "truncated": truncated, "warnings": enrolled.warnings,
                   "signs": [{"label": self.recognizer.labels[c], "name": self.recognizer.names.get(
                       self.recognizer.labels[c], ""), "clips": int(counts[c])} for c in np.flatnonzero(counts)]})

    def _reset_enrollment(self) -> None:
        self.descriptors, self.signs, self.clips = [], [], []
        self.recognizer.prototypes = None
        self.enrolling = None
        self.send({"type": "enrollment_reset"})


def points(row: np.ndarray) -> list:
    """A frame's (N, 3) keypoints -> [[x, y] or None (not detected)] for drawing (4 decimals)."""
    detected = np.any(row[:, :2] != 0, axis=1)
    return [[round(float(x), 4), round(float(y), 4)] if d else None for (x, y), d in zip(row[:, :2], detected)]


def error(message: str, **extra) -> dict:
    return {"type": "error", "message": message, **extra}
