"""Reliability, second round (#31): data and files. Every example of the issue, each refused at its
root with one line (docs/safety.md): samples that clipping would turn into zeros or into the image's
edge, a class that disagrees with its folder, small files that used to hang or exhaust memory
(limits checked before any expansion), model cards and results records of the wrong type, label maps
with a key given twice, links that loop, names too long for a LOSO split, and a split that is made
completely or not at all.

Hostile files run in a subprocess with a memory limit (RLIMIT_AS) and a timeout: a regression shows
as a crash or a timeout of that process, not of the test session."""
import csv
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import fix_loso
import safe_pickle
from config import ConfigError, load_config, model_hparams
from dataset import COORDINATE_RANGE, DataError, load_sample, load_split, read_label_maps
from tflite_runtime import output_labels, resolve_config
from util import REPO_DIR, UserError

DEMO_CONFIG = REPO_DIR / "configs" / "demo-65kpts.yaml"
MEMORY_LIMIT = 2 * 2**30  # address space of a subprocess that reads a hostile file
HOSTILE_TIMEOUT = 60      # seconds; each of these files is refused in well under one


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(*argv) -> subprocess.CompletedProcess:
    """A Python command of the repository under MEMORY_LIMIT and HOSTILE_TIMEOUT (no TensorFlow is
    imported)."""
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], cwd=REPO_DIR, capture_output=True,
                          text=True, timeout=HOSTILE_TIMEOUT, preexec_fn=limited, env=env)


def one_error_line(result: subprocess.CompletedProcess, code: int, prefix: str = "error: ") -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(prefix)
    return lines[0]


# ------------------------------------------------------------------------------------- samples (#4)
@pytest.fixture
def root(demo_root, tmp_path):
    """A dataset root with the demo label maps and two good samples of G01 (user01 R01, R02)."""
    root = tmp_path / "data"
    (root / "all" / "G01").mkdir(parents=True)
    (root / "all" / "G02").mkdir()
    for name in ("label2id.json", "id2label.json"):
        shutil.copy(demo_root / name, root / name)
    for rep in ("R01", "R02"):
        shutil.copy(demo_root / "all" / "G01" / f"user01_G01_{rep}.pkl", root / "all" / "G01")
    return root


def good_sample(root) -> dict:
    return load_sample(root / "all" / "G01" / "user01_G01_R01.pkl")


def put(root, name, sample, folder="G01") -> Path:
    path = root / "all" / folder / name
    path.write_bytes(pickle.dumps(sample))
    return path


def pixels(sample):
    kp = sample["keypoints"].copy()
    kp[..., 0] *= 960.0
    kp[..., 1] *= 540.0
    return sample | {"keypoints": kp}


def below_zero(sample):
    kp = sample["keypoints"].copy()
    kp[..., :2] = -0.5
    return sample | {"keypoints": kp}


def selected_points_missing(sample):
    """A 90-point clip whose 65 points a 65-point config selects are all undetected (only face
    points)."""
    kp = np.zeros((len(sample["keypoints"]), 90, 3), np.float32)
    kp[:, 65:, :2] = 0.5
    return sample | {"keypoints": kp}


@pytest.mark.parametrize("make, message, reason", [
    (pixels, r"coordinates span \[.*\], far outside the image; expected normalized image "
             r"coordinates in \[-1, 2\]", "coordinates outside the image"),
    (below_zero, "none of the 65 points .* selects is detected inside the image in any frame",
     "no selected point detected"),
    (selected_points_missing, "none of the 65 points .* selects is detected inside the image",
     "no selected point detected"),
    (lambda s: s | {"class": "G02"}, "class 'G02' disagrees with its folder G01",
     "class disagrees with its folder"),
])
def test_samples_that_would_train_as_something_else_are_refused(root, demo_cfg, make, message,
                                                                reason):
    path = put(root, "user02_G01_R01.pkl", make(good_sample(root)))
    with pytest.raises(DataError, match=message) as err:
        load_split(root, "all", demo_cfg)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert f"refused 1 of 3 samples of {root / 'all'}: 1 {reason}" in str(err.value)
    data = load_split(root, "all", demo_cfg, skip_bad=True)
    assert len(data) == 2 and data.refused == {reason: 1} and data.skipped[0][0] == str(path)


