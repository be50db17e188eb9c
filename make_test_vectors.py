"""App test vectors: one real clip through the preprocessing and each exported model, written as JSON so a
Dart/Kotlin/Swift port can check itself step by step (docs/preprocessing_spec.md describes the steps).

For every --models file it writes `<model>.test_vector.json` (beside the model, or into --output_dir) holding:
  raw_keypoints        (T, N, 3) the clip as MediaPipe gives it, in the model's stored layout (x, y, c)
  selected_clipped     (T, K, 2) after joint selection and clipping to [0, 1]
  resting_hands_dropped (T, K, 2) after the resting-hand rule (= selected_clipped when the card's
                       resting_hands.cutoff is 0)
  frame_indices        the frames kept (all, or floor(linspace(0, T-1, 64)) when T > 64)
  dominant_hand_canonical (T', K, 2) the kept frames after the dominant-hand rule (mirrored when
                       dominant_hand_mirrored is true; the card's dominant_hand.ratio 0: never)
  normalized           (T', K, 2) after per-group normalization
  model_input          keypoints (1, 64, K, 2) and attention_mask (1, 64): what the interpreter is fed
  expected_output      logits (1, C) of this .tflite, softmax probabilities, top-1 id/label/name, and the
                       embedding (1, D) (output 1; absent for a model exported without it)
  tolerance            how close a port must come (normalized values; logits and embedding for the export mode)
  enrollment           the few-shot enrollment case (docs/personalization.md): enrollment clips of three signs
                       (ENROLL_PLAN clips each) with their embeddings from this .tflite, the prototypes
                       (enrollment.build_prototypes) and check_enrollment's warnings, then test clips (one more
                       of each enrolled sign, one of a sign not enrolled) with their logits, embedding, every
                       intermediate of enrollment.score and the probabilities, and tolerances. The clips come
                       from --enroll_data (default: the card's training data_path), split --enroll_split
                       (default: test, the held-out signer, who plays the app user); without data, no case.
The preprocessing is preprocessing.py (the code training uses) and the model outputs come from tflite_runtime
with one thread, so running the command again writes byte-identical files. --explain prints the worked example
of one frame (the numbers in docs/preprocessing_spec.md).

    python make_test_vectors.py --sample data/arabic-asl-90kpts/all/G01/user01_G01_R01.pkl \\
        --models outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite \\
                 outputs/arabic_asl/loso/exports/ptq/user01/*.tflite
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

import enrollment
from keypoints import selected_groups
from dataset import check_layout, list_split, load_sample
from keypoints import get_layout
from metrics import softmax
from preprocessing import (canonicalize_hands, drop_resting_hands, group_box, left_dominant, model_inputs,
                           normalize_groups, pad_clip, select_and_clip, uniform_frame_indices)
from runs import parse_sample_name, require_file
from util import UserError, atomic_write_text, cli
from tflite_runtime import (PARITY_TOLERANCE, RUNTIME_MAX_EMBEDDING_DIFF, RUNTIME_MIN_EMBEDDING_COSINE,
                            TFLiteModel, display_names, read_model_card, resolve_config)

FORMAT_VERSION = 4  # 2: + resting_hands_dropped; 3: + dominant_hand_canonical, dominant_hand_mirrored;
#                     4: + expected_output.embedding, enrollment
NORMALIZED_TOLERANCE = 1e-5  # float32 ports of the float64 reference land within ~1e-7
LOGIT_TOLERANCE = PARITY_TOLERANCE  # absolute, for the float modes (fp32, float16): the export's Keras-vs-TFLite bounds
QUANTIZED_RANGE_SHARE = 0.1  # other modes: a share of the logits' range (quantization error grows with the range;
#                              two CPU kernel sets running the same int8 model differ by ~2 % of it)
EMBEDDING_TOLERANCE = RUNTIME_MAX_EMBEDDING_DIFF    # absolute, float modes: as between two TFLite runtimes
EMBEDDING_MIN_COSINE = RUNTIME_MIN_EMBEDDING_COSINE  # other modes: cosine to the expected embedding
ENROLL_PLAN = (2, 2, 1)      # enrollment clips of the first three signs of the split with enough clips
ENROLLMENT_TOLERANCE = {"prototypes_abs": 1e-5, "cosines_abs": 1e-5, "probabilities_abs": 1e-4}  # float32
#                              ports from the vector's embeddings land within ~1e-6 of the float64 reference


# ----------------------------------------------------------------------------------------------- tolerances
def logit_tolerance(mode: str, logits: np.ndarray) -> float:
    """Max |logit - expected| accepted for an export mode: absolute for float modes, else a share of the range."""
    if mode in LOGIT_TOLERANCE:
        return LOGIT_TOLERANCE[mode]
    return QUANTIZED_RANGE_SHARE * float(np.ptp(logits))


def embedding_rule(mode: str) -> str:
    if mode in EMBEDDING_TOLERANCE:
        return f"|value - expected| <= {EMBEDDING_TOLERANCE[mode]:g} for every component"
    return f"cosine similarity with the expected embedding >= {EMBEDDING_MIN_COSINE:g}"


def tolerance_rule(mode: str) -> str:
    if mode in LOGIT_TOLERANCE:
        return f"|logit - expected| <= {LOGIT_TOLERANCE[mode]:g} for every class, and the same top-1"
    return (f"|logit - expected| <= {QUANTIZED_RANGE_SHARE:g} x (max - min expected logit) for every class, and the "
            f"same top-1 when the expected top-1 margin exceeds twice that")


# ----------------------------------------------------------------------------------------------- the steps
def layout_keypoints(raw: np.ndarray, cfg: dict) -> np.ndarray:
    """The stored clip cut to the model's layout: what an extractor in that layout produces (the 65 layout is the
    first 65 points of the 90 layout, keypoints.READABLE_FROM)."""
    return np.asarray(raw, dtype=np.float32)[:, :get_layout(cfg["layout"]).size]


def preprocessing_steps(raw: np.ndarray, cfg: dict) -> dict:
    """Every intermediate array of preprocessing.model_inputs for one clip (T, N, C)."""
    selected = select_and_clip(raw, cfg["joint_idx"])                     # (T, K, 2)
    dropped = drop_resting_hands(selected, cfg)                           # (T, K, 2)
    kept = uniform_frame_indices(len(selected))
    canonical = canonicalize_hands(dropped[kept], cfg)                    # (T', K, 2)
    normalized = normalize_groups(canonical, selected_groups(cfg))       # (T', K, 2)
    keypoints, mask = pad_clip(normalized)                                # (64, K, 2), (64,)
    reference = model_inputs(raw, cfg)
    assert np.array_equal(keypoints[None], reference[0]) and np.array_equal(mask[None], reference[1])
    return {"selected_clipped": selected, "resting_hands_dropped": dropped, "frame_indices": kept,
            "dominant_hand_canonical": canonical, "dominant_hand_mirrored": left_dominant(dropped[kept], cfg),
            "normalized": normalized,
            "keypoints": keypoints[None], "attention_mask": mask[None]}


def expected_output(model: TFLiteModel, steps: dict, labels: list[str], names: dict) -> dict:
    if model.has_embedding:
        logits, embedding, _ = model.run_with_embedding(steps["keypoints"], steps["attention_mask"])
    else:
        (logits, _), embedding = model.run(steps["keypoints"], steps["attention_mask"]), None
    probabilities = softmax(logits)
    top = np.argsort(-logits[0], kind="stable")
    best = int(top[0])
    output = {"logits": logits, "probabilities": probabilities.astype(np.float32),
              "top1": {"id": best, "label": labels[best], "name": names.get(labels[best], "")},
              "top1_margin": float(logits[0, top[0]] - logits[0, top[1]]) if len(top) > 1 else None}
    return output | ({"embedding": embedding} if embedding is not None else {})


def test_vector(model_path, sample_path, cfg: dict, enroll_data: str = "", enroll_split: str = "test") -> dict:
    """The whole vector of one model and one sample (see the module docstring)."""
    card = read_model_card(model_path)
    sample = load_sample(require_file(sample_path, "sample"))
    check_layout(sample_path, sample["keypoints"], cfg)
    raw = layout_keypoints(sample["keypoints"], cfg)                     # (T, N, 3)
    steps = preprocessing_steps(raw, cfg)
    labels, names = card.get("labels", []), card.get("label_names", {})
    output = expected_output(TFLiteModel(model_path, num_threads=1), steps, labels, names)
    mode = card.get("mode", "fp32")
    parsed = parse_sample_name(Path(sample_path).name)
    return {
        "format_version": FORMAT_VERSION,
        "model": {"file": Path(model_path).name, "sha256": enrollment.model_sha256(model_path), "mode": mode,
                  "card": Path(model_path).with_suffix(".json").name},
        "sample": {"file": Path(sample_path).name, "label": sample.get("class") or (parsed[1] if parsed else None),
                   "user": sample.get("user"), "num_frames": int(len(raw)), "layout": cfg["layout"]},
        "steps": "docs/preprocessing_spec.md",
        "raw_keypoints": raw,
        "selected_clipped": steps["selected_clipped"].astype(np.float32),
        "resting_hands_dropped": steps["resting_hands_dropped"].astype(np.float32),
        "frame_indices": steps["frame_indices"],
        "dominant_hand_canonical": steps["dominant_hand_canonical"].astype(np.float32),
        "dominant_hand_mirrored": bool(steps["dominant_hand_mirrored"]),
        "normalized": steps["normalized"],
        "model_input": {"keypoints": steps["keypoints"], "attention_mask": steps["attention_mask"]},
        "expected_output": output,
        "tolerance": {"normalized_abs": NORMALIZED_TOLERANCE, "model_input_abs": NORMALIZED_TOLERANCE,
                      "logits_abs": logit_tolerance(mode, output["logits"]), "logits_rule": tolerance_rule(mode),
                      "embedding_rule": embedding_rule(mode)},
    } | enrollment_vector(model_path, card, cfg, enroll_data, enroll_split)


# ----------------------------------------------------------------------------------------------- enrollment case
def enrollment_vector(model_path, card: dict, cfg: dict, data_path: str, split: str) -> dict:
    """{"enrollment": case} for a model with an embedding output, else {}. The clips: --enroll_data (a missing
    split is an error), else the card's training data_path when its split folder exists (else no case)."""
    model = TFLiteModel(model_path, num_threads=1)
    if not data_path:
        data_path = card.get("training", {}).get("data_path", "")
        if not data_path or not (Path(data_path) / split).is_dir():
            return {}
    if not model.has_embedding:
        return {}
    return {"enrollment": enrollment_case(model, card, cfg, data_path, split)}


