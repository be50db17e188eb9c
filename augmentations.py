"""Training-time augmentation of clipped, subsampled, NOT yet normalized clips (T, K, 2).

Every switch lives in `AugmentOptions` (a config's `training.augmentation:` block); its defaults
are this repository's recipe:
  with probability p_augment (0.4) a clip is augmented; passes are then repeated until at least
  one transform fires, each pass trying, in order and each with p_each (0.5): rotation (+-15 deg),
  [affine: scale, shear, shift, when any is set], gaussian noise (sigma ~ U(0.01, 0.2)), random
  frame selection (T/2..T-1 frames), time warp (x1.1-1.5 longer), horizontal flip.
  Before them, when hand_hold > 0: each hand's missing frames are filled from its nearest detected
  frame (a signer who keeps the hands in view). Then, independently of p_augment: hand_drop (one
  hand's points zeroed for the whole clip) and frame_drop (each frame's points zeroed with this
  probability). All three are off by default.
By default the reference recipe's pathologies are fixed: rotation is about the body centre (mean
of the detected points), noise touches detected points only, the flip mirrors x AND swaps
left/right slots (hands, paired pose/face points) while missing points stay (0, 0), and results
are re-clipped to [0, 1]. The reference behaviour is one switch each: rotation_center origin,
noise_on_missing true (undetected (0, 0) points get noise and so become "detected"), flip
mirror_only (x <- 1 - x for ALL points, missing ones become (1, 0), slots not swapped), clip
false. Time-warped clips are always re-subsampled to <= 64 frames and no transform returns an
empty clip. All randomness comes from the numpy Generator passed in; a disabled transform draws
nothing from it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from preprocessing import MAX_FRAMES
from preprocessing import mirror_clip, subsample

TIME_WARP = (1.1, 1.5)
CHOICES = {"rotation_center": ("body", "origin"), "flip": ("swap", "mirror_only", "off"),
           "mask": ("length", "nonzero")}
PROBABILITIES = ("p_augment", "p_each", "hand_hold", "hand_drop", "frame_drop")


@dataclass(frozen=True)
class AugmentOptions:
    """The augmentation switches; the defaults are the recipe of configs/arabic-asl-65kpts.yaml."""
    p_augment: float = 0.4             # probability that a clip goes through the transform passes
    p_each: float = 0.5                # probability of each transform within a pass
    rotation_deg: float = 15.0         # angle ~ U(-deg, deg)
    rotation_center: str = "body"      # body (mean detected point) | origin (0, 0), the reference's
    noise_sigma: tuple = (0.01, 0.2)   # sigma ~ U(lo, hi)
    noise_on_missing: bool = False     # reference: true (undetected points get noise too)
    clip: bool = True                  # re-clip transformed points to [0, 1] (reference: false)
    select_frames: bool = True         # random frame selection step
    time_warp: bool = True             # time warp step
    flip: str = "swap"                 # swap (mirror + swap slots) | mirror_only (reference) | off
    scale: tuple = (1.0, 1.0)          # affine scale ~ U(lo, hi) about the body centre: [0.8, 1.2]
    shear: float = 0.0                 # affine x-shear factor ~ U(-shear, shear)
    shift: float = 0.0                 # affine shift ~ U(-shift, shift) per axis
    hand_hold: float = 0.0             # probability, per hand, of holding it in view (hold_hands)
    hand_drop: float = 0.0             # probability of zeroing one (random) hand for the whole clip
    frame_drop: float = 0.0            # probability of zeroing each frame's points
    mask: str = "length"               # training mask: length (as evaluation) | nonzero (reference)

    @property
    def affine(self) -> bool:
        return self.scale != (1.0, 1.0) or self.shear > 0 or self.shift > 0


DEFAULT_OPTIONS = AugmentOptions()
DEFAULTS = {f.name: f.default for f in dataclasses.fields(AugmentOptions)}


def check_option(key: str, value):
    """One option checked and normalized (a range list -> tuple); ValueError says what is wrong."""
    default = DEFAULTS[key]
    if isinstance(default, tuple):
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise ValueError(f"must be a [low, high] pair of numbers, got {value!r}")
        value = (float(value[0]), float(value[1]))
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"must have 0 <= low <= high, got {list(value)}")
        if key == "scale" and value[0] == 0:
            raise ValueError("must have low > 0")
        return value
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"must be {kind.__name__}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ValueError(f"must be one of {list(CHOICES[key])}, got {value!r}")
    if key in PROBABILITIES and not 0 <= value <= 1:
        raise ValueError(f"must be in [0, 1], got {value}")
    if key == "p_each" and value == 0:
        raise ValueError("must be > 0 (a pass must be able to fire)")
    if kind is float and value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    return value


def options_from_config(cfg: dict) -> AugmentOptions:
    """The config's training.augmentation block (checked by config.load_config) over the defaults."""
    return AugmentOptions(**cfg.get("training", {}).get("augmentation", {}))


def detected(kp: np.ndarray) -> np.ndarray:
    """(T, K) bool: True where a point was detected (not exactly (0, 0))."""
    return ~np.all(kp == 0.0, axis=-1)


def _finish(new: np.ndarray, valid: np.ndarray, opts: AugmentOptions) -> np.ndarray:
    """Clip (when opts.clip) and put the points that were not transformed back to exactly (0, 0)."""
    return np.where(valid[..., None], np.clip(new, 0.0, 1.0) if opts.clip else new, 0.0)


