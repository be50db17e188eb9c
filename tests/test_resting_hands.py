"""The resting-hand rule (config key rest_hand_cutoff, preprocessing.drop_resting_hands): what it drops, that a
float32 port of docs/preprocessing_spec.md step 4.2 reproduces it on real clips, that it travels in the model card
to every consumer, and the one-line config errors. With the key absent (every config but the signer-independent
one) preprocessing is unchanged."""
import numpy as np
import pytest
import yaml

from config import ConfigError, load_config, model_hparams
from dataset import load_sample
from preprocessing import drop_resting_hands, prepare_clip, preprocess, select_and_clip
from tflite_export import resting_hands_rule
from tflite_runtime import config_from_card

CONFIG = "configs/arabic-asl-65kpts.yaml"
SI_CONFIG = "configs/arabic-asl-65kpts-signer-independent.yaml"
L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST = 11, 12, 15, 16  # pose positions in the 65 layout
LEFT, RIGHT = slice(23, 44), slice(44, 65)


def with_cutoff(tmp_path, cutoff, **keys) -> dict:
    """The 65-point reference config with rest_hand_cutoff (and any other top-level keys) set."""
    doc = yaml.safe_load(open(CONFIG).read()) | keys | {"rest_hand_cutoff": cutoff}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(str(path))


def body_frame(left_wrist_y: float, right_wrist_y: float) -> np.ndarray:
    """(1, 65, 2): shoulders at y 0.4, 0.2 apart (w = 0.2); both hands detected; wrists at the given y."""
    kp = np.zeros((1, 65, 2))
    kp[0, :23] = 0.5
    kp[0, L_SHOULDER], kp[0, R_SHOULDER] = (0.6, 0.4), (0.4, 0.4)
    kp[0, L_WRIST], kp[0, R_WRIST] = (0.6, left_wrist_y), (0.4, right_wrist_y)
    kp[0, LEFT], kp[0, RIGHT] = 0.3, 0.7
    return kp


def test_a_hand_below_the_cutoff_counts_as_undetected(tmp_path):
    cfg = with_cutoff(tmp_path, 1.5)  # 1.5 shoulder widths = 0.3 below the shoulder line (y 0.7)
    out = drop_resting_hands(body_frame(0.75, 0.65), cfg)
    assert np.all(out[0, LEFT] == 0) and np.all(out[0, RIGHT] == 0.7)  # left resting, right in use
    assert np.array_equal(out[0, :23], body_frame(0.75, 0.65)[0, :23])  # the pose is never touched


def test_without_shoulders_or_cutoff_nothing_changes(tmp_path):
    frame = body_frame(0.95, 0.95)
    no_shoulder = frame.copy()
    no_shoulder[0, R_SHOULDER] = 0.0
    assert np.array_equal(drop_resting_hands(no_shoulder, with_cutoff(tmp_path, 1.5)), no_shoulder)
    assert np.array_equal(drop_resting_hands(frame, load_config(CONFIG)), frame)
    assert load_config(CONFIG)["rest_hand_cutoff"] == 0.0


def test_the_signer_independent_config_uses_it():
    assert load_config(SI_CONFIG)["rest_hand_cutoff"] == 1.6


def port_of_step_4_2(raw: np.ndarray, card: dict) -> np.ndarray:
    """docs/preprocessing_spec.md steps 4.1-4.2 written from the text in float32, reading the card."""
    kp = np.clip(raw[:, :, :2].astype(np.float32), 0, 1)
    rule = card["resting_hands"]
    left, right = rule["shoulders"]
    for t in range(len(kp)):
        if not (kp[t, left].any() and kp[t, right].any()):
            continue
        w, line = abs(kp[t, left, 0] - kp[t, right, 0]), (kp[t, left, 1] + kp[t, right, 1]) / 2
        for hand in rule["hands"]:
            if w > 0 and kp[t, hand["wrist"]].any() and kp[t, hand["wrist"], 1] - line > rule["cutoff"] * w:
                kp[t, hand["points"]] = 0.0
    return kp


@pytest.mark.parametrize("sample", ["mlr511-90kpts/all/G03/user03_G03_R01.pkl",
                                    "mlr511-90kpts/all/G07/user10_G07_R05.pkl"])
def test_a_float32_port_of_the_spec_drops_the_same_hands(shared_data, sample):
    cfg = load_config(SI_CONFIG)
    raw = load_sample(shared_data / sample)["keypoints"][:, :65]
    card = {"model": model_hparams(cfg), "layout": cfg["layout"], "joint_idx": cfg["joint_idx"],
            "groups": cfg["groups"], "resting_hands": resting_hands_rule(cfg)}
    ported = port_of_step_4_2(raw, card)
    expected = drop_resting_hands(select_and_clip(raw, cfg["joint_idx"]), cfg)
    hands_before = (~np.all(select_and_clip(raw, cfg["joint_idx"])[:, LEFT] == 0, axis=(1, 2))).sum()
    assert (~np.all(expected[:, LEFT] == 0, axis=(1, 2))).sum() < hands_before  # this signer rests a hand in view
    np.testing.assert_array_equal(ported == 0, expected == 0)
    # the card gives every consumer (evaluation, predict_video, the old-runtime worker) the same preprocessing
    from_card = config_from_card(card, "model.tflite")
    assert from_card["rest_hand_cutoff"] == 1.6
    np.testing.assert_array_equal(preprocess(raw, from_card), preprocess(raw, cfg))
    np.testing.assert_array_equal(prepare_clip(raw, from_card), prepare_clip(raw, cfg))


def test_an_old_card_means_the_rule_is_off():
    cfg = load_config(CONFIG)
    card = {"model": model_hparams(cfg), "layout": 65, "joint_idx": cfg["joint_idx"], "groups": cfg["groups"]}
    assert config_from_card(card, "m.tflite")["rest_hand_cutoff"] == 0.0
    assert resting_hands_rule(cfg) == {"cutoff": 0.0, "rule": "off"}


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg\.yaml: key 'rest_hand_cutoff' must be >= 0 \(0 = off\), got -1\.0$"):
        with_cutoff(tmp_path, -1.0)
    with pytest.raises(ConfigError, match=r"cfg\.yaml: key 'rest_hand_cutoff': needs both pose shoulders, both "
                                          r"pose wrists and both hands in joint_idx \(missing \['pose\.left_shoulder'"):
        with_cutoff(tmp_path, 1.6, joint_idx=["23-64"], groups={"left_hand": ["23-43"], "right_hand": ["44-64"]})
