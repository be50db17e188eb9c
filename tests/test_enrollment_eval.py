"""Few-shot enrollment end to end.

evaluate_enrollment.py on the tiny trained demo fold laid out as a LOSO run tree (FP32 in checkpoints/, PTQ int8
in exports/ptq/; the held-out signer has 3 repetitions per sign): which repetitions enroll in each rotation, test
clips never enrolled, the counts, every rotation's top-1 recomputed independently, k = 0 = the model's plain
top-1, the report, a missing fold, bad flags, and the same accuracy in TFLite 2.12.
predict_video.py on real MLR511 videos of user08: --enroll saves the prototypes beside the model and every
prediction is enrollment.score's, --enroll_file gives the same predictions, a list file and the data's own
layout name the signs, the guided mode with a video standing in for the camera, and one line per bad input."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import enrollment
import evaluate_enrollment
import predict_video
import video_enrollment
from evaluate_enrollment import rotation_plan
from metrics import softmax
from runs import card_path, loso_experiment_name, prototypes_path, run_paths
from test_predict_video import write_blank_video
from tflite_runtime import TFLiteModel, read_model_card
from util import REPO_DIR
from video_recognition import Recognizer

VIDEOS = "mlr511-videos/user08"   # one repetition (R01) of each sign
FAST = ["--max_frames", "16"]      # every video (enrollment and recognition) stops after 16 frames


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fails_with(main, argv, capsys) -> str:
    """The one stderr line of a run that must fail with exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def loso_tree(trained_fold, ptq_exports, tmp_path_factory):
    """outputs/demo/loso/ of the trained fold: its FP32 export in checkpoints/demo_LOSO_user01/, its PTQ int8
    export (the shared one, conftest) in exports/ptq/user01/ (user02 has nothing)."""
    from ptq_export import PTQ_FILES
    paths = run_paths("demo", "loso", str(tmp_path_factory.mktemp("enroll_eval") / "outputs"))
    checkpoint = paths.checkpoint_dir(loso_experiment_name("demo", "user01"))
    ptq = paths.export_dir("ptq", "", "user01")
    for folder, model in ((checkpoint, trained_fold.tflite), (ptq, ptq_exports / PTQ_FILES["int8"])):
        folder.mkdir(parents=True)
        for f in (model, card_path(model)):
            shutil.copy(f, folder / f.name)
    return paths


