"""The SignBART model: reference parameter counts, padding invariance, causal decoder, .h5 round trip, and the
structure later stages rely on (Dense layers reachable by name, no non-builtin-friendly constants)."""
import numpy as np
import pytest

from config import load_config
from conftest import REPO
from dataset import load_split
from layers import LastValidToken
from model_functional import build_model, load_model, parameter_breakdown
from preprocessing import pad_clip
from tf_env import keras, tf


@pytest.mark.parametrize("config_name, expected", [
    ("arabic-asl-65kpts", 766_378), ("arabic-asl-90kpts", 773_578), ("lsa64-63kpts", 773_632)])
def test_parameter_counts_match_the_reference(config_name, expected):
    model = build_model(load_config(REPO / "configs" / f"{config_name}.yaml"))
    assert model.count_params() == expected
    assert not model.non_trainable_weights


def test_parameter_breakdown_matches_spec_65kpts():
    counts = parameter_breakdown(build_model(load_config(REPO / "configs" / "arabic-asl-65kpts.yaml")))
    assert counts == {"projection": 19_008, "encoder": 289_152, "decoder": 456_768, "classification_head": 1_450,
                      "total": 766_378}


@pytest.fixture(scope="module")
def demo_model(demo_cfg):
    tf.random.set_seed(1)
    return build_model(demo_cfg)  # the reference architecture (d_model 144), untrained


@pytest.fixture(scope="module")
def demo_clips(demo_root, demo_cfg):
    return load_split(demo_root, "all", demo_cfg, max_samples=6).normalized(demo_cfg)


def logits(model, keypoints, mask):
    return model({"keypoints": keypoints, "attention_mask": mask}, training=False).numpy()


def test_padding_to_64_frames_does_not_change_logits(demo_model, demo_clips):
    for clip in demo_clips:
        own = logits(demo_model, clip[None].astype(np.float32), np.ones((1, len(clip)), np.float32))
        keypoints, mask = pad_clip(clip)
        padded = logits(demo_model, keypoints[None], mask[None])
        assert len(clip) < 64
        np.testing.assert_allclose(padded, own, atol=1e-5)


def test_batch_of_different_lengths_equals_one_by_one(demo_model, demo_clips):
    pairs = [pad_clip(c) for c in demo_clips]
    batch = logits(demo_model, np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
    single = np.concatenate([logits(demo_model, p[0][None], p[1][None]) for p in pairs])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_decoder_is_causal(demo_model, demo_cfg):
    """The decoder reads the y coordinates: changing them after frame t leaves decoder outputs up to t unchanged
    (the x coordinates feed the bidirectional encoder, so they are kept fixed here)."""
    last = f"decoder_layer_{demo_cfg['decoder_layers'] - 1}"
    decoder = keras.Model(demo_model.inputs, demo_model.get_layer(last).output)
    rng = np.random.default_rng(0)
    keypoints = rng.random((1, 40, 65, 2)).astype(np.float32)
    mask = np.ones((1, 40), np.float32)
    t = 20
    changed = keypoints.copy()
    changed[:, t + 1:, :, 1] = rng.random((1, 40 - t - 1, 65))
    before = decoder({"keypoints": keypoints, "attention_mask": mask}).numpy()
    after = decoder({"keypoints": changed, "attention_mask": mask}).numpy()
    np.testing.assert_allclose(after[:, :t + 1], before[:, :t + 1], atol=1e-6)
    assert np.abs(after[:, t + 1:] - before[:, t + 1:]).max() > 1e-3


def test_last_valid_token_takes_the_last_frame_of_the_length_mask():
    hidden = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    out = LastValidToken()([hidden, mask]).numpy()
    np.testing.assert_array_equal(out, hidden[[0, 1], [2, 4]])


def test_h5_round_trip_gives_identical_logits(demo_model, demo_cfg, demo_clips, tmp_path):
    keypoints, mask = pad_clip(demo_clips[0])
    path = tmp_path / "model.h5"
    demo_model.save(path, include_optimizer=False)
    reloaded = load_model(path, demo_cfg)
    np.testing.assert_array_equal(logits(reloaded, keypoints[None], mask[None]),
                                  logits(demo_model, keypoints[None], mask[None]))
    assert reloaded.count_params() == demo_model.count_params()


def test_every_dense_layer_is_an_attribute_with_a_stable_name(demo_model, demo_cfg):
    """Quantization reaches Dense kernels by name: proj_x1/proj_y1/classifier at the top, fc1/fc2 and
    q/k/v/out_proj inside the encoder and decoder layers."""
    assert {type(demo_model.get_layer(n)) for n in ("proj_x1", "proj_y1", "classifier")} == {keras.layers.Dense}
    attention = ("q_proj", "k_proj", "v_proj", "out_proj")
    for i in range(demo_cfg["encoder_layers"]):
        layer = demo_model.get_layer(f"encoder_layer_{i}")
        assert [layer.fc1.name, layer.fc2.name] == ["fc1", "fc2"]
        assert [getattr(layer.self_attn, a).name for a in attention] == list(attention)
    for i in range(demo_cfg["decoder_layers"]):
        layer = demo_model.get_layer(f"decoder_layer_{i}")
        assert [getattr(layer.encoder_attn, a).kernel.shape for a in attention] == [(144, 144)] * 4
    names = [w.name for w in demo_model.weights]
    assert len(names) == len(set(names)), "weight names must be unique for .h5 saving"


def test_attention_mask_uses_the_configured_finite_constant(demo_model, demo_cfg):
    bias = demo_model.get_layer("decoder_causal_bias")(np.array([[1, 1, 0]], np.float32)).numpy()
    assert bias.min() == demo_cfg["attention_mask_value"] == -100
    np.testing.assert_array_equal(bias[0, 0] == 0, [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
