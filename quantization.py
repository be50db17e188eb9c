"""Quantization of SignBART: the data integer quantization is calibrated and checked on, where exports go, and
quantization-aware training (QAT) with tensorflow-model-optimization 0.8.1 that really fake-quantizes every Dense.

Data (PTQ and QAT)
  QuantizationData.load(data_path, cfg, n, seed)  a LOSO or full dataset folder: `train` (or `all`) for QAT and for
                                   `representative` = n seeded REAL training clips, normalized and zero-padded with
                                   their length masks, exactly as the exported model is fed; `held_out` = the `test`
                                   clips (parity, evaluation). Refuses a training split holding the held-out signer.

QAT
  quantize_for_training(model)     FP32 Functional model -> QAT model (weights copied). Top-level Dense layers
                                   (proj_x1, proj_y1, classifier) get tfmot's default 8-bit Dense config; the encoder
                                   and decoder layers get InnerDenseQuantizeConfig, which reaches the Dense layers
                                   inside them (q/k/v/out_proj of every attention, fc1, fc2). Each Dense kernel is
                                   fake-quantized (8-bit symmetric, per tensor) and each Dense output too (8-bit,
                                   moving-average range), as tfmot does for a plain Dense.
  build_qat_model(cfg)             the same graph with fresh weights: the rebuild half of save_weights/load_weights
  save_qat_weights / load_qat_model  a QAT model does not reload from .keras, and .h5 fails
                                   for the inner-Dense wrappers: its weights are saved, the
                                   graph rebuilt and the weights loaded back (exact)
  dense_kernels(model)             every Dense kernel variable of a (QAT or FP32) model, by path
  fake_quantized_kernels(model)    paths of the kernels that a FakeQuant op reads in the inference graph
  float_model_from_qat(qat, cfg)   plain SignBART carrying the QAT model's trained (float) weights
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset import SplitData, load_split
from decoder import DecoderLayer
from encoder import EncoderLayer
from layers import PACKAGE
from model_functional import build_model
from recipes import CALIBRATION_CLIPS, DEFAULT_SEED
from runs import loso_data_user
from tflite_runtime import MAX_PARITY_CLIPS
from util import UserError
from tf_env import keras, tf

import tensorflow_model_optimization as tfmot  # noqa: E402  after tf_env, which configures TensorFlow first

tfq = tfmot.quantization.keras
QAT_LAYER_TYPES = (EncoderLayer, DecoderLayer)   # custom layers whose inner Dense layers QAT must reach
FAKE_QUANT_OPS = ("FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel")


# ----------------------------------------------------------------------------------------------- data

def representative_clips(data: SplitData, cfg: dict, count: int = CALIBRATION_CLIPS,
                         seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of `count` clips, normalized and padded: (N, 64, K, 2), (N, 64)."""
    keypoints, masks, _ = data.padded(cfg)
    chosen = np.random.default_rng(seed).permutation(len(keypoints))[:count]
    return keypoints[chosen], masks[chosen]


