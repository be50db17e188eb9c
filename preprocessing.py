"""Clip preprocessing in plain numpy: THE app contract (training, evaluation, predict_video and the app test vectors
all call these functions, so they cannot drift apart).

For a stored clip `raw` (T, N, >=2) of MediaPipe landmarks and a config (config.py):
  1. keep x, y and select the config's joint_idx (ascending stored order)       -> (T, K, 2)
  2. clip coordinates to [0, 1]
     (only with a config's rest_hand_cutoff > 0: a hand whose pose wrist is more than that many shoulder widths
     below the shoulder line counts as undetected in that frame: its points become (0, 0))
  3. if T > 64, keep frames floor(linspace(0, T-1, 64))                          -> (T', K, 2), T' <= 64
     (only with a config's dominant_hand_ratio > 0: a clip whose left hand is detected in more than that many
     times as many of these frames as its right hand is mirrored, so a left-handed signer looks right-handed)
  4. (training only: augmentations.py)
  5. per frame and per group: min-max into a padded square box around the group's detected points;
     undetected points (exactly (0, 0)) are ignored and stay (0, 0)
  6. zero-pad to 64 frames; the mask is a length prefix: mask[t] = 1 for t < T', else 0
"""
from __future__ import annotations

import numpy as np

from keypoints import hand_positions, mirror_permutation, rest_hand_points, selected_groups
from recipes import DOMINANT_HAND_RATIO, REST_HAND_CUTOFF

MAX_FRAMES = 64  # every clip is subsampled to at most this many frames; the TFLite input is fixed to it
BOX_MARGIN = 0.05  # the square box is 1 + 2*0.05 = 1.1x the larger side of the group's bounding box


def select_and_clip(raw: np.ndarray, joint_idx) -> np.ndarray:
    """(T, N, C>=2) stored landmarks -> (T, K, 2) float64 x, y of the selected joints, clipped to [0, 1]."""
    kp = np.asarray(raw, dtype=np.float64)[:, joint_idx, :2]
    return np.clip(kp, 0.0, 1.0)


def drop_resting_hands(kp: np.ndarray, cfg: dict) -> np.ndarray:
    """End of step 2 (spec step 4.2): a hand at rest becomes an undetected hand, so that a signer who
    lowers the hands out of the picture and one who rests them in view give the model the same input.

    kp: (T, K, 2) clipped selected coordinates. In a frame where both pose shoulders are detected, a hand
    whose pose wrist lies more than cfg["rest_hand_cutoff"] shoulder widths (|x_left - x_right| of the
    shoulders) below the shoulder line (mean y of the shoulders) gets all its points set to (0, 0).
    """
    cutoff = cfg.get("rest_hand_cutoff", REST_HAND_CUTOFF)
    if not cutoff:
        return kp
    left, right, hands = rest_hand_points(cfg)
    shoulders = kp[:, [left, right]]                                      # (T, 2, 2)
    width = np.abs(shoulders[:, 0, 0] - shoulders[:, 1, 0])               # (T,)
    usable = ~np.any(np.all(shoulders == 0.0, axis=-1), axis=1) & (width > 0)
    line = shoulders[:, :, 1].mean(axis=1)
    out = kp.copy()
    for wrist, hand in hands:
        resting = usable & ~np.all(kp[:, wrist] == 0.0, axis=-1) & (kp[:, wrist, 1] - line > cutoff * width)
        out[np.ix_(resting, hand)] = 0.0
    return out


