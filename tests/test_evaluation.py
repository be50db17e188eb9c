"""Evaluation: metrics against independent computations, and the three evaluation scripts on a tiny trained model
(float and integer I/O), including their error messages."""
import csv
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

import metrics
import model_functional
from dataset import load_sample, load_split, read_label_maps


# ----------------------------------------------------------------------------------------------- helpers
def independent_predictions(tflite_path, data_path, cfg, split="test"):
    """Argmax of the model on every clip, computed here with the interpreter directly (manual (de)quantization)."""
    from ai_edge_litert.interpreter import Interpreter
    keypoints, masks, labels = load_split(data_path, split, cfg).padded(cfg)
    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    output = interpreter.get_output_details()[0]

    def to_input(x, d):
        if d["dtype"] == np.float32:
            return x.astype(np.float32)
        scale, zero = d["quantization"]
        return np.clip(np.round(x / scale) + zero, -128, 127).astype(d["dtype"])

    predictions = []
    for kp, mask in zip(keypoints, masks):
        interpreter.set_tensor(inputs["keypoints"]["index"], to_input(kp[None], inputs["keypoints"]))
        interpreter.set_tensor(inputs["attention_mask"]["index"], to_input(mask[None], inputs["attention_mask"]))
        interpreter.invoke()
        out = interpreter.get_tensor(output["index"]).astype(np.float32)
        if output["dtype"] != np.float32:
            scale, zero = output["quantization"]
            out = (out - zero) * scale
        predictions.append(int(out.argmax()))
    return np.array(predictions), labels


# ----------------------------------------------------------------------------------------------- metrics
def test_metrics_match_independent_computations():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(200, 7)), rng.integers(0, 7, 200)
    predictions = logits.argmax(1)
    top3 = np.mean([labels[i] in sorted(range(7), key=lambda c: -logits[i, c])[:3] for i in range(200)])
    assert metrics.topk_accuracy(logits, labels, 1) == pytest.approx(np.mean(predictions == labels))
    assert metrics.topk_accuracy(logits, labels, 3) == pytest.approx(top3)
    assert metrics.topk_accuracy(logits, labels, 50) == 1.0
    cm = metrics.confusion_matrix(labels, predictions, 7)
    assert cm.sum() == 200 and cm[2, 5] == np.sum((labels == 2) & (predictions == 5))
    per_class = metrics.per_class_accuracy(cm)
    assert per_class[4] == pytest.approx(np.mean(predictions[labels == 4] == 4))
    assert np.isnan(metrics.per_class_accuracy(metrics.confusion_matrix([0, 0], [0, 1], 3))[2])
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert metrics.mean_cross_entropy(logits, labels) == pytest.approx(-log_probs[np.arange(200), labels].mean())
    assert metrics.agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75


