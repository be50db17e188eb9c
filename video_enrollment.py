"""A user's enrollment from videos: enrollment.py's few-shot prototypes built on predict_video's own path
(video_recognition: the frames resampled as predict_video does, a fresh MediaPipe tracker per clip, the card's
preprocessing, output 1 of the model -> enrollment.describe).

  enrollment_videos(spec, recognizer)     a folder of <sign>/... videos (GYY/ as in the data, or a label or a
                                          human name of the card) or a text file of `video_path label` lines
                                          -> [(Source, class id)]
  enroll_videos(items, recognizer, s)     every video -> descriptor -> Enrollment (prototypes + the check's
                                          warnings); a video with no hand detected is one UserError line
  guided_enrollment(camera, recognizer, signs, s, clip_frames, pause_frames, sink)
                                          a camera (or a video file standing in for it) asks for each sign in
                                          turn: pause_frames to get ready, then clip_frames recorded (after
                                          resampling to s.fps), a fresh tracker per clip; a clip without a
                                          hand is asked for again (GUIDED_ATTEMPTS times)
  save(enrollment, recognizer[, path])    <model stem>.prototypes.json beside the model (runs.prototypes_path)
  load(path, recognizer)                  a saved file; another model's or layout's file is one UserError line

    from video_enrollment import StreamSettings, enroll_videos, enrollment_videos, save
    from video_recognition import Recognizer
    recognizer = Recognizer("model.tflite")
    enrolled = enroll_videos(enrollment_videos("my_signs/", recognizer), recognizer, StreamSettings(fps=15))
    print(*enrolled.warnings, sep="\\n")           # clips that look like another sign
    save(enrolled, recognizer)                     # model.prototypes.json
    recognizer.prototypes = enrolled.prototypes    # classify() now returns enrollment.score's probabilities
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

import extraction
from enrollment import Prototypes, build_prototypes, card_blocks, check_enrollment, load_prototypes, save_prototypes
from runs import prototypes_path
from util import UserError
from video_recognition import Recognizer, Source, VideoSink, annotate, resampled, tracked_frames, true_label

GUIDED_ATTEMPTS = 3       # guided mode: clips recorded for one sign before giving up when no hand is seen
GUIDED_CLIP_FRAMES = 45   # frames recorded per sign (after --fps resampling: 3 s at 15 fps)
GUIDED_PAUSE_FRAMES = 30  # frames to get ready before each sign (2 s at 15 fps)
NAMES_SHOWN = 12          # an unknown sign's error lists this many of the model's signs


@dataclass
class StreamSettings:
    """How a video becomes keypoints: predict_video's --max_frames, --fps, --min_confidence, --mirror."""
    max_frames: int = 0
    fps: float = 0.0
    min_confidence: float = extraction.DEFAULT_MIN_CONFIDENCE
    mirror: bool = False


@dataclass
class Enrollment:
    prototypes: Prototypes
    warnings: list[str]                          # check_enrollment's lines
    clips: list[dict] = field(default_factory=list)  # {'source', 'label', 'frames'} per enrollment clip


# ----------------------------------------------------------------------------------------------- which videos
def sign_id(name: str, recognizer: Recognizer, where: str) -> int:
    """A sign named by its label (G05) or its human name (the card's label_names) -> class id."""
    if name in recognizer.labels:
        return recognizer.labels.index(name)
    by_name = {human: label for label, human in recognizer.names.items() if human}
    if by_name.get(name) in recognizer.labels:
        return recognizer.labels.index(by_name[name])
    known = recognizer.labels[:NAMES_SHOWN] + (["..."] if len(recognizer.labels) > NAMES_SHOWN else [])
    raise UserError(f"{where}: unknown sign {name!r}; the model knows {', '.join(known)} (labels or their names)")


def enrollment_videos(spec, recognizer: Recognizer) -> list[tuple[Source, int]]:
    """--enroll: a folder (folder_videos) or a text file (listed_videos) -> [(Source, class id)]."""
    path = Path(spec)
    if path.is_dir():
        return folder_videos(path, recognizer)
    if path.is_file():
        return listed_videos(path, recognizer)
    raise UserError(f"{path}: enrollment folder or list file not found")


