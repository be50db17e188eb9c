"""Look at one sample in detail: what the model sees and what it predicts (plus, first, the whole test folder).

For --sample_file (default: the first pickle of --test_dir) it prints the predicted class and the top-k classes
with probabilities, the detections per normalization group (frames with any point, share of points detected), and
the normalized model input per group. The sample goes through preprocessing.model_inputs, the same code as
training and the app. --dump_raw_sample writes the stored keypoints frame by frame, per body part, together with
the exact model input (keypoints [1, 64, K, 2] and mask [1, 64]) as JSON: a test vector for the app.
Unless --skip_test_set, the whole --test_dir is evaluated first (as evaluate_tflite_single.py).

    python test_single_sample.py --test_dir data/arabic-asl-65kpts_LOSO_user01/test \\
        --tflite_model outputs/arabic_asl/loso/checkpoints/arabic_asl_LOSO_user01/final_model_fp32.tflite \\
        --sample_file data/arabic-asl-65kpts_LOSO_user01/test/G10/user01_G10_R10.pkl --sample_label G10 \\
        --dump_raw_sample raw_keypoints.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from keypoints import selected_groups
from dataset import check_layout, list_split, load_sample
from evaluation import TOP_K, class_labels, evaluate_tflite, format_results, load_eval_set
from keypoints import PARTS, get_layout
from metrics import softmax
from preprocessing import model_inputs, prepare_clip
from runs import parse_sample_name, require_file
from util import UserError, atomic_write_json, cli
from model_runtime import open_model
from tflite_runtime import display_names, resolve_config


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test_dir", required=True, help="split folder, e.g. data/<root>_LOSO_user01/test")
    ap.add_argument("--tflite_model", required=True, help="the .tflite model")
    ap.add_argument("--config_path", default="", help="YAML config (default: the model card beside the .tflite)")
    ap.add_argument("--sample_file", default="", help="pickle to inspect (default: the first one in --test_dir)")
    ap.add_argument("--sample_label", default="",
                    help="its true label, e.g. G10 (default: the pickle's 'class', else its file name)")
    ap.add_argument("--skip_test_set", action="store_true", help="do not evaluate the whole --test_dir first")
    ap.add_argument("--dump_raw_sample", default="", help="write the raw keypoints + model input as JSON here")
    ap.add_argument("--top_k", type=int, default=TOP_K, help=f"classes listed with probabilities (default: {TOP_K})")
    ap.add_argument("--num_threads", type=int, default=1, help="interpreter threads (default: 1)")
    return ap.parse_args(argv)


def true_label(sample: dict, path: Path, given: str) -> str | None:
    parsed = parse_sample_name(path.name)
    return given or sample.get("class") or (parsed[1] if parsed else None)


def detection_report(clip: np.ndarray, cfg: dict) -> list[str]:
    """Per group: frames with at least one detected point, and the share of points detected. clip (T', K, 2)."""
    detected = ~np.all(clip == 0.0, axis=-1)                             # (T', K)
    lines = []
    for name, idx in zip(cfg["groups"], selected_groups(cfg)):
        frames = int(detected[:, idx].any(axis=1).sum())
        lines.append(f"  {name:<12} {len(idx):3d} points: detected in {frames}/{len(clip)} frames, "
                     f"{detected[:, idx].mean():.0%} of points")
    return lines


def normalized_input_report(keypoints: np.ndarray, mask: np.ndarray, cfg: dict) -> list[str]:
    """Per group: range and mean of the normalized x and y over detected points of the valid frames."""
    valid = keypoints[0, mask[0] > 0]                                     # (T', K, 2)
    lines = [f"  model input keypoints {list(keypoints.shape)}, mask {list(mask.shape)} with {int(mask.sum())} "
             f"valid frames"]
    for name, idx in zip(cfg["groups"], selected_groups(cfg)):
        part = valid[:, idx].reshape(-1, 2)
        part = part[~np.all(part == 0.0, axis=-1)]
        if len(part) == 0:
            lines.append(f"  {name:<12} no detected point")
            continue
        lo, hi, mean = part.min(axis=0), part.max(axis=0), part.mean(axis=0)
        lines.append(f"  {name:<12} x in [{lo[0]:.3f}, {hi[0]:.3f}] mean {mean[0]:.3f}; "
                     f"y in [{lo[1]:.3f}, {hi[1]:.3f}] mean {mean[1]:.3f}")
    return lines


def raw_dump(raw: np.ndarray, path: Path, label, keypoints: np.ndarray, mask: np.ndarray) -> dict:
    """Stored keypoints per frame and body part (as in the pickle, all columns) plus the exact model input."""
    layout = get_layout(raw.shape[1])
    parts = {part: layout.part_slice(part) for part in PARTS if layout.part_slice(part)}
    return {
        "file": str(path), "label": label, "shape": list(raw.shape), "num_frames": int(raw.shape[0]),
        "layout": layout.name, "parts": {part: f"stored {idx[0]}-{idx[-1]}" for part, idx in parts.items()},
        "frames": [{"frame_index": t, **{part: raw[t, idx].tolist() for part, idx in parts.items()}}
                   for t in range(raw.shape[0])],
        "model_input": {"keypoints": keypoints.tolist(), "attention_mask": mask.tolist()},
    }


def inspect_sample(args, cfg: dict, labels: list[str], names: dict) -> dict:
    path = Path(args.sample_file) if args.sample_file else list_split(Path(args.test_dir).parent,
                                                                    Path(args.test_dir).name)[0]
    sample = load_sample(require_file(path, "sample file"))
    check_layout(path, sample["keypoints"], cfg)
    label = true_label(sample, path, args.sample_label)
    if label is not None and label not in labels:
        raise UserError(f"label {label!r} of {path} is not one of the model's classes {labels}")
    raw = sample["keypoints"]
    keypoints, mask = model_inputs(raw, cfg)                             # (1, 64, K, 2), (1, 64)
    logits, seconds = open_model(args.tflite_model, args.num_threads).run(keypoints, mask)
    probs = softmax(logits[0])
    ranked = np.argsort(-probs, kind="stable")[:args.top_k]
    shown = display_names(labels, names)
    predicted = labels[ranked[0]]
    print(f"\nsample {path}: {raw.shape[0]} frames stored, {int(mask.sum())} after subsampling; true label {label}")
    verdict = "" if label is None else ("  CORRECT" if predicted == label else "  WRONG")
    print(f"predicted {shown[ranked[0]]} ({probs[ranked[0]]:.1%}){verdict}; invoke {seconds * 1e3:.2f} ms")
    for rank, c in enumerate(ranked, 1):
        print(f"  {rank}. {shown[c]:<28} {probs[c]:7.2%}   logit {logits[0, c]: .3f}")
    print("detections (after clipping and subsampling):")
    print("\n".join(detection_report(prepare_clip(raw, cfg), cfg)))
    print("normalized input (detected points of valid frames):")
    print("\n".join(normalized_input_report(keypoints, mask, cfg)))
    if args.dump_raw_sample:
        atomic_write_json(args.dump_raw_sample, raw_dump(raw, path, label, keypoints, mask))
        print(f"wrote {args.dump_raw_sample}")
    return {"file": str(path), "label": label, "predicted": predicted,
            "top_k": [(labels[c], float(probs[c])) for c in ranked]}


@cli
def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = resolve_config(args.tflite_model, args.config_path)
    root, split = Path(args.test_dir).parent, Path(args.test_dir).name
    labels, names = class_labels(root, args.tflite_model)
    if not args.skip_test_set:
        print(format_results(evaluate_tflite(args.tflite_model, load_eval_set(root, split, cfg,
                                                                              tflite_path=args.tflite_model),
                                             args.num_threads)))
    return inspect_sample(args, cfg, labels, names)


if __name__ == "__main__":
    main()
