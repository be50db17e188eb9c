"""Few-shot enrollment: a user records a few clips of each sign; each clip's descriptor (the model's
embedding, output 1 of every export, and the mean shape of each hand in the model's input) becomes
part of that sign's prototype, and each later clip is scored by its similarity to the prototypes,
the classifier's probabilities standing in for signs without enrollment. THE home of the algorithm
(numpy only, no TensorFlow); an app ports these functions step by step from docs/personalization.md
and checks itself against the enrollment case of the test vectors (make_test_vectors.py).

    import numpy as np
    from enrollment import Params, build_prototypes, check_enrollment, score
    rng = np.random.default_rng(0)
    embeddings, labels = rng.normal(size=(5, 8)), np.array([0, 0, 1, 1, 1])  # (N, D) output 1, class ids
    prototypes = build_prototypes(embeddings, labels, num_labels=3)   # sign 2: not enrolled
    print(check_enrollment(embeddings, labels, 3, names=["G01", "G02", "G03"]))  # warnings, if any
    p = score(rng.normal(size=8), rng.normal(size=3), prototypes, Params())  # (C,), sums to 1

With a real export, a clip's descriptor is describe(embedding, keypoints, mask, hand_positions(cfg))
and the prototypes use descriptor_blocks(D, hand sizes): ModelKey.from_card(tflite_path, card) says
which model a prototype file belongs to; build_prototypes(..., model=key, blocks=blocks),
save_prototypes(path, prototypes, labels=card["labels"]) and load_prototypes(path, key) (another
model's file: one UserError line); params_from_card(card) reads the card's `personalization` block.

The algorithm (each step in one function here):
  normalize    e / max(||e||_2, EPS), EPS = 1e-12
  descriptor   blocks: the embedding (D numbers, weight 1), then each selected hand's mean shape: the
               mean of its (x, y) points over the frames of the clip where it is detected (any point
               non-zero), zeros when never detected (2n numbers, weight hand_weight, centered)
  enrollment   center = per centered block, the mean over ALL enrollment clips (the user's offset;
               zeros for the embedding block); a clip's unit descriptor = each block minus its center,
               normalized on its own; prototype of sign c = the mean of its clips' unit descriptors,
               each block normalized again; a sign with no clip is not enrolled (zero row, count 0)
  similarity   cos_c = sum over blocks of weight_b * <unit block b of the clip, block b of c's
               prototype> / sum of the weights
  score        s = softmax(logits); q = softmax over the ENROLLED signs of tau * cos_c;
               S_E = sum of s over the enrolled signs; for an enrolled sign p_c = alpha S_E q_c +
               (1 - alpha) s_c, for any other sign p_c = s_c (the classifier alone); no sign enrolled:
               p = s. p sums to 1.
The parameters (Params) were chosen on validation signers only (docs/personalization.md).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metrics import softmax
from util import UserError, atomic_write_json, read_json

EPS = 1e-12                   # normalize: e / max(||e||, EPS)
SINGLE_CLIP_MAX_COSINE = 0.9  # check_enrollment: a sign's only clip this close to another prototype
FILE_FORMAT = "signbart-prototypes"
FILE_VERSION = 2
PROTOTYPE_RULE = ("per block: mean of the enrollment clips' centered, l2-normalized blocks, "
                  "l2-normalized")
UNIT_NORM_SLACK = 1e-3        # load_prototypes: an enrolled row's norm must be within 1 +- this
SPEC = "docs/personalization.md"


@dataclass(frozen=True)
class Params:
    """The parameters of enrollment: tau scales the similarities before their softmax, alpha is the
    weight of the prototype term against the classifier, hand_weight the weight of each hand's shape
    block against the embedding's 1. Defined here only (values chosen on validation signers,
    docs/personalization.md); the model card records the values it was exported with."""
    tau: float = 30.0
    alpha: float = 1.0
    hand_weight: float = 0.5


@dataclass(frozen=True)
class Block:
    """One part of a clip's descriptor: `size` numbers compared by cosine, with weight `weight`;
    `centered`: the mean of all enrollment clips' block is subtracted first (the user's own offset)."""
    name: str
    size: int
    weight: float
    centered: bool

    def as_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "weight": self.weight, "centered": self.centered}


@dataclass(frozen=True)
class ModelKey:
    """The exported model a prototype file belongs to. Prototypes live in the embedding space of one
    .tflite file, so the key is that file's sha256 (cards carry no other model id; re-exporting the same
    weights in the same mode gives the same bytes), plus the sizes a file must match."""
    sha256: str
    layout: int
    num_keypoints: int
    num_labels: int
    embedding_size: int

    @classmethod
    def from_card(cls, tflite_path, card: dict) -> "ModelKey":
        """The key of a .tflite from its bytes and its model card (card version 6 or later)."""
        block = card.get("personalization")
        if not isinstance(block, dict) or "embedding_size" not in block:
            raise UserError(f"{tflite_path}: its model card has no personalization block (exported before "
                            "the embedding output); export the model again")
        sha256 = model_sha256(tflite_path)
        if block.get("model_sha256", sha256) != sha256:
            raise UserError(f"{tflite_path}: the model card beside it belongs to another file "
                            "(model_sha256 differs); copy the model and its card together")
        return cls(sha256, int(card["layout"]), int(card["num_keypoints"]), len(card["labels"]),
                   int(block["embedding_size"]))

    def as_dict(self) -> dict:
        return {"sha256": self.sha256, "layout": self.layout, "num_keypoints": self.num_keypoints,
                "num_labels": self.num_labels, "embedding_size": self.embedding_size}


@dataclass
class Prototypes:
    """prototypes (C, D') float32: each enrolled sign's prototype (every block of unit norm), zeros for
    a sign not enrolled; counts (C,): enrollment clips per sign (0 = not enrolled); blocks: the layout
    of a descriptor (D' = the sum of their sizes); center (D',): the enrollment clips' mean of each
    centered block, zeros elsewhere; model: the export they belong to (None: not bound to a file)."""
    prototypes: np.ndarray
    counts: np.ndarray
    blocks: tuple
    center: np.ndarray
    model: ModelKey | None = None

    @property
    def enrolled(self) -> np.ndarray:
        return self.counts > 0

    @property
    def num_labels(self) -> int:
        return self.prototypes.shape[0]

    @property
    def descriptor_size(self) -> int:
        return self.prototypes.shape[1]


def model_sha256(tflite) -> str:
    """sha256 (hex) of a .tflite file (a path) or of its bytes: the model fingerprint."""
    data = bytes(tflite) if isinstance(tflite, (bytes, bytearray)) else Path(tflite).read_bytes()
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ the algorithm
def normalize(x) -> np.ndarray:
    """L2 normalization along the last axis, float64: x / max(||x||, EPS) (a zero vector stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def descriptor_blocks(embedding_size: int, hand_sizes=(), params: Params = Params()) -> tuple:
    """The layout of a descriptor: the embedding, then the mean shape of each selected hand (hand_sizes:
    points per hand, left then right, as keypoints.hand_positions gives them)."""
    hands = tuple(Block(f"{side}_hand_shape", 2 * int(n), params.hand_weight, True)
                  for side, n in zip(("left", "right"), hand_sizes) if n)
    return (Block("embedding", int(embedding_size), 1.0, False),) + hands


def hand_shapes(keypoints, mask, hands) -> list[np.ndarray]:
    """Each hand's mean shape. keypoints (T, K, 2) as the model gets them (normalized, padded), mask (T,),
    hands: each hand's positions in K (keypoints.hand_positions) -> per hand (2n,) float64: the mean of
    its points over the frames whose mask is 1 and in which any of its points is non-zero (detected);
    zeros when the hand is never detected."""
    keypoints, valid = np.asarray(keypoints, np.float64), np.asarray(mask) > 0
    shapes = []
    for positions in hands:
        points = keypoints[:, positions, :]                                 # (T, n, 2)
        seen = valid & np.any(points != 0, axis=(1, 2))                     # (T,)
        mean = points[seen].mean(axis=0) if seen.any() else np.zeros(points.shape[1:])
        shapes.append(mean.reshape(-1))
    return shapes


def describe(embedding, keypoints, mask, hands) -> np.ndarray:
    """A clip's descriptor (D + 2n per hand,) float64: its embedding (output 1), then hand_shapes."""
    return np.concatenate([np.asarray(embedding, np.float64).reshape(-1)]
                          + hand_shapes(keypoints, mask, hands))


def block_slices(blocks) -> list[slice]:
    ends = np.cumsum([b.size for b in blocks])
    return [slice(int(end - b.size), int(end)) for b, end in zip(blocks, ends)]


def unit_blocks(descriptors, blocks, center) -> np.ndarray:
    """(N, D') descriptors -> each block minus its center, normalized on its own (float64)."""
    x = np.atleast_2d(np.asarray(descriptors, np.float64)) - center
    return np.concatenate([normalize(x[:, part]) for part in block_slices(blocks)], axis=1)


def similarities(unit, prototypes: Prototypes) -> np.ndarray:
    """Unit descriptors (B, D') -> (B, C): the weighted mean over blocks of each block's cosine."""
    weights = np.array([b.weight for b in prototypes.blocks], np.float64)
    rows = prototypes.prototypes.astype(np.float64)
    per_block = [unit[:, part] @ rows[:, part].T for part in block_slices(prototypes.blocks)]
    return np.tensordot(weights, np.stack(per_block), axes=1) / weights.sum()


def build_prototypes(descriptors, labels, num_labels: int, model: ModelKey | None = None,
                     blocks: tuple | None = None) -> Prototypes:
    """Enrollment clips' descriptors (N, D') and class ids (N,) -> one prototype per sign with clips.
    blocks: the descriptor's layout (descriptor_blocks); None: the whole descriptor is one embedding
    block (weight 1, not centered)."""
    descriptors, labels = np.asarray(descriptors, np.float64), np.asarray(labels)
    blocks = tuple(blocks) if blocks else descriptor_blocks(np.shape(descriptors)[-1])
    check_clips(descriptors, labels, num_labels, model, blocks)
    center = np.zeros(descriptors.shape[1])
    for block, part in zip(blocks, block_slices(blocks)):
        if block.centered and len(descriptors):
            center[part] = descriptors[:, part].mean(axis=0)
    unit = unit_blocks(descriptors, blocks, center)
    prototypes = np.zeros((num_labels, descriptors.shape[1]), np.float64)
    counts = np.bincount(labels.astype(np.int64), minlength=num_labels)
    for c in np.flatnonzero(counts):
        prototypes[c] = unit_blocks(unit[labels == c].mean(axis=0), blocks, 0.0)[0]
    return Prototypes(prototypes.astype(np.float32), counts, blocks, center.astype(np.float32), model)


def check_clips(descriptors: np.ndarray, labels: np.ndarray, num_labels: int, model: ModelKey | None,
                blocks: tuple) -> None:
    """Shapes and class ids of enrollment clips (a ValueError names what is wrong)."""
    if descriptors.ndim != 2 or labels.shape != (len(descriptors),):
        raise ValueError(f"enrollment: descriptors must be (N, D) and labels (N,), got {descriptors.shape} "
                         f"and {labels.shape}")
    if descriptors.shape[1] != sum(b.size for b in blocks):
        raise ValueError(f"enrollment: {descriptors.shape[1]}-d descriptors do not fit the blocks "
                         f"{[b.as_dict() for b in blocks]}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"enrollment: class ids must lie in [0, {num_labels}), got {sorted(set(labels))}")
    if model and (model.embedding_size, model.num_labels) != (blocks[0].size, num_labels):
        raise ValueError(f"enrollment: {blocks[0].size}-d embeddings and {num_labels} labels do not fit "
                         f"the model ({model.embedding_size}-d, {model.num_labels} labels)")


def score_steps(descriptor, logits, prototypes: Prototypes, params: Params = Params()) -> dict:
    """score() with its intermediate values (float64), for (B, D') / (B, C) inputs: classifier (s),
    unit descriptors, similarities (B, E) and prototype_probabilities (q) over the enrolled signs
    (`enrolled`: their ids), enrolled_mass (S_E, (B,)) and probabilities (p)."""
    x, z = np.atleast_2d(np.asarray(descriptor, np.float64)), np.atleast_2d(np.asarray(logits, np.float64))
    if z.shape[1] != prototypes.num_labels or x.shape != (len(z), prototypes.descriptor_size):
        raise ValueError(f"score: descriptor {x.shape} and logits {z.shape} do not fit prototypes "
                         f"{prototypes.prototypes.shape}")
    s = softmax(z)
    enrolled = np.flatnonzero(prototypes.enrolled)
    unit = unit_blocks(x, prototypes.blocks, prototypes.center.astype(np.float64))
    cos = similarities(unit, prototypes)[:, enrolled]                                 # (B, E)
    q = softmax(params.tau * cos) if len(enrolled) else cos
    mass = s[:, enrolled].sum(axis=1)                                                  # (B,)
    p = s.copy()
    p[:, enrolled] = params.alpha * mass[:, None] * q + (1 - params.alpha) * s[:, enrolled]
    return {"classifier": s, "enrolled": enrolled, "unit_descriptors": unit, "similarities": cos,
            "prototype_probabilities": q, "enrolled_mass": mass, "probabilities": p}


def score(descriptor, logits, prototypes: Prototypes, params: Params = Params()) -> np.ndarray:
    """Probabilities (C,) for one clip (descriptor (D',), logits (C,)) or (B, C) for a batch; see the
    module docstring for the rule. Every consumer of enrollment goes through this function."""
    p = score_steps(descriptor, logits, prototypes, params)["probabilities"]
    return p[0] if np.ndim(logits) == 1 else p


# ------------------------------------------------------------------------------------ the check
def check_enrollment(descriptors, labels, num_labels: int, names: list[str] | None = None,
                     threshold: float = SINGLE_CLIP_MAX_COSINE, blocks: tuple | None = None) -> list[str]:
    """Warnings (one line each, with sign names) for enrollment clips that look like ANOTHER enrolled
    sign: a clip of a sign with >= 2 clips whose similarity to another sign's prototype is higher than
    to the prototype of its own sign's other clips (leave-one-out); the only clip of a sign whose
    similarity to another sign's prototype is >= threshold. [] when nothing looks wrong."""
    descriptors, labels = np.asarray(descriptors, np.float64), np.asarray(labels)
    prototypes = build_prototypes(descriptors, labels, num_labels, blocks=blocks)
    names = names or [f"class {c}" for c in range(num_labels)]
    unit = unit_blocks(descriptors, prototypes.blocks, prototypes.center.astype(np.float64))
    sims, warnings = similarities(unit, prototypes), []
    for i, c in enumerate(labels):
        others = np.flatnonzero(prototypes.enrolled & (np.arange(num_labels) != c))
        if not len(others):
            continue
        nearest, best = others[np.argmax(sims[i, others])], float(sims[i, others].max())
        if prototypes.counts[c] >= 2:
            rest = unit[(labels == c) & (np.arange(len(labels)) != i)].mean(axis=0)
            own_prototype = Prototypes(unit_blocks(rest, prototypes.blocks, 0.0).astype(np.float32),
                                       np.ones(1, np.int64), prototypes.blocks, prototypes.center)
            own = float(similarities(unit[i:i + 1], own_prototype)[0, 0])
            if best > own:
                warnings.append(f"enrollment clip {i} of {names[c]} looks like {names[nearest]}: "
                                f"similarity {best:.3f} to it, {own:.3f} to the other clips of {names[c]}")
        elif best >= threshold:
            warnings.append(f"the only enrollment clip of {names[c]} (clip {i}) looks like "
                            f"{names[nearest]}: similarity {best:.3f} to it (>= {threshold})")
    return warnings


# ------------------------------------------------------------------------------------ files and card
def save_prototypes(path, prototypes: Prototypes, labels: list[str] | None = None) -> Path:
    """Write a prototype file (JSON, human-readable; an app can write the same) bound to its model."""
    if prototypes.model is None:
        raise ValueError("save_prototypes: the prototypes are bound to no model (build them with model=)")
    record = {"format": FILE_FORMAT, "format_version": FILE_VERSION, "model": prototypes.model.as_dict(),
              "normalization": "l2", "prototype_rule": PROTOTYPE_RULE, "spec": SPEC,
              "blocks": [b.as_dict() for b in prototypes.blocks],
              "labels": list(labels) if labels is not None else None,
              "counts": prototypes.counts.tolist(),
              "center": [float(v) for v in prototypes.center],
              "prototypes": [[float(v) for v in row] for row in prototypes.prototypes]}
    return atomic_write_json(path, record)


def load_prototypes(path, expected: ModelKey, blocks: tuple) -> Prototypes:
    """Read a prototype file for the model `expected` and the descriptor layout `blocks`; a file of
    another model, layout or parameters, or one whose content has the wrong shape, is one UserError
    line naming the file."""
    record = read_json(path, "prototype file")
    if not isinstance(record, dict) or record.get("format") != FILE_FORMAT:
        raise UserError(f"{path}: not a prototype file (no \"format\": \"{FILE_FORMAT}\")")
    if record.get("format_version") != FILE_VERSION:
        raise UserError(f"{path}: prototype file version {record.get('format_version')!r}, this code reads "
                        f"{FILE_VERSION}")
    check_model(path, record.get("model"), expected)
    if record.get("blocks") != [b.as_dict() for b in blocks]:
        raise UserError(f"{path}: its descriptor blocks {record.get('blocks')!r} are not this model's "
                        f"{[b.as_dict() for b in blocks]}; enroll again with this model")
    c, d = expected.num_labels, sum(b.size for b in blocks)
    try:
        counts = np.array(record.get("counts"), dtype=np.int64)
        rows = np.array(record.get("prototypes"), dtype=np.float64)
        center = np.array(record.get("center"), dtype=np.float64)
    except (TypeError, ValueError):
        counts = rows = center = None
    if counts is None or counts.shape != (c,) or rows.shape != (c, d) or center.shape != (d,) \
            or not (np.isfinite(rows).all() and np.isfinite(center).all()) or (counts < 0).any():
        raise UserError(f"{path}: needs counts ({c} clip counts >= 0), center ({d} finite numbers) and "
                        f"prototypes ({c} rows of {d} finite numbers)")
    norms = np.stack([np.linalg.norm(rows[:, part], axis=1) for part in block_slices(blocks)], axis=1)
    unit_or_zero = (np.abs(norms - 1) <= UNIT_NORM_SLACK) | (norms == 0)  # 0: a centered block that no
    #   enrollment clip varies in (e.g. a hand never seen in any of them), as build_prototypes makes it
    if not unit_or_zero[counts > 0].all() or (norms[counts == 0] > 0).any():
        raise UserError(f"{path}: every block of an enrolled sign's prototype must have norm 1 (or be all "
                        "zeros) and every other prototype be all zeros")
    return Prototypes(rows.astype(np.float32), counts, tuple(blocks), center.astype(np.float32), expected)


def check_model(path, recorded, expected: ModelKey) -> None:
    """The file's model block against the model it is loaded for."""
    if not isinstance(recorded, dict):
        raise UserError(f"{path}: records no model block")
    differ = [f"{key} {recorded.get(key)!r} (this model: {value!r})"
              for key, value in expected.as_dict().items() if recorded.get(key) != value]
    if differ:
        raise UserError(f"{path}: prototypes of another model: {'; '.join(differ)}; enroll again with "
                        "this model")


def card_rules(params: Params = Params(), hands=()) -> dict:
    """What the model card's personalization block says about the algorithm (tflite_export adds where
    the embedding output is). hands: each selected hand's positions in the model input's K axis."""
    return {"tau": params.tau, "alpha": params.alpha, "hand_weight": params.hand_weight,
            "normalization": "l2", "eps": EPS,
            "hand_shape_blocks": [{"hand": side, "positions": [int(k) for k in positions]}
                                  for side, positions in zip(("left", "right"), hands) if len(positions)],
            "descriptor_rule": ("the embedding (weight 1), then each hand of hand_shape_blocks: the mean of "
                                "its input (x, y) points over the frames whose mask is 1 and in which any "
                                "of its points is non-zero, zeros if none (weight hand_weight, centered)"),
            "prototype_rule": PROTOTYPE_RULE,
            "score_rule": ("center = mean of the enrollment clips' centered blocks; a block's unit = "
                           "(block - center) / ||.||; similarity_c = weighted mean over blocks of <unit, "
                           "prototype_c block>; s = softmax(logits); q = softmax over the enrolled signs "
                           "of tau * similarity; S_E = sum of s over the enrolled signs; enrolled sign c: "
                           "p_c = alpha * S_E * q_c + (1 - alpha) * s_c; any other sign: p_c = s_c"),
            "check_rule": ("warn when an enrollment clip's similarity to another sign's prototype exceeds "
                           "its similarity to its own sign's other clips (leave-one-out), or, for a "
                           f"sign's only clip, is >= {SINGLE_CLIP_MAX_COSINE}"),
            "prototype_file": f"JSON, format {FILE_FORMAT!r} version {FILE_VERSION}, bound to model_sha256",
            "spec": SPEC}


def params_from_card(card: dict) -> Params:
    """tau, alpha and hand_weight from a model card's personalization block (Params() when none)."""
    block = card.get("personalization") or {}
    defaults = Params()
    return Params(float(block.get("tau", defaults.tau)), float(block.get("alpha", defaults.alpha)),
                  float(block.get("hand_weight", defaults.hand_weight)))


def card_blocks(card: dict) -> tuple:
    """The descriptor layout of a model from its card: embedding size and hand blocks."""
    block = card.get("personalization") or {}
    hands = [len(h.get("positions", [])) for h in block.get("hand_shape_blocks", [])]
    sides = [h.get("hand") for h in block.get("hand_shape_blocks", [])]
    sizes = [hands[sides.index(side)] if side in sides else 0 for side in ("left", "right")]
    return descriptor_blocks(int(block["embedding_size"]), sizes, params_from_card(card))


def card_hands(card: dict) -> list[np.ndarray]:
    """Each hand block's positions in the model input (for describe)."""
    block = card.get("personalization") or {}
    return [np.array(h["positions"], np.int64) for h in block.get("hand_shape_blocks", [])]
