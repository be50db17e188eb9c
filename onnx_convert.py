"""ONNX export: a trained Keras model -> model_fp32.onnx (tf2onnx) and model_int8.onnx (ONNX Runtime's static QDQ
quantization), each loaded and run in ONNX Runtime and checked against Keras before it is kept, with its own model
card. onnx_export.py (one checkpoint) and ptq_export.py --onnx_modes (beside the PTQ models) call export_onnx.

Signature: tflite_export's, with a dynamic batch axis: inputs `keypoints` float32 [batch, 64, K, 2] and
`attention_mask` float32 [batch, 64]; outputs `logits` [batch, C] (index 0) and `embedding` [batch, D] (index 1),
float32 in both modes (the int8 model quantizes inside: QuantizeLinear/DequantizeLinear pairs around its
MatMul, Add, Mul, ... nodes). ONNX opset OPSET (tf2onnx 1.17 knows up to 18; ONNX's own Gelu needs 20).

Modes (ONNX_MODES; card `mode` onnx-<mode>, file runs.ONNX_FILES):
  fp32   tf2onnx from the same concrete function the TFLite export converts. TensorFlow 2.19's exact GELU holds an
         Erfc op that tf2onnx 1.17 does not convert (it still reports success, and the file does not load: "No
         Op registered for Erfc"); erfc_handler rewrites it as 1 - Erf(x), so GELU = 0.5 x (1 + erf(x / sqrt 2)).
  int8   onnxruntime.quantization.quantize_static of the fp32 file: QDQ format, uint8 activations and int8
         weights, one scale per tensor, MinMax ranges calibrated on the SAME real training clips as the TFLite PTQ
         (quantization.QuantizationData.representative). On the MLR511 user01 fold it was the fastest of static
         s8/s8, static u8/s8, MatMul-only and dynamic quantization, and agreed with Keras on 100/100 clips.

Checked at export (THE rule of tflite_export.check_parity, bounds in tflite_runtime): the bytes are loaded and run
in ONNX Runtime (a file that does not load or run is an error naming the ops ONNX does not define, never a
"successful" export) and compared with Keras on the held-out clips: onnx-fp32 max |dlogit| <= 1e-4, onnx-int8
Keras's class on >= 99 % of the clips Keras decides, embeddings within their bounds. A file that fails is not kept
(not written; an older one of that name is removed) and the step ends with one line naming it (ParityFailed).

Beside `<name>.onnx` go `<name>.onnx.json` (its model card: tflite_export.model_card's fields, the I/O with -1 for
the batch axis, ONNX op types, its own parity, size and sha256, runtime_support) and labels.txt.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

import enrollment
from config import num_keypoints
from model_functional import embedding_model
from onnx_runtime import ONNXModel, first_line, runtime_version
from preprocessing import MAX_FRAMES
from runs import ONNX_FILES, card_path, remove_path
from tf_env import keras, quiet_native, tf
from tflite_export import (
    Exportable,
    ParityFailed,
    check_parity,
    exportable,
    model_card,
    parity_expectation,
    parity_line,
)
from tflite_runtime import (
    EMBEDDING_NAME,
    INPUT_NAMES,
    OUTPUT_NAME,
    OUTPUT_NAMES,
    PARITY_MIN_AGREEMENT,
    PARITY_TOLERANCE,
)
from util import (
    RunFailed,
    UserError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

OPSET = 17
ONNX_MODES = tuple(m.removeprefix("onnx-") for m in ONNX_FILES)  # fp32, int8
BATCH_AXIS = "batch"


def card_mode(mode: str) -> str:
    """'fp32' -> 'onnx-fp32': the card's mode, a key of runs.ONNX_FILES and of the parity bounds."""
    return f"onnx-{mode}"


