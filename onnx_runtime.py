"""Running a .onnx model in ONNX Runtime, with the methods of tflite_runtime.TFLiteModel, so that every
consumer of a .tflite takes a .onnx the same way (model_runtime.open_model picks by suffix).

    model = ONNXModel("model_fp32.onnx")                    # one intra-op thread by default, CPU
    logits = model(keypoints, mask)                         # (1, 64, K, 2), (1, 64) float32 -> (1, C)
    logits, seconds = model.predict(keypoints, masks)       # N clips, one run each; seconds = run() alone
    logits, embedding, seconds = model.run_with_embedding(keypoints, mask)
    logits, embeddings, seconds = model.predict_with_embedding(keypoints, masks)

The exported graph (onnx_convert.py) has the app signature of tflite_export.py with a dynamic batch axis:
inputs `keypoints` [batch, 64, K, 2] and `attention_mask` [batch, 64] float32, outputs `logits` [batch, C]
(index 0) and `embedding` [batch, D] (index 1), float32 in every mode (the int8 model quantizes inside, QDQ).
Inputs and outputs are found by these names (a foreign model: inputs by rank, output 0 = logits), as
TFLiteModel finds them. The tensor descriptions (`keypoints_input`, `output`, ...) have TFLiteModel's keys:
name, shape (batch 1), shape_signature (-1 for a dynamic axis), dtype, quantization (0.0, 0): float I/O.

Imports numpy and onnxruntime only: no TensorFlow (the app path and a server stay light).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tflite_runtime import EMBEDDING_NAME, OUTPUT_NAME, OUTPUT_NAMES, ClipModel, find_inputs
from util import UserError

ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def runtime_version() -> str:
    """'onnxruntime 1.32.0': the package that runs the model."""
    import onnxruntime
    return f"onnxruntime {onnxruntime.__version__}"


def first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def session(model, num_threads: int = 1):
    """An onnxruntime.InferenceSession on the CPU with `num_threads` intra-op threads (one inter-op
    thread: the graph runs its nodes in order), all graph optimizations, no log lines below errors."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def describe(arg) -> dict:
    """An onnxruntime NodeArg -> TFLiteModel's tensor description (a symbolic axis: 1, signature -1)."""
    dims = [d if isinstance(d, int) else -1 for d in arg.shape]
    if arg.type not in ONNX_TYPES:
        raise UserError(f"unsupported ONNX tensor type {arg.type} of {arg.name}")
    return {"name": arg.name, "index": arg.name, "shape": np.array([d if d > 0 else 1 for d in dims]),
            "shape_signature": np.array(dims), "dtype": ONNX_TYPES[arg.type], "quantization": (0.0, 0)}


class ONNXModel(ClipModel):
    """A loaded .onnx classifier with the app signature (onnx_convert.py), TFLiteModel's interface."""

    def __init__(self, model, num_threads: int = 1):
        """model: a .onnx path or the model's bytes."""
        if isinstance(model, (bytes, bytearray)):
            self.source, source = "<in-memory model>", bytes(model)
        else:
            self.source, source = str(model), str(model)
            if not Path(model).is_file():
                raise UserError(f"ONNX model not found: {model}")
        try:
            self.session = session(source, num_threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
            raise UserError(f"{self.source}: not a loadable ONNX model ({first_line(e)})") from None
        self.keypoints_input, self.mask_input = find_inputs(
            [describe(a) for a in self.session.get_inputs()], self.source)
        outputs = [describe(a) for a in self.session.get_outputs()]
        by_name = {d["name"]: d for d in outputs}
        self.output = by_name.get(OUTPUT_NAME, outputs[0])
        self.embedding_output = by_name.get(EMBEDDING_NAME) or (
            outputs[OUTPUT_NAMES.index(EMBEDDING_NAME)] if len(outputs) == len(OUTPUT_NAMES) else None)

    integer_io = False  # the exports take and give float32 (the int8 model quantizes inside)

    @property
    def has_embedding(self) -> bool:
        return self.embedding_output is not None

    def _check_length(self, length: int) -> None:
        expected = int(self.keypoints_input["shape_signature"][1])
        if expected not in (-1, length):
            raise UserError(f"{self.source}: the model takes {expected} frames, got {length}")

    def _run(self, names: list[str], keypoints: np.ndarray, mask: np.ndarray) -> tuple[list, float]:
        self._check_length(keypoints.shape[1])
        feed = {self.keypoints_input["name"]: np.asarray(keypoints, dtype=np.float32),
                self.mask_input["name"]: np.asarray(mask, dtype=np.float32)}
        start = time.perf_counter()
        out = self.session.run(names, feed)
        return [np.asarray(o, dtype=np.float32) for o in out], time.perf_counter() - start

    def run(self, keypoints: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
        """One clip: keypoints (1, T, K, 2), mask (1, T) float -> (logits (1, C) float32, seconds in run())."""
        (logits,), seconds = self._run([self.output["name"]], keypoints, mask)
        return logits, seconds

    def run_with_embedding(self, keypoints: np.ndarray,
                           mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One clip -> (logits (1, C), embedding (1, D), both float32, seconds in run())."""
        if not self.has_embedding:
            raise UserError(f"{self.source}: the model has no '{EMBEDDING_NAME}' output")
        (logits, embedding), seconds = self._run([self.output["name"], self.embedding_output["name"]],
                                                 keypoints, mask)
        return logits, embedding, seconds

    def io_description(self, which: str) -> list[dict]:
        """Names, shapes (-1: the dynamic batch axis), dtypes and quantization of the 'inputs' or 'outputs'."""
        outputs = [self.output] + ([self.embedding_output] if self.has_embedding else [])
        details = [self.keypoints_input, self.mask_input] if which == "inputs" else outputs
        return [{"name": d["name"], "shape": d["shape_signature"].tolist(), "dtype": np.dtype(d["dtype"]).name,
                 "quantization": {"scale": 0.0, "zero_point": 0}} for d in details]
