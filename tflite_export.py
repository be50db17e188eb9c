"""TFLite export: THE home of the app signature, the converter modes, the Keras-vs-TFLite parity check and the
model card. Every script that writes a .tflite calls `export_tflite`; every reader learns the names from here or
from the card.

Signature (batch 1, fixed T = config.MAX_FRAMES = 64, builtin ops only):
  inputs   keypoints       float32 [1, 64, K, 2]   group-normalized, zero-padded (preprocessing.model_inputs)
           attention_mask  float32 [1, 64]         length mask (preprocessing.length_mask)
  outputs  logits          float32 [1, C]          index 0, as before: apps that read outputs by index keep working
           embedding       float32 [1, D]          index 1: the clip embedding (model_functional.EMBEDDING_LAYER,
                                                   D = d_model) that enrollment.py builds prototypes from
(integer-I/O modes keep the names and shapes and change the dtypes, the embedding included: int8 with its own
scale and zero point; the card records the quantization.) The converter sorts outputs by name; name_signature
puts them back in this order.

Beside `<model>.tflite` it writes `<model>.json` (the model card: I/O with names, shapes, dtypes and quantization,
T, config, layout, joint_idx, groups, labels, training info, parity, ops, plus what an app needs to feed the model:
the MediaPipe landmark at every input position, the normalization groups and rule, frame sampling, mirroring, the
class table id -> label -> name and the measured accuracy; docs/preprocessing_spec.md is the long form;
and the `personalization` block: the embedding output, tau, alpha and the enrollment rules of enrollment.py,
docs/personalization.md) and `labels.txt` (one label per class id).

Parity (check_parity, THE rule for every mode; docs/quantization.md#parity-pass-or-fail): Keras
and the .tflite run on the same real clips. A float mode must keep max |dlogit| within
PARITY_TOLERANCE; every mode must pick Keras's class on at least PARITY_MIN_AGREEMENT (fp32,
float16: all) of the clips that Keras DECIDES, i.e. where its top class leads the runner-up by at
least PARITY_DECIDED_GAP in probability (a near tie may flip under any rounding, and an untrained
model has only near ties). The embedding (output 1) must also stay within its bounds
(embedding_parity). The log line ends in PASS or FAIL and names the expectation; the card
records it. A FAIL is an error of the step that exported (require_parity): an FP32 training run
fails (success: false, exit 1), and ptq_export.py, train_loso_functional_qat.py and
run_qat_export.py write every model, then end with one line naming the failed ones and exit 1.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import enrollment
from config import model_hparams, num_keypoints
from metrics import softmax
from keypoints import hand_positions, mirror_permutation, rest_hand_points, selected_groups
from preprocessing import MAX_FRAMES
from keypoints import get_layout
from preprocessing import BOX_MARGIN
from util import RunFailed, UserError, atomic_write_bytes, atomic_write_json, atomic_write_text
from tf_env import keras, quiet_native, tf
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402  after tf_env sets TF's environment
from model_functional import embedding_model
from tflite_runtime import (CARD_CONFIG_PATH, CARD_CUTOFF, CARD_DOMINANT_HAND, CARD_GROUPS, CARD_JOINT_IDX,
                            CARD_LAYOUT, CARD_MODEL, CARD_RATIO, CARD_RESTING_HANDS, CARD_RULES,
                            EMBEDDING_MIN_COSINE, EMBEDDING_NAME, EMBEDDING_PARITY_TOLERANCE, INPUT_NAMES,
                            OUTPUT_NAME, OUTPUT_NAMES, PARITY_MIN_AGREEMENT, PARITY_TOLERANCE, TFLiteModel,
                            card_path)

SEQUENCE_LENGTH = MAX_FRAMES
CARD_VERSION = 6  # 2: + input_keypoints, normalization, frame_sampling, mirroring, classes, accuracy; 3: + runtime_support;
#                   4: + resting_hands; 5: + dominant_hand; 6: + the embedding output (index 1), personalization
# Where each mode's files run (check_runtimes.py measures it; docs/runtimes.md has the table). Apps ship older
# runtimes than ours: tflite_flutter 0.11/0.12 bundle TensorFlow Lite 2.12 on iOS, 2.11 / LiteRT 1.4 on Android.
EVERY_RUNTIME = ("runs in ai-edge-litert 2.3, TensorFlow Lite 2.17 and TensorFlow Lite 2.12 (every tflite_flutter "
                 "0.11/0.12 app on Android and iOS) with the same predictions; check_runtimes.py verifies a file")
RUNTIME_SUPPORT = {mode: EVERY_RUNTIME for mode in ("fp32", "float16", "dynamic", "int8", "int8_io")} | {
    "int16x8": ("ai-edge-litert only: TensorFlow Lite 2.17 has no int16 GELU kernel and 2.12 no int16 RSQRT "
                "kernel, so no tflite_flutter 0.11/0.12 app can run it; ship int8 or dynamic instead")}
PREPROCESSING_DOC = "docs/preprocessing_spec.md"
PARITY_DECIDED_GAP = 0.1  # Keras "decides" a clip when its top class leads by this probability


# ----------------------------------------------------------------------------------------------- conversion
def configure_fp32(converter, representative_data=None) -> None:
    """No optimization: float32 weights and activations."""


def configure_dynamic(converter, representative_data=None) -> None:
    """Dynamic range: int8 weights, float activations (quantized on the fly inside the integer kernels).
    One weight scale per Dense kernel, not one per output channel: per-channel dynamic-range weights make the
    converter emit FULLY_CONNECTED version 12, which TensorFlow Lite 2.12 (tflite_flutter on iOS, and on Android
    with plugin 0.11) cannot load ("Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'");
    per-tensor weights give version 9, which loads in every runtime of RUNTIMES (docs/runtimes.md)."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True