def enrollment_clips(data_path, split: str, labels: list[str]) -> tuple[list, list]:
    """([(path, class id)] enrollment clips, [(path, class id)] test clips): ENROLL_PLAN clips of the first
    signs (class id order) with more clips than that, then one more clip of each and one clip of the next sign
    with any clip (not enrolled)."""
    by_sign: dict[str, list[Path]] = {}
    for path in list_split(data_path, split):
        by_sign.setdefault(path.parent.name, []).append(path)
    enough = [label for label in labels if len(by_sign.get(label, [])) > max(ENROLL_PLAN)]
    if len(enough) < len(ENROLL_PLAN):
        raise UserError(f"{Path(data_path) / split}: the enrollment case needs {len(ENROLL_PLAN)} signs with "
                        f"{max(ENROLL_PLAN) + 1} clips or more")
    enrolled = enough[:len(ENROLL_PLAN)]
    others = [label for label in labels if label not in enrolled and by_sign.get(label)]
    enroll = [(path, labels.index(sign)) for sign, n in zip(enrolled, ENROLL_PLAN) for path in by_sign[sign][:n]]
    test = [(by_sign[sign][n], labels.index(sign)) for sign, n in zip(enrolled, ENROLL_PLAN)]
    test += [(by_sign[others[0]][0], labels.index(others[0]))] if others else []
    return enroll, test


