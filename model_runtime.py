"""The one place that picks a model's runtime by its file's suffix: a .onnx runs in ONNX Runtime
(onnx_runtime.ONNXModel), anything else in TFLite (tflite_runtime.TFLiteModel). Both have the same methods
(__call__, run, predict, run_with_embedding, predict_with_embedding, io_description) and tensor
descriptions, so every consumer (evaluation, video recognition, enrollment, the benchmarks) takes either.

    model = open_model("model_fp32.onnx")          # or a .tflite; num_threads=1 by default
    logits, seconds = model.predict(keypoints, masks)

No TensorFlow is imported (the app path runs through here).
"""
from __future__ import annotations

from pathlib import Path

from runs import ONNX_SUFFIX
from tflite_runtime import TFLiteModel

MODEL_SUFFIXES = (".tflite", ONNX_SUFFIX)   # the model files the scripts take


def is_onnx(model_path) -> bool:
    return Path(model_path).suffix == ONNX_SUFFIX


def open_model(model_path, num_threads: int = 1):
    """A loaded model (TFLiteModel or onnx_runtime.ONNXModel) for a .tflite or .onnx path."""
    if is_onnx(model_path):
        from onnx_runtime import (
            ONNXModel,  # here: onnxruntime is only imported for a .onnx
        )
        return ONNXModel(model_path, num_threads=num_threads)
    return TFLiteModel(model_path, num_threads=num_threads)