def configure_float16(converter, representative_data=None) -> None:
    """float16 weights, float32 arithmetic."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def configure_int8(converter, representative_data=None) -> None:
    """Full integer: int8 weights and activations calibrated on real clips; float32 input and output.
    One weight scale per Dense kernel (as QAT trains them) instead of one per output channel: on the MLR511
    user01 model the logits matched Keras as closely (mean |dlogit| 0.040 vs 0.041) and the file is 0.27 instead
    of 0.31 x FP32 (per-channel scales and zero points of every kernel and bias add ~110 KB)."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(representative_data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True


def configure_int8_io(converter, representative_data=None) -> None:
    """Full integer with int8 input and output tensors too (NPUs, Edge TPU)."""
    configure_int8(converter, representative_data)
    converter.inference_input_type = converter.inference_output_type = tf.int8


def configure_int16x8(converter, representative_data=None) -> None:
    """int16 activations, int8 weights, calibrated on real clips; float32 input and output."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(representative_data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


def representative_dataset(representative_data):
    """(keypoints (N, 64, K, 2), masks (N, 64)) of real padded clips -> the converter's calibration generator."""
    if representative_data is None:
        raise UserError("integer quantization needs representative data: real, padded training clips")
    keypoints, masks = (np.asarray(a, dtype=np.float32) for a in representative_data)

    def clips():
        for i in range(len(keypoints)):
            yield {INPUT_NAMES[0]: keypoints[i:i + 1], INPUT_NAMES[1]: masks[i:i + 1]}
    return clips


CONVERTER_MODES = {  # mode -> function(converter, representative_data) setting its options
    "fp32": configure_fp32, "dynamic": configure_dynamic, "float16": configure_float16, "int8": configure_int8,
    "int8_io": configure_int8_io, "int16x8": configure_int16x8}


