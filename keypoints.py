"""Keypoint layouts: the ONLY place where MediaPipe landmark numbers live.

A layout is the order in which an extractor stores landmarks in a pickle's `keypoints` array (T, N, 3).
Three layouts exist:

  90  pose 0-22 | left hand 0-20 | right hand 0-20 | 25 FaceMesh points      (extract_90_keypoints.py)
  65  pose 0-22 | left hand 0-20 | right hand 0-20                            (extract_65_keypoints.py)
  63  pose subset (15) | left hand | right hand | 6 FaceMesh points          (extract_63_keypoints.py)

The first 65 entries of the 90 layout are the 65 layout, so a config written for the 65 layout (and the
42-48 point variants that select from it) can read 90-point pickles unchanged.

    python keypoints.py            # print every layout with its groups
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSE_NAMES = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb",
]  # MediaPipe Pose landmarks 0-22 (hips and below are never used)
HAND_NAMES = [
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
]  # MediaPipe Hand landmarks 0-20

# Mirror pairs (a landmark and its left/right counterpart) in MediaPipe numbering.
POSE_MIRROR = {1: 4, 2: 5, 3: 6, 7: 8, 9: 10, 11: 12, 13: 14, 15: 16, 17: 18, 19: 20, 21: 22}
FACE_MIRROR = {338: 109, 297: 67, 332: 103, 172: 397, 33: 263, 133: 362, 160: 387, 159: 386, 158: 385,
               144: 373, 145: 374, 234: 454}

FACE_25 = [10, 338, 297, 332, 172, 152, 397, 103, 67, 109, 33, 133, 160, 159, 158, 144, 145, 362, 263, 387, 386,
           385, 373, 374, 1]  # FaceMesh indices of the 90 layout, in stored order
FACE_6 = [10, 338, 297, 67, 234, 454]  # FaceMesh indices of the 63 layout
POSE_15 = [0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16]  # pose subset of the 63 layout

PARTS = ("pose", "left_hand", "right_hand", "face")  # MediaPipe Holistic result fields, in stored order


@dataclass(frozen=True)
class Layout:
    """A stored keypoint order: `points[i] = (part, mediapipe_index)` for stored index i."""
    name: str
    points: tuple

    @property
    def size(self) -> int:
        return len(self.points)

    def part_slice(self, part: str) -> list[int]:
        """Stored indices that belong to one MediaPipe part (pose / left_hand / right_hand / face)."""
        return [i for i, (p, _) in enumerate(self.points) if p == part]

    def part_sources(self, part: str) -> list[int]:
        """MediaPipe landmark numbers of one part, in stored order (what an extractor picks)."""
        return [src for p, src in self.points if p == part]

    def groups(self) -> dict[str, list[int]]:
        """Default normalization groups: one per part present in the layout."""
        return {part: self.part_slice(part) for part in PARTS if self.part_slice(part)}

    def point_name(self, i: int) -> str:
        part, src = self.points[i]
        if part == "pose":
            return f"pose.{POSE_NAMES[src]}"
        if part in ("left_hand", "right_hand"):
            return f"{part}.{HAND_NAMES[src]}"
        return f"face.mesh{src}"

    def mirror_index(self, i: int) -> int:
        """Stored index of the mirror image of point i (itself when it has none in this layout)."""
        part, src = self.points[i]
        if part in ("left_hand", "right_hand"):
            target = ("right_hand" if part == "left_hand" else "left_hand", src)
        else:
            table = POSE_MIRROR if part == "pose" else FACE_MIRROR
            twin = table.get(src, {v: k for k, v in table.items()}.get(src, src))
            target = (part, twin)
        return self.points.index(target) if target in self.points else i

    def describe(self) -> dict[str, str]:
        """Human-readable structure stored in pickles and model cards (`keypoint_structure`)."""
        out = {}
        for part in PARTS:
            idx = self.part_slice(part)
            if idx:
                out[part] = f"{idx[0]}-{idx[-1]} ({len(idx)} keypoints, MediaPipe {self.part_sources(part)})"
        return out


def _layout(name: str, pose: list[int], face: list[int]) -> Layout:
    points = [("pose", i) for i in pose] + [("left_hand", i) for i in range(21)] + \
             [("right_hand", i) for i in range(21)] + [("face", i) for i in face]
    return Layout(name, tuple(points))


LAYOUTS = {
    65: _layout("65", list(range(23)), []),
    90: _layout("90", list(range(23)), FACE_25),
    63: _layout("63", POSE_15, FACE_6),
}

# A config written for layout L can read pickles stored with any of these layouts (L is a prefix of them).
READABLE_FROM = {65: (65, 90), 90: (90,), 63: (63,)}


def get_layout(n: int) -> Layout:
    if n not in LAYOUTS:
        raise ValueError(f"unknown keypoint layout {n}; known layouts: {sorted(LAYOUTS)}")
    return LAYOUTS[n]


if __name__ == "__main__":
    for n, layout in LAYOUTS.items():
        print(f"layout {n}: {layout.size} points")
        for part, desc in layout.describe().items():
            print(f"  {part:10s} {desc}")


# ------------------------------------------------------------- geometry of a config's selection
# A config (config.py) selects stored points with `joint_idx` and names normalization `groups`; these
# helpers turn that selection into positions in the SELECTED (T, K, ...) array.
REST_HAND_SHOULDERS, REST_HAND_WRISTS = (11, 12), (15, 16)  # MediaPipe Pose: left, right shoulder / wrist


def selected_groups(cfg: dict) -> list[np.ndarray]:
    """Normalization groups as positions in the SELECTED (T, K, 2) array, in config order."""
    position = {stored: k for k, stored in enumerate(cfg["joint_idx"])}
    return [np.array([position[i] for i in idx], dtype=np.int64) for idx in cfg["groups"].values()]


def mirror_permutation(cfg: dict) -> np.ndarray:
    """perm[k] = position of the left/right mirror of selected point k (itself if its twin is not selected)."""
    layout = get_layout(cfg["layout"])
    position = {stored: k for k, stored in enumerate(cfg["joint_idx"])}
    return np.array([position.get(layout.mirror_index(i), k) for k, i in enumerate(cfg["joint_idx"])], dtype=np.int64)


def hand_positions(cfg: dict) -> list[np.ndarray]:
    """Positions in the SELECTED array of each selected hand's points (left, then right)."""
    layout = get_layout(cfg["layout"])
    hands = [[k for k, i in enumerate(cfg["joint_idx"]) if layout.points[i][0] == part]
             for part in ("left_hand", "right_hand")]
    return [np.array(h, dtype=np.int64) for h in hands if h]


def rest_hand_points(cfg: dict) -> tuple[int, int, list[tuple[int, np.ndarray]]]:
    """Positions in the SELECTED array that the resting-hand rule reads: the left and right pose shoulder,
    and (pose wrist, hand points) of each selected hand. ValueError when one of them is not selected."""
    layout = get_layout(cfg["layout"])
    position = {layout.points[i]: k for k, i in enumerate(cfg["joint_idx"])}
    needed = [("pose", i) for i in REST_HAND_SHOULDERS + REST_HAND_WRISTS]
    missing = [f"pose.{POSE_NAMES[i]}" for part, i in needed if (part, i) not in position]
    hands = hand_positions(cfg)
    if missing or len(hands) != 2:
        raise ValueError(f"needs both pose shoulders, both pose wrists and both hands in joint_idx"
                         f"{f' (missing {missing})' if missing else ''}")
    left, right, *wrists = (position[point] for point in needed)
    return left, right, list(zip(wrists, hands))