@dataclass
class QuantizationData:
    """What quantizing a model trained on one dataset folder reads from it.

    train          the training split (`train`, or `all` for a full-dataset model): QAT fine-tuning data, and the
                   source of the calibration clips; never contains the held-out signer
    test           the held-out split (`test`), or None for a full-dataset model
    representative calibration clips (keypoints (N, 64, K, 2), masks (N, 64)) drawn from `train` with `seed`
    held_out       (keypoints, masks, labels) for parity and evaluation: `test`, else the first training clips
    """
    data_path: str
    train: SplitData
    test: SplitData | None
    representative: tuple[np.ndarray, np.ndarray]
    held_out: tuple[np.ndarray, np.ndarray, np.ndarray]
    seed: int

    @classmethod
    def load(cls, data_path, cfg: dict, calibration_clips: int = CALIBRATION_CLIPS,
             seed: int = DEFAULT_SEED):
        has_test = (Path(data_path) / "train").is_dir()
        train = load_split(data_path, "train" if has_test else "all", cfg)
        holdout = loso_data_user(data_path)
        if holdout and holdout in train.users:
            raise UserError(f"{Path(data_path) / train.split}: contains clips of the held-out signer "
                            f"{holdout}; rebuild the LOSO split")
        test = load_split(data_path, "test", cfg) if has_test else None
        keypoints, masks, labels = (test or train).padded(cfg)
        held_out = (keypoints[:MAX_PARITY_CLIPS], masks[:MAX_PARITY_CLIPS], labels[:MAX_PARITY_CLIPS])
        return cls(str(data_path), train, test, representative_clips(train, cfg, calibration_clips, seed), held_out,
                   seed)

    def parity_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.held_out[:2]

    def parity_labels(self) -> np.ndarray:
        return self.held_out[2]

    def provenance(self) -> dict:
        """What a model card records about the data a quantized model was made with."""
        held_out = self.test or self.train
        return {"data_path": self.data_path, "calibration_split": self.train.split,
                "calibration_clips": len(self.representative[0]), "calibration_seed": self.seed,
                "calibration_users": sorted(set(self.train.users)),
                "parity_split": held_out.split, "parity_users": sorted(set(held_out.users))}

    def describe(self) -> str:
        p = self.provenance()
        return (f"{self.data_path}: calibrating on {p['calibration_clips']} clips of {p['calibration_split']} "
                f"({len(p['calibration_users'])} signers, seed {self.seed}); parity on {len(self.held_out[0])} "
                f"{p['parity_split']} clips of {p['parity_users']}")


# ----------------------------------------------------------------------------------------------- QAT configs
def weight_quantizer():
    """tfmot's Dense kernel quantizer: 8-bit, symmetric, narrow range, one scale per tensor."""
    return tfq.quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)


def activation_quantizer():
    """tfmot's Dense output quantizer: 8-bit, asymmetric, range tracked by a moving average."""
    return tfq.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


@keras.utils.register_keras_serializable(package=PACKAGE)
class PrefixedQuantizer(tfq.quantizers.Quantizer):
    """A quantizer whose range variables carry a prefix. One wrapper holds the ranges of many inner Dense layers,
    and tfmot names them only 'kernel_min', 'post_activation_max', ...; the prefix keeps them apart."""

    def __init__(self, prefix: str, quantizer):
        self.prefix = prefix
        self.quantizer = quantizer if isinstance(quantizer, tfq.quantizers.Quantizer) else \
            keras.utils.deserialize_keras_object(quantizer, module_objects=vars(tfq.quantizers))

    def build(self, tensor_shape, name, layer):
        return self.quantizer.build(tensor_shape, f"{self.prefix}_{name}", layer)

    def __call__(self, inputs, training, weights, **kwargs):
        return self.quantizer(inputs, training, weights, **kwargs)

    def get_config(self):
        return {"prefix": self.prefix, "quantizer": keras.utils.serialize_keras_object(self.quantizer)}


def nested_dense(layer, prefix: str = "") -> list[tuple[str, keras.layers.Dense]]:
    """[(path, Dense)] of every Dense inside a custom layer, depth first, e.g. ('self_attn.q_proj', <Dense>)."""
    found = []
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{sub.name}"
        if isinstance(sub, keras.layers.Dense):
            found.append((path, sub))
        else:
            found += nested_dense(sub, f"{path}.")
    return found


