"""Training-time augmentation of clipped, subsampled, NOT yet normalized clips (T, K, 2).

The reference recipe: with probability 0.4 a clip is augmented; then passes are repeated until at
least one transform fires, each pass trying, in order and each with p = 0.5:
  rotation (+-15 deg), gaussian noise (sigma ~ U(0.01, 0.2)), random frame selection (T/2..T-1 frames),
  time warp (x1.1-1.5 longer), horizontal flip.
Its pathologies are fixed here: rotation is about the body centre (mean of the detected points), noise touches
detected points only, the flip mirrors x AND swaps left/right slots (hands, paired pose/face points) while
missing points stay (0, 0), results are re-clipped to [0, 1], time-warped clips are re-subsampled to <= 64
frames, and no transform can return an empty clip. All randomness comes from the numpy Generator passed in.
"""
from __future__ import annotations

import numpy as np

from config import MAX_FRAMES
from preprocessing import subsample

P_AUGMENT = 0.4
P_EACH = 0.5
MAX_ROTATION_DEG = 15.0
NOISE_SIGMA = (0.01, 0.2)
TIME_WARP = (1.1, 1.5)


def detected(kp: np.ndarray) -> np.ndarray:
    """(T, K) bool: True where a point was detected (not exactly (0, 0))."""
    return ~np.all(kp == 0.0, axis=-1)


def _keep_missing(new: np.ndarray, old_valid: np.ndarray) -> np.ndarray:
    """Clip detected points to [0, 1] and put undetected ones back to exactly (0, 0)."""
    return np.where(old_valid[..., None], np.clip(new, 0.0, 1.0), 0.0)


def rotate(kp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    valid = detected(kp)
    if not valid.any():
        return kp
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    centre = kp[valid].mean(axis=0)                                       # (2,) body centre over the clip
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return _keep_missing((kp - centre) @ rot.T + centre, valid)


def add_noise(kp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(*NOISE_SIGMA)
    return _keep_missing(kp + rng.normal(0.0, sigma, size=kp.shape), detected(kp))


def select_frames(kp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = len(kp)
    if t < 2:
        return kp
    target = int(rng.integers(max(1, t // 2), t))                         # in [T/2, T-1], never 0
    if rng.random() < 0.5:
        idx = np.floor(np.linspace(0, t - 1, target)).astype(np.int64)
    else:
        idx = np.sort(rng.integers(0, t, size=target))
    return kp[idx]


def time_warp(kp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = len(kp)
    new_len = max(1, int(t * rng.uniform(*TIME_WARP)))
    idx = np.floor(np.linspace(0, t - 1, new_len)).astype(np.int64)
    return subsample(kp[idx], MAX_FRAMES)                                  # never longer than the model's input


def flip(kp: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    valid = detected(kp)
    mirrored = np.stack([1.0 - kp[..., 0], kp[..., 1]], axis=-1)
    mirrored = np.where(valid[..., None], mirrored, 0.0)
    return mirrored[:, mirror, :]                                          # left <-> right slots


def augment(kp: np.ndarray, rng: np.random.Generator, mirror: np.ndarray, p: float = P_AUGMENT) -> np.ndarray:
    """Maybe-augment one clip. kp: (T, K, 2) in [0, 1] with (0, 0) = missing; mirror: config.mirror_permutation."""
    if rng.random() >= p:
        return kp
    while True:
        fired = False
        for step in (rotate, add_noise, select_frames, time_warp, lambda x, r: flip(x, mirror)):
            if rng.random() < P_EACH:
                kp, fired = step(kp, rng), True
        if fired:
            return kp