def runtime_support() -> str:
    return (f"ONNX Runtime (opset {OPSET}; loaded, run and checked against Keras at export in "
            f"{runtime_version()}): servers, ONNX Runtime Mobile and Web, C#/Java/C++ back ends; not a TFLite "
            "runtime (ship the .tflite to tflite_flutter apps)")


# ----------------------------------------------------------------------------------------------- conversion
def erfc_handler(ctx, node, name, args):
    """tf2onnx handler for TensorFlow's Erfc (exact GELU): erfc(x) = 1 - erf(x), with ONNX's Erf (opset 9)."""
    from tf2onnx import utils
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def serving_function(model: keras.Model, k: int):
    """tflite_export's app signature with a dynamic batch axis: (keypoints, attention_mask) -> {logits, embedding}."""
    exported = embedding_model(model)

    @tf.function(input_signature=[tf.TensorSpec([None, MAX_FRAMES, k, 2], tf.float32, name=INPUT_NAMES[0]),
                                  tf.TensorSpec([None, MAX_FRAMES], tf.float32, name=INPUT_NAMES[1])])
    def serve(keypoints, attention_mask):
        logits, embedding = exported({"keypoints": keypoints, "attention_mask": attention_mask}, training=False)
        return {OUTPUT_NAME: logits, EMBEDDING_NAME: embedding}
    return serve


def undefined_ops(proto) -> list[str]:
    """Op types of the graph's default-domain nodes that ONNX does not define (TF ops tf2onnx left as they were)."""
    import onnx
    return sorted({n.op_type for n in proto.graph.node
                   if n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type)})


def name_signature(proto) -> None:
    """Outputs in signature order (logits at index 0; tf2onnx sorts them by name) and the batch axis named."""
    outputs = {o.name: o for o in proto.graph.output}
    if set(outputs) != set(OUTPUT_NAMES) or [i.name for i in proto.graph.input] != list(INPUT_NAMES):
        raise RunFailed(f"unexpected ONNX signature: inputs {[i.name for i in proto.graph.input]}, "
                        f"outputs {sorted(outputs)}")
    ordered = [outputs[name] for name in OUTPUT_NAMES]
    del proto.graph.output[:]
    proto.graph.output.extend(ordered)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS


def convert_fp32(model: keras.Model, cfg: dict) -> bytes:
    """Keras model -> the fp32 .onnx bytes (module docstring); ops ONNX does not define are an error."""
    import tf2onnx
    serve = serving_function(model, num_keypoints(cfg))
    converter_log = logging.getLogger("tf2onnx")
    level = converter_log.level
    converter_log.setLevel(logging.CRITICAL)  # its INFO/WARNING lines, and errors we report below
    try:
        with quiet_native(), tf.device("/cpu:0"):
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET,
                                                     custom_op_handlers={"Erfc": (erfc_handler, [])})
    finally:
        converter_log.setLevel(level)
    undefined = undefined_ops(proto)
    if undefined:
        raise RunFailed(f"tf2onnx left operators that ONNX does not define: {', '.join(undefined)}; the "
                        "file would not load (add a handler in onnx_convert.py)")
    name_signature(proto)
    return proto.SerializeToString()


class CalibrationClips(CalibrationDataReader):
    """onnxruntime.quantization's CalibrationDataReader over (keypoints (N, 64, K, 2), masks (N, 64)), one clip a
    call (the batch size the app uses)."""

    def __init__(self, representative_data):
        self.keypoints, self.masks = (np.asarray(a, dtype=np.float32) for a in representative_data)
        self.next = 0

    def get_next(self) -> dict | None:
        if self.next >= len(self.keypoints):
            return None
        i, self.next = self.next, self.next + 1
        return {INPUT_NAMES[0]: self.keypoints[i:i + 1], INPUT_NAMES[1]: self.masks[i:i + 1]}

    def rewind(self) -> None:
        self.next = 0