def test_mean_std_is_sample_std_and_latency_in_ms():
    values = [91.0, 95.5, 93.0]
    mean, std, n = metrics.mean_std(values + [None, float("nan")])
    assert (mean, n) == (pytest.approx(statistics.mean(values)), 3) and std == pytest.approx(statistics.stdev(values))
    assert np.isnan(metrics.mean_std([5.0])[1]) and metrics.mean_std([])[2] == 0
    summary = metrics.latency_summary([0.001, 0.002, 0.003, 0.010])
    assert summary["median_ms"] == pytest.approx(2.5) and summary["clips"] == 4
    assert summary["p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 10], 90))


def test_aggregate_over_seeds_and_holdouts():
    records = [{"seed": s, "holdout": h, "model": "FP32", "acc": a}
               for s, h, a in [("1", "u1", 90), ("1", "u2", 80), ("2", "u1", 94), ("2", "u2", 84)]]
    rows = {r["holdout"]: r for r in metrics.aggregate(records, ("model",), ("acc",))}
    assert rows["u1"]["acc"] == 92 and rows["u1"]["acc_std"] == pytest.approx(statistics.stdev([90, 94]))
    assert rows["ALL"]["acc"] == 87 and rows["ALL"]["acc_std"] == pytest.approx(statistics.stdev([85, 89]))
    assert rows["ALL"]["n"] == 2 and rows["ALL"]["std_over"].startswith("seeds")
    single = {r["holdout"]: r for r in metrics.aggregate(records[:2], ("model",), ("acc",))}
    assert single["ALL"]["acc_std"] == pytest.approx(statistics.stdev([90, 80]))
    assert single["ALL"]["std_over"] == "holdouts"


def test_flops_count_covers_the_analytic_matmuls(tiny_cfg):
    c = tiny_cfg
    t, k, d, classes = 64, len(c["joint_idx"]), c["d_model"], c["num_labels"]
    dense = 2 * t * (2 * k * d + c["encoder_layers"] * (4 * d * d + 2 * d * c["encoder_ffn_dim"])
                     + c["decoder_layers"] * (8 * d * d + 2 * d * c["decoder_ffn_dim"])) + 2 * d * classes
    attention = 2 * (2 * t * t * d) * (c["encoder_layers"] + 2 * c["decoder_layers"])  # QK^T and AV
    flops = model_functional.count_flops(tiny_cfg)
    assert dense + attention <= flops < 1.1 * (dense + attention)  # the rest: element-wise ops


# ----------------------------------------------------------------------------------------------- scripts
def test_evaluate_single_agrees_with_independent_run(trained_fold, tmp_path):
    import evaluate_tflite_single
    out = tmp_path / "eval.json"
    evaluate_tflite_single.main(["--data_path", str(trained_fold.data_path), "--tflite_path", str(trained_fold.tflite),
                                 "--output", str(out)])  # no --config_path: the model card provides it
    result = json.loads(out.read_text())
    predictions, labels = independent_predictions(trained_fold.tflite, trained_fold.data_path, trained_fold.cfg)
    assert result["samples"] == len(labels)
    assert result["top1"] == pytest.approx(np.mean(predictions == labels))
    assert result["predictions"] == predictions.tolist()
    cm = np.array(result["confusion_matrix"])
    assert cm.sum() == len(labels) and np.trace(cm) == np.sum(predictions == labels)
    g03 = read_label_maps(trained_fold.data_path)[0]["G03"]
    assert result["per_class_accuracy"]["G03"] == pytest.approx(np.mean(predictions[labels == g03] == g03))
    assert result["top5"] >= result["top1"] and result["invoke_ms"]["clips"] == len(labels)
    assert result["end_to_end_ms"] > result["invoke_ms"]["median_ms"] > 0
    parity = trained_fold.record["tflite_parity"]
    if parity["passed"]:  # same weights, argmax identical on these clips: Keras and TFLite accuracy must agree
        assert result["top1"] == pytest.approx(trained_fold.record["test"]["accuracy"], abs=1e-6)


def test_integer_io_model_evaluates_correctly(trained_fold, cardless_models):
    """The int8_io export without its card (conftest): the evaluation passes the config."""
    from evaluation import evaluate_tflite, load_eval_set
    path = cardless_models["int8_io"]
    clips = load_eval_set(trained_fold.data_path, "test", trained_fold.cfg)
    result = evaluate_tflite(path, clips)
    assert result["integer_io"] and result["inputs"][0]["dtype"] == "int8"
    predictions, labels = independent_predictions(path, trained_fold.data_path, trained_fold.cfg)
    assert result["predictions"] == predictions.tolist()
    assert result["top1"] == pytest.approx(np.mean(predictions == labels))
    fp32 = evaluate_tflite(trained_fold.tflite, clips)
    assert metrics.agreement(result["predictions"], fp32["predictions"]) >= 0.8  # int8 keeps most decisions


def test_compare_models_table_and_csv(trained_fold, cardless_models, tmp_path, capsys):
    import test_tflite_models
    out = tmp_path / "compare.csv"
    rows = test_tflite_models.main(["--data_path", str(trained_fold.data_path), "--fp32_tflite",
                                    str(trained_fold.tflite), "--tflite", f"INT8-IO={cardless_models['int8_io']}",
                                    "--config_path", str(trained_fold.config_path), "--output_csv", str(out)])
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["FP32", "INT8-IO"] == [r["model"] for r in rows]
    assert float(table[0]["agreement_pct"]) == 100.0
    predictions, labels = independent_predictions(trained_fold.tflite, trained_fold.data_path, trained_fold.cfg)
    assert float(table[0]["top1_pct"]) == pytest.approx(100 * np.mean(predictions == labels))
    assert "INT8-IO" in capsys.readouterr().out


def test_compare_models_on_mirrored_clips(trained_fold, capsys):
    """--mirror: each clip as a signer of the other hand gives it (the demo config has no dominant-hand rule)."""
    import test_tflite_models
    from keypoints import mirror_permutation
    from preprocessing import mirror_clip
    from tflite_runtime import TFLiteModel
    rows = test_tflite_models.main(["--data_path", str(trained_fold.data_path), "--fp32_tflite",
                                    str(trained_fold.tflite), "--mirror"])
    cfg = trained_fold.cfg
    plain = load_split(trained_fold.data_path, "test", cfg)
    mirrored = load_split(trained_fold.data_path, "test", cfg, mirror=True)
    assert all(np.allclose(m, mirror_clip(c, mirror_permutation(cfg))) for m, c in zip(mirrored.clips, plain.clips))
    keypoints, masks, labels = mirrored.padded(cfg)
    model = TFLiteModel(trained_fold.tflite)
    predictions = np.array([model(k[None], m[None])[0].argmax() for k, m in zip(keypoints, masks)])
    assert rows[0]["top1_pct"] == pytest.approx(100 * np.mean(predictions == labels))
    assert "clips, mirrored," in capsys.readouterr().out


def test_single_sample_prediction_and_dump(trained_fold, tmp_path, capsys):
    import test_single_sample
    from preprocessing import model_inputs
    from tflite_runtime import TFLiteModel
    sample = next((Path(trained_fold.data_path) / "test" / "G02").glob("*.pkl"))
    dump = tmp_path / "raw.json"
    out = test_single_sample.main(["--test_dir", str(Path(trained_fold.data_path) / "test"), "--tflite_model",
                                   str(trained_fold.tflite), "--sample_file", str(sample), "--dump_raw_sample",
                                   str(dump), "--skip_test_set"])
    raw = load_sample(sample)["keypoints"]
    keypoints, mask = model_inputs(raw, trained_fold.cfg)
    expected = TFLiteModel(trained_fold.tflite)(keypoints, mask)[0]
    id2label = read_label_maps(trained_fold.data_path)[1]
    assert out["label"] == "G02" and out["predicted"] == id2label[int(expected.argmax())]
    assert [p for _, p in out["top_k"]] == sorted((p for _, p in out["top_k"]), reverse=True)
    dumped = json.loads(dump.read_text())
    assert dumped["num_frames"] == len(raw) == len(dumped["frames"])
    assert len(dumped["frames"][0]["left_hand"]) == 21
    assert np.allclose(dumped["model_input"]["keypoints"], keypoints)
    printed = capsys.readouterr().out
    assert "right_hand" in printed and "detected in" in printed


def test_clear_errors(trained_fold, tmp_path, capsys):
    import evaluate_tflite_single
    base = ["--data_path", str(trained_fold.data_path)]
    with pytest.raises(SystemExit) as exit_info:
        evaluate_tflite_single.main(base + ["--tflite_path", str(tmp_path / "missing.tflite")])
    assert exit_info.value.code == 2 and "TFLite model not found" in capsys.readouterr().err

    bare = tmp_path / "bare.tflite"  # a model without its card needs --config_path
    shutil.copy(trained_fold.tflite, bare)
    with pytest.raises(SystemExit):
        evaluate_tflite_single.main(base + ["--tflite_path", str(bare)])
    assert "--config_path" in capsys.readouterr().err
    assert evaluate_tflite_single.main(base + ["--tflite_path", str(bare), "--config_path",
                                               str(trained_fold.config_path), "--max_samples", "7"])["samples"] == 7

    other = tmp_path / "other.yaml"  # a config that contradicts the card
    other.write_text(yaml.safe_dump(yaml.safe_load(Path(trained_fold.config_path).read_text()) | {"num_labels": 12}))
    with pytest.raises(SystemExit):
        evaluate_tflite_single.main(base + ["--tflite_path", str(trained_fold.tflite), "--config_path", str(other)])
    assert "disagrees with the model card" in capsys.readouterr().err
