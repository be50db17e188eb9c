"""Shared pytest fixtures: the demo dataset, its configs (full size and tiny), and the real data in ../shared/data."""
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import load_config  # noqa: E402
from make_demo_dataset import make_demo_dataset  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_CONFIG = REPO / "configs" / "demo-65kpts.yaml"
TINY = {"d_model": 16, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 16, "decoder_ffn_dim": 16, "encoder_layers": 1, "decoder_layers": 1}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo dataset (4 signers x 10 signs x 3 reps = 120 clips), generated once per test session."""
    root = tmp_path_factory.mktemp("demo") / "demo-65kpts"
    make_demo_dataset(root, signers=4, signs=10, reps=3, seed=0)
    return root


@pytest.fixture(scope="session")
def demo_cfg():
    return load_config(DEMO_CONFIG)


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory):
    """The demo config shrunk to a 1+1-layer, d_model 16 model (fast to build and train)."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text()) | TINY
    path = tmp_path_factory.mktemp("cfg") / "tiny-65kpts.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def tiny_cfg(tiny_config_path):
    return load_config(tiny_config_path)


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data (real MLR511 keypoints, videos, a reference pickle); skips when absent."""
    if not (SHARED_DATA / "mlr511-90kpts" / "label2id.json").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