def clip_outputs(model: TFLiteModel, path, cfg: dict, hands) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stored clip through the preprocessing and the model: logits (C,), embedding (D,) float32 and
    the clip's enrollment descriptor (enrollment.describe: the embedding and each hand's mean shape)."""
    sample = load_sample(path)
    check_layout(path, sample["keypoints"], cfg)
    keypoints, mask = model_inputs(layout_keypoints(sample["keypoints"], cfg), cfg)
    logits, embedding, _ = model.run_with_embedding(keypoints, mask)
    descriptor = enrollment.describe(embedding[0], keypoints[0], mask[0], hands)
    return logits[0], embedding[0], descriptor


def enrollment_case(model: TFLiteModel, card: dict, cfg: dict, data_path, split: str) -> dict:
    """Enrollment clips -> embeddings -> prototypes (+ warnings); test clips -> every step of the score."""
    labels = card["labels"]
    names = display_names(labels, card.get("label_names", {}))
    params = enrollment.params_from_card(card)
    enroll, test = enrollment_clips(data_path, split, labels)
    blocks = enrollment.card_blocks(card)
    hands = enrollment.card_hands(card)
    outputs = [clip_outputs(model, path, cfg, hands) for path, _ in enroll]
    embeddings, descriptors = np.stack([o[1] for o in outputs]), np.stack([o[2] for o in outputs])
    ids = np.array([c for _, c in enroll])
    prototypes = enrollment.build_prototypes(descriptors, ids, len(labels), blocks=blocks)
    tests = []
    for path, c in test:
        logits, embedding, descriptor = clip_outputs(model, path, cfg, hands)
        steps = enrollment.score_steps(descriptor, logits, prototypes, params)
        tests.append({"file": path.name, "label": labels[c], "class_id": c, "logits": logits,
                      "embedding": embedding, "descriptor": descriptor,
                      "classifier_probabilities": steps["classifier"][0],
                      "unit_descriptor": steps["unit_descriptors"][0],
                      "similarities": steps["similarities"][0],
                      "prototype_probabilities": steps["prototype_probabilities"][0],
                      "enrolled_mass": float(steps["enrolled_mass"][0]), "probabilities": steps["probabilities"][0],
                      "top1": int(np.argmax(steps["probabilities"][0]))})
    return {"spec": enrollment.SPEC,
            "params": {"tau": params.tau, "alpha": params.alpha, "hand_weight": params.hand_weight},
            "blocks": [b.as_dict() for b in blocks],
            "data": {"split": split, "users": sorted({parse_sample_name(p.name)[0] for p, _ in enroll + test
                                                     if parse_sample_name(p.name)})},
            "enroll_clips": [{"file": path.name, "label": labels[c], "class_id": c, "embedding": e,
                              "descriptor": x}
                             for (path, c), e, x in zip(enroll, embeddings, descriptors)],
            "prototypes": {"counts": prototypes.counts, "enrolled": np.flatnonzero(prototypes.enrolled),
                           "center": prototypes.center, "prototypes": prototypes.prototypes},
            "warnings": enrollment.check_enrollment(descriptors, ids, len(labels), names, blocks=blocks),
            "test_clips": tests,
            "tolerance": ENROLLMENT_TOLERANCE | {"rule": "and the same top-1 as each test clip's top1"}}


# ----------------------------------------------------------------------------------------------- writing
def to_json(vector: dict) -> str:
    """Indented JSON with every innermost list of numbers on one line (a keypoint, a mask, a logit row)."""
    text = json.dumps(vector, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else o.item())
    return re.sub(r"\[\s+([-0-9.eE+,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def vector_path(model_path, output_dir: str = "") -> Path:
    model_path = Path(model_path)
    folder = Path(output_dir) if output_dir else model_path.parent
    return folder / f"{model_path.stem}.test_vector.json"


def default_sample(model_path) -> Path:
    """The first test clip of the data the model was trained with (recorded in its card), a held-out signer's."""
    data_path = read_model_card(model_path).get("training", {}).get("data_path")
    if not data_path:
        raise UserError(f"{model_path}: its card records no training data_path; pass --sample")
    return list_split(data_path, "test")[0]


