"""Few-shot enrollment: a user records a few clips of a sign; their embeddings (output 1 of every
export, `embedding`) become that sign's prototype, and each later clip's classifier probabilities are
blended with its cosine similarity to the prototypes. THE home of the algorithm (numpy only, no
TensorFlow); an app ports these functions step by step from docs/personalization.md and checks
itself against the enrollment case of the test vectors (make_test_vectors.py).

    import numpy as np
    from enrollment import Params, build_prototypes, check_enrollment, score
    rng, labels = np.random.default_rng(0), np.array([0, 0, 1, 1, 1])   # class ids of 5 clips
    embeddings = 3 * np.eye(8)[labels] + rng.normal(scale=0.3, size=(5, 8))  # (N, D): output 1
    prototypes = build_prototypes(embeddings, labels, num_labels=3)   # sign 2: not enrolled
    print(check_enrollment(embeddings, labels, 3, names=["G01", "G02", "G03"]))  # warnings, if any
    p = score(rng.normal(size=8), rng.normal(size=3), prototypes, Params())  # (C,), sums to 1

With a real export: ModelKey.from_card(tflite_path, card) says which model a prototype file belongs
to; build_prototypes(..., model=key), save_prototypes(path, prototypes, labels=card["labels"]) and
load_prototypes(path, key) (another model's file: one UserError line); params_from_card(card) reads
tau and alpha from the card's `personalization` block (written by tflite_export).

The algorithm (each step in one function here):
  normalize    e / max(||e||_2, EPS), EPS = 1e-12
  prototype    of sign c = normalize(mean over c's clips of normalize(embedding)); a sign with no clip is
               not enrolled (zero row, count 0)
  score        s = softmax(logits); q = softmax over the ENROLLED signs of tau * cos(e, prototype_c);
               S_E = sum of s over the enrolled signs; for an enrolled sign p_c = alpha S_E q_c +
               (1 - alpha) s_c, for any other sign p_c = s_c (the classifier alone); no sign enrolled:
               p = s. p sums to 1.
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
FILE_VERSION = 1
PROTOTYPE_RULE = "mean of l2-normalized embeddings, l2-normalized"
UNIT_NORM_SLACK = 1e-3        # load_prototypes: an enrolled row's norm must be within 1 +- this
SPEC = "docs/personalization.md"


@dataclass(frozen=True)
class Params:
    """The blend's parameters (score): tau scales the cosines before their softmax, alpha is the weight
    of the prototype term. Defined here only; the model card records the values it was exported with."""
    tau: float = 20.0
    alpha: float = 0.7


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
    """prototypes (C, D) float32: the unit prototype of each enrolled sign, zeros for a sign not
    enrolled; counts (C,): enrollment clips per sign (0 = not enrolled); model: the export they belong to
    (None for prototypes not bound to a file, e.g. in tests)."""
    prototypes: np.ndarray
    counts: np.ndarray
    model: ModelKey | None = None

    @property
    def enrolled(self) -> np.ndarray:
        return self.counts > 0

    @property
    def num_labels(self) -> int:
        return self.prototypes.shape[0]

    @property
    def embedding_size(self) -> int:
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


def build_prototypes(embeddings, labels, num_labels: int, model: ModelKey | None = None) -> Prototypes:
    """Enrollment clips' embeddings (N, D) and class ids (N,) -> one prototype per sign with clips."""
    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    check_clips(embeddings, labels, num_labels, model)
    unit = normalize(embeddings)
    prototypes = np.zeros((num_labels, embeddings.shape[1]), np.float64)
    counts = np.bincount(labels.astype(np.int64), minlength=num_labels)
    for c in np.flatnonzero(counts):
        prototypes[c] = normalize(unit[labels == c].mean(axis=0))
    return Prototypes(prototypes.astype(np.float32), counts, model)