@keras.utils.register_keras_serializable(package=PACKAGE)
class InnerDenseQuantizeConfig(tfq.QuantizeConfig):
    """Fake-quantizes the kernel and the output of every Dense nested in a custom layer (EncoderLayer,
    DecoderLayer), the way tfmot's default config does for a top-level Dense. The wrapper swaps each kernel for
    its fake-quantized tensor and each (linear) activation for a quantize-aware one before calling the layer."""

    def get_weights_and_quantizers(self, layer):
        return [(dense.kernel, PrefixedQuantizer(path, weight_quantizer())) for path, dense in nested_dense(layer)]

    def get_activations_and_quantizers(self, layer):
        return [(dense.activation, PrefixedQuantizer(path, activation_quantizer()))
                for path, dense in nested_dense(layer)]

    def set_quantize_weights(self, layer, quantize_weights):
        for (_, dense), kernel in zip(nested_dense(layer), quantize_weights, strict=True):
            dense.kernel = kernel

    def set_quantize_activations(self, layer, quantize_activations):
        for (_, dense), activation in zip(nested_dense(layer), quantize_activations, strict=True):
            dense.activation = activation

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


# ----------------------------------------------------------------------------------------------- QAT model
def annotate(layer):
    """clone_model hook: mark every layer that holds Dense weights for quantization."""
    if isinstance(layer, QAT_LAYER_TYPES):
        return tfq.quantize_annotate_layer(layer, InnerDenseQuantizeConfig())
    if isinstance(layer, keras.layers.Dense):
        return tfq.quantize_annotate_layer(layer)
    return layer


def quantize_for_training(model: keras.Model) -> keras.Model:
    """FP32 SignBART -> QAT SignBART with the same weights (tfmot quantize_apply clones them)."""
    with tfq.quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        return tfq.quantize_apply(annotated)


def build_qat_model(cfg: dict) -> keras.Model:
    """A freshly initialized QAT model with the structure load_weights expects."""
    return quantize_for_training(build_model(cfg))


def save_qat_weights(model: keras.Model, path) -> None:
    model.save_weights(str(path))


def load_qat_model(cfg: dict, path) -> keras.Model:
    """Rebuild the QAT graph and restore weights saved by save_qat_weights (exact round trip)."""
    model = build_qat_model(cfg)
    model.load_weights(str(path))
    return model


# ----------------------------------------------------------------------------------------------- inspection
def dense_kernels(model: keras.Model) -> dict[str, tf.Variable]:
    """{path: kernel variable} of every Dense of a QAT or FP32 model, e.g. 'encoder_layer_0/self_attn/q_proj'.
    Only Dense layers have a `kernel` in SignBART; the variable names are the same in both models."""
    suffix = "/kernel:0"
    return {v.name[:-len(suffix)]: v for v in model.trainable_variables if v.name.endswith(suffix)}


def fake_quantized_kernels(model: keras.Model) -> set[str]:
    """Paths (as in dense_kernels) of the Dense kernels read by a FakeQuant op in the traced inference graph."""
    specs = {name: tf.TensorSpec(tensor.shape, tensor.dtype, name=name) for name, tensor in model.input.items()}
    graph = tf.function(lambda inputs: model(inputs, training=False)).get_concrete_function(specs).graph
    captured = {id(internal): external for external, internal in graph.captures}
    by_handle = {id(var.handle): path for path, var in dense_kernels(model).items()}
    found = set()
    for op in graph.get_operations():
        if op.type not in FAKE_QUANT_OPS:
            continue
        source = op.inputs[0]
        while source.op.type in ("Identity", "ReadVariableOp"):
            source = source.op.inputs[0]
        external = captured.get(id(source))
        if external is not None and id(external) in by_handle:
            found.add(by_handle[id(external)])
    return found


# ----------------------------------------------------------------------------------------------- float copy
def float_model_from_qat(qat_model: keras.Model, cfg: dict) -> keras.Model:
    """A plain SignBART carrying the QAT model's trained weights (matched by variable name; every one must match),
    for conversions that quantize the weights themselves (dynamic range)."""
    model = build_model(cfg)
    trained = {v.name: v for v in qat_model.variables}
    missing = [v.name for v in model.variables if v.name not in trained]
    if missing:
        raise ValueError(f"QAT model lacks {len(missing)} weight(s) of the float model, e.g. {missing[:3]}")
    for variable in model.variables:
        variable.assign(trained[variable.name])
    return model
