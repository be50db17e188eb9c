"""Generate the embedded demo dataset: procedural MediaPipe-like keypoint clips in the exact on-disk format.

No video, no download: in a few seconds this writes `<out>/all/GYY/userXX_GYY_RZZ.pkl` (65-point layout, stored as
(T, 65, 3) float32 like extract_65_keypoints.py) plus label2id.json, id2label.json and label2name.json.
Signs differ by the trajectory and location of the hands relative to the body, by hand shape and by whether the
second hand moves. Signers differ by body size and position, speed, movement amplitude, jitter and how often a hand
detection is missed, so a LOSO model can learn the signs but does not score 100 % trivially.

    python make_demo_dataset.py --output_dir data/demo-65kpts            # 6 signers x 10 signs x 6 reps
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from keypoints import get_layout
from util import atomic_write_json, atomic_write_pickle, cli

LAYOUT = get_layout(65)
SIGNS = {  # label: (human name, right-hand path, right-hand shape, left hand moves)
    "G01": ("Wave", "wave_head", "open", False),
    "G02": ("Circle", "circle_chest", "flat", False),
    "G03": ("Point out", "line_out", "index", False),
    "G04": ("Chin tap", "tap_chin", "fist", False),
    "G05": ("Open wide", "apart", "open", True),
    "G06": ("Push down", "down", "index", False),
    "G07": ("Eat", "tap_mouth", "bunch", False),
    "G08": ("Sleep", "to_temple", "flat", False),
    "G09": ("Sweep", "sweep_low", "flat", False),
    "G10": ("Two circles", "circles_both", "fist", True),
}
SHAPES = {  # openness of thumb, index, middle, ring, pinky (0 = curled, 1 = extended)
    "open": (1, 1, 1, 1, 1), "flat": (0.5, 1, 1, 1, 1), "index": (0.2, 1, 0.1, 0.1, 0.1),
    "fist": (0.3, 0.1, 0.1, 0.1, 0.1), "bunch": (0.6, 0.5, 0.5, 0.5, 0.5),
}
FINGER_ANGLES = (-0.9, -0.35, -0.1, 0.15, 0.4)  # radians from "up" for thumb..pinky (right hand)
POSE_TEMPLATE = {  # (x, y) in shoulder-width units relative to the shoulder midpoint; +x = image right
    0: (0, -1.1), 1: (0.1, -1.25), 2: (0.15, -1.25), 3: (0.2, -1.25), 4: (-0.1, -1.25), 5: (-0.15, -1.25),
    6: (-0.2, -1.25), 7: (0.32, -1.15), 8: (-0.32, -1.15), 9: (0.08, -0.95), 10: (-0.08, -0.95),
    11: (0.5, 0), 12: (-0.5, 0),
}


def hand_path(name: str, u: np.ndarray, amp: float) -> tuple[np.ndarray, np.ndarray]:
    """Right (and left) wrist positions over phase u in [0, 1], body units; returns two (T, 2) arrays."""
    rest_left = np.tile([0.6, 1.6], (len(u), 1))                            # resting low, usually out of view
    two_pi_u = 2 * np.pi * u
    paths = {
        "wave_head": np.stack([-0.6 + 0.25 * amp * np.sin(3 * two_pi_u), -1.2 + 0 * u], -1),
        "circle_chest": np.stack([-0.2 + 0.3 * amp * np.cos(two_pi_u), 0.5 + 0.3 * amp * np.sin(two_pi_u)], -1),
        "line_out": np.stack([-0.1 - 0.9 * amp * u, 0.3 - 0.2 * u], -1),
        "tap_chin": np.stack([-0.05 + 0 * u, -0.75 + 0.15 * amp * np.abs(np.sin(2 * two_pi_u))], -1),
        "apart": np.stack([-0.1 - 0.8 * amp * u, 0.4 + 0 * u], -1),
        "down": np.stack([-0.3 + 0 * u, -0.2 + 1.0 * amp * u], -1),
        "tap_mouth": np.stack([-0.05 + 0 * u, -0.9 + 0.35 * amp * np.abs(np.sin(1.5 * two_pi_u))], -1),
        "to_temple": np.stack([-0.5 + 0.25 * (1 - u), -1.3 + 0.6 * (1 - u) * amp], -1),
        "sweep_low": np.stack([0.5 - 1.2 * amp * u, 0.9 - 0.3 * np.sin(np.pi * u)], -1),
        "circles_both": np.stack([-0.35 + 0.25 * amp * np.cos(two_pi_u), 0.4 + 0.25 * amp * np.sin(two_pi_u)], -1),
    }
    right = paths[name]
    left = rest_left
    if name == "apart":
        left = np.stack([0.1 + 0.8 * amp * u, 0.4 + 0 * u], -1)
    elif name == "circles_both":
        left = np.stack([0.35 - 0.25 * amp * np.cos(two_pi_u), 0.4 + 0.25 * amp * np.sin(two_pi_u)], -1)
    return right, left


def hand_points(wrist: np.ndarray, shape, size: float, mirror: bool) -> np.ndarray:
    """(T, 2) wrist positions -> (T, 21, 2) MediaPipe hand landmarks of a stylised hand."""
    pts = np.zeros((len(wrist), 21, 2))
    pts[:, 0] = wrist
    for f, (angle, open_) in enumerate(zip(FINGER_ANGLES, shape)):
        angle = -angle if mirror else angle
        direction = np.array([np.sin(angle), -np.cos(angle)])
        for j in range(4):                                                  # 4 joints per finger
            reach = (0.35 + 0.2 * j) * (0.35 + 0.65 * open_) * size
            pts[:, 1 + 4 * f + j] = wrist + reach * direction
    return pts


def make_clip(sign: str, signer: dict, rng: np.random.Generator) -> np.ndarray:
    """One repetition of one sign by one signer: (T, 65, 3) float32 in the extractor's format."""
    _, path, shape, two_handed = SIGNS[sign]
    frames = int(np.clip(round(rng.uniform(34, 46) * signer["speed"]), 20, 80))
    u = np.linspace(0, 1, frames) ** rng.uniform(0.85, 1.15)               # per-repetition tempo
    amp = signer["amp"] * rng.uniform(0.9, 1.1)
    right, left = hand_path(path, u, amp)
    scale, centre = signer["scale"], signer["centre"]
    to_image = lambda p: centre + scale * p                                 # body units -> image coords
    kp = np.zeros((frames, LAYOUT.size, 3))
    for idx, xy in POSE_TEMPLATE.items():
        kp[:, idx, :2] = to_image(np.array(xy))
    wr, wl = to_image(right), to_image(left)
    for side, wrist, shoulder in ((0, wr, 12), (1, wl, 11)):                # 0: person's right (image left)
        elbow = (kp[:, shoulder, :2] + wrist) / 2 + np.array([0.0, 0.12 * scale])
        kp[:, 14 - side, :2], kp[:, 16 - side, :2] = elbow, wrist
        for k, idx in enumerate((18 - side, 20 - side, 22 - side)):         # pose pinky/index/thumb near the wrist
            kp[:, idx, :2] = wrist + np.array([(-1) ** side * 0.02 * (k - 1), -0.03]) * scale
    kp[:, :23, 2] = rng.uniform(0.6, 1.0, size=(frames, 23))                 # pose visibility
    hand_size = 0.45 * scale * rng.uniform(0.9, 1.1)
    for part, wrist, mirror, active in (("right_hand", wr, False, True), ("left_hand", wl, True, two_handed)):
        slot = LAYOUT.part_slice(part)
        shape_vec = np.clip(np.array(SHAPES[shape]) + rng.normal(0, 0.08, 5), 0, 1) if active else SHAPES["flat"]
        kp[:, slot, :2] = hand_points(wrist, shape_vec, hand_size, mirror)
        kp[:, slot, 2] = 1.0
        miss = rng.random(frames) < (signer["miss"] if active else 0.85)     # detection dropouts
        kp[np.ix_(miss, slot)] = 0.0
    kp[..., :2] += rng.normal(0, signer["jitter"], size=(frames, LAYOUT.size, 2))
    kp[np.all(kp[..., 2:] == 0, axis=-1)] = 0.0                              # missing stays exactly zero
    return kp.astype(np.float32)


