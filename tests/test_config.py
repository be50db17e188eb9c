"""Config validation and layout consistency; bad files (binary, folders, repeated keys) are one-line errors."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from config import ConfigError, load_config, num_keypoints, parse_index_list
from keypoints import mirror_permutation, selected_groups
from keypoints import LAYOUTS, get_layout

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
EXPECTED_K = {"90kpts": 90, "65kpts": 65, "63kpts": 63, "42kpts": 42, "44kpts": 44, "46kpts": 46, "48kpts": 48}


def write(tmp_path, **changes):
    raw = yaml.safe_load((CONFIGS[0].parent / "arabic-asl-65kpts.yaml").read_text())
    for k, v in changes.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_is_consistent(path):
    cfg = load_config(path)
    k = next(v for key, v in EXPECTED_K.items() if key in path.stem)
    assert num_keypoints(cfg) == k
    flat = sorted(i for g in selected_groups(cfg) for i in g)
    assert flat == list(range(k)), "groups must partition the selected points"
    layout = get_layout(cfg["layout"])
    for name, idx in cfg["groups"].items():  # every group lies inside one MediaPipe part (or arm points of pose)
        parts = {layout.points[i][0] for i in idx}
        assert len(parts) == 1, f"{path.stem}: group {name} mixes parts {parts}"
    perm = mirror_permutation(cfg)
    assert sorted(perm) == list(range(k)) and (perm[perm] == range(k)).all(), "mirror must be an involution"


def test_reference_hyperparameters():
    cfg = load_config(CONFIGS[0].parent / "arabic-asl-65kpts.yaml")
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["decoder_layers"], cfg["encoder_attention_heads"],
            cfg["encoder_ffn_dim"], cfg["dropout"], cfg["classifier_dropout"]) == (144, 2, 2, 8, 144, 0.3, 0.7)


def test_layouts_match_spec():
    assert LAYOUTS[90].part_sources("face")[:3] == [10, 338, 297] and LAYOUTS[90].size == 90
    assert LAYOUTS[65].points == LAYOUTS[90].points[:65]
    assert LAYOUTS[63].part_slice("face") == list(range(57, 63))
    lay = LAYOUTS[65]
    assert lay.points[lay.mirror_index(23)] == ("right_hand", 0) and lay.mirror_index(11) == 12


def test_index_ranges():
    assert parse_index_list([0, "2-4", 7], "x") == [0, 2, 3, 4, 7]
    with pytest.raises(ConfigError, match="bad range"):
        parse_index_list(["5-2"], "x")


@pytest.mark.parametrize("changes, message", [
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
    ({"d_model": None}, r"missing key\(s\) \['d_model'\]"),
    ({"dropout": "high"}, r"key 'dropout' must be float"),
    ({"joint_idx": ["0-65"]}, r"key 'joint_idx': indices \[65\] out of range"),
    ({"joint_idx": [0, 0, "1-64"]}, r"key 'joint_idx': repeated indices \[0\]"),
    ({"groups": {"pose": ["0-22"], "hands": ["23-63"]}}, r"key 'groups': joint_idx indices \[64\] are in no group"),
    ({"groups": {"a": ["0-30"], "b": ["30-64"]}}, r"key 'groups.b': index 30 is already in group 'a'"),
    ({"encoder_attention_heads": 7}, r"must divide d_model"),
    ({"layout": 77}, r"key 'layout': unknown keypoint layout 77"),
])
def test_config_errors_name_file_and_key(tmp_path, changes, message):
    path = write(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_model: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def run_config_cli(*paths):
    return subprocess.run([sys.executable, str(REPO / "config.py"), *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True)


def test_cli_exit_status_says_whether_every_config_is_valid(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("d_model: [1,\n")
    bad = run_config_cli(CONFIG_DIR / "demo-65kpts.yaml", broken)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"ERROR {broken}: not valid YAML (expected the node content, but "
                                               "found '<stream end>' (line 2))"]
    assert run_config_cli(CONFIG_DIR / "demo-65kpts.yaml").returncode == 0


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(bytes(range(256)) * 4), "not a text file"),
    (lambda p: p.mkdir(), "is a folder, not a config file"),
    (lambda p: p.write_bytes(b"\x00\x01\x02binary"), "not valid YAML"),
    (lambda p: p.write_text("[" * 5000), "not valid YAML"),
    (lambda p: p.write_text(""), "expected a mapping of keys, got NoneType"),
])
def test_binary_files_and_folders_are_one_line_errors(tmp_path, make, message):
    path = tmp_path / "config.yaml"
    make(path)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    result = run_config_cli(path)
    assert result.returncode == 1 and "Traceback" not in result.stderr and message in result.stderr


def test_a_key_given_twice_is_refused(tmp_path):
    text = (CONFIG_DIR / "demo-65kpts.yaml").read_text()
    path = tmp_path / "twice.yaml"
    path.write_text(text + "\nd_model: 64\n")
    with pytest.raises(ConfigError, match=r"key 'd_model' is given twice \(line \d+\)"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text(text.replace("groups:\n", "groups:\n  pose: [0]\n", 1))
    with pytest.raises(ConfigError, match="key 'pose' is given twice"):
        load_config(nested)


def test_fuzzed_configs_never_raise_anything_but_config_error(tmp_path):
    rng = np.random.default_rng(0)
    text = (CONFIG_DIR / "demo-65kpts.yaml").read_bytes()
    for i in range(200):
        data = bytearray(text)
        for _ in range(rng.integers(1, 8)):
            data[rng.integers(len(data))] = rng.integers(256)
        path = tmp_path / f"fuzz{i}.yaml"
        path.write_bytes(bytes(data[:rng.integers(len(data) + 1)]))
        try:
            load_config(path)
        except ConfigError as e:
            assert str(path) in str(e) and "\n" not in str(e)