def quantize_int8(fp32_bytes: bytes, representative_data) -> bytes:
    """The fp32 .onnx bytes -> static QDQ int8 bytes calibrated on the representative clips (module docstring)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    if representative_data is None:
        raise UserError("ONNX int8 quantization needs representative data: real, padded training clips")
    reader = CalibrationClips(representative_data)
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # its advice on the root logger to pre-process first (measured: not needed)
    try:
        with tempfile.TemporaryDirectory(prefix="onnx_int8_") as tmp:
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            source.write_bytes(fp32_bytes)
            quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=False,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        root.setLevel(level)


def load_checked(onnx_bytes: bytes, path, k: int) -> ONNXModel:
    """The bytes loaded in ONNX Runtime and run on one zero clip; RunFailed naming `path` when either fails."""
    try:
        model = ONNXModel(onnx_bytes)
        model.run_with_embedding(np.zeros((1, MAX_FRAMES, k, 2), np.float32), np.ones((1, MAX_FRAMES), np.float32))
    except UserError as e:
        raise RunFailed(f"{path}: the converted model does not load in {runtime_version()}: "
                        f"{str(e).removeprefix('<in-memory model>: ')}") from None
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
        raise RunFailed(f"{path}: the converted model does not run in {runtime_version()}: {first_line(e)}") from None
    return model


def op_types(onnx_bytes: bytes) -> list[str]:
    import onnx
    return sorted({n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node})


# ----------------------------------------------------------------------------------------------- export
def export_onnx(model: keras.Model | Exportable, cfg: dict, output_dir, id2label: dict, modes=ONNX_MODES,
                parity_data: tuple | None = None, parity_labels: np.ndarray | None = None,
                representative_data=None, label_names: dict | None = None, training: dict | None = None,
                log=print) -> dict:
    """Convert, check and write each of `modes` into output_dir (runs.ONNX_FILES names, + card, labels.txt).
    Returns {path: card} of the files kept; ParityFailed (one line) when one failed its check, after the others
    were written. parity_data = (keypoints, masks) of real padded held-out clips; without it nothing is compared
    (a tiny smoke export)."""
    output_dir, k = Path(output_dir), num_keypoints(cfg)
    cards, failed, fp32_bytes = {}, [], None
    for mode in modes:
        name = card_mode(mode)
        path = output_dir / ONNX_FILES[name]
        if fp32_bytes is None:
            fp32_bytes = convert_fp32(exportable(model).model, cfg)
        onnx_bytes = fp32_bytes if mode == "fp32" else quantize_int8(fp32_bytes, representative_data)
        loaded = load_checked(onnx_bytes, path, k)
        parity = None
        if parity_data is not None:
            parity = check_parity(model, loaded, *parity_data, tolerance=PARITY_TOLERANCE.get(name),
                                  min_agreement=PARITY_MIN_AGREEMENT.get(name, 1.0), labels=parity_labels,
                                  mode=name)
            log(parity_line(name, parity, kind="ONNX"))
        if parity is not None and not parity["passed"]:
            for stale in (path, card_path(path)):
                remove_path(stale)
            failed.append(f"{path}: the {name} export failed its parity check and was not kept (measured "
                          f"max |dlogit| {parity['max_abs_logit_diff']:.2e}, argmax identical "
                          f"{parity['argmax_identical']}/{parity['clips']}; expected {parity_expectation(parity)})")
            continue
        card = model_card(loaded, op_types(onnx_bytes), cfg, name, id2label, label_names, training, parity,
                          enrollment.model_sha256(onnx_bytes), runtime_support=runtime_support())
        card["size_bytes"] = len(onnx_bytes)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, onnx_bytes)
        atomic_write_json(card_path(path), card)
        atomic_write_text(output_dir / "labels.txt", "".join(f"{label}\n" for label in card["labels"]))
        log(f"wrote {path} ({len(onnx_bytes) / 2**20:.2f} MB, {name}) + {card_path(path).name} + labels.txt")
        cards[path] = card
    if failed:
        raise ParityFailed("; ".join(failed))
    return cards
