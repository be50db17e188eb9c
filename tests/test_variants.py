"""run_end_to_end_variants.sh without training: the reference README's names (runs.variant_prefix
and its alias for older trees), FLIPPED_DIR refused, and variants skipped, one line each, when their
keypoints do not exist. Variants trained end to end: test_pipeline.py::test_variants_script."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from runs import run_paths, variant_prefix


def run(script: str, **env) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SIGNBART_OUTPUT_ROOT"} | env
    return subprocess.run(["bash", str(REPO / script)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_variant_prefix_names_and_alias(tmp_path):
    root = str(tmp_path / "outputs")
    assert variant_prefix("arabic_asl", "65kpts", root) == "arabic_asl_65kpts_pose_hands"
    assert variant_prefix("arabic_asl", "42kpts-hands", root) == "arabic_asl_42kpts_hands"
    old = run_paths("arabic_asl", "loso", root).checkpoint_dir(
        "arabic_asl_65kpts_seed42_arabic_asl_LOSO_user01")
    old.mkdir(parents=True)  # a tree written before the rename keeps its name ...
    assert variant_prefix("arabic_asl", "65kpts", root) == "arabic_asl_65kpts"
    run_paths("arabic_asl", "full", root).checkpoint_dir(
        "arabic_asl_65kpts_pose_hands_full").mkdir(parents=True)
    assert variant_prefix("arabic_asl", "65kpts", root) == "arabic_asl_65kpts_pose_hands"  # unless
    out = subprocess.run([sys.executable, str(REPO / "runs.py"), "variant_prefix",
                          "65kpts", "--output_root", str(tmp_path / "none")],
                         capture_output=True, text=True, check=True).stdout
    assert out == "arabic_asl_65kpts_pose_hands\n"


@pytest.mark.parametrize("script", ["run_end_to_end_variants.sh", "run_end_to_end_pipeline.sh"])
def test_flipped_dir_is_refused(script, tmp_path):
    result = run(script, FLIPPED_DIR=str(tmp_path / "flipped"), OUTPUT_ROOT=str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("error: FLIPPED_DIR is not used")
    assert "FLIP_USERS=" in result.stderr and not (tmp_path / "out").exists()


def test_variants_without_90_point_data_skip_the_90_point_variant(demo_root, tmp_path):
    common = {"RUN_LOSO": "0", "RUN_FULL_DATASET": "0", "OUTPUT_ROOT": str(tmp_path / "out"),
              "DATASET_NAME": "demo", "DATA_DIR_65": str(demo_root),
              "DATA_DIR_90": str(tmp_path / "no-90kpts")}
    result = run("run_end_to_end_variants.sh", VARIANTS="42kpts-hands 90kpts", **common)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in result.stdout.splitlines() if "skipped:" in line]
    no90 = tmp_path / "no-90kpts"
    assert skipped == [f"variant 90kpts skipped: needs 90-point keypoints, {no90} has none "
                       "(extract them: set RAW_DIR=<videos>, or run extract_90_keypoints.py "
                       f"--input_dir <videos> --output_dir {no90})"]
    assert "variants done" in result.stdout and ": 42kpts-hands x seeds" in result.stdout
    result = run("run_end_to_end_variants.sh", VARIANTS="90kpts", **common)
    assert result.returncode == 2 and "error: no variant has keypoints to run on" in result.stderr
    result = run("run_end_to_end_variants.sh", VARIANTS="42kpts-hands",
                 **common | {"DATA_DIR_65": str(tmp_path / "no-65kpts")})
    assert result.returncode == 2
    assert f"error: variant 42kpts-hands: no keypoints in {tmp_path / 'no-65kpts'}" in result.stderr