def folder_videos(folder: Path, recognizer: Recognizer) -> list[tuple[Source, int]]:
    """Every video under folder/<sign>/ (recursive), the sign being the first folder below `folder`; a video
    directly in `folder` needs the sign in its file name (user08_G05_R01.mp4)."""
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in extraction.VIDEO_SUFFIXES)
    if not videos:
        raise UserError(f"{folder}: no videos ({', '.join(extraction.VIDEO_SUFFIXES)}) to enroll; put each "
                        "sign's videos in a folder named by the sign (e.g. G05/R01.mp4)")
    items = []
    for video in videos:
        parts = video.relative_to(folder).parts
        source = Source(str(video), "_".join(Path(*parts).with_suffix("").parts))
        name = parts[0] if len(parts) > 1 else true_label(source, recognizer.labels)
        if name is None:
            raise UserError(f"{video}: names no sign; put it in a folder named by its sign "
                            f"({folder}/<sign>/) or list it in a text file of 'video_path label' lines")
        items.append((source, sign_id(name, recognizer, str(folder / parts[0]) if len(parts) > 1 else str(video))))
    return items


def listed_videos(listing: Path, recognizer: Recognizer) -> list[tuple[Source, int]]:
    """Lines `video_path label` (a relative path is relative to the list file; blank and # lines skipped)."""
    if listing.suffix.lower() in extraction.VIDEO_SUFFIXES:
        raise UserError(f"{listing}: --enroll takes a folder of <sign>/ videos or a text file of "
                        "'video_path label' lines, not a video")
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{listing}: not a text file of 'video_path label' lines") from None
    items = []
    for number, line in enumerate(lines, 1):
        fields = line.strip().rsplit(maxsplit=1)
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{listing}:{number}"
        if len(fields) != 2:
            raise UserError(f"{where}: expected 'video_path label', got {line.strip()!r}")
        video = Path(fields[0]) if Path(fields[0]).is_absolute() else listing.parent / fields[0]
        if not video.is_file():
            raise extraction.VideoError(f"{where}: {video}: video file not found")
        items.append((Source(str(video), video.stem), sign_id(fields[1], recognizer, where)))
    if not items:
        raise UserError(f"{listing}: lists no video (lines 'video_path label')")
    return items


# ----------------------------------------------------------------------------------------------- videos
def track(source: Source, recognizer: Recognizer, settings) -> np.ndarray:
    """A video's (T, N, 3) keypoints, read as predict_video reads it (resampled, one fresh tracker)."""
    frames, fps = source.open(settings.max_frames)
    rows = [t.row for t in tracked_frames(resampled(frames, fps, settings.fps), recognizer.layout,
                                          settings.min_confidence, settings.mirror)]
    if not rows:
        raise extraction.VideoError(f"{source.spec}: no frames could be read (empty or corrupt video)")
    return np.stack(rows)


def has_hand(rows: np.ndarray, recognizer: Recognizer) -> bool:
    return extraction.hand_frames(rows, recognizer.layout) > 0


def enroll_videos(items: list[tuple[Source, int]], recognizer: Recognizer, settings) -> Enrollment:
    """Each video -> its descriptor -> the prototypes and check_enrollment's warnings."""
    recognizer.model_key()             # a model without the embedding output fails before any video is read
    descriptors, clips = [], []
    for source, sign in tqdm(items, desc="enrollment videos", leave=False, disable=len(items) < 2):
        rows = track(source, recognizer, settings)
        if not has_hand(rows, recognizer):
            raise UserError(f"{source.spec}: no hand detected in any of {len(rows)} frames (no signer in "
                            f"view?); cannot enroll it as {recognizer.display[sign]}")
        descriptors.append(recognizer.descriptor(rows))
        clips.append({"source": source.spec, "label": recognizer.labels[sign], "frames": len(rows)})
    return build(descriptors, [sign for _, sign in items], recognizer, clips)


