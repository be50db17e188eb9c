"""The dominant-hand rule (config key dominant_hand_ratio, preprocessing.canonicalize_hands): a clip whose left hand
is seen in more frames than the right (by the ratio) is mirrored, so a left-handed signer gives the model what a
right-handed one gives. That a float32 port of docs/preprocessing_spec.md step 4.3 reproduces it from the card, that
it changes none of the MLR511 clips (all right-handed), and the one-line config errors. With the key absent (every
config but the signer-independent one) preprocessing is unchanged."""
import numpy as np
import pytest
import yaml

from config import ConfigError, load_config, model_hparams
from keypoints import mirror_permutation
from dataset import list_split, load_sample, load_split
from preprocessing import (canonicalize_hands, drop_resting_hands, hand_frame_counts, left_dominant, mirror_clip,
                           prepare_clip, select_and_clip, subsample)
from tflite_export import dominant_hand_rule
from tflite_runtime import config_from_card

CONFIG = "configs/arabic-asl-65kpts.yaml"
SI_CONFIG = "configs/arabic-asl-65kpts-signer-independent.yaml"
LEFT, RIGHT = slice(23, 44), slice(44, 65)
ONE_HANDED = "mlr511-90kpts/all/G07/user01_G07_R01.pkl"   # "Eat": the right hand only
TWO_HANDED = "mlr511-90kpts/all/G08/user12_G08_R08.pkl"   # "Sleep": both hands, the left seen 1.27x as often


def with_ratio(tmp_path, ratio, **keys) -> dict:
    doc = yaml.safe_load(open(CONFIG).read()) | keys | {"dominant_hand_ratio": ratio}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(str(path))


def clip_with_hands(left_frames: int, right_frames: int, frames: int = 10) -> np.ndarray:
    """(frames, 65, 2): the pose everywhere, each hand detected in its first n frames."""
    rng = np.random.default_rng(0)
    kp = np.zeros((frames, 65, 2))
    kp[:, :23] = rng.uniform(0.2, 0.8, size=(frames, 23, 2))
    kp[:left_frames, LEFT] = rng.uniform(0.5, 0.7, size=(left_frames, 21, 2))
    kp[:right_frames, RIGHT] = rng.uniform(0.3, 0.5, size=(right_frames, 21, 2))
    return kp


def test_mirroring_swaps_the_hands_and_is_its_own_inverse():
    cfg = load_config(SI_CONFIG)
    kp = clip_with_hands(3, 8)
    mirrored = mirror_clip(kp, mirror_permutation(cfg))
    np.testing.assert_allclose(mirrored[:8, LEFT, 0], 1 - kp[:8, RIGHT, 0])        # the right hand, in the left slot
    np.testing.assert_array_equal(mirrored[:, LEFT, 1], kp[:, RIGHT, 1])
    assert np.all(mirrored[3:, RIGHT] == 0) and hand_frame_counts(mirrored, cfg) == (8, 3)  # missing stays (0, 0)
    np.testing.assert_allclose(mirror_clip(mirrored, mirror_permutation(cfg)), kp, atol=1e-12)


def test_a_left_handed_clip_is_mirrored_and_two_hands_are_left_alone(tmp_path):
    cfg = load_config(SI_CONFIG)
    assert cfg["dominant_hand_ratio"] == 1.5
    right_handed, left_handed, both = clip_with_hands(2, 8), clip_with_hands(8, 2), clip_with_hands(7, 5)
    assert np.array_equal(canonicalize_hands(right_handed, cfg), right_handed)
    assert left_dominant(left_handed, cfg) and hand_frame_counts(canonicalize_hands(left_handed, cfg), cfg) == (2, 8)
    assert not left_dominant(both, cfg) and np.array_equal(canonicalize_hands(both, cfg), both)  # 7 <= 1.5 x 5
    assert left_dominant(both, with_ratio(tmp_path, 1.2))                                       # 7 > 1.2 x 5
    assert left_dominant(clip_with_hands(1, 0), cfg) and not left_dominant(clip_with_hands(0, 0), cfg)
    assert load_config(CONFIG)["dominant_hand_ratio"] == 0.0                                    # off: never
    assert np.array_equal(canonicalize_hands(left_handed, load_config(CONFIG)), left_handed)


