"""bench/: each benchmark script in its smallest setting prints its table and writes its JSON/CSV rows with the
machine record. The figures are checked for presence and consistency, never against a time budget."""
import csv
import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH_DIR))

import common  # noqa: E402
from util import UserError  # noqa: E402
from safe_pickle import load_pickle  # noqa: E402

MACHINE_KEYS = {"date", "cpu_model", "usable_cores", "python", "tensorflow", "ai-edge-litert", "mediapipe", "numpy",
                "git_commit", "load_average_1min"}


def read_results(folder: Path, bench: str) -> tuple[list[dict], list[dict]]:
    """(the JSONL run records, the CSV rows) of one bench."""
    runs = [json.loads(line) for line in (folder / f"{bench}.jsonl").read_text().splitlines()]
    with open(folder / f"{bench}.csv", newline="") as f:
        return runs, list(csv.DictReader(f))


def check_written(folder: Path, bench: str, record: dict) -> list[dict]:
    """One JSONL run equal to the returned record, one CSV line per row with the machine columns; the CSV rows."""
    runs, rows = read_results(folder, bench)
    assert len(runs) == 1 and runs[0]["bench"] == bench
    assert MACHINE_KEYS <= set(runs[0]["machine"])
    assert len(rows) == len(record["rows"]) == len(runs[0]["rows"])
    assert all(row["bench"] == bench and row["machine.cpu_model"] == common.cpu_model() for row in rows)
    return rows


# ----------------------------------------------------------------------------------------------- common.py
def test_csv_history_appends_and_widens_the_header(tmp_path):
    common.write_results(tmp_path, "demo", {"cpu_model": "X"}, {"n": 1}, [{"a": 1, "nested": {"b": 2}}])
    common.write_results(tmp_path, "demo", {"cpu_model": "X"}, {"n": 2}, [{"a": 3, "c": [4, 5]}, {"a": 6}])
    runs, rows = read_results(tmp_path, "demo")
    assert [r["settings"]["n"] for r in runs] == [1, 2]
    assert [r["a"] for r in rows] == ["1", "3", "6"]
    assert rows[0]["nested.b"] == "2" and rows[0]["c"] == "" and rows[1]["c"] == "4,5"
    assert rows[2]["machine.cpu_model"] == "X" and rows[2]["settings.n"] == "2"


def test_machine_info_and_table():
    info = common.machine_info()
    assert MACHINE_KEYS <= set(info) and info["usable_cores"] >= 1 and info["cpu_model"]
    table = common.format_table([{"x": 1.23456, "y": None}, {"x": 123.0, "y": "z"}], {"x": "col x", "y": "col y"})
    lines = table.splitlines()
    assert lines[0].split() == ["col", "x", "col", "y"] and lines[2].split() == ["1.23", "-"]
    assert lines[3].split() == ["123.0", "z"] and len({len(line) for line in lines}) == 1


@pytest.mark.parametrize("script", ["bench_training", "bench_tflite", "bench_extraction", "bench_predict_video",
                                    "bench_live"])
