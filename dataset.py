"""Dataset: pickles on disk -> validated, preprocessed clips in memory -> tf.data batches.

On-disk format: <root>/{all,train,test}/GXX/<user>_<GXX>_<rep>.pkl, each a dict with `keypoints`
(T, N, 2|3) and `class`, plus <root>/label2id.json and id2label.json (label2name.json optional).
Pickles of the reference system (float64, extra keys) load as they are.

Every split is read ONCE: each pickle is validated, selected, clipped and subsampled (preprocessing.py) and
kept in memory. Per epoch, a seeded generator augments (training only, with the config's
training.augmentation switches) and normalizes each clip; batches are padded to 64 frames with the length
mask of preprocessing.pad_clip, then trimmed to the last unmasked frame of the batch (the model is padding
invariant), so the mask is the same one evaluation and the TFLite model use. Only a training batch can use
the reference's other mask instead (augmentation `mask: nonzero`: 1 where any coordinate of a frame is
non-zero).

A bad sample is refused with its reason (docs/safety.md): coordinates outside COORDINATE_RANGE, none
of the selected points inside the image, a `class` that disagrees with its folder, ... The whole
split is read first, so the error names the first refused file AND counts every refused one by
reason (skip_bad: they are left out and counted instead).

    python dataset.py --config_path configs/arabic-asl-65kpts.yaml \\
        --data_path data/arabic-asl-90kpts
"""
from __future__ import annotations

import argparse
import itertools
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from augmentations import AugmentOptions, augment, nonzero_mask, options_from_config
from config import load_config, readable_layouts
from keypoints import hand_positions, mirror_permutation, selected_groups
from preprocessing import MAX_FRAMES
from preprocessing import normalize_groups, pad_clip, prepare_clip
from recipes import DEFAULT_SEED, FP32_BATCH_SIZE, FP32_BUCKET_BATCHES
from runs import parse_sample_name
from util import UserError, brief, cli, read_json
from safe_pickle import UnsafePickleError, load_pickle


COORDINATE_RANGE = (-1.0, 2.0)  # x, y of a stored point: MediaPipe's normalized coordinates stray
#   past [0, 1] (MLR511's 2.96 M detected points span [-0.11, 1.57]); pixels or percents do not fit


class DataError(UserError):
    """A bad data file; `reason` is its kind, for the count of refused samples."""

    def __init__(self, message: str, reason: str = "unreadable or malformed"):
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------------------------- files
def read_label_maps(root) -> tuple[dict, dict]:
    """label2id {'G01': 0, ...} and id2label {0: 'G01', ...} (int keys) from a dataset root."""
    label2id = read_json(Path(root) / "label2id.json", "label map label2id.json", DataError)
    raw_id2label = read_json(Path(root) / "id2label.json", "label map id2label.json", DataError)
    if not (isinstance(label2id, dict) and all(isinstance(i, int) for i in label2id.values())):
        raise DataError(f"{Path(root) / 'label2id.json'}: expected {{\"label\": id, ...}} with integer ids")
    if not (isinstance(raw_id2label, dict)
            and all(re.fullmatch(r"\d{1,9}", k, re.ASCII) for k in raw_id2label)):
        raise DataError(f"{Path(root) / 'id2label.json'}: expected {{\"id\": \"label\", ...}} with integer ids")
    id2label = {int(k): v for k, v in raw_id2label.items()}
    if sorted(label2id.values()) != list(range(len(label2id))) or any(id2label.get(i) != lab for lab, i in label2id.items()):
        raise DataError(f"{root}: label2id.json and id2label.json disagree or ids are not 0..N-1")
    return label2id, id2label


def read_label_names(root) -> dict:
    """Optional human names {'G01': 'Hi', ...}; {} when label2name.json is absent."""
    path = Path(root) / "label2name.json"
    return read_json(path, "label2name.json", DataError) if path.exists() else {}


