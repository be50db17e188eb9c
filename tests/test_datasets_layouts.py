"""LSA64 and KArSL from their release layouts (layouts.py, --source of the extractors), the
KArSL-100 subset builder and the all-datasets runner.

The quickstarts of docs/datasets.md run as written, in a scratch folder that links the repository's
files, on tiny trees in the two release layouts made of real MLR511 videos (conftest.SHARED_DATA,
renamed into the layout; skipped when absent). Their data commands (extraction, subset, LOSO splits,
the runner in DRY_RUN mode) run for real; the training and export commands are checked flag by flag
against each script's own parser, and the paths they read must exist by then.
"""
import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import build_karsl_subset
import layouts
from conftest import REPO, SHARED_DATA
from safe_pickle import load_pickle

VIDEOS = SHARED_DATA / "mlr511-videos"
REFERENCE = SHARED_DATA / "mlr511-90kpts" / "all"
# release name -> MLR511 video (the shortest clips: 30-35 frames)
LSA64_TREE = {"001_001_001.mp4": "user01/G09/R01.mp4", "002_001_001.mp4": "user01/G03/R01.mp4",
              "001_002_001.mp4": "user08/G07/R01.mp4", "002_002_001.mp4": "user08/G06/R01.mp4"}
KARSL_TREE = {"01/train/0071/01.mp4": "user01/G09/R01.mp4",
              "01/test/0072/01.mp4": "user01/G04/R01.mp4",
              "02/train/0072/01.mp4": "user08/G07/R01.mp4",
              "02/test/0071/01.mp4": "user08/G06/R01.mp4"}
RUN_FOR_REAL = ("extract_63_keypoints.py", "fix_loso.py", "build_karsl_subset.py")
TIMEOUT = 600


# ----------------------------------------------------------------------------------------------- helpers
def touch(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def link_tree(root: Path, tree: dict) -> Path:
    for name, video in tree.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(VIDEOS / video)
    return root


def frames_of(video: str) -> int:
    user, sign, _ = video.split("/")
    return load_pickle(REFERENCE / sign / f"{user}_{sign}_R01.pkl")["num_frames"]


def quickstart(title: str) -> list[str]:
    """The commands of the ```bash blocks of a section of docs/datasets.md, lines joined."""
    text = (REPO / "docs" / "datasets.md").read_text(encoding="utf-8")
    heading = rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)"
    section = re.search(heading, text, flags=re.S | re.M).group(1)
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]
    return commands


class Parsed(Exception):
    """Raised in place of running a script once its flags parsed."""


def check_flags(command: str, workdir: Path) -> argparse.Namespace:
    """Parse a documented command with its script's own parser (nothing runs); the inputs it
    names must exist."""
    python, script, *argv = shlex.split(command)
    assert python == DOCUMENTED_PYTHON.strip(), command
    module = importlib.import_module(Path(script).stem)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    with pytest.MonkeyPatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(Parsed) as parsed:
            module.main(argv)
    args = parsed.value.args[0]
    for name in ("config_path", "base_data_path", "data_path"):
        if getattr(args, name, ""):
            path = getattr(args, name)
            assert (workdir / path).exists(), f"{command}: {path} not found"
    return args


DOCUMENTED_PYTHON = ".venv/bin/python "  # how the docs start a Python command


