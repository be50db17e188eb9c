"""Running a .tflite model: THE one place that touches the TFLite interpreter (ai-edge-litert;
tf.lite.Interpreter is deprecated).

    model = TFLiteModel("final_model_fp32.tflite")         # num_threads=1 by default (stable timings)
    logits = model(keypoints, mask)                         # (1, 64, K, 2), (1, 64) float32 -> (1, C) float32
    logits, seconds = model.predict(keypoints, masks)       # N clips, one invoke each; seconds = invoke() alone
    logits, embedding, seconds = model.run_with_embedding(keypoints, mask)   # both outputs, by name
    logits, embeddings, seconds = model.predict_with_embedding(keypoints, masks)   # (N, C), (N, D)

Inputs are found by their signature NAMES (INPUT_NAMES below, which tflite_export writes); a foreign model whose tensors are named
otherwise falls back to rank (4-D = keypoints, 2-D = mask), as the reference did.
Outputs (OUTPUT_NAMES), by name: `logits` at index 0 (a model without that name: its first output) and
`embedding` at index 1 (exports of card version 6 on; an older file has none, and only the
*_with_embedding methods refuse it). Models with integer I/O get
their float inputs quantized and their outputs dequantized here, so callers always pass and receive float32.
A model with a dynamic T is resized to the clips' length.

Model card -> config: resolve_config(tflite_path[, config_path]) is the config recorded in the card
beside a model (config_from_card: config.check_config's checks, as for a YAML config), or a
--config_path checked against it (check_card_matches); read_model_card checks the JSON types of the
fields readers use (CARD_FIELDS); output_labels gives one label per model output (card, labels.txt)
or refuses the model; display_names formats class labels with their human names.

This module imports no TensorFlow (only numpy and ai-edge-litert), so an app-side script that only runs models stays light.
`interpreter="tensorflow"` runs the same code on `tf.lite.Interpreter` instead: tflite_worker.py uses it to run a model
in an older TensorFlow Lite runtime (a side venv that has only numpy and tensorflow-cpu; see check_runtimes.py).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from recipes import DOMINANT_HAND_RATIO, REST_HAND_CUTOFF
from runs import card_path, model_kind, require_file
from util import (NUMBER, ListOf, MapOf, UserError, brief, check_fields, native_noise_dropped,
                  parse_json, quiet_tensorflow)

INPUT_NAMES = ("keypoints", "attention_mask")  # the exported signature's inputs, in this order
OUTPUT_NAME = "logits"                          # output 0: what every consumer reads
EMBEDDING_NAME = "embedding"                    # output 1: the clip embedding (enrollment.py)
OUTPUT_NAMES = (OUTPUT_NAME, EMBEDDING_NAME)    # the exported signature's outputs, in this order


INTERPRETERS = ("litert", "tensorflow")  # ai_edge_litert.interpreter.Interpreter, tf.lite.Interpreter

# The runtimes every export is checked in (check_runtimes.py), oldest last: name -> (interpreter, python that runs
# tflite_worker.py: None = this venv, else a side venv made by `bash setup_env.sh --runtimes`, relative to the repo).
# tflite_flutter 0.11.x ships TensorFlow Lite 2.11 (Android) / 2.12 (iOS); 0.12.x ships LiteRT 1.4, a 2.17-era
# runtime (Android) / 2.12 (iOS). TensorFlow Lite 2.12 therefore stands for every iOS app and for Android on 0.11.
RUNTIMES = {
    "litert-2.3": ("litert", None),
    "tflite-2.17": ("tensorflow", ".venv-tflite-2.17/bin/python"),
    "tflite-2.12": ("tensorflow", ".venv-tflite-2.12/bin/python"),
}
# Export parity (Keras vs the exported file, in the pinned runtime), checked by tflite_export and the test vectors,
# and by onnx_convert for the ONNX modes (onnx-fp32, onnx-int8: the exported .onnx in ONNX Runtime)
MAX_PARITY_CLIPS = 256  # held-out clips an export is checked on (the first ones of the split)
PARITY_TOLERANCE = {"fp32": 1e-4, "float16": 1e-2, "onnx-fp32": 1e-4}  # max |Keras logit - file's logit|
PARITY_MIN_AGREEMENT = {"dynamic": 0.95, "int8": 0.95, "int8_io": 0.95, "int16x8": 0.95,
                        "onnx-int8": 0.99}  # integer modes:
#   share of clips on which the file and Keras pick the same class (their logits differ by quantization steps)
# The embedding output, Keras vs the exported file: for every mode, the lowest cosine similarity over
# the parity clips; for the float modes also max |Keras value - TFLite value| (values of order 1)
EMBEDDING_PARITY_TOLERANCE = {"fp32": 1e-4, "float16": 1e-2, "onnx-fp32": 1e-4}
EMBEDDING_MIN_COSINE = {"fp32": 0.9999, "float16": 0.9999, "dynamic": 0.99, "int8": 0.98,
                        "int8_io": 0.98, "int16x8": 0.99, "onnx-fp32": 0.9999, "onnx-int8": 0.98}
PINNED_RUNTIME = "litert-2.3"      # the reference the others are compared with
RUNTIME_MIN_AGREEMENT = 0.99       # argmax agreement with PINNED_RUNTIME that a runtime must reach on real clips
RUNTIME_MAX_LOGIT_DIFF = {"fp32": 1e-4, "float16": 1e-4}  # and, for float modes, max |dlogit| against it
RUNTIME_MIN_EMBEDDING_COSINE = 0.99  # lowest embedding cosine against PINNED_RUNTIME over the clips
RUNTIME_MAX_EMBEDDING_DIFF = {"fp32": 1e-4, "float16": 1e-4}  # and, float modes: max |dvalue| against it


def interpreter_class(interpreter: str = "litert"):
    """The Interpreter class of the pinned ai-edge-litert ('litert') or of an installed TensorFlow ('tensorflow')."""
    if interpreter == "litert":
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    if interpreter == "tensorflow":
        quiet_tensorflow()  # before the import (tflite_worker.py imports no tf_env)
        import tensorflow as tf
        return tf.lite.Interpreter
    raise UserError(f"unknown interpreter {interpreter!r}; choose one of {list(INTERPRETERS)}")


CARD_FIELDS = {  # what readers of a card use (tflite_export.model_card writes it), with JSON types
    "model": dict, "layout": int, "joint_idx": list, "groups": dict, "config_path": str,
    "labels": ListOf(str), "label_names": MapOf(str), "mode": str, "size_bytes": int,
    "resting_hands": {"cutoff": NUMBER}, "dominant_hand": {"ratio": NUMBER},
    "parity": {"clips": int, "max_abs_logit_diff": NUMBER, "argmax_identical": int, "passed": bool},
}


def read_model_card(tflite_path) -> dict:
    """The card written beside a .tflite ({} when there is none, e.g. a foreign model); a card that is not a JSON
    object (no key given twice) with CARD_FIELDS of their types is a UserError naming it."""
    path = card_path(tflite_path)
    if not path.exists():
        return {}
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read the model card ({e.strerror})") from None
    where = f"{path}: the model card"
    return check_fields(parse_json(data, where), CARD_FIELDS, where)


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """float -> the tensor's dtype using its (scale, zero_point); float tensors pass through."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's dtype -> float32 using its (scale, zero_point)."""
    if np.issubdtype(detail["dtype"], np.floating):
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def find_inputs(details: list[dict], source: str) -> tuple[dict, dict]:
    """(keypoints detail, mask detail): by signature name, else by rank (4-D keypoints, 2-D mask)."""
    by_name = {d["name"]: d for d in details}
    if all(name in by_name for name in INPUT_NAMES):
        return tuple(by_name[name] for name in INPUT_NAMES)
    by_rank = {len(d["shape"]): d for d in details}
    if len(details) != 2 or set(by_rank) != {4, 2}:
        shapes = [(d["name"], d["shape"].tolist()) for d in details]
        raise UserError(f"{source}: expected inputs {list(INPUT_NAMES)} (or one 4-D and one 2-D input), got {shapes}")
    return by_rank[4], by_rank[2]


class ClipModel:
    """What every runtime's model class gives on top of its own run(keypoints, mask) -> (logits,
    seconds) and run_with_embedding(...) -> (logits, embedding, seconds) for one clip: the same for N
    clips, one run per clip (as an app feeds them), so that timings compare across runtimes."""

    def __call__(self, keypoints: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.run(keypoints, mask)[0]

    def predict(self, keypoints: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N clips (N, T, K, 2), (N, T) -> logits (N, C) float32 and run seconds (N,)."""
        results = [self.run(keypoints[i:i + 1], masks[i:i + 1]) for i in range(len(keypoints))]
        return np.concatenate([r[0] for r in results]), np.array([r[1] for r in results])

    def predict_with_embedding(self, keypoints: np.ndarray,
                               masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """N clips -> logits (N, C), embeddings (N, D) float32 and run seconds (N,)."""
        results = [self.run_with_embedding(keypoints[i:i + 1], masks[i:i + 1])
                   for i in range(len(keypoints))]
        return (np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]),
                np.array([r[2] for r in results]))