def test_refused_samples_are_counted_by_reason(root, demo_cfg):
    good = good_sample(root)
    put(root, "user02_G01_R01.pkl", pixels(good))
    put(root, "user02_G01_R02.pkl", pixels(good))
    put(root, "user03_G01_R01.pkl", below_zero(good))
    put(root, "user03_G02_R01.pkl", good, folder="G02")  # class G01 in folder G02
    with pytest.raises(DataError) as err:
        load_split(root, "all", demo_cfg)
    assert str(err.value).startswith(str(root / "all" / "G01" / "user02_G01_R01.pkl"))
    assert (f"refused 4 of 6 samples of {root / 'all'}: 2 coordinates outside the image, "
            "1 no selected point detected, 1 class disagrees with its folder") in str(err.value)
    result = run_limited("dataset.py", "--config_path", DEMO_CONFIG, "--data_path", root,
                         "--skip_bad")
    assert result.returncode == 0 and "2 samples, 1 signers" in result.stdout
    assert "refused 4 of 6 samples" in result.stdout
    assert "2 coordinates outside the image" in result.stdout
    stopped = run_limited("dataset.py", "--config_path", DEMO_CONFIG, "--data_path", root)
    assert "refused 4 of 6 samples" in one_error_line(stopped, 2)


def test_the_real_data_lies_inside_the_coordinate_range(shared_data):
    """The cut-off was chosen from this measurement: MLR511's detected points span [-0.11, 1.57]."""
    paths = sorted((shared_data / "mlr511-90kpts" / "all").glob("*/*.pkl"))
    paths.append(shared_data / "reference-sample" / "user12_G10_R10.pkl")
    low, high = np.inf, -np.inf
    for path in paths:
        xy = load_sample(path)["keypoints"][..., :2]
        low, high = min(low, xy.min()), max(high, xy.max())
    assert COORDINATE_RANGE[0] < low < 0 and 1 < high < COORDINATE_RANGE[1]


# ------------------------------------------------------------------------------------- configs (#5)
def write_config(tmp_path, text: str, name="config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def demo_text(**replace) -> str:
    text = DEMO_CONFIG.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


LAUGHS = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi"))  # 9**9


@pytest.mark.parametrize("text, message", [
    (demo_text(**{"joint_idx: [0-64]": "joint_idx: [" + ", ".join(['"0-64"'] * 2400) + "]"}),
     r"key 'joint_idx': repeated indices \[0, 1, 2"),
    (demo_text(**{"joint_idx: [0-64]": "joint_idx: [0-999999999]"}),
     r"key 'joint_idx': indices \[65-999999999\] out of range for a layout of 65 points"),
    (demo_text(**{"  pose: [0-22]": "  pose: [0-22, 99999999-999999999]"}),
     r"key 'groups.pose': indices \[99999999-999999999\] out of range"),
    (LAUGHS + demo_text(**{"description: \"": "old_description: \""}) + "description: *i\n",
     r"the document expands to more than 10,000 values"),
    (demo_text() + "training: &t {augmentation: *t}\n",
     r"an alias inside its own anchor \(line \d+\)"),
    (demo_text() + "#" * 70_000 + "\n", "larger than 64 KiB"),
    (demo_text(**{"num_labels: 10": "num_labels: " + "9" * 5000}),
     r"not valid YAML \(Exceeds the limit"),
])
def test_small_configs_that_used_to_hang_are_refused_before_expanding(tmp_path, text, message):
    path = write_config(tmp_path, text)
    line = one_error_line(run_limited("config.py", path), 1, prefix="ERROR ")
    assert line.startswith(f"ERROR {path}: ") and __import__("re").search(message, line), line


def test_the_billion_laughs_example_is_small():
    assert len(LAUGHS) < 1024 and len(yaml.compose(LAUGHS).value) == 9  # 9**9 strings expanded


@pytest.mark.parametrize("changes, message", [
    ({"attention_mask_value: -100.0": "attention_mask_value: -.inf"},
     r"'-\.inf' \(line 24\) is not a finite"),
    ({"dropout: 0.3\n": "dropout: .nan\n"}, r"'\.nan' \(line \d+\) is not a finite number"),
])
def test_non_finite_numbers_are_refused_anywhere(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, demo_text(**changes)))