def check_clips(embeddings: np.ndarray, labels: np.ndarray, num_labels: int, model: ModelKey | None) -> None:
    """Shapes and class ids of enrollment clips (a ValueError names what is wrong)."""
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),):
        raise ValueError(f"enrollment: embeddings must be (N, D) and labels (N,), got {embeddings.shape} "
                         f"and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"enrollment: class ids must lie in [0, {num_labels}), got {sorted(set(labels))}")
    if model and (model.embedding_size, model.num_labels) != (embeddings.shape[1], num_labels):
        raise ValueError(f"enrollment: {embeddings.shape[1]}-d embeddings and {num_labels} labels do not fit "
                         f"the model ({model.embedding_size}-d, {model.num_labels} labels)")


def score_steps(embedding, logits, prototypes: Prototypes, params: Params = Params()) -> dict:
    """score() with its intermediate values (float64), for (B, D) / (B, C) inputs: classifier (s),
    cosines (B, E) and prototype_probabilities (q) over the enrolled signs (`enrolled`: their ids),
    enrolled_mass (S_E, (B,)) and probabilities (p)."""
    e, z = np.atleast_2d(np.asarray(embedding, np.float64)), np.atleast_2d(np.asarray(logits, np.float64))
    if z.shape[1] != prototypes.num_labels or e.shape != (len(z), prototypes.embedding_size):
        raise ValueError(f"score: embedding {e.shape} and logits {z.shape} do not fit prototypes "
                         f"{prototypes.prototypes.shape}")
    s = softmax(z)
    enrolled = np.flatnonzero(prototypes.enrolled)
    cosines = normalize(e) @ prototypes.prototypes[enrolled].astype(np.float64).T       # (B, E)
    q = softmax(params.tau * cosines) if len(enrolled) else cosines
    mass = s[:, enrolled].sum(axis=1)                                                  # (B,)
    p = s.copy()
    p[:, enrolled] = params.alpha * mass[:, None] * q + (1 - params.alpha) * s[:, enrolled]
    return {"classifier": s, "enrolled": enrolled, "cosines": cosines, "prototype_probabilities": q,
            "enrolled_mass": mass, "probabilities": p}


def score(embedding, logits, prototypes: Prototypes, params: Params = Params()) -> np.ndarray:
    """Probabilities (C,) for one clip (embedding (D,), logits (C,)) or (B, C) for a batch; see the
    module docstring for the rule. Every consumer of enrollment goes through this function."""
    p = score_steps(embedding, logits, prototypes, params)["probabilities"]
    return p[0] if np.ndim(logits) == 1 else p


# ------------------------------------------------------------------------------------ the check
def check_enrollment(embeddings, labels, num_labels: int, names: list[str] | None = None,
                     threshold: float = SINGLE_CLIP_MAX_COSINE) -> list[str]:
    """Warnings (one line each, with sign names) for enrollment clips that look like ANOTHER enrolled
    sign: a clip of a sign with >= 2 clips whose cosine to another sign's prototype is higher than to
    the prototype of its own sign's other clips (leave-one-out); the only clip of a sign whose cosine
    to another sign's prototype is >= threshold. [] when nothing looks wrong."""
    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    prototypes = build_prototypes(embeddings, labels, num_labels)
    names = names or [f"class {c}" for c in range(num_labels)]
    unit, warnings = normalize(embeddings), []
    for i, c in enumerate(labels):
        others = np.flatnonzero(prototypes.enrolled & (np.arange(num_labels) != c))
        if not len(others):
            continue
        cosines = prototypes.prototypes[others].astype(np.float64) @ unit[i]
        nearest, best = others[np.argmax(cosines)], float(cosines.max())
        if prototypes.counts[c] >= 2:
            own = float(normalize(unit[labels == c].sum(axis=0) - unit[i]) @ unit[i])
            if best > own:
                warnings.append(f"enrollment clip {i} of {names[c]} looks like {names[nearest]}: cosine "
                                f"{best:.3f} to it, {own:.3f} to the other clips of {names[c]}")
        elif best >= threshold:
            warnings.append(f"the only enrollment clip of {names[c]} (clip {i}) looks like "
                            f"{names[nearest]}: cosine {best:.3f} to it (>= {threshold})")
    return warnings


# ------------------------------------------------------------------------------------ files and card
def save_prototypes(path, prototypes: Prototypes, labels: list[str] | None = None) -> Path:
    """Write a prototype file (JSON, human-readable; an app can write the same) bound to its model."""
    if prototypes.model is None:
        raise ValueError("save_prototypes: the prototypes are bound to no model (build them with model=)")
    record = {"format": FILE_FORMAT, "format_version": FILE_VERSION, "model": prototypes.model.as_dict(),
              "normalization": "l2", "prototype_rule": PROTOTYPE_RULE, "spec": SPEC,
              "labels": list(labels) if labels is not None else None,
              "counts": prototypes.counts.tolist(),
              "prototypes": [[float(v) for v in row] for row in prototypes.prototypes]}
    return atomic_write_json(path, record)


def load_prototypes(path, expected: ModelKey) -> Prototypes:
    """Read a prototype file for the model `expected`; a file of another model or layout, or one whose
    content has the wrong shape, is one UserError line naming the file."""
    record = read_json(path, "prototype file")
    if not isinstance(record, dict) or record.get("format") != FILE_FORMAT:
        raise UserError(f"{path}: not a prototype file (no \"format\": \"{FILE_FORMAT}\")")
    if record.get("format_version") != FILE_VERSION:
        raise UserError(f"{path}: prototype file version {record.get('format_version')!r}, this code reads "
                        f"{FILE_VERSION}")
    check_model(path, record.get("model"), expected)
    counts, rows = record.get("counts"), record.get("prototypes")
    c, d = expected.num_labels, expected.embedding_size
    try:
        counts, rows = np.array(counts, dtype=np.int64), np.array(rows, dtype=np.float64)
    except (TypeError, ValueError):
        counts = rows = None
    if counts is None or counts.shape != (c,) or rows.shape != (c, d) or not np.isfinite(rows).all() \
            or (counts < 0).any():
        raise UserError(f"{path}: needs counts ({c} clip counts >= 0) and prototypes ({c} rows of {d} "
                        "finite numbers)")
    norms = np.linalg.norm(rows, axis=1)
    if (np.abs(norms[counts > 0] - 1) > UNIT_NORM_SLACK).any() or (norms[counts == 0] > 0).any():
        raise UserError(f"{path}: every enrolled sign's prototype must have norm 1 and every other "
                        "prototype be all zeros")
    return Prototypes(rows.astype(np.float32), counts, expected)


def check_model(path, recorded, expected: ModelKey) -> None:
    """The file's model block against the model it is loaded for."""
    if not isinstance(recorded, dict):
        raise UserError(f"{path}: records no model block")
    differ = [f"{key} {recorded.get(key)!r} (this model: {value!r})"
              for key, value in expected.as_dict().items() if recorded.get(key) != value]
    if differ:
        raise UserError(f"{path}: prototypes of another model: {'; '.join(differ)}; enroll again with "
                        "this model")


def card_rules(params: Params = Params()) -> dict:
    """What the model card's personalization block says about the algorithm (tflite_export adds where
    the embedding output is)."""
    return {"tau": params.tau, "alpha": params.alpha, "normalization": "l2", "eps": EPS,
            "prototype_rule": PROTOTYPE_RULE,
            "score_rule": ("s = softmax(logits); q = softmax over the enrolled signs of tau * cos(embedding, "
                           "prototype); S_E = sum of s over the enrolled signs; enrolled sign c: p_c = "
                           "alpha * S_E * q_c + (1 - alpha) * s_c; any other sign: p_c = s_c"),
            "check_rule": ("warn when an enrollment clip's cosine to another sign's prototype exceeds its "
                           "cosine to its own sign's other clips (leave-one-out), or, for a sign's only "
                           f"clip, is >= {SINGLE_CLIP_MAX_COSINE}"),
            "prototype_file": f"JSON, format {FILE_FORMAT!r} version {FILE_VERSION}, bound to model_sha256",
            "spec": SPEC}


def params_from_card(card: dict) -> Params:
    """tau and alpha from a model card's personalization block (Params() when the card has none)."""
    block = card.get("personalization") or {}
    defaults = Params()
    return Params(float(block.get("tau", defaults.tau)), float(block.get("alpha", defaults.alpha)))