def _centre(kp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return kp[valid].mean(axis=0)                              # (2,) body centre over the clip


def rotate(kp: np.ndarray, rng: np.random.Generator,
           opts: AugmentOptions = DEFAULT_OPTIONS) -> np.ndarray:
    valid = detected(kp)
    if not valid.any():
        return kp
    theta = np.deg2rad(rng.uniform(-opts.rotation_deg, opts.rotation_deg))
    centre = _centre(kp, valid) if opts.rotation_center == "body" else np.zeros(2)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return _finish((kp - centre) @ rot.T + centre, valid, opts)


def affine(kp: np.ndarray, rng: np.random.Generator, opts: AugmentOptions) -> np.ndarray:
    """Scale, x-shear and shift about the body centre, on detected points only."""
    valid = detected(kp)
    if not valid.any():
        return kp
    scale = rng.uniform(*opts.scale)
    shear = rng.uniform(-opts.shear, opts.shear)
    shift = rng.uniform(-opts.shift, opts.shift, size=2)
    matrix = np.array([[scale, shear * scale], [0.0, scale]])
    centre = _centre(kp, valid)
    return _finish((kp - centre) @ matrix.T + centre + shift, valid, opts)


def add_noise(kp: np.ndarray, rng: np.random.Generator,
              opts: AugmentOptions = DEFAULT_OPTIONS) -> np.ndarray:
    sigma = rng.uniform(*opts.noise_sigma)
    noisy = kp + rng.normal(0.0, sigma, size=kp.shape)
    touched = np.ones(kp.shape[:-1], bool) if opts.noise_on_missing else detected(kp)
    return _finish(noisy, touched, opts)


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


def flip(kp: np.ndarray, mirror: np.ndarray, mode: str = "swap") -> np.ndarray:
    """swap: mirror x of detected points and swap left/right slots; mirror_only: x <- 1 - x for every
    point (missing (0, 0) -> (1, 0)), slots unchanged."""
    if mode == "mirror_only":
        return np.stack([1.0 - kp[..., 0], kp[..., 1]], axis=-1)
    return mirror_clip(kp, mirror)                                         # left <-> right slots


def hold_hands(kp: np.ndarray, rng: np.random.Generator, hands, p: float) -> np.ndarray:
    """With probability p for each hand: every frame where the hand is missing takes the hand of the
    nearest frame where it was detected, so a signer whose hands leave the picture between signs looks
    like one who keeps them in view. A hand never detected in the clip stays missing."""
    out = kp
    for idx in hands:
        if rng.random() >= p:
            continue
        seen = np.flatnonzero(~np.all(kp[:, idx] == 0.0, axis=(1, 2)))           # frames with the hand
        if 0 < len(seen) < len(kp):
            nearest = seen[np.abs(np.arange(len(kp))[:, None] - seen[None, :]).argmin(axis=1)]  # (T,)
            out = out.copy() if out is kp else out
            out[:, idx] = kp[nearest][:, idx]
    return out


def drop_hand(kp: np.ndarray, rng: np.random.Generator, hands) -> np.ndarray:
    """Zero the points of one hand (chosen at random) in every frame; never empties a clip."""
    out = kp.copy()
    out[:, hands[int(rng.integers(len(hands)))]] = 0.0
    return out if out.any() else kp


def drop_frames(kp: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Zero every point of each frame with probability p (the length is kept; never all frames)."""
    dropped = rng.random(len(kp)) < p
    if dropped.all():
        return kp
    return np.where(dropped[:, None, None], 0.0, kp)


def _steps(mirror: np.ndarray, opts: AugmentOptions) -> list:
    """The enabled transforms of one pass, in order; each takes (kp, rng)."""
    steps = [lambda x, r: rotate(x, r, opts)]
    if opts.affine:
        steps.append(lambda x, r: affine(x, r, opts))
    steps.append(lambda x, r: add_noise(x, r, opts))
    steps += [select_frames] if opts.select_frames else []
    steps += [time_warp] if opts.time_warp else []
    if opts.flip != "off":
        steps.append(lambda x, r: flip(x, mirror, opts.flip))
    return steps


def augment(kp: np.ndarray, rng: np.random.Generator, mirror: np.ndarray, p: float | None = None,
            options: AugmentOptions = DEFAULT_OPTIONS, hands=()) -> np.ndarray:
    """Maybe-augment one clip. kp: (T, K, 2) in [0, 1] with (0, 0) = missing; mirror:
    config.mirror_permutation; p: overrides options.p_augment; hands: index arrays of the hand points
    (config.hand_positions), needed by hand_hold and hand_drop."""
    if options.hand_hold > 0 and len(hands):
        kp = hold_hands(kp, rng, hands, options.hand_hold)
    if rng.random() < (options.p_augment if p is None else p):
        steps = _steps(mirror, options)
        fired = False
        while not fired:
            for step in steps:
                if rng.random() < options.p_each:
                    kp, fired = step(kp, rng), True
    if options.hand_drop > 0 and len(hands) and rng.random() < options.hand_drop:
        kp = drop_hand(kp, rng, hands)
    if options.frame_drop > 0:
        kp = drop_frames(kp, rng, options.frame_drop)
    return kp


def nonzero_mask(keypoints: np.ndarray) -> np.ndarray:
    """(T, K, 2) -> (T,) float32: 1 where any coordinate of the frame is non-zero (the reference's
    training mask)."""
    return np.any(keypoints != 0, axis=(1, 2)).astype(np.float32)
