"""App test vectors: one real clip through the preprocessing and each exported model, written as JSON so a
Dart/Kotlin/Swift port can check itself step by step (docs/preprocessing_spec.md describes the steps).

For every --models file it writes `<model>.test_vector.json` (beside the model, or into --output_dir) holding:
  raw_keypoints        (T, N, 3) the clip as MediaPipe gives it, in the model's stored layout (x, y, c)
  selected_clipped     (T, K, 2) after joint selection and clipping to [0, 1]
  frame_indices        the frames kept (all, or floor(linspace(0, T-1, 64)) when T > 64)
  normalized           (T', K, 2) after per-group normalization
  model_input          keypoints (1, 64, K, 2) and attention_mask (1, 64): what the interpreter is fed
  expected_output      logits (1, C) of this .tflite, softmax probabilities, top-1 id/label/name
  tolerance            how close a port must come (normalized values; logits for the export mode)
The preprocessing is preprocessing.py (the code training uses) and the logits come from tflite_runtime with one
thread, so running the command again writes byte-identical files. --explain prints the worked example of one
frame (the numbers in docs/preprocessing_spec.md).

    python make_test_vectors.py --sample ../shared/data/mlr511-90kpts/all/G01/user01_G01_R01.pkl \\
        --models outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite \\
                 outputs/arabic_asl/loso/exports/ptq/user01/*.tflite
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from config import selected_groups
from dataset import check_layout, list_split, load_sample
from evaluation import resolve_config
from keypoints import get_layout
from metrics import softmax
from preprocessing import group_box, pad_clip, model_inputs, normalize_groups, select_and_clip, uniform_frame_indices
from runs import UserError, atomic_write_text, cli, parse_sample_name, require_file
from tflite_export import PARITY_TOLERANCE, read_model_card
from tflite_runtime import TFLiteModel

FORMAT_VERSION = 1
NORMALIZED_TOLERANCE = 1e-5  # float32 ports of the float64 reference land within ~1e-7
LOGIT_TOLERANCE = PARITY_TOLERANCE | {"dynamic": 5e-2}  # absolute, float modes (the Keras-vs-TFLite export bounds)
INTEGER_RANGE_SHARE = 0.1  # integer modes: a share of the logits' range (int8 kernels differ by a few output steps)


# ----------------------------------------------------------------------------------------------- tolerances
def logit_tolerance(mode: str, logits: np.ndarray) -> float:
    """Max |logit - expected| accepted for an export mode: absolute for float modes, else a share of the range."""
    if mode in LOGIT_TOLERANCE:
        return LOGIT_TOLERANCE[mode]
    return INTEGER_RANGE_SHARE * float(np.ptp(logits))


def tolerance_rule(mode: str) -> str:
    if mode in LOGIT_TOLERANCE:
        return f"|logit - expected| <= {LOGIT_TOLERANCE[mode]:g} for every class, and the same top-1"
    return (f"|logit - expected| <= {INTEGER_RANGE_SHARE:g} x (max - min expected logit) for every class, and the "
            f"same top-1 when the expected top-1 margin exceeds twice that")


# ----------------------------------------------------------------------------------------------- the steps
def layout_keypoints(raw: np.ndarray, cfg: dict) -> np.ndarray:
    """The stored clip cut to the model's layout: what an extractor in that layout produces (the 65 layout is the
    first 65 points of the 90 layout, keypoints.READABLE_FROM)."""
    return np.asarray(raw, dtype=np.float32)[:, :get_layout(cfg["layout"]).size]


def preprocessing_steps(raw: np.ndarray, cfg: dict) -> dict:
    """Every intermediate array of preprocessing.model_inputs for one clip (T, N, C)."""
    selected = select_and_clip(raw, cfg["joint_idx"])                     # (T, K, 2)
    kept = uniform_frame_indices(len(selected))
    normalized = normalize_groups(selected[kept], selected_groups(cfg))  # (T', K, 2)
    keypoints, mask = pad_clip(normalized)                                # (64, K, 2), (64,)
    reference = model_inputs(raw, cfg)
    assert np.array_equal(keypoints[None], reference[0]) and np.array_equal(mask[None], reference[1])
    return {"selected_clipped": selected, "frame_indices": kept, "normalized": normalized,
            "keypoints": keypoints[None], "attention_mask": mask[None]}


def expected_output(model: TFLiteModel, steps: dict, labels: list[str], names: dict) -> dict:
    logits, _ = model.run(steps["keypoints"], steps["attention_mask"])  # (1, C)
    probabilities = softmax(logits)
    top = np.argsort(-logits[0], kind="stable")
    best = int(top[0])
    return {"logits": logits, "probabilities": probabilities.astype(np.float32),
            "top1": {"id": best, "label": labels[best], "name": names.get(labels[best], "")},
            "top1_margin": float(logits[0, top[0]] - logits[0, top[1]]) if len(top) > 1 else None}


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_vector(model_path, sample_path, cfg: dict) -> dict:
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
        "model": {"file": Path(model_path).name, "sha256": sha256(model_path), "mode": mode,
                  "card": Path(model_path).with_suffix(".json").name},
        "sample": {"file": Path(sample_path).name, "label": sample.get("class") or (parsed[1] if parsed else None),
                   "user": sample.get("user"), "num_frames": int(len(raw)), "layout": cfg["layout"]},
        "steps": "docs/preprocessing_spec.md",
        "raw_keypoints": raw,
        "selected_clipped": steps["selected_clipped"].astype(np.float32),
        "frame_indices": steps["frame_indices"],
        "normalized": steps["normalized"],
        "model_input": {"keypoints": steps["keypoints"], "attention_mask": steps["attention_mask"]},
        "expected_output": output,
        "tolerance": {"normalized_abs": NORMALIZED_TOLERANCE, "model_input_abs": NORMALIZED_TOLERANCE,
                      "logits_abs": logit_tolerance(mode, output["logits"]), "logits_rule": tolerance_rule(mode)},
    }


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


def write_vectors(models: list[str], sample: str = "", output_dir: str = "", config_path: str = "") -> list[Path]:
    written = []
    for model_path in models:
        cfg = resolve_config(model_path, config_path)
        vector = test_vector(model_path, sample or default_sample(model_path), cfg)
        written.append(atomic_write_text(vector_path(model_path, output_dir), to_json(vector)))
        out = vector["expected_output"]
        print(f"wrote {written[-1]} ({vector['model']['mode']}: top-1 {out['top1']['label']}, "
              f"logits tolerance {vector['tolerance']['logits_abs']:.3g})")
    return written


# ----------------------------------------------------------------------------------------------- worked example
def worked_example(sample_path, cfg: dict, frame: int | None = None, group: str = "right_hand",
                   points: tuple = (0, 8)) -> str:
    """One frame of one group through every step, as printed numbers (docs/preprocessing_spec.md)."""
    raw = layout_keypoints(load_sample(require_file(sample_path, "sample"))["keypoints"], cfg)
    steps = preprocessing_steps(raw, cfg)
    idx = selected_groups(cfg)[list(cfg["groups"]).index(group)]
    selected = steps["selected_clipped"]
    if frame is None:  # the first frame where the whole group is detected
        frame = int(np.argmax(np.all(selected[:, idx] != 0, axis=(1, 2))))
    part = selected[frame:frame + 1, idx]                                 # (1, n, 2)
    valid, start, span = group_box(part)
    detected = part[0][valid[0]]
    lines = [f"sample {Path(sample_path).name}: T = {len(raw)} frames, layout {cfg['layout']}, "
             f"K = {len(cfg['joint_idx'])}; frames kept: {len(steps['frame_indices'])} "
             f"(first {steps['frame_indices'][:4].tolist()}, last {steps['frame_indices'][-1]}); "
             f"mask sum {int(steps['attention_mask'].sum())}",
             f"frame {frame}, group {group} (input positions {idx[0]}-{idx[-1]}): {int(valid.sum())} of {len(idx)} "
             f"points detected",
             f"  min x, y = {detected.min(axis=0).round(6).tolist()}   max x, y = {detected.max(axis=0).round(6).tolist()}",
             f"  box start = {start[0].round(6).tolist()}   end = {(start + span)[0].round(6).tolist()}   "
             f"span = {span[0].round(6).tolist()}"]
    layout = get_layout(cfg["layout"])
    for p in points:
        k = int(idx[p])
        lines.append(f"  input {k} ({layout.point_name(cfg['joint_idx'][k])}): raw {raw[frame, cfg['joint_idx'][k]].tolist()}"
                     f" -> clipped {selected[frame, k].round(6).tolist()} -> normalized "
                     f"{steps['normalized'][list(steps['frame_indices']).index(frame), k].tolist()}"
                     if frame in steps["frame_indices"] else f"  frame {frame} is not kept")
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
    ap.add_argument("--explain", action="store_true",
                    help="also print the worked example of one frame (default: off)")
    args = ap.parse_args(argv)
    written = write_vectors(args.models, args.sample, args.output_dir, args.config_path)
    if args.explain:
        sample = args.sample or default_sample(args.models[0])
        print(worked_example(sample, resolve_config(args.models[0], args.config_path)))
    return written


if __name__ == "__main__":
    main()