class TFLiteModel(ClipModel):
    """A loaded .tflite classifier with the app signature (see tflite_export)."""

    def __init__(self, model, num_threads: int = 1, interpreter: str = "litert"):
        """model: a .tflite path or the model's bytes; interpreter: one of INTERPRETERS."""
        Interpreter = interpreter_class(interpreter)
        if isinstance(model, (bytes, bytearray)):
            self.source = "<in-memory model>"
            source = {"model_content": bytes(model)}
        else:
            self.source = str(model)
            if not Path(model).is_file():
                raise UserError(f"TFLite model not found: {model}")
            source = {"model_path": str(model)}
        with native_noise_dropped():  # TFLite's own INFO line (util.NATIVE_NOISE)
            try:
                self.interpreter = Interpreter(**source, num_threads=num_threads)
            except ValueError as e:
                if "model_path" not in source:
                    raise
                raise UserError(f"{model}: not a loadable TFLite model ({e})") from None
            self.interpreter.allocate_tensors()
        self._find_tensors()

    def _find_tensors(self) -> None:
        """The inputs by name (or rank); the outputs by name: logits (else output 0), embedding (or None)."""
        self.keypoints_input, self.mask_input = find_inputs(self.interpreter.get_input_details(), self.source)
        outputs = self.interpreter.get_output_details()
        by_name = {d["name"]: d for d in outputs}
        self.output = by_name.get(OUTPUT_NAME, outputs[0])
        # by name, else by index: the export puts the embedding at output 1 (some runtimes, e.g. TFLite
        # 2.17, report the tensors under their graph names, not the signature's)
        self.embedding_output = by_name.get(EMBEDDING_NAME) or (
            outputs[OUTPUT_NAMES.index(EMBEDDING_NAME)] if len(outputs) == len(OUTPUT_NAMES) else None)

    @property
    def integer_io(self) -> bool:
        return not np.issubdtype(self.keypoints_input["dtype"], np.floating)

    @property
    def has_embedding(self) -> bool:
        return self.embedding_output is not None

    def _fit_length(self, length: int) -> None:
        """Resize a dynamic-T model to `length` frames (a fixed-T model must be fed its own T)."""
        if self.keypoints_input["shape"][1] == length:
            return
        if self.keypoints_input["shape_signature"][1] != -1:
            raise UserError(f"{self.source}: the model takes {self.keypoints_input['shape'][1]} frames, got {length}")
        k = self.keypoints_input["shape"][2]
        self.interpreter.resize_tensor_input(self.keypoints_input["index"], [1, length, k, 2])
        self.interpreter.resize_tensor_input(self.mask_input["index"], [1, length])
        self.interpreter.allocate_tensors()
        self._find_tensors()

    def _invoke(self, keypoints: np.ndarray, mask: np.ndarray) -> float:
        """Feed one clip and run it; the seconds spent in invoke()."""
        self._fit_length(keypoints.shape[1])
        self.interpreter.set_tensor(self.keypoints_input["index"], quantize(keypoints, self.keypoints_input))
        self.interpreter.set_tensor(self.mask_input["index"], quantize(mask, self.mask_input))
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start

    def _read(self, detail: dict) -> np.ndarray:
        return dequantize(self.interpreter.get_tensor(detail["index"]), detail)

    def run(self, keypoints: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
        """One clip: keypoints (1, T, K, 2), mask (1, T) float -> (logits (1, C) float32, seconds in invoke())."""
        seconds = self._invoke(keypoints, mask)
        return self._read(self.output), seconds

    def run_with_embedding(self, keypoints: np.ndarray,
                           mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One clip -> (logits (1, C), embedding (1, D), both float32, seconds in invoke())."""
        if not self.has_embedding:
            raise UserError(f"{self.source}: the model has no '{EMBEDDING_NAME}' output (exported "
                            "before card version 6); export it again")
        seconds = self._invoke(keypoints, mask)
        return self._read(self.output), self._read(self.embedding_output), seconds

    def io_description(self, which: str) -> list[dict]:
        """Names, shapes, dtypes and quantization of the 'inputs' (in signature order) or 'outputs'
        (logits, then the embedding when the model has one)."""
        outputs = [self.output] + ([self.embedding_output] if self.has_embedding else [])
        details = [self.keypoints_input, self.mask_input] if which == "inputs" else outputs
        return [{"name": d["name"], "shape": d["shape"].tolist(), "dtype": np.dtype(d["dtype"]).name,
                 "quantization": {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}}
                for d in details]


# ---------------------------------------------------------------------------- model card -> config
# The model card's keys that carry the config (tflite_export.model_card writes them, config_from_card
# reads them back). The two preprocessing rules are card sections whose value has another name:
CARD_MODEL, CARD_LAYOUT, CARD_JOINT_IDX, CARD_GROUPS = "model", "layout", "joint_idx", "groups"
CARD_CONFIG_PATH = "config_path"
CARD_RESTING_HANDS, CARD_CUTOFF = "resting_hands", "cutoff"     # config key rest_hand_cutoff
CARD_DOMINANT_HAND, CARD_RATIO = "dominant_hand", "ratio"       # config key dominant_hand_ratio
CARD_RULES = {"rest_hand_cutoff": (CARD_RESTING_HANDS, CARD_CUTOFF, REST_HAND_CUTOFF),
              "dominant_hand_ratio": (CARD_DOMINANT_HAND, CARD_RATIO, DOMINANT_HAND_RATIO)}
#             config key -> (card section, its value key, the value when a card has no section)
CARD_CONFIG_KEYS = ("layout", "joint_idx", "groups", "num_labels", *CARD_RULES)  # config keys a card
#                                                                                   must agree on


def config_from_card(card: dict, tflite_path) -> dict:
    """The preprocessing/model config recorded in a model card (tflite_export.model_card;
    read_model_card checked its types), validated by config.check_config as a YAML config is: an
    unknown layout, an index out of range or of the wrong type, a label count that is not num_labels
    is one line naming the card."""
    from config import check_config  # here: the old-runtime worker's venv has no YAML parser
    where = card_path(tflite_path)
    missing = [k for k in (CARD_MODEL, CARD_LAYOUT, CARD_JOINT_IDX, CARD_GROUPS) if card.get(k) is None]
    if missing:
        raise UserError(f"{where}: model card lacks {missing}; pass --config_path")
    rules = {key: (card.get(section) or {}).get(value_key, off)
             for key, (section, value_key, off) in CARD_RULES.items()}
    raw = {k: v for k, v in card[CARD_MODEL].items() if k != "num_keypoints"} | rules | {
        "layout": card[CARD_LAYOUT], "joint_idx": card[CARD_JOINT_IDX], "groups": card[CARD_GROUPS]}
    cfg = check_config(raw, str(where))
    recorded = card[CARD_MODEL].get("num_keypoints")
    if recorded is not None and recorded != len(cfg["joint_idx"]):
        raise UserError(f"{where}: model.num_keypoints is {brief(recorded)} but joint_idx selects "
                        f"{len(cfg['joint_idx'])} points")
    if card.get("labels") and len(card["labels"]) != cfg["num_labels"]:
        raise UserError(f"{where}: {len(card['labels'])} labels for a model of num_labels "
                        f"{cfg['num_labels']}")
    return cfg | {"config_path": f"{where} (card of {card.get(CARD_CONFIG_PATH, '?')})"}


def output_labels(model: TFLiteModel, tflite_path) -> list[str]:
    """The label of each output of a loaded model: the card's labels, else labels.txt beside the
    model, else class_<i>; a card or labels.txt with another number of labels than the model has
    outputs is refused (before any clip is classified)."""
    outputs = int(model.output["shape"][-1])
    card, labels_txt = read_model_card(tflite_path), Path(tflite_path).parent / "labels.txt"
    if card.get("labels"):
        labels, source = card["labels"], card_path(tflite_path)
    elif labels_txt.is_file():
        try:
            labels, source = labels_txt.read_text(encoding="utf-8").split(), labels_txt
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{labels_txt}: cannot read the labels ({e})") from None
    else:
        return [f"class_{i}" for i in range(outputs)]
    if len(labels) != outputs:
        raise UserError(f"{source}: {len(labels)} labels, but {tflite_path} has {outputs} outputs; "
                        "re-export the model or fix the labels")
    return labels


def resolve_config(tflite_path, config_path: str | None = None) -> dict:
    """--config_path when given (checked against the model card), else the card beside the model."""
    card = read_model_card(require_file(tflite_path, model_kind(tflite_path)))
    if config_path:
        from config import load_config  # here: the old-runtime worker's venv has no YAML parser
        cfg = load_config(config_path)
        check_card_matches(cfg, tflite_path)
        return cfg
    if not card:
        raise UserError(f"{tflite_path}: no model card ({card_path(tflite_path).name}) beside it; "
                        "pass --config_path")
    return config_from_card(card, tflite_path)


def check_card_matches(cfg: dict, tflite_path) -> None:
    """A model whose card records another keypoint selection, grouping or class count cannot be fed
    `cfg`'s clips."""
    card = read_model_card(require_file(tflite_path, model_kind(tflite_path)))
    if card:
        from_card = config_from_card(card, tflite_path)
        differ = [k for k in CARD_CONFIG_KEYS if from_card[k] != cfg[k]]
        if differ:
            raise UserError(f"{cfg['config_path']} disagrees with the model card of {tflite_path} "
                            f"on {differ}")


def display_names(labels: list[str], names: dict) -> list[str]:
    """'G01 (Hi)' when a human name is known, else 'G01'."""
    return [f"{label} ({names[label]})" if names.get(label) else label for label in labels]
