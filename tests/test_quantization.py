"""Post-training quantization: every TFLite mode converts, runs and meets its parity threshold on the demo model;
integer models really hold integer tensors; int8 is <= 0.3 x FP32 at the reference width; calibration clips are
real, padded training clips of the training signers only; export folders and missing checkpoints are exact."""
import json
from pathlib import Path

import numpy as np
import pytest

import ptq_export
import ptq_export_batch
from dataset import load_split
from model_functional import build_model
from preprocessing import length_mask
from quantization import QuantizationData
from runs import export_dir_for
from tf_env import tf
from tflite_export import convert
from tflite_runtime import TFLiteModel

MAX_LOGIT_DIFF = {"fp32": 1e-4, "float16": 1e-2}          # the thresholds
MIN_AGREEMENT = {"dynamic": 0.95, "int8": 0.95, "int8_io": 0.95, "int16x8": 0.95}
UNWANTED_OPS = {"FLEX", "CUSTOM", "CAST", "GATHER_ND"}


@pytest.fixture(scope="module")
def ptq_dir(ptq_exports):
    """All six modes of the trained demo fold, through the CLI with its default output folder (conftest)."""
    assert ptq_exports.parts[-5:] == ("demo", "loso", "exports", "ptq", "user01")  # the run tree's PTQ folder
    return ptq_exports