def make_signer(rng: np.random.Generator) -> dict:
    return {"scale": rng.uniform(0.16, 0.24), "centre": np.array([rng.uniform(0.42, 0.58), rng.uniform(0.45, 0.6)]),
            "speed": rng.uniform(0.8, 1.25), "amp": rng.uniform(0.8, 1.2), "jitter": rng.uniform(0.002, 0.006),
            "miss": rng.uniform(0.03, 0.2)}


def make_demo_dataset(out_dir, signers: int = 6, signs: int = 10, reps: int = 6, seed: int = 0) -> int:
    """Write the demo dataset to out_dir; returns the number of clips. Same seed -> identical files."""
    out_dir = Path(out_dir)
    labels = sorted(SIGNS)[:signs]
    rng = np.random.default_rng(seed)
    count = 0
    for s in range(1, signers + 1):
        user, signer = f"user{s:02d}", make_signer(rng)
        for label in labels:
            for r in range(1, reps + 1):
                kp = make_clip(label, signer, rng)
                sample = {"keypoints": kp, "class": label, "user": user, "num_keypoints": LAYOUT.size,
                          "num_frames": len(kp), "video_file": f"R{r:02d}.mp4",
                          "original_path": f"{user}/{label}/R{r:02d}.mp4", "flipped": False,
                          "keypoint_structure": LAYOUT.describe(), "source": "make_demo_dataset.py"}
                atomic_write_pickle(out_dir / "all" / label / f"{user}_{label}_R{r:02d}.pkl", sample)
                count += 1
    atomic_write_json(out_dir / "label2id.json", {lab: i for i, lab in enumerate(labels)})
    atomic_write_json(out_dir / "id2label.json", {str(i): lab for i, lab in enumerate(labels)})
    atomic_write_json(out_dir / "label2name.json", {lab: SIGNS[lab][0] for lab in labels})
    return count


@cli
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output_dir", default="data/demo-65kpts", help="dataset root to write (default: %(default)s)")
    ap.add_argument("--signers", type=int, default=6, help="number of signers user01.. (default: %(default)s)")
    ap.add_argument("--signs", type=int, default=10, help="number of signs, at most 10 (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=6, help="repetitions per signer and sign (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    n = make_demo_dataset(args.output_dir, args.signers, min(args.signs, len(SIGNS)), args.reps, args.seed)
    print(f"wrote {n} clips to {args.output_dir} in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