@pytest.mark.parametrize("training, message", [
    ("  lr: .inf", r"'\.inf' \(line \d+\) is not a finite number"),
    ("  weight_decay: .NaN", r"'\.NaN' \(line \d+\) is not a finite number"),
    ("  lr: 'nan'", r"key 'training.lr' must be a finite number, got nan"),
    ("  weight_decay: 'inf'", r"key 'training.weight_decay' must be a finite number, got inf"),
    ("  augmentation: {scale: [0.8, .inf]}", r"is not a finite number"),
])
def test_non_finite_training_values_are_refused(tmp_path, training, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, demo_text() + f"training:\n{training}\n"))


@pytest.mark.parametrize("item, message", [
    ("training.lr=.inf", r"--set 'training.lr=.inf': '.inf' \(line 1\) is not a finite number"),
    ("training.weight_decay=-.inf", r"is not a finite number"),
    ("training.lr=nan", r"key 'training.lr' must be a finite number"),
    ("training.augmentation=&a [*a]", r"an alias inside its own anchor"),
])
def test_non_finite_overrides_are_refused(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO_CONFIG, [item])


# ------------------------------------------------------------------------------------- pickles (#5)
def deep_list_pickle(depth: int) -> bytes:
    """{'keypoints': <a good clip>, 'class': [[[...]]]} with `depth` nested lists, written opcode by
    opcode (the pickler itself would hit the recursion limit)."""
    clip = np.full((2, 65, 3), 0.5, np.float32)
    head = pickle.dumps({"keypoints": clip, "class": "@@"}, protocol=2)
    marker = b"X\x02\x00\x00\x00@@"  # BINUNICODE '@@'
    assert head.count(marker) == 1
    return head.replace(marker, b"]" * depth + b"a" * (depth - 1))


def shared_frames_pickle(copies: int) -> bytes:
    """keypoints = one 65-point frame referenced `copies` times (each copy a 2-byte memo
    reference)."""
    frame = [[0.5, 0.5, 1.0]] * 65
    return pickle.dumps({"keypoints": [frame] * copies, "class": "G01"}, protocol=4)