def list_split(root, split: str) -> list[Path]:
    """Sorted pickle paths of <root>/<split>/<class>/*.pkl (class folders may be symlinks)."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found (expected {split}/GXX/*.pkl under {root})")
    folders = [d for d in sorted(split_dir.iterdir()) if resolvable(d).is_dir()]
    return sorted(p for d in folders for p in d.glob("*.pkl"))


def resolvable(path: Path) -> Path:
    """path, unless it is a link that loops or points to nothing (is_dir()/is_file() would skip it
    silently)."""
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path}: a link that loops or points to nothing", "broken link")
    return path


def load_sample(path) -> dict:
    """Read one pickle and check its keypoints: a finite (T, N, C>=2) array with T >= 1."""
    try:
        sample = load_pickle(path)
    except UnsafePickleError as e:
        raise DataError(f"{path}: cannot read pickle ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror})") from None
    if not isinstance(sample, dict) or "keypoints" not in sample:
        raise DataError(f"{path}: not a sample dict with a 'keypoints' array", "not a sample")
    try:
        kp = np.asarray(sample["keypoints"])
    except ValueError:  # a ragged nested list
        raise DataError(f"{path}: keypoints are ragged (frames or points of different sizes)") from None
    if kp.ndim != 3 or kp.shape[2] < 2 or not np.issubdtype(kp.dtype, np.number):
        raise DataError(f"{path}: keypoints have shape {str(kp.shape)[:40]} {kp.dtype}, expected "
                        "numeric (T, N, 2 or 3)", "malformed keypoints")
    if not np.issubdtype(kp.dtype, np.floating):
        raise DataError(f"{path}: keypoints are {kp.dtype}, expected floats (normalized image coordinates, "
                        "e.g. 0.0-1.0); convert them, e.g. pixels / frame size",
                        "malformed keypoints")
    if kp.shape[0] == 0:
        raise DataError(f"{path}: empty sequence (0 frames)", "malformed keypoints")
    xy = kp[..., :2]
    if not np.isfinite(xy).all():
        raise DataError(f"{path}: keypoints contain NaN or infinite values", "NaN or infinite keypoints")
    if not xy.any():
        raise DataError(f"{path}: keypoints are all zeros (nothing was detected in any frame)",
                        "nothing detected")
    low, high = COORDINATE_RANGE
    if xy.min() < low or xy.max() > high:
        raise DataError(f"{path}: coordinates span [{xy.min():.4g}, {xy.max():.4g}], far outside the "
                        f"image; expected normalized image coordinates in [{low:g}, {high:g}] (e.g. "
                        "pixels / frame size)", "coordinates outside the image")
    sample["keypoints"] = kp
    return sample


def check_layout(path, kp: np.ndarray, cfg: dict) -> None:
    if kp.shape[1] not in readable_layouts(cfg):
        raise DataError(f"{path}: {kp.shape[1]} keypoints per frame, but {cfg['config_path']} (layout {cfg['layout']}) "
                        f"reads pickles with {' or '.join(map(str, readable_layouts(cfg)))} keypoints",
                        "another keypoint layout")


def sample_label(path: Path, sample: dict, label2id: dict, cfg: dict) -> str:
    """The sample's class: its `class` field (else the sign of its file name), a label of
    label2id.json within the config's num_labels, and the label of its folder when the folder is
    named after one."""
    parsed = parse_sample_name(path.name)
    label = sample.get("class", parsed[1] if parsed else None)
    if not isinstance(label, str):
        raise DataError(f"{path}: class {brief(label)} is not a label name (a string such as 'G01')",
                        "bad class")
    if label not in label2id:
        raise DataError(f"{path}: class {brief(label)} is not in {path.parents[2] / 'label2id.json'}",
                        "bad class")
    if label2id[label] >= cfg["num_labels"]:
        raise DataError(f"{path}: class {label!r} has id {label2id[label]} but the config has "
                        f"num_labels {cfg['num_labels']}", "bad class")
    folder = path.parent.name
    if folder in label2id and folder != label:
        raise DataError(f"{path}: class {label!r} disagrees with its folder {folder}; move the file or "
                        "fix its class", "class disagrees with its folder")
    return label


def prepared_clip(path: Path, sample: dict, cfg: dict, mirror: bool) -> np.ndarray:
    """preprocessing.prepare_clip of a checked sample; refused when none of the selected points is
    inside the image in any frame (clipping would leave an all-zero clip that trains as a real
    one)."""
    clip = prepare_clip(sample["keypoints"], cfg, mirror=mirror)
    if not clip.any():
        raise DataError(f"{path}: none of the {len(cfg['joint_idx'])} points {cfg['config_path']} "
                        "selects is detected inside the image in any frame", "no selected point detected")
    return clip


# ----------------------------------------------------------------------------------------------- splits
@dataclass
class SplitData:
    """One split in memory: clipped+subsampled clips (before augmentation/normalization) and their labels."""
    root: Path
    split: str
    clips: list = field(default_factory=list)      # each (T', K, 2) float64, T' <= 64
    labels: list = field(default_factory=list)     # int class ids
    users: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    skipped: list = field(default_factory=list)    # (path, message) of each refused sample
    refused: Counter = field(default_factory=Counter)  # reason -> refused samples

    def __len__(self):
        return len(self.clips)

    def refusals(self) -> str:
        """'refused 3 of 120 samples of data/x/all: 2 coordinates outside the image, 1 class
        disagrees with its folder' ('' when none was refused)."""
        if not self.skipped:
            return ""
        counts = ", ".join(f"{n} {reason}" for reason, n in self.refused.most_common())
        return (f"refused {len(self.skipped)} of {len(self.skipped) + len(self.clips)} samples of "
                f"{self.root / self.split}: {counts}")

    def normalized(self, cfg: dict) -> list[np.ndarray]:
        groups = selected_groups(cfg)
        return [normalize_groups(c, groups) for c in self.clips]

    def padded(self, cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All clips normalized and padded: keypoints (N, 64, K, 2), masks (N, 64), labels (N,)."""
        pairs = [pad_clip(c) for c in self.normalized(cfg)]
        return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
                np.asarray(self.labels, dtype=np.int32))


def load_split(root, split: str, cfg: dict, skip_bad: bool = False, max_samples: int | None = None,
               exclude_users=(), only_users=None, mirror: bool = False) -> SplitData:
    """Read and preprocess every pickle of a split. Bad files are refused: DataError naming the
    first one and counting all of them by reason, or with skip_bad=True they are left out and
    counted in `skipped` and `refused` (callers print SplitData.refusals()). mirror=True: every clip
    as a signer of the other hand would give it (preprocessing.prepare_clip; e.g. right-handed
    signers evaluated as left-handed ones)."""
    label2id, _ = read_label_maps(root)
    paths = list_split(root, split)
    if max_samples:
        paths = paths[:max_samples]
    data = SplitData(Path(root), split)
    for path in paths:
        parsed = parse_sample_name(path.name)
        if parsed and (parsed[0] in exclude_users or (only_users is not None and parsed[0] not in only_users)):
            continue
        try:
            sample = load_sample(path)
            check_layout(path, sample["keypoints"], cfg)
            label = sample_label(path, sample, label2id, cfg)
            clip = prepared_clip(path, sample, cfg, mirror)
        except DataError as e:
            data.skipped.append((str(path), str(e)))
            data.refused[e.reason] += 1
            continue
        data.clips.append(clip)
        data.labels.append(label2id[label])
        data.users.append(str(sample.get("user", parsed[0] if parsed else "unknown"))[:100])
        data.paths.append(str(path))
    if data.skipped and not skip_bad:
        raise DataError(f"{data.skipped[0][1]} ({data.refusals()}; dataset.py --skip_bad reads the "
                        "rest)")
    if not data.clips:
        raise DataError(f"{Path(root) / split}: no usable samples" + (f" ({len(data.skipped)} skipped)" if data.skipped else ""))
    return data


# ----------------------------------------------------------------------------------------------- tf.data
def _trim_to_longest(keypoints, mask, labels):
    """Drop the all-padding tail of a batch, after its last unmasked frame (for a length mask: the longest
    clip): (B, 64, K, 2) -> (B, T_max, K, 2); mask (B, 64) -> (B, T_max)."""
    import tensorflow as tf
    positions = tf.range(1, tf.shape(mask)[1] + 1, dtype=mask.dtype)
    t_max = tf.cast(tf.reduce_max(mask * positions), tf.int32)
    return {"keypoints": keypoints[:, :t_max], "attention_mask": mask[:, :t_max]}, labels


def pad_batch(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Normalized clips -> keypoints (B, T_max, K, 2) and length masks (B, T_max), T_max = the longest clip:
    the 64-frame padding of pad_clip with its all-padding tail dropped (the model is padding invariant)."""
    pairs = [pad_clip(c) for c in clips]
    t_max = max(min(len(c), MAX_FRAMES) for c in clips)
    return (np.stack([p[0] for p in pairs])[:, :t_max], np.stack([p[1] for p in pairs])[:, :t_max])


def normalize_each(clips: list[np.ndarray], groups) -> list[np.ndarray]:
    """normalize_groups of every clip, in one call: the normalization is per frame, so the clips' frames
    are normalized as one long clip and split again (the same numbers, far fewer numpy calls)."""
    ends = np.cumsum([len(c) for c in clips])[:-1]
    return np.split(normalize_groups(np.concatenate(clips), groups), ends)


def batch_order(lengths: list[int], batch_size: int, rng: np.random.Generator | None) -> list[list[int]]:
    """Batches (lists of positions) of one window of clips. rng None: consecutive positions, as given.
    Else length bucketing: positions sorted by clip length, cut into batches, the batches shuffled, so that
    each batch pads to about its own clips' length instead of the window's longest."""
    positions = list(range(len(lengths)))
    if rng is not None:
        positions = sorted(positions, key=lambda i: lengths[i])
    batches = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))] if rng is not None else batches


