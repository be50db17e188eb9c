"""FP32 TFLite export: the app signature, builtin-only ops, Keras parity on real (demo) clips, the model card,
and the runtime's input lookup and (de)quantization."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from dataset import load_split, read_label_maps
from model_functional import build_model
from tf_env import tf
from tflite_export import export_tflite
from tflite_runtime import (INPUT_NAMES, OUTPUT_NAME, TFLiteModel, card_path, dequantize, find_inputs, quantize,
                            read_model_card)

# ops that break integer modes or need Flex; the export must avoid them (../shared/STACK.md rule 4)
UNWANTED_OPS = {"CAST", "GATHER", "GATHER_ND", "SQUARED_DIFFERENCE", "FLEX", "CUSTOM", "SELECT", "SELECT_V2"}


@pytest.fixture(scope="module")
def export(demo_root, demo_cfg, tmp_path_factory):
    """The reference-size model (untrained) exported to FP32 with parity checked on 12 demo clips."""
    tf.random.set_seed(3)
    model = build_model(demo_cfg)
    data = load_split(demo_root, "all", demo_cfg, max_samples=12)
    keypoints, masks, _ = data.padded(demo_cfg)
    path = tmp_path_factory.mktemp("export") / "final_model_fp32.tflite"
    card = export_tflite(model, demo_cfg, path, read_label_maps(demo_root)[1], mode="fp32",
                         parity_data=(keypoints, masks), training={"experiment_name": "test"})
    return model, path, card, keypoints, masks


def test_signature_names_order_shapes_and_dtypes(export, demo_cfg):
    _, path, _, _, _ = export
    model = TFLiteModel(path)
    inputs = model.interpreter.get_input_details()
    assert [d["name"] for d in inputs] == list(INPUT_NAMES) == ["keypoints", "attention_mask"]
    assert [d["shape"].tolist() for d in inputs] == [[1, 64, 65, 2], [1, 64]]
    assert all(d["dtype"] == np.float32 for d in inputs)
    output = model.interpreter.get_output_details()   # logits first: apps that read outputs by index
    assert [(d["name"], d["shape"].tolist()) for d in output] == [(OUTPUT_NAME, [1, demo_cfg["num_labels"]]),
                                                                   ("embedding", [1, demo_cfg["d_model"]])]


def test_parity_with_keras_on_real_clips(export):
    _, _, card, _, _ = export
    parity = card["parity"]
    assert parity["clips"] == 12 and parity["passed"]
    assert parity["max_abs_logit_diff"] <= 1e-4
    assert parity["argmax_identical"] == 12
    assert parity["embedding_passed"] and parity["max_abs_embedding_diff"] <= 1e-4


def test_runtime_matches_keras_clip_by_clip(export):
    model, path, _, keypoints, masks = export
    expected = model({"keypoints": keypoints, "attention_mask": masks}, training=False).numpy()
    got, seconds = TFLiteModel(path).predict(keypoints, masks)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got.dtype == np.float32 and (seconds > 0).all()


def test_only_builtin_quantization_friendly_ops(export):
    ops = set(export[2]["ops"])
    assert {"FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "GELU"} <= ops
    assert not ops & UNWANTED_OPS


def test_model_card_and_labels_file(export, demo_root, demo_cfg):
    _, path, card, _, _ = export
    assert read_model_card(path) == json.loads(card_path(path).read_text()) == card
    assert card["sequence_length"] == 64 and card["mode"] == "fp32"
    assert [i["name"] for i in card["inputs"]] == ["keypoints", "attention_mask"]
    assert card["joint_idx"] == demo_cfg["joint_idx"] and card["groups"] == demo_cfg["groups"]
    assert card["layout"] == 65 and card["config_path"] == demo_cfg["config_path"]
    id2label = read_label_maps(demo_root)[1]
    assert card["labels"] == [id2label[i] for i in range(len(id2label))]
    assert (path.parent / "labels.txt").read_text().split() == card["labels"]
    assert card["training"] == {"experiment_name": "test"}


def test_foreign_input_names_fall_back_to_rank():
    details = [{"name": "inputs_1", "shape": np.array([1, 64])}, {"name": "inputs", "shape": np.array([1, 64, 65, 2])}]
    keypoints, mask = find_inputs(details, "foreign.tflite")
    assert (keypoints["name"], mask["name"]) == ("inputs", "inputs_1")


def test_integer_io_is_quantized_and_dequantized():
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    values = np.array([-100.0, -1.0, 0.0, 1.26, 100.0], np.float32)
    q = quantize(values, detail)
    assert q.dtype == np.int8 and q.tolist() == [-128, -5, -3, 0, 127]
    np.testing.assert_allclose(dequantize(q, detail), [-62.5, -1.0, 0.0, 1.5, 65.0])
    float_detail = {"dtype": np.float32, "quantization": (0.0, 0)}
    np.testing.assert_array_equal(quantize(values, float_detail), values)


def test_missing_model_is_a_clear_error(tmp_path):
    from util import UserError
    with pytest.raises(UserError, match="not found"):
        TFLiteModel(tmp_path / "nope.tflite")


def test_runtime_imports_no_tensorflow():
    """Running a model (tflite_runtime, evaluation) must not load TensorFlow: an app-side process stays small."""
    code = "import sys, tflite_runtime, evaluation; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