def tensor_dtypes(path) -> dict[str, int]:
    """{dtype name: number of tensors} of a .tflite model."""
    counts = {}
    for detail in TFLiteModel(path).interpreter.get_tensor_details():
        name = np.dtype(detail["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("mode", list(ptq_export.PTQ_FILES))
def test_every_mode_converts_runs_and_meets_parity(ptq_dir, trained_fold, mode):
    path = ptq_dir / ptq_export.PTQ_FILES[mode]
    card = json.loads(path.with_suffix(".json").read_text())
    parity = card["parity"]
    assert card["mode"] == mode and parity["passed"] and parity["clips"] == 30  # the held-out signer's clips
    if mode in MAX_LOGIT_DIFF:
        assert parity["max_abs_logit_diff"] <= MAX_LOGIT_DIFF[mode]
    else:
        assert parity["argmax_agreement"] >= MIN_AGREEMENT[mode]
    assert card["size_bytes"] == path.stat().st_size
    assert not UNWANTED_OPS & set(card["ops"])
    assert card["training"]["calibration_users"] == ["user02", "user03", "user04"]

    keypoints, masks, _ = load_split(trained_fold.data_path, "test", trained_fold.cfg, max_samples=2).padded(
        trained_fold.cfg)
    logits = TFLiteModel(path)(keypoints[:1], masks[:1])
    assert logits.shape == (1, trained_fold.cfg["num_labels"]) and np.isfinite(logits).all()


def test_integer_modes_hold_integer_tensors(ptq_dir):
    int8, int8_io, int16x8 = (tensor_dtypes(ptq_dir / ptq_export.PTQ_FILES[m]) for m in ("int8", "int8_io", "int16x8"))
    assert int8["int8"] > 100 and int8.get("float32", 0) <= 4      # only the float I/O (2 inputs, 2 outputs)
    assert int8_io.get("float32", 0) == 0
    assert int16x8["int16"] > 100 and int16x8["int8"] > 10          # int16 activations, int8 weights
    model = TFLiteModel(ptq_dir / ptq_export.PTQ_FILES["int8_io"])
    assert model.integer_io and model.keypoints_input["dtype"] == np.int8


def test_int8_file_is_under_03_of_fp32_at_reference_width(demo_root, demo_cfg):
    """The tiny test model is dominated by file overhead; d_model 144 (1+1 layers for speed) is not."""
    cfg = demo_cfg | {"encoder_layers": 1, "decoder_layers": 1}
    tf.random.set_seed(0)
    model = build_model(cfg)
    keypoints, masks, _ = load_split(demo_root, "all", cfg, max_samples=16).padded(cfg)
    sizes = {mode: len(convert(model, cfg, mode, (keypoints, masks))) for mode in ("fp32", "int8")}
    assert sizes["int8"] <= 0.3 * sizes["fp32"]


def test_calibration_clips_are_real_padded_training_clips(trained_fold):
    data = QuantizationData.load(trained_fold.data_path, trained_fold.cfg, calibration_clips=40, seed=7)
    keypoints, masks = data.representative
    assert keypoints.shape == (40, 64, 65, 2) and masks.shape == (40, 64)
    assert "user01" not in data.train.users and set(data.test.users) == {"user01"}
    lengths = masks.sum(axis=1).astype(int)
    assert all(np.array_equal(m, length_mask(n)) for m, n in zip(masks, lengths))
    assert all(not keypoints[i, n:].any() and keypoints[i, :n].any() for i, n in enumerate(lengths))
    train_keypoints = data.train.padded(trained_fold.cfg)[0]
    assert all(any(np.array_equal(k, t) for t in train_keypoints) for k in keypoints)  # unaugmented training clips
    again = QuantizationData.load(trained_fold.data_path, trained_fold.cfg, calibration_clips=40, seed=7)
    assert np.array_equal(again.representative[0], keypoints)


def test_export_folders_follow_the_run_tree():
    root = Path("outputs").resolve()
    ckpt = root / "arabic_asl" / "loso" / "checkpoints"
    assert export_dir_for(ckpt / "arabic_asl_LOSO_user01" / "final_model.h5", "ptq") == \
        root / "arabic_asl" / "loso" / "exports" / "ptq" / "user01"
    assert export_dir_for(ckpt / "hands42_arabic_asl_LOSO_user08" / "final_model.h5", "qat") == \
        root / "arabic_asl" / "loso" / "exports" / "qat_hands42" / "user08"
    full = root / "arabic_asl" / "full" / "checkpoints" / "arabic_asl_full" / "final_model.h5"
    assert export_dir_for(full, "qat") == root / "arabic_asl" / "full" / "exports" / "qat"


def test_missing_checkpoint_is_an_error_naming_the_path(trained_fold, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "final_model.h5"
    with pytest.raises(SystemExit) as exit_info:
        ptq_export.main(["--config_path", str(trained_fold.config_path), "--checkpoint", str(missing),
                         "--data_path", str(trained_fold.data_path), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and str(missing) in capsys.readouterr().err


def test_batch_exports_each_fold_and_reports_missing_ones(trained_fold, tmp_path, capsys):
    out = tmp_path / "ptq"
    code = ptq_export_batch.main([
        "--config_path", str(trained_fold.config_path), "--base_data_path", str(trained_fold.base_data_path),
        "--holdouts", "user01,user02", "--dataset_name", "demo", "--output_root", str(trained_fold.output_root),
        "--output_base_dir", str(out), "--modes", "dynamic"])
    assert code == 1                                                   # user02 was never trained
    assert (out / "user01" / "model_dynamic_int8.tflite").is_file() and not (out / "user02").exists()
    expected = trained_fold.output_root / "demo" / "loso" / "checkpoints" / "demo_LOSO_user02" / "final_model.h5"
    assert str(expected) in capsys.readouterr().out


def test_a_checkpoint_of_another_model_or_a_corrupt_record_is_one_line(trained_fold, tmp_path, capsys):
    import shutil
    ckpt = tmp_path / "checkpoints" / "x"
    ckpt.mkdir(parents=True)
    shutil.copy(trained_fold.h5, ckpt / "final_model.h5")
    (ckpt / "metadata.json").write_text("{cut off")
    argv = ["--config_path", str(trained_fold.config_path), "--checkpoint", str(ckpt / "final_model.h5"),
            "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        ptq_export.main(argv)
    assert "metadata.json: training metadata is not valid JSON" in capsys.readouterr().err
    (ckpt / "final_model.h5").write_bytes(b"not an h5 file")
    with pytest.raises(SystemExit) as exit_info:
        ptq_export.main([*argv, "--data_path", str(trained_fold.data_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {ckpt / 'final_model.h5'}: cannot load its weights into the model of")