def make_dataset(data: SplitData, cfg: dict, batch_size: int = FP32_BATCH_SIZE, training: bool = False,
                 seed: int = DEFAULT_SEED, start_epoch: int = 0, bucket_batches: int = FP32_BUCKET_BATCHES,
                 augmentation: AugmentOptions | None = None):
    """tf.data of ({'keypoints': (B,T,K,2), 'attention_mask': (B,T)}, labels (B,)).

    training=True: reshuffled and augmented every epoch from a numpy Generator seeded with (seed, epoch), so a
    run is reproducible and `start_epoch` lets a resumed run continue the same sequence. `augmentation`: the
    switches (None: the config's training.augmentation block over the defaults). Batches are built in numpy
    and trimmed to their longest clip. bucket_batches=N > 0: every window of N batches is sorted by clip
    length after augmentation and cut into batches that are then shuffled (length bucketing: less padding,
    so less compute per epoch; a different, equally seeded batch sequence)."""
    from tf_env import tf
    k = len(cfg["joint_idx"])
    if not training:
        keypoints, masks, labels = data.padded(cfg)
        ds = tf.data.Dataset.from_tensor_slices((keypoints, masks, labels)).batch(batch_size)
        return ds.map(_trim_to_longest).prefetch(tf.data.AUTOTUNE)
    options, epochs = augmentation or options_from_config(cfg), itertools.count(start_epoch)
    groups, mirror, hands = selected_groups(cfg), mirror_permutation(cfg), hand_positions(cfg)
    window = batch_size * max(1, bucket_batches)

    def one_epoch():
        rng = np.random.default_rng([seed, next(epochs)])
        order = rng.permutation(len(data))
        for start in range(0, len(order), window):
            picked = order[start:start + window]
            clips = normalize_each([augment(data.clips[i], rng, mirror, options=options, hands=hands)
                                    for i in picked], groups)
            for batch in batch_order([len(c) for c in clips], batch_size, rng if bucket_batches else None):
                keypoints, masks = pad_batch([clips[j] for j in batch])
                if options.mask == "nonzero":  # trimmed again, after the batch's last unmasked frame
                    masks = np.stack([nonzero_mask(kp) for kp in keypoints])
                    t_last = int(np.flatnonzero(masks.any(axis=0)).max(initial=0)) + 1
                    keypoints, masks = keypoints[:, :t_last], masks[:, :t_last]
                yield keypoints, masks, np.array([data.labels[picked[j]] for j in batch], dtype=np.int32)

    spec = (tf.TensorSpec((None, None, k, 2), tf.float32), tf.TensorSpec((None, None), tf.float32),
            tf.TensorSpec((None,), tf.int32))
    # a known length: Keras then ends each epoch after its last batch instead of probing one step further,
    # a probe that advances the optimizer's step counter once per session (and would break --resume)
    steps = -(-len(data) // batch_size)
    ds = tf.data.Dataset.from_generator(one_epoch, output_signature=spec)
    ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    ds = ds.map(lambda kp, m, y: ({"keypoints": kp, "attention_mask": m}, y))
    return ds.prefetch(2).with_options(lean_pipeline_options(tf))


def lean_pipeline_options(tf):
    """tf.data options of the training pipeline: no autotuning and one pipeline thread. The batches come
    from one Python generator, so more threads cannot help, and the autotuner's threads take CPU time
    from training runs going on side by side (the LOSO pipeline runs one per core)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    return options


# ----------------------------------------------------------------------------------------------- summary CLI
def summarize(data: SplitData, cfg: dict, id2label: dict) -> str:
    lengths = np.array([len(c) for c in data.clips])
    norm = data.normalized(cfg)
    detected = np.concatenate([~np.all(c == 0, axis=-1).reshape(-1) for c in norm])
    values = np.concatenate([c.reshape(-1) for c in norm])
    per_class = Counter(id2label[y] for y in data.labels)
    lines = [
        f"{data.root}/{data.split}: {len(data)} samples, {len(set(data.users))} signers {sorted(set(data.users))}",
        f"  classes: {dict(sorted(per_class.items()))}",
        f"  frames after subsampling to <= {MAX_FRAMES}: min {lengths.min()}, median {int(np.median(lengths))}, "
        f"max {lengths.max()}",
        f"  detected points: {detected.mean():.1%}; normalized values in [{values.min():.3f}, {values.max():.3f}]",
    ]
    if data.skipped:
        lines.append(f"  {data.refusals()}; first: {data.skipped[0][1]}")
    return "\n".join(lines)


@cli
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config_path", required=True, help="YAML config (configs/)")
    ap.add_argument("--data_path", required=True, help="dataset root holding <split>/GXX/*.pkl and label maps")
    ap.add_argument("--split", default="all", help="split folder to read (default: all)")
    ap.add_argument("--skip_bad", action="store_true",
                    help="count and skip refused samples instead of stopping")
    args = ap.parse_args()
    cfg = load_config(args.config_path)
    t0 = time.perf_counter()
    data = load_split(args.data_path, args.split, cfg, skip_bad=args.skip_bad)
    dt = time.perf_counter() - t0
    print(summarize(data, cfg, read_label_maps(args.data_path)[1]))
    print(f"  loaded in {dt:.2f} s ({len(data) / dt:.0f} samples/s)")


if __name__ == "__main__":
    main()