class Reduce:
    """Pickles as `function(*args)` with an optional BUILD `state`: how a hostile file reaches
    numpy."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def numpy_pickles() -> dict:
    from numpy.core.multiarray import _reconstruct
    import codecs
    empty = (np.ndarray, (0,), b"b")
    # a dtype of 8 raw bytes whose state claims the flags of an object dtype
    pointers = Reduce(np.dtype, ("V8", False, True), (3, "|", None, None, None, 8, 1, 63))
    hex_twice = Reduce(codecs.encode, (Reduce(codecs.encode, ("ab", "hex")), "hex"))
    return {
        "object array from a short list (numpy crashes)":
            Reduce(_reconstruct, empty, (1, (10,), np.dtype("O"), False, [None])),
        "raw bytes read as object pointers":
            Reduce(_reconstruct, empty, (1, (1,), pointers, False, b"\x01" * 8)),
        "a terabyte array": Reduce(_reconstruct, (np.ndarray, (10**6, 10**6), b"b")),
        "numpy.ndarray called directly": Reduce(np.ndarray, ((10**5, 10**5),)),
        "a codec chain that doubles": hex_twice,
        "array data shorter than its shape":
            Reduce(_reconstruct, empty, (1, (1000,), np.dtype("f8"), False, b"x")),
    }


HOSTILE_PICKLES = {
    "nested 1,000,000 lists deep": lambda: deep_list_pickle(1_000_000),
    "one frame referenced 2,000,000 times": lambda: shared_frames_pickle(2_000_000),
    "a list that holds itself":
        lambda: b"\x80\x02}q\x00(X\t\x00\x00\x00keypointsq\x01]q\x02h\x02au.",
    **{name: (lambda obj=obj: pickle.dumps({"keypoints": obj, "class": "G01"}, protocol=2))
       for name, obj in numpy_pickles().items()},
}


@pytest.mark.parametrize("name", list(HOSTILE_PICKLES))
def test_small_pickles_that_exhaust_memory_or_crash_are_one_line(root, tmp_path, name):
    data = HOSTILE_PICKLES[name]()
    path = root / "all" / "G01" / "user01_G01_R09.pkl"
    path.write_bytes(data)
    assert len(data) < 8 * 2**20
    result = run_limited("dataset.py", "--config_path", DEMO_CONFIG, "--data_path", root)
    line = one_error_line(result, 2)
    assert line.startswith(f"error: {path}: cannot read pickle (refused"), line


def test_a_pickle_file_too_large_or_not_a_file_is_refused_unread(root, monkeypatch):
    path = root / "all" / "G01" / "user01_G01_R01.pkl"
    monkeypatch.setattr(safe_pickle, "MAX_PICKLE_BYTES", path.stat().st_size - 1)
    with pytest.raises(safe_pickle.UnsafePickleError, match="refused a file of more than"):
        safe_pickle.load_pickle(path)
    monkeypatch.undo()
    fifo = root / "all" / "G01" / "user01_G01_R09.pkl"
    os.mkfifo(fifo)  # a plain open() would wait for a writer forever
    result = run_limited("dataset.py", "--config_path", DEMO_CONFIG, "--data_path", root)
    line = one_error_line(result, 2)
    assert line.startswith(f"error: {fifo}: cannot read pickle (not a regular file)")


def test_pickle_limits_hold_for_the_real_data(shared_data):
    """The largest real sample is far inside MAX_VALUES and MAX_DEPTH; the limits only refuse
    hostile files."""
    paths = (shared_data / "mlr511-90kpts" / "all").glob("*/*.pkl")
    path = max(paths, key=lambda p: p.stat().st_size)
    sample = load_sample(path)
    assert sample["keypoints"].size * 100 < safe_pickle.MAX_VALUES
    with pytest.raises(safe_pickle.UnsafePickleError, match="nested more than 32 containers deep"):
        nested = [1]
        for _ in range(40):
            nested = [nested]
        safe_pickle.check_size(nested)


# --------------------------------------------------------------------------------- model cards (#6)
def card_for(cfg: dict, **changes) -> dict:
    card = {"model": model_hparams(cfg), "layout": cfg["layout"], "joint_idx": cfg["joint_idx"],
            "groups": cfg["groups"], "config_path": cfg["config_path"],
            "labels": [f"G{i:02d}" for i in range(1, cfg["num_labels"] + 1)],
            "resting_hands": {"cutoff": 0.0}, "dominant_hand": {"ratio": 0.0}}
    return card | changes


def model_with_card(tmp_path, card) -> Path:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not read: only the card is")
    (tmp_path / "model.json").write_text(card if isinstance(card, str) else json.dumps(card))
    return model


def test_a_well_formed_card_gives_the_config_it_records(tmp_path, demo_cfg):
    cfg = resolve_config(model_with_card(tmp_path, card_for(demo_cfg)))
    assert {k: cfg[k] for k in ("layout", "joint_idx", "groups", "num_labels", "d_model")} == \
        {k: demo_cfg[k] for k in ("layout", "joint_idx", "groups", "num_labels", "d_model")}


@pytest.mark.parametrize("changes, message", [
    ({"joint_idx": [0, 1, 99]}, r"key 'joint_idx': indices \[99\] out of range"),
    ({"joint_idx": ["0", "1"]}, r"key 'joint_idx': '0' is not an index"),
    ({"layout": 77}, r"key 'layout': unknown keypoint layout 77"),
    ({"layout": "65"}, r"the model card: 'layout' must be an integer, got a string '65'"),
    ({"groups": {"pose": [0, 1]}}, r"key 'groups': joint_idx indices \[2, 3, .*\] are in no group"),
    ({"labels": ["G01", "G02"]}, r"2 labels for a model of num_labels 10"),
    ({"labels": "G01 G02"}, r"'labels' must be a list, got a string"),
    ({"label_names": ["Hi"]}, r"'label_names' must be a JSON object, got a list"),
    ({"parity": {"passed": "yes"}}, r"'parity': 'passed' must be true or false"),
    ({"resting_hands": {"cutoff": "far"}}, r"'resting_hands': 'cutoff' must be a number"),
])
def test_malformed_model_cards_are_one_line(tmp_path, demo_cfg, changes, message):
    model = model_with_card(tmp_path, card_for(demo_cfg, **changes))
    with pytest.raises(UserError, match=message) as err:
        resolve_config(model)
    assert str(err.value).startswith(f"{tmp_path / 'model.json'}") and "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ('{"layout": 65, "layout": 90}', r"key 'layout' is given twice"),
    ("[" * 100_000 + "]" * 100_000, r"nested too deeply"),
    ('{"layout": ' + "9" * 5000 + "}", r"not valid JSON \(Exceeds the limit"),
])
def test_cards_that_json_cannot_hold_are_one_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        resolve_config(model_with_card(tmp_path, text))


class StubModel:
    """Stands for a loaded TFLiteModel with `outputs` classes (output_labels reads only its output
    shape)."""

    def __init__(self, outputs: int):
        self.output = {"shape": np.array([1, outputs])}


@pytest.mark.parametrize("labels_txt, card_labels, message", [
    (None, 9, "model.json: 9 labels, but .*model.tflite has 10 outputs"),
    ("G01 G02 G03", None, "labels.txt: 3 labels, but .*model.tflite has 10 outputs"),
])
def test_fewer_labels_than_outputs_are_refused_when_the_model_loads(tmp_path, demo_cfg, labels_txt,
                                                                     card_labels, message):
    card = card_for(demo_cfg)
    if card_labels is None:
        del card["labels"]
    else:
        card["labels"], card["model"]["num_labels"] = card["labels"][:card_labels], card_labels
    model = model_with_card(tmp_path, card)
    if labels_txt:
        (tmp_path / "labels.txt").write_text(labels_txt)
    with pytest.raises(UserError, match=message):
        output_labels(StubModel(10), model)
    assert len(output_labels(StubModel(card_labels or 3), model)) == (card_labels or 3)


def test_predict_video_refuses_a_label_mismatch_before_any_video(tmp_path, demo_cfg, monkeypatch,
                                                                   capsys):
    import predict_video
    import video_recognition
    card = card_for(demo_cfg)
    card["labels"], card["model"]["num_labels"] = card["labels"][:9], 9
    model = model_with_card(tmp_path, card)
    video = tmp_path / "user01_G01_R01.mp4"
    video.write_bytes(b"never opened")
    monkeypatch.setattr(video_recognition, "open_model", lambda *args, **kwargs: StubModel(10))
    monkeypatch.setattr(predict_video, "run_source",
                        lambda *args: pytest.fail("a video was processed"))
    with pytest.raises(SystemExit) as exit_info:
        predict_video.main(["--model", str(model), str(video)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "9 labels, but" in err[0] and "10 outputs" in err[0]


# ----------------------------------------------------------------------------- results records (#6)
def published(tmp_path, record: dict, top1="95.0") -> Path:
    folder = tmp_path / "study"
    (folder / "training_metadata").mkdir(parents=True)
    (folder / "training_metadata" / "arabic_asl_LOSO_user01.json").write_text(
        record if isinstance(record, str) else json.dumps(record))
    with open(folder / "summary_table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["holdout", "model", "n", "top1_pct"])
        writer.writeheader()
        writer.writerow({"holdout": "user01", "model": "FP32", "n": 1, "top1_pct": top1})
    return folder


GOOD_RECORD = {"config_path": "configs/arabic-asl-65kpts.yaml", "epochs": 80, "batch_size": 32,
               "learning_rate": 1e-3, "seed": 42, "holdout_user": "user01"}


@pytest.mark.parametrize("record, top1, message", [
    ([GOOD_RECORD], "95.0",
     r"training_metadata/arabic_asl_LOSO_user01.json: expected a JSON object, got a list"),
    (GOOD_RECORD | {"epochs": "80"}, "95.0", r"'epochs' must be an integer, got a string '80'"),
    (GOOD_RECORD | {"learning_rate": "fast"}, "95.0",
     r"'learning_rate' must be a number, got a string 'fast'"),
    (GOOD_RECORD | {"model_parameters": [1]}, "95.0",
     r"'model_parameters' must be an integer, got a list"),
    ({k: v for k, v in GOOD_RECORD.items() if k != "seed"}, "95.0", r"'seed' is missing"),
    ('{"seed": 1, "seed": 2}', "95.0", r"key 'seed' is given twice"),
    (GOOD_RECORD, "high", r"summary_table.csv: line 2: top1_pct 'high' is not a number"),
])
def test_results_records_of_the_wrong_type_are_one_line(tmp_path, record, top1, message):
    folder = published(tmp_path, record, top1)
    line = one_error_line(run_limited("results_tables.py", "merge", folder, "--output_dir",
                                      tmp_path / "m"), 2)
    assert __import__("re").search(message, line), line


def test_collect_results_refuses_a_training_record_of_the_wrong_type(tmp_path, capsys):
    import collect_results
    from runs import loso_experiment_name, run_paths
    paths = run_paths("demo", "loso", str(tmp_path / "outputs"))
    exp = loso_experiment_name("demo", "user01")
    paths.checkpoint_dir(exp).mkdir(parents=True)
    paths.latest_record(exp).parent.mkdir(parents=True, exist_ok=True)
    paths.latest_record(exp).write_text(json.dumps({"test": {"samples": 10, "accuracy": "0.9"}}))
    with pytest.raises(SystemExit) as exit_info:
        collect_results.main(["--dataset_name", "demo", "--output_root", str(tmp_path / "outputs"),
                              "--no-console"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert err[0] == (f"error: {paths.latest_record(exp)}: 'test': 'accuracy' must be a number, "
                      "got a string '0.9'")


def test_a_stored_evaluation_of_the_wrong_type_is_evaluated_again(tmp_path):
    from collect_results import stored_result
    from evaluation import EVALUATION_RECORD, model_file_info
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    good = {key: None for key in EVALUATION_RECORD} | {
        "model": model_file_info(model), "mode": "fp32", "integer_io": False, "data_path": "d",
        "split": "test", "samples": 2, "num_classes": 2, "top1": 0.5, "top5": 1.0, "loss": 0.7,
        "labels": ["G01", "G02"], "label_names": {},
        "per_class_accuracy": {"G01": 1.0, "G02": None},
        "confusion_matrix": [[1, 0], [1, 0]], "num_threads": 1,
        "invoke_ms": {"median_ms": 1.0, "p90_ms": 2.0}, "end_to_end_ms": 3.0,
        "predictions": [0, 0], "paths": ["a.pkl", "b.pkl"]}
    cache = tmp_path / "FP32.json"
    damaged = [good | {"top1": "0.5"}, good | {"invoke_ms": [1.0]},
               good | {"confusion_matrix": [[1, 0]]}, good | {"paths": None}, [good]]
    for result, trusted in [(good, True)] + [(d, False) for d in damaged]:
        cache.write_text(json.dumps(result))
        assert (stored_result(cache, model, "d", "test") is not None) == trusted


# --------------------------------------------------------------------------- label maps, links (#7)
@pytest.mark.parametrize("name, text", [
    ("label2id.json", '{"G01": 0, "G02": 1, "G01": 2}'),
    ("id2label.json", '{"0": "G01", "1": "G02", "0": "G03"}'),
])
def test_a_label_map_with_a_key_given_twice_is_refused(root, demo_cfg, capsys, name, text):
    (root / name).write_text(text)
    twice = rf"{name}: label map {name} is not valid JSON \(key '.*' is given twice\)"
    with pytest.raises(DataError, match=twice):
        read_label_maps(root)
    if name == "label2id.json":  # fix_loso reads it for --gestures auto
        with pytest.raises(SystemExit) as exit_info:
            fix_loso.main(["--base_root", str(root), "--holdouts", "user01"])
        assert exit_info.value.code == 2 and "is given twice" in capsys.readouterr().err


@pytest.fixture
def base(tmp_path):
    from make_demo_dataset import make_demo_dataset
    root = tmp_path / "demo-65kpts"
    make_demo_dataset(root, signers=3, signs=2, reps=2, seed=0)
    return root


def listing(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): os.readlink(p) if p.is_symlink() else p.stat().st_ino
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("make_loop", [
    lambda all_dir: (all_dir / "G03").symlink_to("G03"),                             # a sign folder
    lambda all_dir: (all_dir / "G01" / "u_G01_R9.pkl").symlink_to("u_G01_R9.pkl"),   # a sample
    lambda all_dir: (all_dir / "G01" / "u_G01_R9.pkl").symlink_to("gone.pkl"),       # dangling
])
def test_links_that_loop_in_the_data_are_refused_before_a_split_is_made(base, capsys, make_loop):
    make_loop(base / "all")
    label2id = json.loads((base / "label2id.json").read_text()) | {"G03": 2}
    (base / "label2id.json").write_text(json.dumps(label2id))
    with pytest.raises(SystemExit) as exit_info:
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "a link that loops or points to nothing" in err[0]
    assert not list(base.parent.glob("*LOSO*")) and not list(base.parent.glob(".*building"))


def test_a_sample_name_near_the_file_system_limit_makes_a_split(base, capsys):
    """Its temporary link used to need 10 bytes more than the name: the split was left half
    built."""
    long_name = "user01_G01_R01_" + "x" * 230 + ".pkl"
    os.rename(base / "all" / "G01" / "user01_G01_R01.pkl", base / "all" / "G01" / long_name)
    fix_loso.main(["--base_root", str(base), "--holdouts", "user02"])
    assert "no leakage" in capsys.readouterr().out
    assert (Path(f"{base}_LOSO_user02") / "train" / "G01" / long_name).is_symlink()


def test_a_split_name_too_long_is_refused_before_anything_is_written(tmp_path, capsys):
    from make_demo_dataset import make_demo_dataset
    base = tmp_path / ("d" * 250)
    make_demo_dataset(base, signers=2, signs=1, reps=1, seed=0)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "bytes long; this file system holds names of up to" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_split_is_made_completely_or_not_at_all(base, capsys, monkeypatch):
    fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    loso = Path(f"{base}_LOSO_user01")
    (loso / "train" / "G01" / "notes.txt").write_text("mine")
    before = listing(loso)
    (base / "all" / "G01" / "user01_G01_R01.pkl").unlink()   # the next split differs
    made = []

    def failing_link(dest, src, mode):
        if len(made) == 5:
            raise OSError(28, "No space left on device", str(dest))
        made.append(dest)
        os.symlink(fix_loso.link_target(src, dest), dest)

    monkeypatch.setattr(fix_loso, "make_link", failing_link)
    with pytest.raises(SystemExit) as exit_info:
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    assert exit_info.value.code == 2 and "no space left on device" in capsys.readouterr().err.lower()
    assert listing(loso) == before and not list(base.parent.glob(".*building"))
    monkeypatch.undo()
    fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    assert "1 stale removed" in capsys.readouterr().out
    assert (loso / "train" / "G01" / "notes.txt").read_text() == "mine"
    assert not (loso / "test" / "G01" / "user01_G01_R01.pkl").exists()
