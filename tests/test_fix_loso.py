"""fix_loso.py: LOSO splits made of links, no leakage, idempotent re-runs that remove stale entries."""
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import fix_loso
from make_demo_dataset import make_demo_dataset
from runs import comma_list, parse_holdouts
from util import UserError


@pytest.fixture
def base(tmp_path) -> Path:
    """3 signers x 2 signs x 2 reps = 12 samples."""
    root = tmp_path / "demo-65kpts"
    make_demo_dataset(root, signers=3, signs=2, reps=2, seed=0)
    return root


def split_listing(loso_root: Path) -> dict[str, str]:
    """{split/sign/name: what it points to} for every entry of train/ and test/."""
    return {p.relative_to(loso_root).as_posix(): os.readlink(p) if p.is_symlink() else f"file:{p.stat().st_ino}"
            for p in sorted(loso_root.glob("*/*/*")) if p.parts[-3] in ("train", "test")}


def users_in(loso_root: Path, split: str) -> set[str]:
    return {p.name.split("_")[0] for p in (loso_root / split).glob("*/*.pkl")}


def run(capsys, *argv) -> str:
    fix_loso.main([str(a) for a in argv])
    return capsys.readouterr().out


def test_splits_are_symlinks_without_leakage(base, capsys):
    out = run(capsys, "--base_root", base, "--holdouts", "user01,user03")
    for holdout in ("user01", "user03"):
        loso = Path(f"{base}_LOSO_{holdout}")
        assert users_in(loso, "test") == {holdout}
        assert users_in(loso, "train") == {"user01", "user02", "user03"} - {holdout}
        entries = list(loso.glob("*/*/*.pkl"))
        assert len(entries) == 12 and all(p.is_symlink() for p in entries)
        assert all(p.resolve() == (base / "all" / p.parent.name / p.name).resolve() for p in entries)
        assert sorted(f.name for f in loso.glob("*.json")) == ["id2label.json", "label2id.json", "label2name.json"]
        assert f"no leakage: {holdout} only in test (4 samples), the other 2 signers only in train (8 samples)" in out


def test_rerun_is_idempotent_and_removes_stale_entries(base, capsys):
    run(capsys, "--base_root", base, "--holdouts", "user01")
    loso = Path(f"{base}_LOSO_user01")
    first = split_listing(loso)
    out = run(capsys, "--base_root", base, "--holdouts", "user01")
    assert "0 created, 0 replaced, 12 kept, 0 stale removed" in out and split_listing(loso) == first

    (loso / "train" / "G01" / "user09_G01_R01.pkl").write_bytes(b"stale copy")   # a signer no longer in all/
    (loso / "test" / "G07").mkdir()
    (loso / "test" / "G07" / "user01_G07_R01.pkl").symlink_to("nowhere")           # a sign no longer selected
    legacy = loso / "train" / "G02" / "user02_G02_R01.pkl"
    legacy.unlink()
    shutil.copy(base / "all" / "G02" / legacy.name, legacy)                          # a copy made by the old tool
    (base / "all" / "G01" / "user03_G01_R02.pkl").unlink()                            # a sample deleted from all/
    out = run(capsys, "--base_root", base, "--holdouts", "user01")
    assert "0 created, 1 replaced, 10 kept, 3 stale removed" in out
    del first["train/G01/user03_G01_R02.pkl"]
    assert split_listing(loso) == first and not (loso / "test" / "G07").exists()


def test_symlinked_split_folder_is_unlinked_not_emptied(base, capsys):
    loso = Path(f"{base}_LOSO_user01")
    (loso / "train").mkdir(parents=True)
    (loso / "train" / "G01").symlink_to(base / "all" / "G01")  # e.g. a hand-made split
    run(capsys, "--base_root", base, "--holdouts", "user01")
    assert len(list((base / "all" / "G01").glob("*.pkl"))) == 6  # the dataset itself is untouched
    assert not (loso / "train" / "G01").is_symlink() and users_in(loso, "train") == {"user02", "user03"}


def test_holdouts_all_and_gesture_selection(base, capsys):
    out = run(capsys, "--base_root", base, "--holdouts", "all", "--gestures", "G02-G02")
    assert sorted(p.name for p in base.parent.glob("*_LOSO_*")) == [f"demo-65kpts_LOSO_user0{i}" for i in (1, 2, 3)]
    assert "6 samples of 3 signers, 1 signs" in out
    assert {p.name for p in base.parent.glob("*_LOSO_user02/*/*")} == {"G02"}
    assert fix_loso.parse_gestures("G1-G3", base) == ["G1", "G2", "G3"]
    assert fix_loso.parse_gestures("G08-G10", base) == ["G08", "G09", "G10"]
    assert fix_loso.parse_gestures("auto", base) == ["G01", "G02"]


def test_hardlinks_and_switching_link_modes(base, capsys):
    run(capsys, "--base_root", base, "--holdouts", "user02", "--link", "hardlink")
    loso = Path(f"{base}_LOSO_user02")
    entries = sorted(loso.glob("*/*/*.pkl"))
    assert not any(p.is_symlink() for p in entries)
    assert all(os.path.samefile(p, base / "all" / p.parent.name / p.name) for p in entries)
    out = run(capsys, "--base_root", base, "--holdouts", "user02")
    assert "0 created, 12 replaced, 0 kept" in out and all(p.is_symlink() for p in loso.glob("*/*/*.pkl"))