def write_vectors(models: list[str], sample: str = "", output_dir: str = "", config_path: str = "",
                  enroll_data: str = "", enroll_split: str = "test") -> list[Path]:
    written = []
    for model_path in models:
        cfg = resolve_config(model_path, config_path)
        vector = test_vector(model_path, sample or default_sample(model_path), cfg, enroll_data, enroll_split)
        written.append(atomic_write_text(vector_path(model_path, output_dir), to_json(vector)))
        out = vector["expected_output"]
        case = vector.get("enrollment")
        print(f"wrote {written[-1]} ({vector['model']['mode']}: top-1 {out['top1']['label']}, "
              f"logits tolerance {vector['tolerance']['logits_abs']:.3g}; "
              + (f"enrollment case: {len(case['enroll_clips'])} enrollment and {len(case['test_clips'])} test clips)"
                 if case else "no enrollment case: no embedding output or no --enroll_data)"))
        for warning in case["warnings"] if case else []:
            print(f"  enrollment check: {warning}")
    return written


# ----------------------------------------------------------------------------------------------- worked example
EXAMPLE_POINTS = {"pose": (0, 15), "right_hand": (0, 8)}  # group -> positions within it (nose, left wrist; wrist, index tip)


def first_complete_frame(selected: np.ndarray, idx: np.ndarray) -> int | None:
    """The first frame in which every point of a group is detected (None if there is none)."""
    complete = np.all(np.any(selected[:, idx] != 0, axis=-1), axis=1)    # (T,)
    return int(np.argmax(complete)) if complete.any() else None


