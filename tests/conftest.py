"""Shared pytest fixtures: the demo dataset, its configs (full size and tiny), and the real data in ../shared/data."""
import sys
from types import SimpleNamespace
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import load_config  # noqa: E402
from make_demo_dataset import make_demo_dataset  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_CONFIG = REPO / "configs" / "demo-65kpts.yaml"
TINY = {"d_model": 32, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "dropout": 0.1, "classifier_dropout": 0.2,
        "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "encoder_layers": 1, "decoder_layers": 1}


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
    """The demo config shrunk to a 1+1-layer, d_model 32 model with light dropout (fast to build and train)."""
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


@pytest.fixture(scope="session")
def trained_fold(demo_root, tiny_config_path, tmp_path_factory):
    """A tiny model trained for 8 epochs on one LOSO fold of the demo data (holdout user01), with its FP32 export.

    Fields: config_path, cfg, base_data_path, data_path (the LOSO fold), holdout, dataset, output_root,
    checkpoint_dir, h5, tflite, record (training metadata)."""
    import fix_loso
    from main_functional import TrainSettings, train
    from runs import loso_data_path, loso_experiment_name, run_paths
    fix_loso.main(["--base_root", str(demo_root), "--holdouts", "user01"])
    out = tmp_path_factory.mktemp("outputs")
    exp = loso_experiment_name("demo", "user01")
    record = train(TrainSettings(experiment_name=exp, config_path=str(tiny_config_path),
                                 data_path=str(loso_data_path(demo_root, "user01")), dataset_name="demo",
                                 run_type="loso", holdout_user="user01", epochs=8, lr=3e-3, batch_size=8, seed=42,
                                 output_root=str(out)))
    ckpt = run_paths("demo", "loso", str(out)).checkpoint_dir(exp)
    return SimpleNamespace(config_path=tiny_config_path, cfg=load_config(tiny_config_path), base_data_path=demo_root,
                           data_path=loso_data_path(demo_root, "user01"), holdout="user01", dataset="demo",
                           output_root=out, checkpoint_dir=ckpt, h5=ckpt / "final_model.h5",
                           tflite=ckpt / "final_model_fp32.tflite", record=record)