def mirror_clip(kp: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """The clip as a signer of the other hand gives it: x -> 1 - x of the detected points and the left/right
    slots swapped (mirror: config.mirror_permutation); undetected points stay (0, 0). Its own inverse."""
    detected = ~np.all(kp == 0.0, axis=-1)                                # (T, K)
    mirrored = np.where(detected[..., None], np.stack([1.0 - kp[..., 0], kp[..., 1]], axis=-1), 0.0)
    return mirrored[:, mirror, :]


def hand_frame_counts(kp: np.ndarray, cfg: dict) -> tuple[int, int]:
    """Frames in which the left and the right hand are detected (any point not at (0, 0))."""
    left, right = hand_positions(cfg)
    return tuple(int((~np.all(kp[:, hand] == 0.0, axis=(1, 2))).sum()) for hand in (left, right))


def canonicalize_hands(kp: np.ndarray, cfg: dict) -> np.ndarray:
    """After the resting-hand rule and frame sampling (spec step 4.3): a clip whose left hand is detected in more than
    cfg["dominant_hand_ratio"] times as many frames as its right hand is mirrored (mirror_clip), so that
    a left-handed signer gives the model what the same sign by a right-handed signer gives. A ratio well
    above 1 leaves two-handed signs, where both hands are seen about as often, as they are."""
    return mirror_clip(kp, mirror_permutation(cfg)) if left_dominant(kp, cfg) else kp


def left_dominant(kp: np.ndarray, cfg: dict) -> bool:
    """True when canonicalize_hands mirrors this clip (never when the config's dominant_hand_ratio is 0)."""
    ratio = cfg.get("dominant_hand_ratio", DOMINANT_HAND_RATIO)
    if not ratio:
        return False
    n_left, n_right = hand_frame_counts(kp, cfg)
    return n_left > ratio * n_right


def uniform_frame_indices(num_frames: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Frames kept from a clip of `num_frames`: all of them, or floor(linspace(0, T-1, max_frames))."""
    if num_frames <= max_frames:
        return np.arange(num_frames)
    return np.floor(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64)


def subsample(kp: np.ndarray, max_frames: int = MAX_FRAMES) -> np.ndarray:
    return kp[uniform_frame_indices(len(kp), max_frames)]


def group_box(part: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The normalization box of one group in every frame.

    part: (T, n, 2) clipped coordinates of the group's points. Returns valid (T, n) bool (a point exactly at (0, 0)
    was not detected), start (T, 2) and span (T, 2): the padded square box around the detected points, clamped to
    [0, 1]. A frame without any detected point gets start 0 and span 0.
    """
    valid = ~np.all(part == 0.0, axis=-1)                             # (T, n)
    has_any = valid.any(axis=1)                                       # (T,)
    lo = np.where(valid[..., None], part, np.inf).min(axis=1)         # (T, 2)
    hi = np.where(valid[..., None], part, -np.inf).max(axis=1)        # (T, 2)
    lo, hi = np.where(has_any[:, None], lo, 0.0), np.where(has_any[:, None], hi, 0.0)
    w, h = hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1]
    dx = np.where(w > h, BOX_MARGIN * w, BOX_MARGIN * h + (h - w) / 2)
    dy = np.where(w > h, BOX_MARGIN * w + (w - h) / 2, BOX_MARGIN * h)
    pad = np.stack([dx, dy], axis=-1)                                 # (T, 2)
    start, end = np.clip(lo - pad, 0.0, 1.0), np.clip(hi + pad, 0.0, 1.0)
    return valid, start, end - start


def normalize_groups(kp: np.ndarray, groups) -> np.ndarray:
    """Per-frame, per-group padded-square min-max normalization, vectorized over frames.

    kp: (T, K, 2) clipped coordinates; groups: index arrays into K. Returns float32 (T, K, 2) in [0, 1].
    """
    kp = np.asarray(kp, dtype=np.float64)
    out = kp.copy()
    for idx in groups:
        part = kp[:, idx, :]                                          # (T, n, 2)
        valid, start, span = group_box(part)
        safe_span = np.where(span > 0, span, 1.0)
        scaled = np.where(span[:, None, :] > 0, (part - start[:, None, :]) / safe_span[:, None, :], part)
        out[:, idx, :] = np.where(valid[..., None], scaled, part)
    return out.astype(np.float32)


def prepare_clip(raw: np.ndarray, cfg: dict, mirror: bool = False) -> np.ndarray:
    """Steps 1-3: stored landmarks -> clipped, subsampled (T', K, 2) float64 (augmentation comes after this).
    mirror=True (evaluation only, never the app): the clip as a signer of the other hand would give it."""
    kp = select_and_clip(raw, cfg["joint_idx"])
    if mirror:
        kp = mirror_clip(kp, mirror_permutation(cfg))
    return canonicalize_hands(subsample(drop_resting_hands(kp, cfg)), cfg)


def preprocess(raw: np.ndarray, cfg: dict) -> np.ndarray:
    """Steps 1-5 without augmentation: stored landmarks -> normalized float32 (T', K, 2)."""
    return normalize_groups(prepare_clip(raw, cfg), selected_groups(cfg))


def length_mask(length: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """(max_frames,) float32 with ones for the first `length` frames: the ONE mask definition."""
    return (np.arange(max_frames) < length).astype(np.float32)


def pad_clip(clip: np.ndarray, max_frames: int = MAX_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """(T', K, 2) -> zero-padded (max_frames, K, 2) float32 and its length mask (max_frames,) float32."""
    t = min(len(clip), max_frames)
    padded = np.zeros((max_frames,) + clip.shape[1:], dtype=np.float32)
    padded[:t] = clip[:t]
    return padded, length_mask(t, max_frames)


def model_inputs(raw: np.ndarray, cfg: dict, max_frames: int = MAX_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Stored landmarks -> the exported model's inputs: keypoints (1, 64, K, 2) and attention_mask (1, 64)."""
    keypoints, mask = pad_clip(preprocess(raw, cfg), max_frames)
    return keypoints[None], mask[None]
