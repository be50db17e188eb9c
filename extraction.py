"""MediaPipe Holistic -> keypoint arrays in a stored layout (keypoints.py), per video or per live frame.

Shared by the dataset extractor (extract_65_keypoints.py) and by video/webcam prediction. Settings are the
reference's: legacy `mp.solutions.holistic`, model_complexity=1, video (tracking) mode, one
confidence for detection and tracking, smoothing on, no face refinement. Unlike the reference,
every video gets a FRESH tracker, so no tracking state leaks from one clip into the next.

Array convention, one row per stored point of the layout:
  [x, y, c]  x, y = MediaPipe's normalised image coordinates, as returned (not clipped);
             c = pose `visibility` for pose points, 1.0 for a detected hand/face point.
  A part that is not detected in a frame is all zeros. Frames are never dropped: T = frames read.

API
  extract_video(path, layout, min_confidence=0.5, mirror=False) -> (T, N, 3) float32
        a whole video file; VideoError if it cannot be opened or has no frames
  read_video(path)                        -> (iterator of BGR frames, frames per second or 0) of a
                                             video file: THE place one is opened (VideoError if it
                                             cannot be); a name OpenCV cannot take (not UTF-8: it
                                             crashes the process inside OpenCV) is opened through a
                                             temporary link with an ASCII name
  read_frames(path)                       -> its iterator of BGR frames
  opencv_name_ok(path)                    -> whether OpenCV can take this file name (and write it)
  read_camera(index)                      -> (iterator of BGR frames, frames per second) of a webcam, until closed
  keypoints_from_frames(frames, layout, min_confidence=0.5, mirror=False) -> (T, N, 3) float32
  open_holistic(min_confidence=0.5)       -> a fresh Holistic tracker (use as a context manager; one per video/stream)
  process_frame(holistic, frame_bgr, mirror=False) -> MediaPipe results (the landmarks, e.g. for drawing)
  frame_keypoints(results, layout)        -> (N, 3) float32 for one frame
  draw_landmarks(frame_bgr, results)      -> the frame with the detected skeleton drawn on it (in place)
  detected_frames(keypoints, layout, part) -> (T,) bool, frames where a part (pose/left_hand/right_hand/face) is present
  native_stderr_silenced()                -> context manager hiding MediaPipe's C++ start-up banners (wrap the
                                             tracker's creation and first frame in it, as keypoints_from_frames does)

A webcam loop:   with open_holistic() as h:  for each frame: r = process_frame(h, frame, mirror);
                 rows.append(frame_keypoints(r, layout)); draw_landmarks(frame, r)

mirror=True flips each frame horizontally BEFORE MediaPipe (for left-handed signers: their dominant hand then
lands in MediaPipe's other hand slot). Coordinates are those of the mirrored image.

MediaPipe (and the TensorFlow it imports) is loaded on first use, so importing this module is cheap.

    python extraction.py VIDEO [--layout 65] [--mirror]     # print per-part detection rates of one video
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from keypoints import PARTS, Layout, get_layout
from layouts import VIDEO_SUFFIXES  # noqa: F401  (the video file types, defined once)
from util import NATIVE_STDERR, UserError, cli

DEFAULT_MIN_CONFIDENCE = 0.5
_LIBC = ctypes.CDLL(None)  # the C library of this process, to flush C-level stdio buffers


class VideoError(UserError):
    """A video that cannot be read, or has no frames."""


# ----------------------------------------------------------------------------------------------- MediaPipe
@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null: MediaPipe/TFLite print banners and warnings from C++ for every
    tracker (about 10 lines per video), which would bury the progress bar. Python exceptions are unaffected.
    One thread at a time (trackers started by several threads, as in a live server, would otherwise restore each
    other's /dev/null); a thread may nest it."""
    with NATIVE_STDERR:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            sys.stderr.flush()
            _LIBC.fflush(None)  # C-level buffers too, or their text surfaces later, once fd 2 is restored
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def _mediapipe():
    """The mediapipe package, imported on first use (it pulls in TensorFlow: through tf_env, like every module)."""
    if "mediapipe" not in sys.modules:
        with native_stderr_silenced():
            import tf_env  # noqa: F401  (sets TensorFlow's environment before mediapipe imports it)
            import mediapipe  # noqa: F401
    return sys.modules["mediapipe"]


