"""ONNX export and ONNX Runtime: export + parity on the tiny trained fold, own model cards, a dynamic batch axis, a
file that does not load (one line), a failed check (the file is not kept), and the evaluation scripts giving a
.onnx the same accuracy as the .tflite of the same model. onnxruntime, onnx and tf2onnx are pinned
requirements: nothing here skips."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runs import card_path


@pytest.fixture(scope="module")
def onnx_fold(trained_fold, tmp_path_factory):
    """onnx_export.py's CLI on the tiny fold (both modes, 16 calibration clips), into a folder that already holds the
    fold's FP32 .tflite and its card (as exports/ptq/<user>/ does): that folder."""
    import onnx_export
    out = tmp_path_factory.mktemp("onnx")
    shutil.copy(trained_fold.tflite, out / "model_fp32.tflite")
    shutil.copy(card_path(trained_fold.tflite), out / "model_fp32.json")
    onnx_export.main(["--config_path", str(trained_fold.config_path), "--checkpoint", str(trained_fold.h5),
                      "--data_path", str(trained_fold.data_path), "--output_dir", str(out),
                      "--num_calibration_samples", "16", "--modes", "all"])
    return out


def test_export_is_checked_and_every_file_has_its_own_card(onnx_fold, trained_fold):
    tflite_card = json.loads((onnx_fold / "model_fp32.json").read_text())
    assert tflite_card == json.loads(card_path(trained_fold.tflite).read_text())  # untouched
    k, classes = 65, trained_fold.cfg["num_labels"]
    for mode in ("onnx-fp32", "onnx-int8"):
        path = onnx_fold / f"model_{mode[5:]}.onnx"
        card = json.loads(card_path(path).read_text())
        assert card_path(path).name == f"{path.name}.json" and card["mode"] == mode
        assert card["size_bytes"] == path.stat().st_size and "ONNX Runtime" in card["runtime_support"]
        assert [(i["name"], i["shape"]) for i in card["inputs"]] == [("keypoints", [-1, 64, k, 2]),
                                                                   ("attention_mask", [-1, 64])]
        assert [o["name"] for o in card["outputs"]] == ["logits", "embedding"]
        assert card["outputs"][0]["shape"] == [-1, classes] and card["personalization"]["output_index"] == 1
        assert card["parity"]["passed"] and card["parity"]["clips"] == 30  # the held-out signer's clips
        assert "Erfc" not in card["ops"] and "Erf" in card["ops"]
    assert json.loads(card_path(onnx_fold / "model_fp32.onnx").read_text())["parity"]["max_abs_logit_diff"] <= 1e-4
    assert "QuantizeLinear" in json.loads(card_path(onnx_fold / "model_int8.onnx").read_text())["ops"]
    assert (onnx_fold / "labels.txt").read_text().split() == tflite_card["labels"]


def test_onnx_matches_the_tflite_and_takes_a_batch(onnx_fold, trained_fold):
    from evaluation import load_eval_set
    from model_runtime import open_model
    from onnx_runtime import ONNXModel
    clips = load_eval_set(trained_fold.data_path, "test", trained_fold.cfg)
    onnx = open_model(onnx_fold / "model_fp32.onnx")
    assert isinstance(onnx, ONNXModel)
    logits, embeddings, _ = onnx.predict_with_embedding(clips.keypoints, clips.masks)
    expected, expected_embeddings, _ = open_model(trained_fold.tflite).predict_with_embedding(clips.keypoints,
                                                                                              clips.masks)
    assert np.abs(logits - expected).max() <= 1e-4 and np.abs(embeddings - expected_embeddings).max() <= 1e-4
    batched = onnx.session.run(["logits"], {"keypoints": clips.keypoints[:5], "attention_mask": clips.masks[:5]})[0]
    assert batched.shape == (5, trained_fold.cfg["num_labels"]) and np.abs(batched - logits[:5]).max() <= 1e-5


def test_evaluation_gives_the_onnx_the_tflite_accuracy(onnx_fold, trained_fold, tmp_path):
    import evaluate_tflite_single
    import test_tflite_models
    data = ["--data_path", str(trained_fold.data_path)]
    results = {name: evaluate_tflite_single.main(data + ["--tflite_path", str(path)])
               for name, path in (("tflite", trained_fold.tflite), ("onnx", onnx_fold / "model_fp32.onnx"))}
    assert results["onnx"]["mode"] == "onnx-fp32" and results["onnx"]["samples"] == 30
    assert results["onnx"]["top1"] == results["tflite"]["top1"]
    assert results["onnx"]["predictions"] == results["tflite"]["predictions"]
    rows = test_tflite_models.main(data + ["--fp32_tflite", str(trained_fold.tflite),
                                           "--tflite", f"ONNX-fp32={onnx_fold / 'model_fp32.onnx'}",
                                           "--tflite", f"ONNX-int8={onnx_fold / 'model_int8.onnx'}"])
    assert [r["model"] for r in rows] == ["FP32", "ONNX-fp32", "ONNX-int8"]
    assert rows[1]["agreement_pct"] == 100.0 and rows[1]["top1_pct"] == rows[0]["top1_pct"]