def test_a_left_handed_signer_gives_the_model_the_right_handed_input(shared_data):
    """prepare_clip(mirror=True) is the clip a left-handed signer gives: with the rule it is mirrored back."""
    cfg, reference = load_config(SI_CONFIG), load_config(CONFIG)
    raw = load_sample(shared_data / ONE_HANDED)["keypoints"]
    np.testing.assert_allclose(prepare_clip(raw, cfg, mirror=True), prepare_clip(raw, cfg), atol=1e-12)
    assert not np.allclose(prepare_clip(raw, reference, mirror=True), prepare_clip(raw, reference))
    raw = load_sample(shared_data / TWO_HANDED)["keypoints"]     # a two-handed sign stays as the signer made it
    np.testing.assert_array_equal(prepare_clip(raw, cfg), prepare_clip(raw, reference | {"rest_hand_cutoff": 1.6}))


def test_the_rule_changes_no_mlr511_clip(shared_data):
    """Every MLR511 signer signs with the right hand: with the rule or without it, training and evaluation see
    the same 1,200 clips (the largest left/right ratio of frames with a hand seen is 1.29, two-handed signs)."""
    cfg = load_config(SI_CONFIG)
    without = cfg | {"dominant_hand_ratio": 0.0}
    paths = list_split(shared_data / "mlr511-90kpts", "all")
    clips = [subsample(drop_resting_hands(select_and_clip(load_sample(p)["keypoints"], cfg["joint_idx"]), cfg))
             for p in paths]
    assert len(clips) == 1200 and not any(left_dominant(c, cfg) for c in clips)
    ratios = [n_left / n_right for n_left, n_right in (hand_frame_counts(c, cfg) for c in clips)]
    assert 1.25 < max(ratios) < 1.3
    data = load_split(shared_data / "mlr511-90kpts", "all", cfg, max_samples=50)
    assert all(np.array_equal(a, prepare_clip(load_sample(p)["keypoints"], without))
               for a, p in zip(data.clips, data.paths))


def port_of_step_4_3(clip: np.ndarray, card: dict) -> np.ndarray:
    """docs/preprocessing_spec.md step 4.3 written from the text in float32, reading the card."""
    rule = card["dominant_hand"]
    seen = lambda hand: int(sum((clip[t, hand] != 0).any() for t in range(len(clip))))  # noqa: E731
    if not seen(rule["left_hand"]) > rule["ratio"] * seen(rule["right_hand"]):
        return clip
    detected = (clip != 0).any(axis=-1, keepdims=True)
    flipped = np.where(detected, np.stack([1 - clip[..., 0], clip[..., 1]], axis=-1), 0).astype(np.float32)
    return flipped[:, rule["mirror"]]


def test_a_float32_port_of_the_spec_mirrors_the_same_clips(shared_data):
    cfg = load_config(SI_CONFIG)
    card = {"model": model_hparams(cfg), "layout": cfg["layout"], "joint_idx": cfg["joint_idx"],
            "groups": cfg["groups"], "dominant_hand": dominant_hand_rule(cfg)}
    raw = load_sample(shared_data / ONE_HANDED)["keypoints"][:, :65]
    left_handed = subsample(drop_resting_hands(mirror_clip(select_and_clip(raw, cfg["joint_idx"]),
                                                           mirror_permutation(cfg)), cfg))
    ported = port_of_step_4_3(left_handed.astype(np.float32), card)
    np.testing.assert_allclose(ported, canonicalize_hands(left_handed, cfg), atol=1e-6)
    np.testing.assert_allclose(ported, prepare_clip(raw, cfg), atol=1e-6)
    # the card gives every consumer (evaluation, predict_video, the old-runtime worker) the same preprocessing
    from_card = config_from_card(card, "model.tflite")
    assert from_card["dominant_hand_ratio"] == 1.5
    np.testing.assert_array_equal(prepare_clip(raw, from_card, mirror=True), prepare_clip(raw, cfg, mirror=True))
    # a card written before the entry existed, and a config without the key: the rule is off
    older = {key: value for key, value in card.items() if key != "dominant_hand"}
    assert config_from_card(older, "model.tflite")["dominant_hand_ratio"] == 0.0
    assert dominant_hand_rule(load_config(CONFIG)) == {"ratio": 0.0, "rule": "off"}


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg\.yaml: key 'dominant_hand_ratio' must be 0 \(off\) or > 1, got 0\.8$"):
        with_ratio(tmp_path, 0.8)
    with pytest.raises(ConfigError, match=r"cfg\.yaml: key 'dominant_hand_ratio': needs both hands in joint_idx$"):
        with_ratio(tmp_path, 1.5, joint_idx=["0-43"], groups={"pose": ["0-22"], "left_hand": ["23-43"]})