def serving_function(model: keras.Model, k: int):
    """The app signature as a concrete function: (keypoints [1,64,K,2], attention_mask [1,64]) ->
    {logits, embedding}; `model` is the trained one (FP32 or QAT), its second output comes from
    model_functional.embedding_model."""
    exported = embedding_model(model)

    @tf.function(input_signature=[tf.TensorSpec([1, SEQUENCE_LENGTH, k, 2], tf.float32, name=INPUT_NAMES[0]),
                                  tf.TensorSpec([1, SEQUENCE_LENGTH], tf.float32, name=INPUT_NAMES[1])])
    def serve(keypoints, attention_mask):
        logits, embedding = exported({"keypoints": keypoints, "attention_mask": attention_mask}, training=False)
        return {OUTPUT_NAME: logits, EMBEDDING_NAME: embedding}
    return serve.get_concrete_function()


class Exportable:
    """A trained Keras model (FP32 or QAT) to export in one or more modes. What every export of it
    needs is computed on first use and kept: the app-signature function (a trace) and Keras's
    outputs on the parity clips (another). Exporting one model in six modes then costs each once."""

    def __init__(self, model: keras.Model):
        self.model = model
        self._serving = {}      # K -> serving_function(model, K)
        self._reference = None  # ((keypoints, masks), (logits, embeddings))

    def serving_function(self, k: int):
        if k not in self._serving:
            self._serving[k] = serving_function(self.model, k)
        return self._serving[k]

    def outputs(self, keypoints: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keras's (logits (N, C), embeddings (N, d)) on these clips (kept for the same arrays)."""
        clips = (keypoints, masks)
        if self._reference is None or any(a is not b for a, b in zip(self._reference[0], clips)):
            outputs = embedding_model(self.model).predict({"keypoints": keypoints, "attention_mask": masks},
                                                          batch_size=32, verbose=0)
            self._reference = (clips, tuple(outputs))
        return self._reference[1]


def exportable(model) -> Exportable:
    """`model` as an Exportable (itself, if it is one already)."""
    return model if isinstance(model, Exportable) else Exportable(model)


def name_signature(tflite_model: bytes) -> bytes:
    """Give the graph's I/O tensors the signature names and put inputs and outputs in signature order.

    The converter names tensors `serving_default_<arg>:0` / `StatefulPartitionedCall:<i>` and sorts inputs and
    outputs alphabetically (mask first, embedding first); the app and tflite_runtime look them up as `keypoints`,
    `attention_mask`, `logits`, `embedding`, and apps that read outputs by index read logits at index 0.
    """
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    graph, signature = model.subgraphs[0], model.signatureDefs[0]
    inputs = {m.name.decode(): m for m in signature.inputs}
    outputs = {m.name.decode(): m for m in signature.outputs}
    if set(inputs) != set(INPUT_NAMES) or set(outputs) != set(OUTPUT_NAMES):
        raise ValueError(f"unexpected TFLite signature: inputs {sorted(inputs)}, outputs {sorted(outputs)}")
    for name, tensor_map in {**inputs, **outputs}.items():
        graph.tensors[tensor_map.tensorIndex].name = name.encode()
    signature.inputs = [inputs[name] for name in INPUT_NAMES]
    signature.outputs = [outputs[name] for name in OUTPUT_NAMES]
    graph.inputs = np.array([inputs[name].tensorIndex for name in INPUT_NAMES], dtype=np.int32)
    graph.outputs = np.array([outputs[name].tensorIndex for name in OUTPUT_NAMES], dtype=np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_names(tflite_model: bytes) -> list[str]:
    """Sorted distinct operator names of a converted model (all TFLite builtins for our exports)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_model))
    return sorted({flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
                   for graph in model.subgraphs for op in graph.operators})


def variables_holder(model: keras.Model) -> tf.Module:
    """The model's variables on a bare tf.Module, for the converter to save with the concrete function. Handing it
    the Keras model instead makes it trace every layer for a SavedModel: ~4x slower, byte-identical result."""
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    return holder


def convert(model: keras.Model | Exportable, cfg: dict, mode: str = "fp32", representative_data=None) -> bytes:
    """Keras model -> .tflite bytes with the app signature, builtin ops only. `mode` is a key of CONVERTER_MODES."""
    if mode not in CONVERTER_MODES:
        raise UserError(f"unknown TFLite mode {mode!r}; choose one of {sorted(CONVERTER_MODES)}")
    source = exportable(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([source.serving_function(num_keypoints(cfg))],
                                                               variables_holder(source.model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    CONVERTER_MODES[mode](converter, representative_data)
    with quiet_native():  # the converter's absl lines (util.NATIVE_NOISE)
        return name_signature(converter.convert())


# ----------------------------------------------------------------------------------------------- parity
def check_parity(model: keras.Model | Exportable, tflite: "TFLiteModel", keypoints: np.ndarray,
                 masks: np.ndarray, tolerance: float | None, min_agreement: float = 1.0,
                 labels: np.ndarray | None = None, mode: str = "fp32") -> dict:
    """Run Keras and TFLite on the same padded clips (N, 64, K, 2) / (N, 64); compare the logits and
    the embeddings. Passed (module docstring): the logits are finite, max |dlogit| <= tolerance (None:
    not bounded), the argmax agrees on >= min_agreement of the clips Keras decides, and the embedding
    is within its bounds for `mode` (embedding_parity). With labels (N,), also the top-1 of both."""
    keras_logits, keras_embeddings = exportable(model).outputs(keypoints, masks)
    tflite_logits, tflite_embeddings, _ = tflite.predict_with_embedding(keypoints, masks)
    diff = float(np.abs(keras_logits - tflite_logits).max())
    same = keras_logits.argmax(-1) == tflite_logits.argmax(-1)
    top2 = np.sort(softmax(keras_logits.astype(np.float64)), axis=-1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) >= PARITY_DECIDED_GAP
    parity = {"clips": len(keypoints), "max_abs_logit_diff": diff, "tolerance": tolerance,
              "argmax_identical": int(same.sum()), "argmax_agreement": float(same.mean()),
              "min_agreement": min_agreement, "decided_gap": PARITY_DECIDED_GAP,
              "decided_clips": int(decided.sum()), "decided_identical": int(same[decided].sum()),
              **embedding_parity(keras_embeddings, tflite_embeddings, mode)}
    agrees = parity["decided_identical"] >= min_agreement * parity["decided_clips"]
    bounded = tolerance is None or diff <= tolerance
    parity["passed"] = bool(np.isfinite(diff) and bounded and agrees and parity["embedding_passed"])
    if labels is not None:
        parity |= {"keras_top1": float(np.mean(keras_logits.argmax(-1) == labels)),
                   "tflite_top1": float(np.mean(tflite_logits.argmax(-1) == labels))}
    return parity


def parity_expectation(parity: dict) -> str:
    """What check_parity required of an export, in words."""
    share = ("every clip" if parity["min_agreement"] >= 1
             else f">= {parity['min_agreement']:.0%} of the clips")
    bound = "" if parity["tolerance"] is None else f"max |dlogit| <= {parity['tolerance']:.0e} and "
    embedding = (f", embedding cosine >= {parity['embedding_min_cosine']}"
                 if "embedding_min_cosine" in parity else "")
    return (f"{bound}Keras's class on {share} Keras decides (top class ahead by >= "
            f"{parity['decided_gap']} probability){embedding}")


def parity_line(mode: str, parity: dict, kind: str = "TFLite") -> str:
    """The log line of an export's parity check, ending in PASS or FAIL; kind: 'TFLite' or 'ONNX'."""
    top1 = (f", top-1 Keras {parity['keras_top1']:.4f} / {kind} {parity['tflite_top1']:.4f}"
            if "keras_top1" in parity else "")
    return (f"{kind} {mode} parity on {parity['clips']} real clips: max |dlogit| = "
            f"{parity['max_abs_logit_diff']:.2e}, argmax identical {parity['argmax_identical']}/"
            f"{parity['clips']} ({parity['decided_identical']}/{parity['decided_clips']} of the "
            f"decided clips){top1}"
            + (f", embedding cosine >= {parity['min_embedding_cosine']:.4f}"
               if "min_embedding_cosine" in parity else "")
            + f"; expected: {parity_expectation(parity)}: "
            + ("PASS" if parity["passed"] else "FAIL"))


class ParityFailed(RunFailed):
    """An export whose parity check failed (exit 1)."""


def require_parity(cards: dict) -> None:
    """{path: card} of one step's exports: ParityFailed naming each one that failed parity."""
    failed = [f"{path}: the {card['mode']} export failed its parity check (expected "
              f"{parity_expectation(card['parity'])}; see its card)"
              for path, card in cards.items()
              if card.get("parity") and not card["parity"]["passed"]]
    if failed:
        raise ParityFailed("; ".join(failed))


def embedding_parity(keras_embeddings: np.ndarray, tflite_embeddings: np.ndarray, mode: str) -> dict:
    """Keras vs TFLite embeddings (N, D): the lowest cosine similarity over the clips (bound:
    EMBEDDING_MIN_COSINE[mode]) and max |dvalue| (bound, float modes: EMBEDDING_PARITY_TOLERANCE[mode])."""
    cosines = np.sum(enrollment.normalize(keras_embeddings) * enrollment.normalize(tflite_embeddings), axis=-1)
    cosine = float(cosines.min())
    diff = float(np.abs(keras_embeddings - tflite_embeddings).max())
    min_cosine, tolerance = EMBEDDING_MIN_COSINE[mode], EMBEDDING_PARITY_TOLERANCE.get(mode)
    return {"min_embedding_cosine": cosine, "embedding_min_cosine": min_cosine,
            "max_abs_embedding_diff": diff, "embedding_tolerance": tolerance,
            "embedding_passed": bool(cosine >= min_cosine and (tolerance is None or diff <= tolerance))}


# ----------------------------------------------------------------------------------------------- model card
def input_keypoints(cfg: dict) -> list[dict]:
    """What sits at each keypoint position of the input: the stored index and its MediaPipe part and landmark."""
    layout = get_layout(cfg["layout"])
    return [{"input_index": k, "stored_index": i, "part": layout.points[i][0], "mediapipe_index": layout.points[i][1],
             "name": layout.point_name(i)} for k, i in enumerate(cfg["joint_idx"])]


def normalization_rule(cfg: dict) -> dict:
    """The per-frame group normalization of preprocessing.normalize_groups, with groups as INPUT positions."""
    return {
        "groups": {name: idx.tolist() for name, idx in zip(cfg["groups"], selected_groups(cfg))},
        "box_margin": BOX_MARGIN,
        "rule": ("clip x, y to [0, 1]; then per frame and per group: ignore points at exactly (0, 0) (not detected); "
                 "box = min/max of the detected points, w = xmax - xmin, h = ymax - ymin; if w > h: "
                 f"dx = {BOX_MARGIN}*w, dy = {BOX_MARGIN}*w + (w - h)/2, else dx = {BOX_MARGIN}*h + (h - w)/2, "
                 f"dy = {BOX_MARGIN}*h; start = clamp(min - (dx, dy), 0, 1), end = clamp(max + (dx, dy), 0, 1); "
                 "each detected point -> (p - start) / (end - start) per axis where end > start (else unchanged); "
                 "undetected points stay (0, 0)"),
        "spec": PREPROCESSING_DOC,
    }


def resting_hands_rule(cfg: dict) -> dict:
    """preprocessing.drop_resting_hands with INPUT positions; {"cutoff": 0.0} when the model does not use it."""
    _, _, off = CARD_RULES["rest_hand_cutoff"]
    cutoff = cfg.get("rest_hand_cutoff", off)
    if not cutoff:
        return {CARD_CUTOFF: off, "rule": "off"}
    left, right, hands = rest_hand_points(cfg)
    return {
        CARD_CUTOFF: cutoff,
        "shoulders": [left, right],
        "hands": [{"wrist": wrist, "points": points.tolist()} for wrist, points in hands],
        "rule": ("after clipping, per frame: if both shoulders are detected and w = |x_left_shoulder - "
                 "x_right_shoulder| > 0, then for each hand whose pose wrist is detected and lies more than "
                 f"cutoff * w below the shoulder line (wrist_y - mean shoulder y > {cutoff} * w), set all the "
                 "hand's points to (0, 0): the hand counts as not detected"),
        "spec": PREPROCESSING_DOC,
    }


def dominant_hand_rule(cfg: dict) -> dict:
    """preprocessing.canonicalize_hands with INPUT positions; {"ratio": 0.0} when the model does not use it."""
    _, _, off = CARD_RULES["dominant_hand_ratio"]
    ratio = cfg.get("dominant_hand_ratio", off)
    if not ratio:
        return {CARD_RATIO: off, "rule": "off"}
    left, right = hand_positions(cfg)
    return {
        CARD_RATIO: ratio,
        "left_hand": left.tolist(),
        "right_hand": right.tolist(),
        "mirror": mirror_permutation(cfg).tolist(),
        "rule": ("after the resting-hand rule and frame sampling, over the kept frames: n_left, n_right = the number "
                 "of frames in which any point of the left / right hand is not (0, 0); if n_left > ratio * n_right, "
                 "mirror the clip: every point not at (0, 0) gets x -> 1 - x, then point k takes the value of "
                 "point mirror[k] (left and right slots swapped); points at (0, 0) stay (0, 0)"),
        "spec": PREPROCESSING_DOC,
    }


FRAME_SAMPLING = {
    "max_frames": SEQUENCE_LENGTH,
    "rule": (f"one row of keypoints per video frame, no frame dropped; a clip of T > {SEQUENCE_LENGTH} frames keeps "
             f"frames floor(linspace(0, T - 1, {SEQUENCE_LENGTH})); then zero-pad to {SEQUENCE_LENGTH} frames; "
             f"attention_mask[t] = 1 for t < min(T, {SEQUENCE_LENGTH}), else 0"),
}
MIRRORING = ("frames go to MediaPipe as the camera records them (no horizontal flip, no selfie-preview mirror); "
             "MediaPipe's left_hand/right_hand slots are used as returned. Signers whose training pickles say "
             "flipped=true were mirrored before MediaPipe (extract_65_keypoints.py --flip_users; see training.data_path)")


def measured_accuracy(parity: dict | None) -> dict:
    """Top-1 of this very file on the parity clips (held-out signers when the run had a test split), if labelled."""
    if not parity or "tflite_top1" not in parity:
        return {}
    return {"top1": parity["tflite_top1"], "keras_top1": parity["keras_top1"], "clips": parity["clips"],
            "measured_on": "the parity clips of this export (see training: holdout_user / parity_split)"}


def personalization(tflite: "TFLiteModel", model_sha256: str, cfg: dict) -> dict:
    """Where the embedding output is and how enrollment.py uses it (docs/personalization.md)."""
    index = OUTPUT_NAMES.index(EMBEDDING_NAME)
    output = tflite.io_description("outputs")[index]
    return {"embedding_output": EMBEDDING_NAME, "output_index": index, "embedding_size": output["shape"][-1],
            "embedding_dtype": output["dtype"], "model_sha256": model_sha256,
            **enrollment.card_rules(hands=hand_positions(cfg))}


def model_card(tflite: "TFLiteModel", ops: list[str], cfg: dict, mode: str, id2label: dict,
               label_names: dict | None = None, training: dict | None = None, parity: dict | None = None,
               model_sha256: str = "", runtime_support: str = "") -> dict:
    """Everything a consumer (evaluation, the app) needs to feed the model and read its outputs. `tflite`: the
    loaded file (a TFLiteModel, or an onnx_runtime.ONNXModel for onnx_convert's cards, with runtime_support)."""
    label_names = label_names or {}
    return {
        "card_version": CARD_VERSION,
        "mode": mode,
        "inputs": tflite.io_description("inputs"),
        "outputs": tflite.io_description("outputs"),
        "output_rule": "logits -> softmax -> argmax = class id -> classes[id]",
        "personalization": personalization(tflite, model_sha256, cfg),
        "sequence_length": SEQUENCE_LENGTH,
        "mask": "float 0/1 length mask: 1 for the first min(frames, 64) positions",
        CARD_CONFIG_PATH: cfg["config_path"],
        CARD_LAYOUT: cfg["layout"],
        "layout_structure": get_layout(cfg["layout"]).describe(),
        "num_keypoints": num_keypoints(cfg),
        CARD_JOINT_IDX: cfg["joint_idx"],
        CARD_GROUPS: cfg["groups"],
        "input_keypoints": input_keypoints(cfg),
        CARD_RESTING_HANDS: resting_hands_rule(cfg),
        CARD_DOMINANT_HAND: dominant_hand_rule(cfg),
        "normalization": normalization_rule(cfg),
        "frame_sampling": FRAME_SAMPLING,
        "mirroring": MIRRORING,
        CARD_MODEL: model_hparams(cfg),
        "labels": [id2label[i] for i in sorted(id2label)],
        "label_names": label_names,
        "classes": [{"id": i, "label": id2label[i], "name": label_names.get(id2label[i], "")} for i in sorted(id2label)],
        "ops": ops,
        "training": training or {},
        "parity": parity or {},
        "accuracy": measured_accuracy(parity),
        "runtime_support": runtime_support or RUNTIME_SUPPORT[mode],
        "preprocessing_spec": PREPROCESSING_DOC,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def export_tflite(model: keras.Model | Exportable, cfg: dict, path, id2label: dict, mode: str = "fp32",
                  parity_data: tuple | None = None, representative_data=None, label_names: dict | None = None,
                  training: dict | None = None, log=print, parity_labels: np.ndarray | None = None) -> dict:
    """Convert, write `path` (+ card and labels.txt), check parity on `parity_data` = (keypoints, masks) of real
    padded clips (with `parity_labels`, also top-1 of both), and print the result. Returns the card. Exporting
    one model in several modes: pass the same Exportable(model) to each call (it keeps what they share)."""
    model = exportable(model)
    tflite_bytes = convert(model, cfg, mode, representative_data)
    atomic_write_bytes(path, tflite_bytes)
    tflite = TFLiteModel(tflite_bytes)
    parity = None
    if parity_data is not None and (mode in PARITY_TOLERANCE or mode in PARITY_MIN_AGREEMENT):
        parity = check_parity(model, tflite, *parity_data, tolerance=PARITY_TOLERANCE.get(mode),
                              min_agreement=PARITY_MIN_AGREEMENT.get(mode, 1.0), labels=parity_labels,
                              mode=mode)
        log(parity_line(mode, parity))
    card = model_card(tflite, op_names(tflite_bytes), cfg, mode, id2label, label_names, training, parity,
                      enrollment.model_sha256(tflite_bytes))
    card["size_bytes"] = len(tflite_bytes)
    atomic_write_json(card_path(path), card)
    atomic_write_text(Path(path).parent / "labels.txt", "".join(f"{label}\n" for label in card["labels"]))
    log(f"wrote {path} ({len(tflite_bytes) / 2**20:.2f} MB, {mode}) + {card_path(path).name} + labels.txt")
    if RUNTIME_SUPPORT[mode] != EVERY_RUNTIME:
        log(f"note: {Path(path).name} ({mode}) {RUNTIME_SUPPORT[mode]}")
    return card
