"""predict_video.py on a real shared video with the tiny demo model: per-clip top-k, sliding windows and their
events, the annotated video, clear errors; plus video_recognition's stream helpers (frame-rate sampling, labels
from paths, event merging) on hand-made input."""
import json

import numpy as np
import pytest

import predict_video
from extraction import read_frames
from video_recognition import (Prediction, Recognizer, SlidingWindow, Source, expand_sources, resampled,
                               true_label)

VIDEO = "mlr511-videos/user01/G09/R01.mp4"  # 32 frames at 15 fps, 960x540
PICKLE = "mlr511-90kpts/all/G09/user01_G09_R01.pkl"


@pytest.fixture(scope="module")
def sliding_run(trained_fold, shared_data, tmp_path_factory):
    """One CLI run in sliding-window mode with an annotated video and a JSON report."""
    out = tmp_path_factory.mktemp("predict")
    result = predict_video.main(["--model", str(trained_fold.tflite), str(shared_data / VIDEO), "--window", "16",
                                 "--stride", "4", "--threshold", "0", "--annotate_dir", str(out / "annotated"),
                                 "--output_json", str(out / "report.json"), "--top_k", "3"])
    return result, out


def test_whole_clip_gives_top_k_with_probabilities(trained_fold, shared_data, capsys):
    result = predict_video.main(["--model", str(trained_fold.tflite), str(shared_data / VIDEO), "--top_k", "4"])
    clip = result["clips"][0]
    assert clip.frames == 32 and clip.true_label == "G09" and len(clip.predictions) == 1
    probabilities = [t["probability"] for t in clip.top_k]
    assert len(clip.top_k) == 4 and probabilities == sorted(probabilities, reverse=True)
    assert clip.predictions[0].probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert clip.top_k[0]["label"] == clip.predicted and all(t["name"] for t in clip.top_k)  # demo label2name names
    summary = result["summary"]
    assert summary["labelled_clips"] == 1 and summary["extraction_ms_per_frame"]["clips"] == 31
    assert summary["model_ms_per_window"]["median_ms"] > 0
    printed = capsys.readouterr().out
    assert "1. " in printed and "[true G09:" in printed and "ms/frame" in printed and "ms/window" in printed


def test_sliding_windows_cover_the_video_and_emit_events(sliding_run, trained_fold, shared_data):
    from dataset import load_sample
    result, _ = sliding_run
    clip = result["clips"][0]
    assert [(p.start, p.end) for p in clip.predictions] == [(0, 16), (4, 20), (8, 24), (12, 28), (16, 32)]
    assert clip.events and clip.events[0]["start"] == 0 and clip.events[-1]["end"] == 32  # threshold 0: all emit
    assert sum(e["end"] - e["start"] for e in clip.events) >= 32
    # each window is the model on exactly those frames (the stored clip equals this video's extraction)
    raw = load_sample(shared_data / PICKLE)["keypoints"][:, :65]
    recognizer = Recognizer(trained_fold.tflite)
    for p in clip.predictions:
        np.testing.assert_array_equal(p.logits, recognizer.classify(raw[p.start:p.end]).logits)


def test_annotated_video_and_json_report(sliding_run, shared_data):
    result, out = sliding_run
    video = out / "annotated" / "R01.annotated.mp4"
    assert result["clips"][0].annotated == str(video)
    frames = list(read_frames(video))
    assert len(frames) == 32 and frames[0].shape == (540, 960, 3)
    caption_band = [(f[:44] == 0).mean() > 0.5 and (f[:44, :, 1] > 200).any() for f in frames]  # black, green text
    assert caption_band == [False] * 15 + [True] * 17  # no caption before the first window ends (frame 16)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["windows"] == 5 and len(report["clips"][0]["windows"]) == 5
    assert len(report["clips"][0]["extraction_ms"]) == 31


def test_a_video_shorter_than_the_window_is_classified_whole(trained_fold, shared_data):
    result = predict_video.main(["--model", str(trained_fold.tflite), str(shared_data / VIDEO), "--window", "100",
                                 "--max_frames", "10"])
    clip = result["clips"][0]
    assert clip.frames == 10 and [(p.start, p.end) for p in clip.predictions] == [(0, 10)]


def broken_source(tmp_path, kind: str):
    if kind == "broken":
        (tmp_path / "broken.mp4").write_bytes(b"not a video")
    return {"missing": tmp_path / "missing.mp4", "broken": tmp_path / "broken.mp4", "empty folder": tmp_path}[kind]


@pytest.mark.parametrize("kind, message", [("missing", "missing.mp4: video file not found"),
                                           ("broken", "broken.mp4: cannot open video"),
                                           ("empty folder", "no videos")])