def check_min_confidence(value: float) -> float:
    """--min_confidence is a probability; scripts check it at start-up, before any video is opened."""
    if not 0.0 <= value <= 1.0:
        raise UserError(f"--min_confidence must be in [0, 1], got {value}")
    return value


def open_holistic(min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """A fresh Holistic tracker in video mode. model_complexity=1 is the only setting whose models ship in the
    mediapipe 0.10.21 wheel (0 and 2 try to download them, which fails offline)."""
    check_min_confidence(min_confidence)
    return _mediapipe().solutions.holistic.Holistic(
        static_image_mode=False, model_complexity=1, smooth_landmarks=True, refine_face_landmarks=False,
        min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)


def process_frame(holistic, frame_bgr: np.ndarray, mirror: bool = False):
    """Run the tracker on one OpenCV (BGR) frame; returns MediaPipe's results (pose/left_hand/right_hand/face
    landmarks, each None when not detected)."""
    import cv2
    if mirror:
        frame_bgr = cv2.flip(frame_bgr, 1)
    return holistic.process(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))


def frame_keypoints(results, layout: Layout) -> np.ndarray:
    """One frame's results -> (N, 3) float32 rows [x, y, c] in the layout's stored order; zeros for missing parts."""
    out = np.zeros((layout.size, 3), dtype=np.float32)
    for part in PARTS:
        landmarks = getattr(results, f"{part}_landmarks")
        stored = layout.part_slice(part)
        if landmarks is None or not stored:
            continue
        points = landmarks.landmark
        for i, src in zip(stored, layout.part_sources(part)):
            p = points[src]
            out[i] = (p.x, p.y, p.visibility if part == "pose" else 1.0)
    return out


def draw_landmarks(frame_bgr: np.ndarray, results) -> np.ndarray:
    """Draw the detected pose, hands and face mesh contours onto the frame (in place) and return it."""
    mp = _mediapipe()
    draw, holistic = mp.solutions.drawing_utils, mp.solutions.holistic
    draw.draw_landmarks(frame_bgr, results.face_landmarks, holistic.FACEMESH_CONTOURS,
                        landmark_drawing_spec=None)
    draw.draw_landmarks(frame_bgr, results.pose_landmarks, holistic.POSE_CONNECTIONS)
    draw.draw_landmarks(frame_bgr, results.left_hand_landmarks, holistic.HAND_CONNECTIONS)
    draw.draw_landmarks(frame_bgr, results.right_hand_landmarks, holistic.HAND_CONNECTIONS)
    return frame_bgr


def skeleton_edges(layout: Layout) -> list[tuple[int, int]]:
    """The lines of a drawn skeleton as pairs of stored indices: MediaPipe's pose and hand connections between
    points the layout keeps (face points have none; they are drawn as dots)."""
    holistic = _mediapipe().solutions.holistic
    edges = []
    for part, connections in (("pose", holistic.POSE_CONNECTIONS), ("left_hand", holistic.HAND_CONNECTIONS),
                              ("right_hand", holistic.HAND_CONNECTIONS)):
        stored = {src: i for i, (p, src) in enumerate(layout.points) if p == part}
        edges += sorted((stored[a], stored[b]) for a, b in connections if a in stored and b in stored)
    return edges


# ----------------------------------------------------------------------------------------------- videos
def opencv_name_ok(path) -> bool:
    """OpenCV takes file names as UTF-8 text. A Linux file name may be any bytes; Python holds the
    ones that are not UTF-8 as surrogate escapes, and OpenCV's VideoCapture and VideoWriter crash
    the whole process (segmentation fault) on such a name."""
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def read_video(path):
    """(every frame of a video file, in order, as BGR uint8 arrays (H, W, 3); frames per second, 0
    when the file does not say). The file is opened right away, so a missing or unreadable file
    raises VideoError here, not at the first frame. A name OpenCV cannot take (opencv_name_ok) is
    opened through a symbolic link with an ASCII name in a temporary folder, removed as soon as the
    file is open."""
    import cv2
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    with contextlib.ExitStack() as stack:
        name = str(path)
        if not opencv_name_ok(name):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="signbart-video-"))
            suffix = path.suffix if opencv_name_ok(path.suffix) else ""
            name = os.path.join(folder, f"video{suffix}")
            os.symlink(path.absolute(), name)
        with native_stderr_silenced():  # FFmpeg's complaint about a broken file; ours names it
            capture = cv2.VideoCapture(name)
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot open video (not a video file, or a codec OpenCV cannot read)")
    return _frames_of(capture), capture.get(cv2.CAP_PROP_FPS) or 0.0


