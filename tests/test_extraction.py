"""Keypoint extraction: layout mapping, the extractor CLI (resume, workers, broken input, flip) and parity with
the real MLR511 keypoints in ../shared/data (MediaPipe 0.10.21 on CPU is deterministic for those videos)."""
import contextlib
import io
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import extract_65_keypoints as extractor
import extraction
from keypoints import get_layout
from safe_pickle import load_pickle

# Short real videos (frames): user01 G09 (32) and user08 G07 (30), one per signer.
SHARED_VIDEOS = ("user01/G09/R01.mp4", "user08/G07/R01.mp4")


# ----------------------------------------------------------------------------------------------- helpers
def fake_results(pose=True, left=False, right=True, face=True):
    """A stand-in for MediaPipe's results: landmark k of each part is at (k/1000 + part offset, ...)."""
    def part(n, offset, present):
        if not present:
            return None
        return SimpleNamespace(landmark=[SimpleNamespace(x=offset + k / 1000, y=offset + 0.5 + k / 1000,
                                                         visibility=0.25) for k in range(n)])
    return SimpleNamespace(pose_landmarks=part(33, 0.0, pose), left_hand_landmarks=part(21, 0.1, left),
                           right_hand_landmarks=part(21, 0.2, right), face_landmarks=part(468, 0.3, face))


def write_video(path: Path, frames: int = 4, shift: int = 0, fourcc: str = "MJPG") -> Path:
    """A small real-looking clip: the astronaut photo of scikit-image (a person) sliding sideways."""
    from skimage import data
    image = cv2.cvtColor(cv2.resize(data.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 15, (256, 256))
    for i in range(frames):
        writer.write(np.roll(image, shift + 4 * i, axis=1))
    writer.release()
    return path


def run_cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = extractor.main(list(map(str, argv)))
    return code, out.getvalue()


def pickles(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("all/*/*.pkl"))}


def load(path: Path) -> dict:
    return load_pickle(path)


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "user01" / "G01" / "R01.avi", shift=0)
    write_video(root / "user01" / "G02" / "R01.mp4", shift=40, fourcc="mp4v")
    write_video(root / "user02" / "G01" / "R01.avi", shift=80)
    return root