def group_example(steps: dict, raw: np.ndarray, cfg: dict, group: str, points: tuple) -> list[str]:
    """One frame of one group: the box and a few points through clip -> normalize (frames are all kept here)."""
    idx = selected_groups(cfg)[list(cfg["groups"]).index(group)]
    selected = steps["selected_clipped"]
    frame = first_complete_frame(selected, idx)
    if frame is None or len(raw) > len(steps["frame_indices"]):
        return [f"group {group}: no frame with every point detected" if frame is None else
                f"group {group}: clip is subsampled; pick a clip of <= 64 frames for the worked example"]
    part = selected[frame:frame + 1, idx]                                 # (1, n, 2)
    _, start, span = group_box(part)
    layout = get_layout(cfg["layout"])
    lines = [f"frame {frame}, group {group} (input positions {idx[0]}-{idx[-1]}), all {len(idx)} points detected",
             f"  min x, y = {part[0].min(axis=0).round(6).tolist()}   max x, y = {part[0].max(axis=0).round(6).tolist()}",
             f"  box start = {start[0].round(6).tolist()}   end = {(start + span)[0].round(6).tolist()}"]
    for k in (int(idx[p]) for p in points):
        stored = cfg["joint_idx"][k]
        lines.append(f"  input {k} ({layout.point_name(stored)}): raw {raw[frame, stored].tolist()} -> clipped "
                     f"{selected[frame, k].round(6).tolist()} -> normalized {steps['normalized'][frame, k].tolist()}")
    return lines


def worked_example(sample_path, cfg: dict, vector: dict | None = None) -> str:
    """The clip's numbers at every step, as printed for docs/preprocessing_spec.md (with a vector: the output too)."""
    raw = layout_keypoints(load_sample(require_file(sample_path, "sample"))["keypoints"], cfg)
    steps = preprocessing_steps(raw, cfg)
    detected = {name: int(np.any(steps["selected_clipped"][:, idx] != 0, axis=(1, 2)).sum())
                for name, idx in zip(cfg["groups"], selected_groups(cfg))}
    lines = [f"sample {Path(sample_path).name}: T = {len(raw)} frames, layout {cfg['layout']}, K = "
             f"{len(cfg['joint_idx'])}; frames kept {len(steps['frame_indices'])}; mask sum "
             f"{int(steps['attention_mask'].sum())}; frames with a detection per group {detected}"]
    for group, points in EXAMPLE_POINTS.items():
        if group in cfg["groups"]:
            lines += group_example(steps, raw, cfg, group, points)
    if vector:
        out = vector["expected_output"]
        lines += [f"{vector['model']['file']} ({vector['model']['mode']}): logits "
                  f"{np.round(out['logits'][0], 4).tolist()}",
                  f"  softmax {np.round(out['probabilities'][0], 4).tolist()}",
                  f"  top-1 id {out['top1']['id']} -> {out['top1']['label']} ({out['top1']['name']}), margin "
                  f"{out['top1_margin']:.4f}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- CLI
@cli
def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True, help="exported .tflite files (each with its card)")
    ap.add_argument("--sample", default="",
                    help="a stored clip (.pkl) (default: the first test clip of the data_path in each model's card)")
    ap.add_argument("--output_dir", default="", help="folder for the vectors (default: beside each model)")
    ap.add_argument("--config_path", default="", help="YAML config (default: each model's card)")
    ap.add_argument("--enroll_data", default="",
                    help="dataset root for the enrollment case (default: the training data_path in each card)")
    ap.add_argument("--enroll_split", default="test",
                    help="its split (default: test, the held-out signer playing the app user)")
    ap.add_argument("--explain", action="store_true",
                    help="also print the worked example of one frame (default: off)")
    args = ap.parse_args(argv)
    written = write_vectors(args.models, args.sample, args.output_dir, args.config_path, args.enroll_data,
                            args.enroll_split)
    if args.explain:
        sample = args.sample or default_sample(args.models[0])
        vector = json.loads(written[0].read_text())
        print(worked_example(sample, resolve_config(args.models[0], args.config_path), vector))
    return written


if __name__ == "__main__":
    main()