def build(descriptors: list, signs: list[int], recognizer: Recognizer, clips: list[dict]) -> Enrollment:
    descriptors, signs = np.stack(descriptors), np.asarray(signs)
    blocks, count = card_blocks(recognizer.card), len(recognizer.labels)
    return Enrollment(build_prototypes(descriptors, signs, count, model=recognizer.model_key(), blocks=blocks),
                      check_enrollment(descriptors, signs, count, recognizer.display, blocks=blocks), clips)


# ----------------------------------------------------------------------------------------------- guided
def guided_enrollment(camera: Source, recognizer: Recognizer, signs: list[int], settings,
                      clip_frames: int = GUIDED_CLIP_FRAMES, pause_frames: int = GUIDED_PAUSE_FRAMES,
                      sink: VideoSink | None = None, say=print) -> Enrollment:
    """Ask for each sign in turn on one stream and record one clip of each (see the module docstring)."""
    recognizer.model_key()
    sink = sink or VideoSink(None, 0.0, False)
    frames, fps = camera.open()
    stream = resampled(frames, fps, settings.fps)
    descriptors, clips = [], []
    try:
        for done, sign in enumerate(signs):
            rows = record_sign(stream, recognizer, sign, settings, clip_frames, pause_frames, sink, say)
            if rows is None:
                raise UserError(f"{camera.spec}: the stream ended before sign {recognizer.display[sign]} was "
                                f"recorded ({done} of {len(signs)} signs recorded)")
            descriptors.append(recognizer.descriptor(rows))
            clips.append({"source": f"{camera.spec} (guided)", "label": recognizer.labels[sign],
                          "frames": len(rows)})
    finally:
        stream.close()
    return build(descriptors, signs, recognizer, clips)


def record_sign(stream, recognizer: Recognizer, sign: int, settings, clip_frames: int, pause_frames: int,
                sink: VideoSink, say) -> np.ndarray | None:
    """One clip of `sign` with a hand in it: (T, N, 3) keypoints; None when the stream ends first."""
    name = recognizer.display[sign]
    for attempt in range(1, GUIDED_ATTEMPTS + 1):
        again = f" (attempt {attempt} of {GUIDED_ATTEMPTS})" if attempt > 1 else ""
        say(f"show sign {name} now{again}: {pause_frames} frames to get ready, then {clip_frames} recorded")
        for image in islice(stream, pause_frames):
            show(sink, image, None, f"get ready: {name}")
        rows = []
        for i, tracked in enumerate(tracked_frames(islice(stream, clip_frames), recognizer.layout,
                                                   settings.min_confidence, settings.mirror), 1):
            rows.append(tracked.row)
            show(sink, tracked.image, tracked.results, f"show {name} now {i}/{clip_frames}")
        if not rows:
            return None
        if has_hand(np.stack(rows), recognizer):
            return np.stack(rows)
        say(f"no hand detected in the {len(rows)} frames recorded for {name}")
    raise UserError(f"no hand detected in {GUIDED_ATTEMPTS} clips recorded for sign {name} (no signer in view?)")


def show(sink: VideoSink, image: np.ndarray, results, caption: str) -> None:
    """The frame with its caption in the --display window / annotated video (nothing when neither is on)."""
    if sink.path is None and not sink.display:
        return
    sink.write(annotate(image, results, caption))
    if sink.stopped:
        raise UserError("guided enrollment stopped (q) before every sign was recorded")


# ----------------------------------------------------------------------------------------------- files
def save(enrollment: Enrollment, recognizer: Recognizer, path=None) -> Path:
    """The prototypes as a prototype file: `path`, else <model stem>.prototypes.json beside the model."""
    return save_prototypes(path or prototypes_path(recognizer.model_path), enrollment.prototypes,
                           labels=recognizer.labels)


def load(path, recognizer: Recognizer) -> Prototypes:
    """A saved prototype file of this very model and descriptor layout (else one UserError line)."""
    return load_prototypes(path, recognizer.model_key(), card_blocks(recognizer.card))