def test_recognizer_runs_a_onnx(onnx_fold, trained_fold):
    from dataset import list_split, load_sample
    from video_recognition import Recognizer
    recognizer = Recognizer(onnx_fold / "model_fp32.onnx")
    raw = load_sample(list_split(trained_fold.data_path, "test")[0])["keypoints"]
    prediction = recognizer.classify(np.asarray(raw, dtype=np.float32))
    assert prediction.probabilities.shape == (trained_fold.cfg["num_labels"],)
    assert recognizer.labels == json.loads(card_path(onnx_fold / "model_fp32.onnx").read_text())["labels"]


def test_a_file_that_does_not_load_is_one_line(tmp_path, trained_fold, capsys):
    import evaluate_tflite_single
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_tflite_single.main(["--data_path", str(trained_fold.data_path), "--tflite_path", str(broken),
                                     "--config_path", str(trained_fold.config_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1
    assert "broken.onnx: not a loadable ONNX model" in err


def test_an_unconverted_op_fails_the_export_in_one_line():
    """What tf2onnx 1.17 does to TF 2.19's exact GELU without onnx_convert's handler: an Erfc node, "converted"."""
    import onnx
    from onnx import TensorProto, helper

    from onnx_convert import load_checked, undefined_ops
    from util import RunFailed, one_line
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Erfc", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert undefined_ops(model) == ["Erfc"]
    with pytest.raises(RunFailed) as error:
        load_checked(model.SerializeToString(), Path("model_fp32.onnx"), k=65)
    line = one_line(error.value)
    assert line.startswith("model_fp32.onnx: the converted model does not load in onnxruntime") and "Erfc" in line
    assert "\n" not in line
    del onnx


def test_a_failed_check_keeps_no_file(onnx_fold, trained_fold, tmp_path, monkeypatch):
    """An int8 model below its agreement bound is not written (an older one is removed) and the step fails in one
    line with the measured figures. The fp32 bytes are the fixture's (no second conversion)."""
    import onnx_convert
    from model_functional import load_model
    from quantization import QuantizationData
    from tflite_export import ParityFailed
    from util import one_line
    out = tmp_path / "exports"
    out.mkdir()
    (out / "model_int8.onnx").write_bytes(b"older")
    monkeypatch.setattr(onnx_convert, "convert_fp32", lambda model, cfg: (onnx_fold / "model_fp32.onnx").read_bytes())
    monkeypatch.setitem(onnx_convert.PARITY_MIN_AGREEMENT, "onnx-int8", 1.01)  # no model can pass
    data = QuantizationData.load(trained_fold.data_path, trained_fold.cfg, 8, 0)
    with pytest.raises(ParityFailed) as error:
        onnx_convert.export_onnx(load_model(trained_fold.h5, trained_fold.cfg), trained_fold.cfg, out,
                                 {i: f"G{i + 1:02d}" for i in range(trained_fold.cfg["num_labels"])}, ["int8"],
                                 parity_data=data.parity_inputs(), representative_data=data.representative,
                                 log=lambda line: None)
    line = one_line(error.value)
    assert "model_int8.onnx: the onnx-int8 export failed its parity check and was not kept" in line
    assert "argmax identical" in line and "\n" not in line
    assert not (out / "model_int8.onnx").exists() and not card_path(out / "model_int8.onnx").exists()


def test_the_run_tree_names_the_onnx_files():
    from runs import (
        LOSO_MODEL_MODES,
        ONNX_FILES,
        parse_onnx_modes,
        prototypes_path,
        run_paths,
    )
    from util import UserError
    assert set(ONNX_FILES) <= set(LOSO_MODEL_MODES)
    paths = run_paths("demo", "loso", "out")
    assert paths.loso_model("user01", "onnx-int8") == paths.export_dir("ptq", "", "user01") / "model_int8.onnx"
    assert card_path("a/model_fp32.onnx").name == "model_fp32.onnx.json" != card_path("a/model_fp32.tflite").name
    assert prototypes_path("a/model_fp32.onnx").name == "model_fp32.onnx.prototypes.json"
    assert parse_onnx_modes("all") == ["fp32", "int8"]
    with pytest.raises(UserError, match="unknown mode"):
        parse_onnx_modes("fp16")