def read_frames(path):
    """The frames of read_video(path)."""
    return read_video(path)[0]


def read_camera(index: int):
    """A webcam's frames (BGR) as they arrive, and the rate it reports (30 when it reports none)."""
    import cv2
    capture = cv2.VideoCapture(int(index))
    if not capture.isOpened():
        raise VideoError(f"webcam {index}: cannot open it (no camera with that index?)")
    return _frames_of(capture), capture.get(cv2.CAP_PROP_FPS) or 30.0


def _frames_of(capture):
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def keypoints_from_frames(frames, layout: Layout, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                          mirror: bool = False) -> np.ndarray:
    """Frames (BGR) of ONE clip -> (T, N, 3) float32, with a tracker of its own. T = 0 for no frames."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return np.zeros((0, layout.size, 3), dtype=np.float32)
    with contextlib.ExitStack() as stack:
        with native_stderr_silenced():  # the tracker's start-up (creation + first frame) prints native banners
            holistic = stack.enter_context(open_holistic(min_confidence))
            rows = [frame_keypoints(process_frame(holistic, first, mirror), layout)]
        rows += [frame_keypoints(process_frame(holistic, frame, mirror), layout) for frame in frames]
    return np.stack(rows)  # (T, N, 3)


def extract_video(path, layout: Layout, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                  mirror: bool = False) -> np.ndarray:
    """A video file -> (T, N, 3) float32 keypoints (module docstring); VideoError when nothing can be read."""
    keypoints = keypoints_from_frames(read_frames(path), layout, min_confidence, mirror)
    if len(keypoints) == 0:
        raise VideoError(f"{path}: no frames could be read (empty or corrupt video)")
    return keypoints


def person_frames(keypoints: np.ndarray) -> int:
    """Frames in which anything (pose, a hand or the face) was detected; 0 means no person in the video."""
    return int(np.any(keypoints[..., :2] != 0, axis=(1, 2)).sum())


def hand_frames(keypoints: np.ndarray, layout: Layout) -> int:
    """Frames with at least one hand detected; 0 means there is no sign to recognise."""
    hands = detected_frames(keypoints, layout, "left_hand") | detected_frames(keypoints, layout, "right_hand")
    return int(hands.sum())


def detected_frames(keypoints: np.ndarray, layout: Layout, part: str) -> np.ndarray:
    """(T, N, C) keypoints -> (T,) bool: frames where any point of the part is non-zero (missing parts are zeros)."""
    idx = layout.part_slice(part)
    if not idx:
        return np.zeros(len(keypoints), dtype=bool)
    return np.any(keypoints[:, idx, :2] != 0, axis=(1, 2))


# ----------------------------------------------------------------------------------------------- CLI
@cli
def main(argv=None):
    parser = argparse.ArgumentParser(description="Extract one video and print how often each part was detected.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("video", help="video file (.mp4/.avi/.mov)")
    parser.add_argument("--layout", type=int, default=65, choices=(65, 90, 63), help="stored keypoint layout")
    parser.add_argument("--min_confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                        help="MediaPipe detection and tracking confidence")
    parser.add_argument("--mirror", action="store_true", help="flip frames horizontally before MediaPipe")
    args = parser.parse_args(argv)
    layout = get_layout(args.layout)
    keypoints = extract_video(args.video, layout, args.min_confidence, args.mirror)  # (T, N, 3)
    print(f"{args.video}: {len(keypoints)} frames, layout {layout.name} {keypoints.shape}")
    for part in PARTS:
        if layout.part_slice(part):
            print(f"  {part:10s} detected in {detected_frames(keypoints, layout, part).mean():6.1%} of frames")


if __name__ == "__main__":
    main()