@pytest.fixture(scope="module")
def uninterrupted(synthetic_videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "demo-65kpts"
    code, _ = run_cli("--input_dir", synthetic_videos, "--output_dir", out, "--workers", 1)
    assert code == 0
    return out


# ----------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("n", [65, 90, 63])
def test_frame_keypoints_follow_the_layout(n):
    layout = get_layout(n)
    rows = extraction.frame_keypoints(fake_results(), layout)
    assert rows.shape == (n, 3) and rows.dtype == np.float32
    for i, (part, src) in enumerate(layout.points):
        offset = {"pose": 0.0, "left_hand": 0.1, "right_hand": 0.2, "face": 0.3}[part]
        if part == "left_hand":  # not detected -> zeros, c included
            assert rows[i].tolist() == [0, 0, 0]
            continue
        np.testing.assert_allclose(rows[i, :2], [offset + src / 1000, offset + 0.5 + src / 1000], atol=1e-6)
        assert rows[i, 2] == (np.float32(0.25) if part == "pose" else 1.0)  # pose visibility, else 1.0


def test_65_layout_is_the_first_65_points_of_90():
    results = fake_results(left=True)
    np.testing.assert_array_equal(extraction.frame_keypoints(results, get_layout(65)),
                                  extraction.frame_keypoints(results, get_layout(90))[:65])


def test_detected_frames_reads_zeros_as_missing():
    layout = get_layout(65)
    clip = np.stack([extraction.frame_keypoints(fake_results(left=k % 2 == 0), layout) for k in range(4)])
    assert extraction.detected_frames(clip, layout, "left_hand").tolist() == [True, False, True, False]
    assert extraction.detected_frames(clip, layout, "right_hand").all()
    assert not extraction.detected_frames(clip, layout, "face").any()  # the 65 layout has no face points


# ----------------------------------------------------------------------------------------------- inputs
def test_find_videos_reads_user_sign_tree(tmp_path):
    for rel in ("user01/G01/R01.mp4", "user01/G01/R02.MOV", "user02/G10/R01.avi", "user02/G10/notes.txt",
                "user02/extra/R01.mp4", "user02/.hidden/R01.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    videos = extractor.find_videos(tmp_path)
    assert [v.relative for v in videos] == ["user01/G01/R01.mp4", "user01/G01/R02.MOV", "user02/G10/R01.avi"]
    assert videos[1].pickle_path(Path("out")) == Path("out/all/G01/user01_G01_R02.pkl")


def test_two_videos_for_one_pickle_are_refused(tmp_path):
    for rel in ("user01/G01/R01.mp4", "user01/G01/R01.avi"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    with pytest.raises(extractor.UserError, match="R01.avi and user01/G01/R01.mp4 would both be saved"):
        extractor.find_videos(tmp_path)

def test_empty_input_folder_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "videos" / "user01").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        extractor.main(["--input_dir", str(tmp_path / "videos"), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "no videos found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "all").exists()


def test_unknown_flip_user_is_an_error(synthetic_videos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        extractor.main(["--input_dir", str(synthetic_videos), "--output_dir", str(tmp_path), "--flip_users", "user9"])
    assert "--flip_users: user9 not found" in capsys.readouterr().err


def test_zero_frame_video_is_a_video_error(monkeypatch, tmp_path):
    monkeypatch.setattr(extraction, "read_frames", lambda path: iter([]))
    with pytest.raises(extraction.VideoError, match="no frames"):
        extraction.extract_video(tmp_path / "R01.mp4", get_layout(65))


# ----------------------------------------------------------------------------------------------- extractor runs
def test_pickles_have_the_documented_format(uninterrupted):
    sample = load(uninterrupted / "all" / "G02" / "user01_G02_R01.pkl")
    kp = sample["keypoints"]
    assert kp.dtype == np.float32 and kp.shape == (4, 65, 3) and sample["num_frames"] == 4
    assert {k: sample[k] for k in ("class", "user", "num_keypoints", "video_file", "original_path", "flipped")} == \
        {"class": "G02", "user": "user01", "num_keypoints": 65, "video_file": "R01.mp4",
         "original_path": "user01/G02/R01.mp4", "flipped": False}
    assert sample["keypoint_structure"] == get_layout(65).describe() and "face_mesh_indices" not in sample
    assert extraction.detected_frames(kp, get_layout(65), "pose").all()  # the astronaut is found in every frame
    assert (uninterrupted / "label2id.json").read_text().split() == ['{', '"G01":', '0,', '"G02":', '1', '}']
    assert (uninterrupted / "id2label.json").exists()


def test_broken_video_is_reported_and_not_saved(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "user01" / "G01" / "R01.avi")
    (videos / "user01" / "G01" / "R02.mp4").parent.mkdir(parents=True, exist_ok=True)
    (videos / "user01" / "G01" / "R02.mp4").write_bytes(b"not a video")
    code, out = run_cli("--input_dir", videos, "--output_dir", tmp_path / "out", "--workers", 1)
    assert code == 1
    assert "1 extracted, 0 skipped (already extracted), 1 failed" in out
    assert f"FAILED {videos / 'user01' / 'G01' / 'R02.mp4'}: cannot open video" in out
    assert sorted(pickles(tmp_path / "out")) == ["all/G01/user01_G01_R01.pkl"]


def test_resume_after_interrupt_gives_the_same_files(synthetic_videos, uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "demo-65kpts"
    calls = []

    def interrupted_after_first(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the second video
        return extraction.extract_video(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(extractor, "extract_video", interrupted_after_first)
        with pytest.raises(KeyboardInterrupt):
            run_cli("--input_dir", synthetic_videos, "--output_dir", out, "--workers", 1)
    assert len(pickles(out)) == 1
    leftover = out / "all" / "G01" / ".user02_G01_R01.pkl.x1y2.tmp"  # what a killed (not interrupted) run leaves
    leftover.write_bytes(b"half a pickle")

    code, report = run_cli("--input_dir", synthetic_videos, "--output_dir", out, "--workers", 1)
    assert code == 0 and "2 extracted, 1 skipped (already extracted), 0 failed" in report
    assert not leftover.exists()
    assert pickles(out) == pickles(uninterrupted)
    assert [p.name for p in out.rglob("*.tmp")] == []


def test_workers_give_identical_files(synthetic_videos, uninterrupted, tmp_path):
    code, report = run_cli("--input_dir", synthetic_videos, "--output_dir", tmp_path, "--workers", 2)
    assert code == 0 and "3 extracted" in report
    assert pickles(tmp_path) == pickles(uninterrupted)


def test_mirror_equals_flipping_the_frames_first(synthetic_videos):
    frames = list(extraction.read_frames(synthetic_videos / "user01" / "G01" / "R01.avi"))
    layout = get_layout(90)
    mirrored = extraction.keypoints_from_frames(frames, layout, mirror=True)
    np.testing.assert_array_equal(mirrored, extraction.keypoints_from_frames([cv2.flip(f, 1) for f in frames], layout))
    plain = extraction.keypoints_from_frames(frames, layout)
    nose = layout.part_slice("pose")[0]
    np.testing.assert_allclose(mirrored[:, nose, 0], 1 - plain[:, nose, 0], atol=0.03)  # x -> 1 - x


def test_frame_api_for_live_use(synthetic_videos):
    """What a webcam loop does: one tracker, frame by frame, keypoints plus a drawn skeleton."""
    frames = list(extraction.read_frames(synthetic_videos / "user02" / "G01" / "R01.avi"))
    layout = get_layout(65)
    with extraction.open_holistic() as holistic:
        results = [extraction.process_frame(holistic, f) for f in frames]
    rows = np.stack([extraction.frame_keypoints(r, layout) for r in results])
    np.testing.assert_array_equal(rows, extraction.keypoints_from_frames(frames, layout))
    drawn = extraction.draw_landmarks(frames[0].copy(), results[0])
    assert (drawn != frames[0]).any()


# ----------------------------------------------------------------------------------------------- real MLR511
@pytest.fixture(scope="module")
def real_videos(shared_data, tmp_path_factory) -> Path:
    """An input tree of two short shared videos (symlinks; nothing is copied)."""
    root = tmp_path_factory.mktemp("mlr511-videos")
    for rel in SHARED_VIDEOS:
        (root / rel).parent.mkdir(parents=True)
        (root / rel).symlink_to(shared_data / "mlr511-videos" / rel)
    return root


@pytest.fixture(scope="module")
def real_extraction(real_videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "mlr511-90kpts"
    code, report = run_cli("--input_dir", real_videos, "--output_dir", out, "--layout", 90, "--workers", 1)
    assert code == 0
    return out, report


def test_parity_with_shared_keypoints(shared_data, real_extraction):
    out, _ = real_extraction
    layout = get_layout(90)
    for rel in SHARED_VIDEOS:
        user, sign, _ = rel.split("/")
        name = f"{sign}/{user}_{sign}_R01.pkl"
        ours, ref = load(out / "all" / name), load(shared_data / "mlr511-90kpts" / "all" / name)
        assert ours["keypoints"].shape == ref["keypoints"].shape and ours["num_frames"] == ref["num_frames"]
        for part in ("pose", "left_hand", "right_hand", "face"):
            np.testing.assert_array_equal(extraction.detected_frames(ours["keypoints"], layout, part),
                                          extraction.detected_frames(ref["keypoints"], layout, part), err_msg=part)
        assert np.abs(ours["keypoints"] - ref["keypoints"]).max() < 0.01
        assert {k: ours[k] for k in ("class", "user", "video_file", "original_path", "flipped",
                                     "face_mesh_indices")} == {k: ref[k] for k in ("class", "user", "video_file",
                                                                                   "original_path", "flipped",
                                                                                   "face_mesh_indices")}


def test_flip_users_moves_the_signing_hand_to_the_other_slot(real_videos, real_extraction, tmp_path):
    plain_root, plain_report = real_extraction
    assert "user01     videos    1" in plain_report and "WARNING" not in plain_report
    out = tmp_path / "flipped"
    shutil.copytree(plain_root, out)  # user08 is reused; user01 changed flip, so it is extracted again
    code, report = run_cli("--input_dir", real_videos, "--output_dir", out, "--layout", 90, "--workers", 1,
                           "--flip_users", "user01")
    assert code == 0 and "1 extracted, 1 skipped" in report
    layout = get_layout(90)
    name = "all/G09/user01_G09_R01.pkl"
    plain, flipped = load(plain_root / name), load(out / name)
    assert flipped["flipped"] is True and plain["flipped"] is False
    slots = {tag: [extraction.detected_frames(s["keypoints"], layout, part).sum()
                   for part in ("left_hand", "right_hand")] for tag, s in (("plain", plain), ("flipped", flipped))}
    assert slots["plain"][1] > slots["plain"][0] and slots["flipped"][0] > slots["flipped"][1]  # right -> left
    user01_row = next(line for line in report.splitlines() if line.strip().startswith("user01*"))
    assert user01_row.endswith("dominant: left")
    assert "WARNING: signers disagree on the dominant hand slot" in report and "left: user01; right: user08" in report



# ----------------------------------------------------------------------------------------------- bad input
def write_blank_video(path: Path, frames: int = 4) -> Path:
    """A grey clip with nobody in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (256, 256))
    for i in range(frames):
        writer.write(np.full((256, 256, 3), 90 + i, np.uint8))
    writer.release()
    return path


def test_a_video_without_a_person_fails_and_is_not_saved(tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "user01" / "G01" / "R01.avi")
    blank = write_blank_video(videos / "user01" / "G01" / "R02.avi")
    code, out = run_cli("--input_dir", videos, "--output_dir", tmp_path / "out", "--workers", 1)
    assert code == 1 and "1 extracted, 0 skipped (already extracted), 1 failed" in out
    assert f"FAILED {blank}: no person detected in any of 4 frames; no pickle written" in out
    assert sorted(pickles(tmp_path / "out")) == ["all/G01/user01_G01_R01.pkl"]


@pytest.mark.parametrize("flags, message", [
    (["--min_confidence", "2"], "--min_confidence must be in [0, 1], got 2.0"),
    (["--min_confidence", "-0.1"], "--min_confidence must be in [0, 1], got -0.1"),
])
def test_bad_flags_are_refused_before_any_video(synthetic_videos, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(extractor, "run_jobs", lambda *a: pytest.fail("videos were processed"))
    with pytest.raises(SystemExit) as exit_info:
        extractor.main(["--input_dir", str(synthetic_videos), "--output_dir", str(tmp_path / "out"), *flags])
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == f"error: {message}"


def test_output_dir_that_is_a_file_is_one_line(synthetic_videos, tmp_path, capsys):
    taken = tmp_path / "out"
    taken.write_text("a file")
    with pytest.raises(SystemExit) as exit_info:
        extractor.main(["--input_dir", str(synthetic_videos), "--output_dir", str(taken)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --output_dir {taken}: is a file, not a folder"
    assert taken.read_text() == "a file"


def test_resume_refuses_to_run_a_hostile_pickle(synthetic_videos, uninterrupted, tmp_path):
    out = tmp_path / "demo-65kpts"
    shutil.copytree(uninterrupted, out)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    hostile = out / "all" / "G01" / "user01_G01_R01.pkl"
    hostile.write_bytes(pickle.dumps({"keypoints": Payload()}))
    code, report = run_cli("--input_dir", synthetic_videos, "--output_dir", out, "--workers", 1)
    assert code == 0 and "1 extracted, 2 skipped" in report  # the hostile file is re-extracted, never run
    assert not marker.exists() and pickles(out) == pickles(uninterrupted)