def test_help_states_the_defaults(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "default: " in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- the benches
def test_bench_training(demo_root, tiny_config_path, tmp_path, capsys):
    import bench_training
    record = bench_training.main(["--reference_config", str(tiny_config_path),
                                  "--default_config", str(tiny_config_path), "--recipes", "today,reference",
                                  "--data_path", str(demo_root), "--max_clips", "24", "--epochs", "1",
                                  "--jobs", "1", "--output_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "LOSO-12 min" in out and "matmul peak" in out
    today, reference = record["rows"]
    assert (today["batch_size"], today["lr"], reference["batch_size"]) == (32, 1e-3, 1)
    for row in record["rows"]:
        # the first 24 pickles (G01 and G02: 4 signers x 3 reps) minus user01's 6
        assert row["clips"] == 18 and row["signers"] == 3 and row["s_per_epoch"] > 0
        assert row["clips_per_s"] == pytest.approx(row["clips"] / row["s_per_epoch"])
        assert row["frames_per_epoch"] >= 18 and 0 < row["peak_share"] < 100
        assert row["loso12_min"] > row["epochs"] * row["s_per_epoch"] * 6 / 60  # 12 folds, 1 job: 12 rounds
    assert today["vs_today"] == 1.0
    rows = check_written(tmp_path, "training", record)
    assert [r["recipe"] for r in rows] == ["today", "reference"]


def test_bench_tflite(demo_root, tiny_config_path, tmp_path, capsys):
    import bench_tflite
    models = tmp_path / "models"
    record = bench_tflite.main(["--config_path", str(tiny_config_path), "--data_path", str(demo_root),
                                "--modes", "fp32", "--clips", "3", "--repeats", "2", "--warmup", "1",
                                "--calibration_clips", "4", "--keep_dir", str(models), "--output_dir", str(tmp_path),
                                "--onnx_modes", "fp32", "--batch", "4"])
    assert "median ms" in capsys.readouterr().out
    row, onnx = record["rows"]
    assert (onnx["model"], onnx["runtime"].split()[0], onnx["clips"]) == ("onnx-fp32", "onnxruntime", 6)
    assert onnx["batch_ms_per_clip"] > 0 and not onnx["tensorflow_loaded"] and not row["tensorflow_loaded"]
    assert onnx["size_bytes"] == (models / "model_fp32.onnx").stat().st_size
    assert row["model"] == "fp32" and row["num_threads"] == 1 and row["batch_ms_per_clip"] is None
    assert row["size_bytes"] == (models / "model_fp32.tflite").stat().st_size
    assert row["clips"] == 6  # 3 held-out clips x 2 repeats
    assert 0 < row["median_ms"] <= row["p90_ms"]
    assert row["peak_rss_mb"] >= row["rss_before_mb"] > 0 and row["model_rss_mb"] >= 0
    check_written(tmp_path, "tflite", record)


def test_bench_tflite_rejects_an_unknown_mode(capsys):
    import bench_tflite
    with pytest.raises(SystemExit) as exit_info:
        bench_tflite.main(["--modes", "int4"])
    assert exit_info.value.code == 2 and "int4" in capsys.readouterr().err


def test_parse_worker_counts():
    import bench_extraction
    assert bench_extraction.parse_workers("1,all") == list(dict.fromkeys([1, common.usable_cores()]))
    with pytest.raises(UserError, match="--workers"):
        bench_extraction.parse_workers("0")


def test_bench_extraction(shared_data, tmp_path, capsys):
    import bench_extraction
    record = bench_extraction.main(["--input_dir", str(shared_data / "mlr511-videos"), "--max_videos", "1",
                                    "--workers", "1", "--output_dir", str(tmp_path)])
    assert "frames/s" in capsys.readouterr().out
    (row,) = record["rows"]
    # the first video, extracted with the same extractor
    frames = load_pickle(shared_data / "mlr511-90kpts" / "all" / "G01" / "user01_G01_R01.pkl")["num_frames"]
    assert (row["workers"], row["videos"], row["frames"]) == (1, 1, frames)
    assert row["frames_per_s"] == pytest.approx(frames / row["seconds"]) and row["speedup"] == 1.0
    check_written(tmp_path, "extraction", record)


def test_bench_predict_video(shared_data, demo_root, tiny_config_path, tmp_path, capsys):
    import bench_predict_video
    video = shared_data / "mlr511-videos" / "user08" / "G01" / "R01.mp4"
    record = bench_predict_video.main([str(video), "--max_frames", "12", "--window", "8", "--stride", "4",
                                       "--config_path", str(tiny_config_path), "--data_path", str(demo_root),
                                       "--output_dir", str(tmp_path)])
    assert "wall ms/frame" in capsys.readouterr().out
    (row,) = record["rows"]
    assert (row["clips"], row["frames"], row["windows"]) == (1, 12, 2)  # windows end at frames 8 and 12
    assert row["extraction_median_ms"] > 0 and row["startup_ms"] > 0 and row["model_median_ms"] > 0
    assert row["fps"] == pytest.approx(1e3 / row["wall_ms_per_frame"])
    check_written(tmp_path, "predict_video", record)