def test_symlinked_sign_folders_and_unconventional_names(tmp_path, capsys):
    store = tmp_path / "store"
    make_demo_dataset(store, signers=2, signs=1, reps=1, seed=0)
    base = tmp_path / "subset"
    (base / "all").mkdir(parents=True)
    (base / "all" / "G01").symlink_to(store / "all" / "G01")  # like the KArSL-100 subset builder
    shutil.copy(store / "label2id.json", base)
    odd = store / "all" / "G01" / "clip7.pkl"                 # name says nothing; the pickle does
    with open(odd, "wb") as f:
        pickle.dump({"keypoints": [[[0.5, 0.5]]], "user": "user02", "class": "G01"}, f)
    out = run(capsys, "--base_root", base, "--holdouts", "user02")
    loso = tmp_path / "subset_LOSO_user02"
    assert sorted(p.name for p in (loso / "test" / "G01").iterdir()) == ["clip7.pkl", "user02_G01_R01.pkl"]
    assert [p.name for p in (loso / "train" / "G01").iterdir()] == ["user01_G01_R01.pkl"]
    assert "no leakage" in out


def test_leakage_check_catches_a_planted_leak(base, capsys):
    run(capsys, "--base_root", base, "--holdouts", "user01")
    loso = Path(f"{base}_LOSO_user01")
    leak = loso / "train" / "G01" / "user01_G01_R01.pkl"
    leak.symlink_to(base / "all" / "G01" / leak.name)
    samples = fix_loso.base_samples(base, ["G01", "G02"])
    with pytest.raises(UserError, match="LEAKAGE CHECK FAILED: train holds user01; 1 samples are in both splits"):
        fix_loso.check_no_leakage(loso, "user01", samples)


def test_bad_arguments_are_one_line_errors(base, tmp_path, capsys):
    with pytest.raises(SystemExit):
        fix_loso.main(["--base_root", str(base), "--holdouts", "user07"])
    assert "--holdouts: user07 not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fix_loso.main(["--base_root", str(tmp_path / "missing")])
    assert "missing/all: folder not found" in capsys.readouterr().err


def test_comma_separated_flags_drop_blanks_and_spaces(base):
    assert comma_list(" user01, ,user08,,user11 ") == ["user01", "user08", "user11"]
    assert comma_list("") == []
    assert parse_holdouts("user02 ,user01", base) == ["user02", "user01"]
    assert parse_holdouts("all", base) == ["user01", "user02", "user03"]
    assert fix_loso.parse_gestures(" G01, G02 ", base) == ["G01", "G02"]


def hostile_sample(base: Path, name: str, **fields) -> Path:
    path = base / "all" / "G01" / name
    path.write_bytes(pickle.dumps({"keypoints": np.full((2, 65, 3), 0.5, np.float32)} | fields))
    return path


@pytest.mark.parametrize("sign, message", [
    ("../../../ESCAPED", "not a simple name"), ("..", "not a simple name"), ("G01/../../x", "not a simple name"),
    (".hidden", "not a simple name"), (["G01"], r"class=\['G01'\]")])
def test_class_from_a_pickle_cannot_leave_the_split_folder(base, tmp_path, capsys, sign, message):
    hostile_sample(base, "clip.pkl", user="user02", **{"class": sign})
    with pytest.raises(SystemExit) as exit_:
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "clip.pkl: c" in err and re.search(message, err)
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("ESCAPED")) and not Path(f"{base}_LOSO_user01").exists()


def test_hostile_pickle_does_not_run_code(base, tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (base / "all" / "G01" / "clip.pkl").write_bytes(pickle.dumps({"keypoints": Payload(), "user": "user02"}))
    with pytest.raises(SystemExit):
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    assert "refused to load posix.system" in capsys.readouterr().err and not marker.exists()


def test_corrupt_label_map_is_one_line(base, capsys):
    (base / "label2id.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit_:
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "label2id.json: label map label2id.json is not valid JSON" in err
    (base / "label2id.json").write_text("[1, 2]")
    with pytest.raises(SystemExit):
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    assert "label2id.json: expected" in capsys.readouterr().err


def test_files_it_did_not_create_are_left_and_named(base, capsys):
    run(capsys, "--base_root", base, "--holdouts", "user01")
    loso = Path(f"{base}_LOSO_user01")
    notes = loso / "train" / "G01" / "notes.txt"
    notes.write_text("my notes")
    readme = loso / "test" / "README"
    readme.write_text("mine")
    out = run(capsys, "--base_root", base, "--holdouts", "user01")
    assert notes.read_text() == "my notes" and readme.read_text() == "mine"
    assert "left 2 file(s) it did not create" in out and "no leakage" in out
    own = loso / "train" / "G01" / "my_extra_clip.pkl"
    own.write_bytes(b"mine too")
    with pytest.raises(SystemExit):
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    assert "my_extra_clip.pkl: a .pkl that fix_loso.py did not create" in capsys.readouterr().err
    assert own.read_bytes() == b"mine too"


def test_a_file_in_place_of_a_split_folder_is_refused_not_deleted(base, capsys):
    loso = Path(f"{base}_LOSO_user01")
    loso.mkdir()
    (loso / "train").write_text("mine")
    with pytest.raises(SystemExit):
        fix_loso.main(["--base_root", str(base), "--holdouts", "user01"])
    assert "a file where the split folder goes" in capsys.readouterr().err
    assert (loso / "train").read_text() == "mine"