def run_documented(command: str, workdir: Path) -> str:
    """Run one quickstart command as written in workdir (the runner with DRY_RUN=1) -> stdout."""
    script = next(w for w in shlex.split(command) if w.endswith((".py", ".sh")))
    if script.endswith(".py") and script not in RUN_FOR_REAL:
        check_flags(command, workdir)
        return ""
    env = {k: v for k, v in os.environ.items() if k != "SIGNBART_OUTPUT_ROOT"} | {"DRY_RUN": "1"}
    if command.startswith(DOCUMENTED_PYTHON):  # the docs' interpreter is the one running the tests
        command = f"{shlex.quote(sys.executable)} {command[len(DOCUMENTED_PYTHON):]}"
    result = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch copy of the repository made of links (the docs' relative paths land here), with
    the two release trees the quickstarts read: LSA64/all and KArSL-502."""
    if not VIDEOS.is_dir():
        pytest.skip(f"real videos not found at {VIDEOS}")
    work = tmp_path_factory.mktemp("work")
    for entry in REPO.iterdir():
        if entry.name not in ("data", "outputs", "exports", ".git"):
            (work / entry.name).symlink_to(entry)
    link_tree(work / "LSA64" / "all", LSA64_TREE)
    (work / "LSA64" / "all" / "README.txt").write_text("not a video of the release")
    link_tree(work / "KArSL-502", KARSL_TREE)
    return work


@pytest.fixture(scope="module")
def lsa64(workdir):
    return {command: run_documented(command, workdir) for command in quickstart("LSA64 quickstart")}


@pytest.fixture(scope="module")
def karsl(workdir):
    return {command: run_documented(command, workdir) for command in quickstart("KArSL quickstart")}


# ----------------------------------------------------------------------------------------------- layouts
def test_layouts_are_detected_and_named(tmp_path):
    flat = touch(tmp_path / "lsa64", "001_003_005.mp4", "064_010_001.MP4", "notes.txt", "1_2_3.mp4")
    assert layouts.detect_source(flat) == "lsa64"
    found = [(v.user, v.sign, v.pickle_path(Path()).as_posix())
             for v in layouts.find_videos(flat, "auto")]
    assert found == [("user0003", "G01", "all/G01/user0003_G01_001_003_005.pkl"),
                     ("user0010", "G64", "all/G64/user0010_G64_064_010_001.pkl")]
    karsl = touch(tmp_path / "karsl", "01/train/0071/01.mp4", "01/test/0071/01.mp4",
                  "03/train/0502/x.avi", "03/notes/0001/y.mp4", "readme/train/0001/z.mp4")
    assert layouts.detect_source(karsl) == "karsl"
    # the two parts' 01.mp4 stay apart; other folders are not read
    assert [v.pickle_path(Path()).as_posix() for v in layouts.find_videos(karsl, "auto")] == [
        "all/G0071/user01_G0071_train_01.pkl", "all/G0071/user01_G0071_test_01.pkl",
        "all/G0502/user03_G0502_train_x.pkl"]
    tree = touch(tmp_path / "tree", "user01/G01/R01.mp4")
    assert layouts.detect_source(tree) == "tree"
    with pytest.raises(layouts.UserError, match="no videos found for --source lsa64 .*001_001_001"):
        layouts.find_videos(tree, "lsa64")
    names = layouts.sign_names("lsa64", ["G01", "G08", "G64", "G99"])
    assert names == {"G01": "Opaque", "G08": "Red", "G64": "Find"}
    assert len(layouts.LSA64_SIGN_NAMES) == 64 and layouts.sign_names("karsl", ["G0071"]) == {}


# ----------------------------------------------------------------------------------------------- quickstarts
def test_lsa64_quickstart(lsa64, workdir):
    root = workdir / "data" / "lsa64-63kpts"
    names = sorted(p.relative_to(root).as_posix() for p in root.glob("all/*/*.pkl"))
    assert names == ["all/G01/user0001_G01_001_001_001.pkl", "all/G01/user0002_G01_001_002_001.pkl",
                     "all/G02/user0001_G02_002_001_001.pkl", "all/G02/user0002_G02_002_002_001.pkl"]
    for name, video in LSA64_TREE.items():
        stem = name.removesuffix(".mp4")
        sign, signer, _ = (int(n) for n in stem.split("_"))
        user, label = f"user{signer:04d}", f"G{sign:02d}"
        sample = load_pickle(root / "all" / label / f"{user}_{label}_{stem}.pkl")
        assert (sample["user"], sample["class"]) == (user, label)
        assert sample["keypoints"].shape == (frames_of(video), 63, 3)  # every frame of the video
        assert sample["keypoints"][:, 15:57].any()  # hands were found: real keypoints, not zeros
    assert json.loads((root / "label2id.json").read_text()) == {"G01": 0, "G02": 1}
    assert json.loads((root / "label2name.json").read_text()) == {"G01": "Opaque", "G02": "Red"}
    for user in ("user0001", "user0002"):  # --holdouts all found both signers
        fold = workdir / "data" / f"lsa64-63kpts_LOSO_{user}"
        assert [p.name.split("_")[0] for p in fold.glob("test/*/*.pkl")] == [user, user]
    assert any("DATASET_NAME=lsa64" in out and "would run" in out for out in lsa64.values())


def test_auto_detection_finds_the_same_lsa64_samples(lsa64, workdir):
    out = run_documented(".venv/bin/python extract_63_keypoints.py --input_dir LSA64/all "
                         "--output_dir data/lsa64-63kpts", workdir)
    assert "(--source lsa64)" in out
    assert "0 extracted, 4 skipped (already extracted), 0 failed" in out


def test_karsl_quickstart(karsl, workdir):
    full, subset = workdir / "data" / "karsl502-63kpts", workdir / "data" / "karsl100-63kpts"
    assert sorted(p.name for p in full.glob("all/*/*.pkl")) == [
        "user01_G0071_train_01.pkl", "user01_G0072_test_01.pkl", "user02_G0071_test_01.pkl",
        "user02_G0072_train_01.pkl"]
    for name, video in KARSL_TREE.items():
        signer, part, sign, _ = name.split("/")
        sample = load_pickle(full / "all" / f"G{sign}" / f"user{signer}_G{sign}_{part}_01.pkl")
        assert (sample["user"], sample["class"]) == (f"user{signer}", f"G{sign}")
        assert sample["keypoints"].shape == (frames_of(video), 63, 3)
    assert json.loads((full / "label2id.json").read_text()) == {"G0071": 0, "G0072": 1}
    assert not (full / "label2name.json").exists()  # KArSL's names are an Excel sheet, not read
    assert all(p.is_symlink() and p.resolve().is_file() for p in subset.glob("all/*/*.pkl"))
    assert json.loads((subset / "label2id.json").read_text()) == {"G0071": 0, "G0072": 1}
    info = json.loads((subset / "subset_info.json").read_text())
    assert (info["start"], info["end"]) == (71, 170)
    assert info["samples_per_sign"] == {"G0071": 2, "G0072": 2}
    assert (workdir / "data" / "karsl100-63kpts_LOSO_user02" / "test").is_dir()


def test_karsl_subset_of_the_video_release(workdir, tmp_path):
    out = tmp_path / "KArSL-71"
    argv = ["--input_dir", str(workdir / "KArSL-502"), "--output_dir", str(out), "--end", "71"]
    assert build_karsl_subset.main(argv) == 0
    found = sorted(v.relative for v in layouts.find_videos(out, "auto"))
    assert found == ["01/train/0071/01.mp4", "02/test/0071/01.mp4"]


# ----------------------------------------------------------------------------------------------- subset builder
@pytest.fixture
def karsl502(tmp_path) -> Path:
    root = tmp_path / "karsl502-63kpts"
    signs = ["G0070", "G0071", "G0072", "G0170", "G0171"]
    for sign in signs:
        touch(root / "all" / sign, f"user01_{sign}_train_01.pkl", f"user02_{sign}_test_01.pkl")
    (root / "label2id.json").write_text(json.dumps({s: i for i, s in enumerate(signs + ["G0100"])}))
    (root / "label2name.json").write_text(json.dumps({"G0071": "a", "G0170": "b", "G0171": "c"}))
    return root


def test_subset_keeps_the_range_relabelled_and_reruns_cleanly(karsl502, tmp_path, capsys):
    out = tmp_path / "karsl100-63kpts"
    assert build_karsl_subset.main(["--input_dir", str(karsl502), "--output_dir", str(out)]) == 0
    assert sorted(p.name for p in (out / "all").iterdir()) == ["G0071", "G0072", "G0170"]
    assert json.loads((out / "label2id.json").read_text()) == {"G0071": 0, "G0072": 1, "G0170": 2}
    assert json.loads((out / "id2label.json").read_text())["2"] == "G0170"
    assert json.loads((out / "label2name.json").read_text()) == {"G0071": "a", "G0170": "b"}
    assert json.loads((out / "subset_info.json").read_text())["missing_signs"] == ["G0100"]
    assert "6 created" in capsys.readouterr().out
    (out / "all" / "G0072" / "mine.txt").write_text("the user's")
    argv = ["--input_dir", str(karsl502), "--output_dir", str(out)]
    assert build_karsl_subset.main([*argv, "--end", "71"]) == 0
    report = capsys.readouterr().out
    assert "0 created, 0 replaced, 2 kept, 4 stale removed" in report
    assert f"left alone (not made by this tool): {out / 'all' / 'G0072' / 'mine.txt'}" in report
    assert sorted(p.name for p in (out / "all").iterdir()) == ["G0071", "G0072"]
    assert json.loads((out / "label2id.json").read_text()) == {"G0071": 0}


@pytest.mark.parametrize("flags, message", [
    (["--start", "9", "--end", "3"], "--start 9 --end 3: need 1 <= start <= end"),
    (["--start", "300", "--end", "400"], "no sign numbered 300..400 in all/"),
    (["--output_dir", "{input}/sub"], "must not be --input_dir or inside it"),
])
def test_subset_bad_input_is_one_line(karsl502, tmp_path, capsys, flags, message):
    flags = [f.replace("{input}", str(karsl502)) for f in flags]
    argv = ["--input_dir", str(karsl502), "--output_dir", str(tmp_path / "out"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        build_karsl_subset.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- the runner
def runner(env: dict, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SIGNBART_OUTPUT_ROOT"} | env
    return subprocess.run(["bash", "run_all_datasets_pipeline.sh"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_runner_dry_run_plans_and_skips(karsl502, tmp_path):
    outputs = tmp_path / "outputs"
    result = runner({"DATA_ROOT": str(tmp_path), "DRY_RUN": "1", "OUTPUT_ROOT": str(outputs)})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name, slug in (("arabic_asl", "arabic-asl"), ("lsa64", "lsa64")):
        assert (f"[{name}] skipped: no keypoints in {tmp_path}/{slug}-63kpts and no "
                f"{name.upper()}_RAW_DIR videos") in out
    assert re.search(r"would run: \S+ build_karsl_subset.py --input_dir \S+karsl502-63kpts "
                     r"--output_dir \S+karsl100-63kpts --start 71 --end 170 --mode symlink", out)
    for name in ("karsl100", "karsl502"):
        assert re.search(rf"would run: env DEMO=0 DATASET_NAME={name} DATA_DIR=\S+/{name}-63kpts "
                         rf"CONFIG=configs/{name}-63kpts.yaml KEYPOINTS_COUNT=63 RAW_DIR= "
                         r"HOLDOUTS=all", out)
    assert "all datasets: 2 would run (karsl100 karsl502), 2 skipped (arabic_asl lsa64)" in out
    assert not (tmp_path / "karsl100-63kpts").exists() and not (tmp_path / "outputs").exists()


def test_runner_with_no_data_skips_everything(tmp_path):
    result = runner({"DATA_ROOT": str(tmp_path), "OUTPUT_ROOT": str(tmp_path / "outputs")})
    assert result.returncode == 0, result.stderr
    assert "0 ran (none), 4 skipped (arabic_asl lsa64 karsl100 karsl502)" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("env, message", [
    ({"DATASETS": "lsa64,mnist"}, "error: DATASETS: unknown dataset 'mnist'"),
    ({"DATASETS": "lsa64", "LSA64_RAW_DIR": "/no/videos"},
     "error: LSA64_RAW_DIR=/no/videos: folder not found"),
])
def test_runner_bad_settings_are_one_line(tmp_path, env, message):
    result = runner({"DATA_ROOT": str(tmp_path)} | env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_runner_all_datasets_command_of_the_docs(lsa64, karsl, workdir):
    for command in quickstart("All datasets in one run (`run_all_datasets_pipeline.sh`)"):
        out = run_documented(command, workdir)
        assert "all datasets: 3 would run (lsa64 karsl100 karsl502), 1 skipped (arabic_asl)" in out