@pytest.fixture(scope="module")
def evaluated(loso_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("enroll_eval_out")
    code = evaluate_enrollment.main(["--dataset_name", "demo", "--output_root", str(loso_tree.root), "--holdouts",
                                     "user01,user02", "--ks", "1,2,3", "--output_dir", str(out)])
    return code, out


@pytest.fixture(scope="module")
def held_out(trained_fold):
    """The FP32 model on the held-out clips, computed here without evaluate_enrollment: descriptors, logits of
    the embedding path, logits of the plain path, targets, repetitions (from the file names)."""
    from evaluation import load_eval_set
    from tflite_runtime import resolve_config
    clips = load_eval_set(trained_fold.data_path, "test", resolve_config(trained_fold.tflite))
    model, card = TFLiteModel(trained_fold.tflite), read_model_card(trained_fold.tflite)
    logits, embeddings, _ = model.predict_with_embedding(clips.keypoints, clips.masks)
    hands = enrollment.card_hands(card)
    descriptors = np.stack([enrollment.describe(e, k, m, hands)
                            for e, k, m in zip(embeddings, clips.keypoints, clips.masks)])
    repetitions = np.array([Path(p).stem.split("_")[-1] for p in clips.paths])
    return descriptors, logits, model.predict(clips.keypoints, clips.masks)[0], clips.targets, repetitions, card


def test_rotations_enroll_k_consecutive_repetitions():
    repetitions = [f"R{i:02d}" for i in range(1, 11)] * 3
    plan = rotation_plan(repetitions, 3, 10)
    assert len(plan) == 10 and plan[0] == ("R01", "R02", "R03") and plan[8] == ("R09", "R10", "R01")
    assert all(sum(r in enrolled for enrolled in plan) == 3 for r in set(repetitions))   # each enrolls k times
    assert rotation_plan(["R1", "R10", "R2"], 1, 10) == [("R1",), ("R2",), ("R10",)]   # numbers sorted as numbers
    assert rotation_plan(["R01", "R02"], 2, 10) == []                                 # nothing left to test


def test_every_rotation_is_recomputed_exactly(evaluated, held_out):
    """Which repetitions enroll, the clip counts (enrolled clips are never tested), and each rotation's top-1 of
    enrollment.score and of the classifier on the same test clips, recomputed from the model's outputs."""
    descriptors, logits, _, targets, repetitions, card = held_out
    rows = [r for r in read_csv(evaluated[1] / "enrollment_rotations.csv") if r["mode"] == "fp32"]
    assert [(r["k"], r["rotation"], r["enrolled"]) for r in rows] == [
        ("1", "0", "R01"), ("1", "1", "R02"), ("1", "2", "R03"),
        ("2", "0", "R01 R02"), ("2", "1", "R02 R03"), ("2", "2", "R03 R01")]
    blocks, params = enrollment.card_blocks(card), enrollment.params_from_card(card)
    for row in rows:
        enroll = np.isin(repetitions, row["enrolled"].split())
        k = int(row["k"])
        assert (int(row["enroll_clips"]), int(row["test_clips"])) == (10 * k, 30 - 10 * k) == (enroll.sum(),
                                                                                            (~enroll).sum())
        prototypes = enrollment.build_prototypes(descriptors[enroll], targets[enroll], 10, blocks=blocks)
        assert prototypes.counts.tolist() == [k] * 10
        p = enrollment.score(descriptors[~enroll], logits[~enroll], prototypes, params)
        assert float(row["top1_pct"]) == pytest.approx(100 * np.mean(p.argmax(1) == targets[~enroll]))
        assert float(row["classifier_top1_pct"]) == pytest.approx(
            100 * np.mean(logits[~enroll].argmax(1) == targets[~enroll]))


def test_k0_is_the_plain_top1_and_the_summary_averages_rotations(evaluated, held_out):
    _, _, plain_logits, targets, _, _ = held_out
    summary = read_csv(evaluated[1] / "enrollment_top1.csv")
    assert [(r["mode"], r["holdout"], r["k"]) for r in summary] == [
        (mode, "user01", k) for mode in ("fp32", "int8") for k in "012"]          # k = 3: only 3 repetitions
    k0 = summary[0]
    assert float(k0["top1_pct"]) == pytest.approx(100 * np.mean(plain_logits.argmax(1) == targets))
    assert (k0["rotations"], k0["test_clips"]) == ("0", "30")
    rotations = read_csv(evaluated[1] / "enrollment_rotations.csv")
    for row in summary[1:3]:
        mine = [float(r["top1_pct"]) for r in rotations if (r["mode"], r["k"]) == ("fp32", row["k"])]
        assert float(row["top1_pct"]) == pytest.approx(np.mean(mine))
        assert float(row["top1_pct_min"]) == pytest.approx(min(mine)) and row["rotations"] == "3"
        # every clip is tested in the same number of rotations: the classifier's mean is its plain top-1
        assert float(row["classifier_top1_pct"]) == pytest.approx(float(k0["top1_pct"]))


def test_report_counts_a_missing_fold_and_records_the_models(evaluated, loso_tree):
    code, out = evaluated
    assert code == 1                                                 # user02 has no model: listed, not fatal
    report = (out / "report.txt").read_text()
    summary = {(r["mode"], r["k"]): float(r["top1_pct"]) for r in read_csv(out / "enrollment_top1.csv")}
    assert "### int8: top-1 (%)" in report and "| k | user01 | mean | lowest |" in report
    top1 = summary[("fp32", "0")]
    assert f"| 0 (classifier) | {top1:.1f} | {top1:.1f} | {top1:.1f} (user01) |" in report
    assert "missing (2):" in report and "user02 int8: " in report
    assert f"user02 fp32: {loso_tree.loso_model('user02', 'fp32')} not found" in report
    assert "user01 fp32: k = 3: the signer has only 3 repetitions" in report
    assert (out / "enrollment_top1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "enrollment.json").read_text())["folds"]["user01"]
    assert record["repetitions"] == ["R01", "R02", "R03"] and record["clips"] == 30
    int8 = loso_tree.loso_model("user01", "int8")
    assert record["models"]["int8"]["sha256"] == enrollment.model_sha256(int8)
    assert record["models"]["int8"]["params"] == {"tau": 30.0, "alpha": 1.0, "hand_weight": 0.5}


@pytest.mark.parametrize("argv, message", [
    (["--holdouts", "user05"], "nothing evaluated (2 missing: user05 fp32: "),
    (["--modes", "fp64"], "--modes: unknown mode(s) ['fp64']"),
    (["--runtime", "1.0"], "--runtime '1.0': choose one of"),
    (["--ks", "0"], "need --ks >= 1"),
    (["--holdouts", "all", "--exp_prefix", "nope"], "no trained LOSO fold of prefix 'nope'")])
def test_bad_runs_are_one_line(loso_tree, capsys, argv, message):
    line = fails_with(evaluate_enrollment.main, ["--dataset_name", "demo", "--output_root", str(loso_tree.root),
                                                 *argv], capsys)
    assert message in line


def test_accuracy_in_tflite_2_12_equals_the_pinned_runtime(evaluated, loso_tree):
    if not (REPO_DIR / ".venv-tflite-2.12" / "bin" / "python").exists():
        pytest.skip("no .venv-tflite-2.12 (bash setup_env.sh --runtimes)")
    evaluate_enrollment.main(["--dataset_name", "demo", "--output_root", str(loso_tree.root), "--modes", "fp32",
                              "--ks", "1", "--runtime", "2.12"])
    out = loso_tree.enrollment_dir("", "tflite-2.12")                # the default folder of that runtime
    old = {r["k"]: float(r["top1_pct"]) for r in read_csv(out / "enrollment_top1.csv")}
    pinned = {r["k"]: float(r["top1_pct"]) for r in read_csv(evaluated[1] / "enrollment_top1.csv")
              if r["mode"] == "fp32" and r["k"] in old}
    assert old == pinned and set(old) == {"0", "1"}
    assert "runtime tflite-2.12 (tensorflow 2.12" in (out / "report.txt").read_text()


# ----------------------------------------------------------------------------------------------- predict_video
@pytest.fixture(scope="module")
def app_model(trained_fold, tmp_path_factory):
    """A copy of the FP32 export and its card in a folder of its own (the prototypes get written beside it)."""
    folder = tmp_path_factory.mktemp("enroll_app")
    for f in (trained_fold.tflite, card_path(trained_fold.tflite)):
        shutil.copy(f, folder / f.name)
    return folder / trained_fold.tflite.name


def sign_folder(root: Path, shared_data: Path, signs) -> Path:
    """root/<sign>/R01.mp4 -> user08's video of that sign."""
    for sign in signs:
        (root / sign).mkdir(parents=True)
        (root / sign / "R01.mp4").symlink_to(shared_data / VIDEOS / sign / "R01.mp4")
    return root


@pytest.fixture(scope="module")
def enrolled_run(app_model, shared_data, tmp_path_factory):
    """predict_video --enroll with user08's G06 and G07, recognising user08's G07 video."""
    folder = sign_folder(tmp_path_factory.mktemp("my_signs"), shared_data, ("G06", "G07"))
    return predict_video.main(["--model", str(app_model), "--enroll", str(folder),
                               str(shared_data / VIDEOS / "G07" / "R01.mp4"), *FAST])


def test_enroll_saves_prototypes_beside_the_model_and_scores_with_them(enrolled_run, app_model):
    path = prototypes_path(app_model)
    assert path == app_model.with_name("final_model_fp32.prototypes.json") and path.is_file()
    assert enrolled_run["enrollment"]["prototypes"] == str(path)
    assert [(c["label"], c["frames"]) for c in enrolled_run["enrollment"]["clips"]] == [("G06", 16), ("G07", 16)]
    prototypes = video_enrollment.load(path, Recognizer(app_model))
    assert prototypes.counts.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    clip = enrolled_run["clips"][0]
    assert clip.frames == 16 and clip.true_label == "G07"
    p, s = clip.predictions[0].probabilities, softmax(clip.predictions[0].logits)
    others = [c for c in range(10) if c not in (5, 6)]
    np.testing.assert_allclose(p[others], s[others], rtol=1e-6)      # signs not enrolled: the classifier
    # the clip is G07's only enrollment clip: its unit descriptor is G07's prototype, so the prototypes alone
    # give its similarities (a block that no enrollment clip varies in, e.g. a hand never seen, is zero)
    unit = prototypes.prototypes[6:7].astype(np.float64)
    similarity = enrollment.similarities(unit, prototypes)[0, [5, 6]]
    assert similarity[1] > similarity[0]
    expected = (s[5] + s[6]) * softmax(30.0 * similarity)             # tau 30, alpha 1 (the card)
    np.testing.assert_allclose(p[[5, 6]], expected, rtol=1e-4)
    assert p[6] > p[5] and p.sum() == pytest.approx(1.0, abs=1e-6)


def test_enroll_file_round_trip_gives_the_same_predictions(enrolled_run, app_model, shared_data, capsys):
    again = predict_video.main(["--model", str(app_model), "--enroll_file", str(prototypes_path(app_model)),
                                str(shared_data / VIDEOS / "G07" / "R01.mp4"), *FAST])
    np.testing.assert_array_equal(again["clips"][0].predictions[0].probabilities,
                                  enrolled_run["clips"][0].predictions[0].probabilities)
    assert "2 sign(s) enrolled (G06 (Push down) x1, G07 (Eat) x1)" in capsys.readouterr().out


def test_videos_are_named_by_folder_or_list_file(app_model, shared_data, tmp_path):
    recognizer = Recognizer(app_model)
    items = video_enrollment.enrollment_videos(shared_data / VIDEOS, recognizer)      # the data's own layout
    assert [(Path(s.spec).parent.name, sign) for s, sign in items] == [(f"G{i:02d}", i - 1) for i in range(1, 11)]
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "my eat.mp4").symlink_to(shared_data / VIDEOS / "G07" / "R01.mp4")
    listing = tmp_path / "mine.txt"
    listing.write_text(f"# my signs\n\nclips/my eat.mp4 Eat\n{shared_data / VIDEOS / 'G06' / 'R01.mp4'}  G06\n")
    items = video_enrollment.enrollment_videos(listing, recognizer)
    assert [(Path(s.spec).name, sign) for s, sign in items] == [("my eat.mp4", 6), ("R01.mp4", 5)]


def test_guided_mode_with_a_video_standing_in_for_the_camera(app_model, shared_data, tmp_path, capsys):
    """The camera is user08's G05 video (37 frames, hands seen in frames 11 and 13-29): frames 6-13 and
    20-27 are recorded for the two signs asked for."""
    out = tmp_path / "guided.prototypes.json"
    result = predict_video.main(["--model", str(app_model), str(shared_data / VIDEOS / "G05" / "R01.mp4"),
                                 "--enroll_guided", "--enroll_signs", "G07,Sleep", "--enroll_frames", "8",
                                 "--enroll_pause", "6", "--enroll_out", str(out), *FAST])
    printed = capsys.readouterr().out
    first = printed.index("show sign G07 (Eat) now: 6 frames to get ready, then 8 recorded")
    assert first < printed.index("show sign G08 (Sleep) now: 6 frames") < printed.index("enrolled 2 clip(s)")
    assert "no hand detected" not in printed
    assert [(c["label"], c["frames"]) for c in result["enrollment"]["clips"]] == [("G07", 8), ("G08", 8)]
    assert json.loads(out.read_text())["counts"] == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    clip = result["clips"][0]                                         # then the sources are recognised with them
    p, s = clip.predictions[0].probabilities, softmax(clip.predictions[0].logits)
    assert clip.frames == 16 and not np.allclose(p[[6, 7]], s[[6, 7]]) and np.allclose(p[:6], s[:6])


def bad_enrollment(case: str, tmp_path: Path, shared_data: Path, model: Path) -> list[str]:
    """The flags of one bad enrollment input."""
    if case == "no person":
        (tmp_path / "G01").mkdir()
        write_blank_video(tmp_path / "G01" / "blank.avi")
        return ["--enroll", str(tmp_path)]
    if case == "unknown folder":
        return ["--enroll", str(unknown_sign_folder(tmp_path, shared_data))]
    if case == "empty":
        return ["--enroll", str(tmp_path)]
    if case == "unknown listed sign":
        (tmp_path / "mine.txt").write_text(f"{shared_data / VIDEOS / 'G07' / 'R01.mp4'} Dance\n")
        return ["--enroll", str(tmp_path / "mine.txt")]
    if case == "stream ends":
        return ["--enroll_guided", "--enroll_signs", "G07,G08", "--enroll_pause", "28", "--enroll_frames", "2"]
    recognizer = Recognizer(model)
    key, blocks = recognizer.model_key(), enrollment.card_blocks(recognizer.card)
    if case == "another model":
        key = enrollment.ModelKey(**key.as_dict() | {"sha256": "cd" * 32})
    else:                                                            # another layout: no hand blocks
        blocks = enrollment.descriptor_blocks(key.embedding_size)
    rng = np.random.default_rng(0)
    prototypes = enrollment.build_prototypes(rng.normal(size=(2, sum(b.size for b in blocks))), np.array([0, 1]),
                                             key.num_labels, key, blocks)
    return ["--enroll_file", str(enrollment.save_prototypes(tmp_path / "p.json", prototypes))]


def unknown_sign_folder(tmp_path: Path, shared_data: Path) -> Path:
    root = sign_folder(tmp_path / "mine", shared_data, ["G07"])
    (root / "G99").mkdir()
    (root / "G99" / "R01.mp4").symlink_to(shared_data / VIDEOS / "G06" / "R01.mp4")
    return root


@pytest.mark.parametrize("case, message", [
    ("no person", "blank.avi: no hand detected in any of 6 frames (no signer in view?); cannot enroll it as G01 "
                  "(Wave)"),
    ("unknown folder", "G99: unknown sign 'G99'; the model knows G01, G02,"),
    ("empty", ": no videos (.mp4"),
    ("unknown listed sign", "mine.txt:1: unknown sign 'Dance'"),
    ("another model", "p.json: prototypes of another model: sha256 'cdcd"),
    ("another layout", "p.json: its descriptor blocks"),
    ("stream ends", "the stream ended before sign G0")])
def test_bad_enrollment_input_is_one_line(app_model, shared_data, tmp_path, capsys, case, message):
    flags = bad_enrollment(case, tmp_path, shared_data, app_model)
    line = fails_with(predict_video.main, ["--model", str(app_model), str(shared_data / VIDEOS / "G07" / "R01.mp4"),
                                           *flags], capsys)
    assert message in line
