"""Quantization-aware training: FakeQuant ops sit on every Dense kernel (counted independently of quantization.py),
QAT weights round-trip exactly through save_weights + rebuild + load_weights, the QAT script validates on training
signers only, and exports qat_dynamic_int8.tflite and a qat_int8.tflite whose weights really are int8, each with
the embedding as its second output."""
import json

import numpy as np
import pytest

import run_qat_export
import train_loso_functional_qat
from model_functional import load_model
from quantization import fake_quantized_kernels, load_qat_model, quantize_for_training, save_qat_weights
from tf_env import keras
from tflite_runtime import EMBEDDING_MIN_COSINE, TFLiteModel


def dense_layer_paths(layer, prefix=""):
    """'/'-joined paths of every keras Dense inside a plain (FP32) model, found by walking the layer tree."""
    paths = []
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{sub.name}"
        paths += [path] if isinstance(sub, keras.layers.Dense) else dense_layer_paths(sub, f"{path}/")
    return paths


@pytest.fixture(scope="module")
def models(trained_fold):
    """(FP32, QAT) models of the trained fold, built once (a QAT build takes seconds): the first test only reads
    them, the round trip then trains the QAT one."""
    fp32 = load_model(trained_fold.h5, trained_fold.cfg)
    return fp32, quantize_for_training(fp32)


def test_every_dense_kernel_is_fake_quantized(models):
    fp32, qat = models
    expected = set(dense_layer_paths(fp32))
    assert len(expected) == 3 + 6 + 10   # proj_x1, proj_y1, classifier; encoder layer 6; decoder layer 10 (tiny)
    assert {"proj_x1", "classifier", "encoder_layer_0/fc1", "decoder_layer_0/encoder_attn/out_proj"} <= expected
    assert fake_quantized_kernels(qat) == expected
    assert fake_quantized_kernels(fp32) == set()   # the check does see the difference


def test_qat_weights_round_trip_exactly(trained_fold, models, tmp_path):
    cfg = trained_fold.cfg
    model = models[1]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    inputs = {"keypoints": rng.uniform(0, 1, (8, 64, 65, 2)).astype(np.float32),
              "attention_mask": np.ones((8, 64), np.float32)}
    model.fit(inputs, rng.integers(0, 10, 8), batch_size=4, epochs=1, verbose=0)  # moves weights and ranges
    save_qat_weights(model, tmp_path / "qat_model_weights.h5")
    rebuilt = load_qat_model(cfg, tmp_path / "qat_model_weights.h5")
    original = {v.name: v.numpy() for v in model.variables}
    restored = {v.name: v.numpy() for v in rebuilt.variables}
    assert original.keys() == restored.keys() and len(original) > 100
    assert all(np.array_equal(original[name], restored[name]) for name in original)
    assert any(name.endswith("post_activation_max:0") and value != 6.0 for name, value in restored.items())
    assert np.array_equal(model.predict(inputs, verbose=0), rebuilt.predict(inputs, verbose=0))


def test_qat_run_validates_on_training_signers_and_records_the_run(qat_fold):
    _, record = qat_fold
    assert record["val_users"] == ["user02"] and record["fit_users"] == ["user03", "user04"]
    assert record["fake_quant"] == {"dense_kernels": 19, "fake_quantized": 19}
    assert record["seed"] == 1 and record["epochs_run"] == 2 and record["monitor"] == "val_loss"
    assert record["test"]["samples"] == 30


def test_qat_exports_are_integer_and_match_their_keras_models(qat_fold):
    out, _ = qat_fold
    for name in train_loso_functional_qat.QAT_FILES.values():
        card = json.loads((out / name).with_suffix(".json").read_text())
        parity = card["parity"]  # the export rule: Keras's class on >= 95 % of the clips Keras decides
        assert parity["passed"] and parity["decided_clips"] >= 5, name
        assert parity["decided_identical"] >= 0.95 * parity["decided_clips"], name
        assert card["training"]["qat_fit_users"] == ["user03", "user04"]
        # the second output, the embedding (enrollment.py), beside the logits at index 0, within its bound
        outputs = TFLiteModel(out / name).interpreter.get_output_details()
        assert [(o["name"], o["shape"][-1]) for o in outputs] == [("logits", 10), ("embedding", 32)], name
        assert card["parity"]["embedding_passed"], name
        assert card["parity"]["min_embedding_cosine"] >= EMBEDDING_MIN_COSINE[card["mode"]], name
    details = TFLiteModel(out / "qat_int8.tflite").interpreter.get_tensor_details()
    dtypes = [np.dtype(d["dtype"]).name for d in details]
    assert dtypes.count("int8") > 100 and dtypes.count("float32") <= 4   # float only at the I/O (2 + 2)


def test_validation_on_the_held_out_signer_is_refused(trained_fold, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_loso_functional_qat.main([
            "--config_path", str(trained_fold.config_path), "--data_path", str(trained_fold.data_path),
            "--checkpoint", str(trained_fold.h5), "--output_dir", str(tmp_path), "--val_users", "user01"])
    assert exit_info.value.code == 2 and "user01" in capsys.readouterr().err


def test_quick_demo_exports_three_models(tiny_config_path, tmp_path):
    run_qat_export.main(["--config_path", str(tiny_config_path), "--output_dir", str(tmp_path), "--clips", "16",
                         "--save_keras"])
    for name in (*run_qat_export.DEMO_EXPORTS, "signbart_fp32.h5", "signbart_qat_weights.h5"):
        assert (tmp_path / name).is_file(), name