def test_broken_inputs_give_one_clear_line(trained_fold, tmp_path, capsys, kind, message):
    with pytest.raises(SystemExit) as exit_info:
        predict_video.main(["--model", str(trained_fold.tflite), str(broken_source(tmp_path, kind))])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("error: ") and message in err[-1]


def test_webcam_needs_a_window_and_the_model_must_exist(trained_fold, shared_data, tmp_path, capsys):
    for argv, message in ((["--model", str(trained_fold.tflite), "0"], "needs --window"),
                          (["--model", str(tmp_path / "none.tflite"), str(shared_data / VIDEO)], "none.tflite")):
        with pytest.raises(SystemExit):
            predict_video.main(argv)
        assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- helpers
def test_resampling_keeps_the_target_rate():
    assert list(resampled(range(30), 30.0, 15.0)) == list(range(0, 30, 2))
    assert len(list(resampled(range(300), 30.0, 10.0))) == 100
    assert list(resampled(range(5), 15.0, 0.0)) == list(range(5)) == list(resampled(range(5), 15.0, 30.0))


def test_true_label_comes_from_folder_or_file_name():
    labels = ["G01", "G09"]
    assert true_label(Source("videos/user01/G09/R01.mp4", "x"), labels) == "G09"
    assert true_label(Source("clips/user01_G01_R03.mp4", "x"), labels) == "G01"
    assert true_label(Source("clips/other.mp4", "x"), labels) is None
    assert true_label(Source("clips/user01_G01_G09.mp4", "x"), labels) is None  # several signs: no single truth
    assert true_label(Source("0", "webcam0", webcam=True), labels) is None


def test_folders_expand_recursively_with_unique_names(shared_data):
    sources = expand_sources([str(shared_data / "mlr511-videos")])
    assert len(sources) == 20 and len({s.name for s in sources}) == 20
    assert sources[0].name == "user01_G01_R01"


def test_consecutive_confident_windows_make_one_event():
    class Fixed:  # a recognizer whose answer is scripted per window
        labels, names = ["A", "B"], {"A": "Alpha"}

        def __init__(self, answers):
            self.answers = iter(answers)

        def classify(self, raw, start=0):
            p = np.array(next(self.answers))
            return Prediction(start, start + len(raw), p, np.log(p), 0.0, 0.0)

    window = SlidingWindow(Fixed([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5], [0.1, 0.9], [0.7, 0.3]]), window=4, stride=2,
                           threshold=0.6)
    emitted = [window.push(np.zeros((65, 3))) for _ in range(12)]
    assert [p is not None for p in emitted] == [False, False, False, True, False, True] * 1 + [False, True] * 3
    assert [(e["label"], e["start"], e["end"]) for e in window.events] == [("A", 0, 6), ("B", 6, 10), ("A", 8, 12)]
    assert window.events[0]["name"] == "Alpha" and window.events[0]["probability"] == pytest.approx(0.9)


def write_blank_video(path, frames: int = 6):
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (320, 240))
    for i in range(frames):
        writer.write(np.full((240, 320, 3), 120 + i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("window", [[], ["--window", "4", "--stride", "2", "--threshold", "0"]])
def test_a_video_without_a_signer_names_no_sign(trained_fold, tmp_path, capsys, window):
    blank = write_blank_video(tmp_path / "nobody.avi")
    result = predict_video.main(["--model", str(trained_fold.tflite), str(blank), *window])
    clip = result["clips"][0]
    assert clip.predicted is None and clip.top_k == [] and clip.events == [] and clip.predictions  # timed
    out = capsys.readouterr().out
    assert ("nobody.avi (6 frames): WARNING no hand detected in any of 6 frames (no signer in view?); "
            "no sign named") in out
    assert "WARNING: 1 clip(s) without any detected hand: no sign named" in out


def test_min_confidence_out_of_range_is_refused_at_start(trained_fold, shared_data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict_video.main(["--model", str(trained_fold.tflite), str(shared_data / VIDEO), "--min_confidence", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --min_confidence must be in [0, 1], got 2.0"


@pytest.mark.parametrize("card", ["{truncated", "[1, 2]", '{"model": 3, "layout": 65, "joint_idx": 1, "groups": 2}'])
def test_a_corrupt_model_card_is_one_line(trained_fold, shared_data, tmp_path, capsys, card):
    import shutil
    import evaluate_tflite_single
    model = tmp_path / "model.tflite"
    shutil.copy(trained_fold.tflite, model)
    (tmp_path / "model.json").write_text(card)
    evaluate_argv = ["--data_path", str(trained_fold.data_path), "--split", "test"]
    for main, argv in ((predict_video.main, ["--model", str(model), str(shared_data / VIDEO)]),
                       (evaluate_tflite_single.main, ["--tflite_path", str(model), *evaluate_argv])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1
        assert err[0].startswith(f"error: {tmp_path / 'model.json'}: ")
