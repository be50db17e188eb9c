"""Training hyperparameters in the config: the `training:` block and its one-line errors, --set overrides,
the precedence flag > config > recipes.py, each augmentation switch on small arrays, the default switches
drawing exactly what the recipe drew before they existed, the nonzero training mask, the cosine schedule,
label smoothing, and a 1-epoch run configured by a full training block."""
import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import augmentations as aug
import recipes
from augmentations import AugmentOptions, augment, nonzero_mask
from config import ConfigError, load_config, model_hparams
from keypoints import hand_positions, mirror_permutation
from dataset import SplitData, load_split, make_dataset
from preprocessing import subsample

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CONFIG = REPO / "configs" / "arabic-asl-65kpts.yaml"
SIGNER_INDEPENDENT = REPO / "configs" / "arabic-asl-65kpts-signer-independent.yaml"


def write_config(tmp_path, training=None, base=REFERENCE_CONFIG, **top):
    raw = yaml.safe_load(base.read_text()) | top
    if training is not None:
        raw["training"] = training
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ----------------------------------------------------------------------------------------------- parsing
def test_signer_independent_config_sets_every_training_key():
    cfg = load_config(SIGNER_INDEPENDENT)
    assert set(cfg["training"]) == {"epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs",
                                    "min_lr", "label_smoothing", "bucket_batches", "augmentation"}
    assert set(cfg["training"]["augmentation"]) == set(aug.DEFAULTS)
    assert aug.options_from_config(cfg) == AugmentOptions(noise_on_missing=True)  # the chosen recipe
    assert (cfg["training"]["lr"], cfg["batch_size"], cfg["training"]["epochs"]) == (1e-3, 32, 60)
    assert (cfg["training"]["schedule"], cfg["training"]["bucket_batches"]) == ("plateau", 8)
    reference = load_config(REFERENCE_CONFIG)  # a narrower network; the preprocessing adds two rules
    assert (cfg["rest_hand_cutoff"], reference["rest_hand_cutoff"]) == (1.6, 0.0)
    assert (cfg["dominant_hand_ratio"], reference["dominant_hand_ratio"]) == (1.5, 0.0)
    narrower = ("d_model", "encoder_ffn_dim", "decoder_ffn_dim")
    assert [cfg[k] for k in narrower] == [96, 96, 96] and [reference[k] for k in narrower] == [144, 144, 144]
    assert all(cfg[k] == reference[k] for k in reference if k not in ("training", "config_path", "description",
                                                                       "batch_size", "rest_hand_cutoff",
                                                                       "dominant_hand_ratio") + narrower)


def test_configs_without_a_training_block_resolve_to_the_recipe():
    cfg = load_config(REFERENCE_CONFIG)
    assert cfg["training"] == {} and cfg["overrides"] == []
    assert recipes.training_recipe(cfg) == {
        "epochs": recipes.FP32_EPOCHS, "lr": recipes.FP32_LR, "batch_size": 1, "weight_decay": 0.01,
        "schedule": "plateau", "warmup_epochs": 0, "min_lr": recipes.MIN_LR, "label_smoothing": 0.0,
        "bucket_batches": 0}


PUBLISHED_BATCH_32 = {  # config -> a committed results folder trained with it and --epochs/--lr/--batch_size
    "65kpts": "mlr511-65kpts-loso-b32lr1e-3", "42kpts-hands": "mlr511-42kpts-hands-b32lr1e-3",
    "44kpts-hands-wrists": "mlr511-44kpts-hands-wrists-b32lr1e-3-user01",
    "46kpts-hands-shoulders-wrists": "mlr511-46kpts-hands-shoulders-wrists-b32lr1e-3",
    "48kpts-hands-shoulders-elbows-wrists": "mlr511-48kpts-hands-shoulders-elbows-wrists-b32lr1e-3",
    "90kpts": "mlr511-90kpts-b32lr1e-3"}


@pytest.mark.parametrize("variant", PUBLISHED_BATCH_32)
def test_published_batch_32_runs_have_a_config_with_their_recipe(variant):
    """configs/arabic-asl-V-b32lr1e-3.yaml trains, with no flag, what the published runs trained with
    configs/arabic-asl-V.yaml and flags: the same network, the recorded recipe, the default augmentation."""
    cfg = load_config(REPO / "configs" / f"arabic-asl-{variant}-b32lr1e-3.yaml")
    base = load_config(REPO / "configs" / f"arabic-asl-{variant}.yaml")
    assert base["training"] == {}                     # the reference recipe stays the base config's
    same = [k for k in base if k not in ("training", "config_path", "description", "batch_size")]
    assert {k: cfg[k] for k in same} == {k: base[k] for k in same}
    assert aug.options_from_config(cfg) == AugmentOptions()
    recipe = recipes.training_recipe(cfg)
    records = sorted((REPO / "results" / PUBLISHED_BATCH_32[variant] / "training_metadata").glob("*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        assert record["config_path"] == f"configs/arabic-asl-{variant}.yaml"
        assert (record["epochs"], record["learning_rate"], record["batch_size"]) == (
            recipe["epochs"], recipe["lr"], recipe["batch_size"]), path
        assert record["model_config"] == {k: v for k, v in model_hparams(cfg).items()}, path
        assert record["settings"]["val_fraction"] == 0 and not record["settings"]["val_users"]
    assert recipe == recipes.training_recipe(base) | {"epochs": 80, "lr": 1e-3, "batch_size": 32}


@pytest.mark.parametrize("training, message", [
    ({"epoch": 3}, "unknown key(s) ['training.epoch']"),
    ({"lr": "fast"}, "key 'training.lr' must be float, got 'fast'"),
    ({"epochs": 2.5}, "key 'training.epochs' must be int, got 2.5"),
    ({"epochs": 0}, "key 'training.epochs' must be >= 1, got 0"),
    ({"schedule": "step"}, "key 'training.schedule' must be one of ['plateau', 'cosine'], got 'step'"),
    ({"label_smoothing": 1.0}, "key 'training.label_smoothing' must be in [0, 1), got 1.0"),
    ({"epochs": 5, "warmup_epochs": 5}, "key 'training.warmup_epochs' must be < training.epochs"),
    ({"augmentation": [1]}, "key 'training.augmentation' must be dict, got [1]"),
    ({"augmentation": {"flips": "swap"}}, "unknown key(s) ['training.augmentation.flips']"),
    ({"augmentation": {"flip": "both"}},
     "key 'training.augmentation.flip' must be one of ['swap', 'mirror_only', 'off'], got 'both'"),
    ({"augmentation": {"noise_sigma": [0.2, 0.1]}},
     "key 'training.augmentation.noise_sigma' must have 0 <= low <= high, got [0.2, 0.1]"),
    ({"augmentation": {"scale": 1.2}},
     "key 'training.augmentation.scale' must be a [low, high] pair of numbers, got 1.2"),
    ({"augmentation": {"hand_drop": 1.5}}, "key 'training.augmentation.hand_drop' must be in [0, 1], got 1.5"),
    ({"augmentation": {"noise_on_missing": 1}},
     "key 'training.augmentation.noise_on_missing' must be bool, got 1"),
    ({"augmentation": {"p_each": 0}}, "key 'training.augmentation.p_each' must be > 0 (a pass must be able to fire)"),
])
def test_bad_training_block_is_one_line_naming_file_and_key(tmp_path, training, message):
    path = write_config(tmp_path, training)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: {message}"


def test_batch_size_and_weight_decay_given_twice_are_refused(tmp_path):
    path = write_config(tmp_path, {"batch_size": 8}, batch_size=4)
    with pytest.raises(ConfigError, match=r"^.*cfg.yaml: key 'training.batch_size' is also given at the top "
                                          r"level; give it once$"):
        load_config(path)
    assert load_config(write_config(tmp_path, {"weight_decay": 0.05}))["weight_decay"] == 0.05


def test_yaml_exponent_without_a_dot_is_a_float(tmp_path):
    assert load_config(write_config(tmp_path, {"lr": "1e-3"}))["training"]["lr"] == 1e-3


def test_cli_validation_exits_non_zero_with_one_line(tmp_path):
    path = write_config(tmp_path, {"schedule": "step"})
    for args, code in (([str(path)], 1), (["--recipe", str(path)], 2)):
        result = subprocess.run([sys.executable, "config.py", *args], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == code and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "key 'training.schedule'" in result.stderr


# ----------------------------------------------------------------------------------------------- --set
def test_set_overrides_the_training_block_with_the_same_checks(tmp_path):
    sets = ["training.augmentation.flip=mirror_only", "training.label_smoothing=0.1", "training.lr=5e-4",
            "training.augmentation.scale=[0.8, 1.2]", "training.augmentation.noise_on_missing=true"]
    cfg = load_config(SIGNER_INDEPENDENT, sets)
    opts = aug.options_from_config(cfg)
    assert (opts.flip, opts.scale, opts.noise_on_missing) == ("mirror_only", (0.8, 1.2), True)
    assert cfg["training"]["label_smoothing"] == 0.1 and cfg["training"]["lr"] == 5e-4
    assert cfg["overrides"] == sets
    assert load_config(REFERENCE_CONFIG, ["training.epochs=3"])["training"] == {"epochs": 3}


@pytest.mark.parametrize("item, message", [
    ("training.lr", "--set 'training.lr': expected KEY=VALUE, e.g. training.lr=1e-3"),
    ("dropout=0.1", "--set 'dropout=0.1': only training.* keys can be set (model keys are read from the config "
                    "file by PTQ, QAT and evaluation)"),
    ("training.lr.peak=1", "--set 'training.lr.peak=1': 'training.lr' is not a mapping"),
    ("training.augmentation.flip=upside", f"{SIGNER_INDEPENDENT}: key 'training.augmentation.flip' must be one "
                                          "of ['swap', 'mirror_only', 'off'], got 'upside'"),
    ("training.warmup=2", f"{SIGNER_INDEPENDENT}: unknown key(s) ['training.warmup']"),
])
def test_bad_set_is_one_line(item, message):
    with pytest.raises(ConfigError) as e:
        load_config(SIGNER_INDEPENDENT, [item])
    assert str(e.value) == message


# ----------------------------------------------------------------------------------------------- precedence
def parsed(argv):
    from main_functional import add_training_args
    ap = argparse.ArgumentParser()
    add_training_args(ap)
    return ap.parse_args(argv)


def resolved(argv):
    from main_functional import resolve_settings, settings_from_args
    s = settings_from_args(parsed(argv), experiment_name="x", data_path="d", dataset_name="demo", run_type="loso")
    return resolve_settings(s, load_config(s.config_path, s.overrides))


def test_precedence_flag_over_config_over_recipe():
    s = resolved(["--config_path", str(SIGNER_INDEPENDENT)])
    assert (s.epochs, s.lr, s.batch_size, s.schedule) == (60, 1e-3, 32, "plateau")
    s = resolved(["--config_path", str(SIGNER_INDEPENDENT), "--epochs", "5", "--lr", "0.01", "--batch_size", "4",
                  "--set", "training.schedule=cosine", "--set", "training.warmup_epochs=2"])
    assert (s.epochs, s.lr, s.batch_size, s.schedule, s.warmup_epochs) == (5, 0.01, 4, "cosine", 2)
    s = resolved(["--config_path", str(REFERENCE_CONFIG)])
    assert (s.epochs, s.lr, s.batch_size, s.label_smoothing) == (recipes.FP32_EPOCHS, recipes.FP32_LR, 1, 0.0)


def test_warmup_longer_than_the_flagged_epochs_is_a_user_error():
    from util import UserError
    with pytest.raises(UserError, match=r"^warm-up \(2 epochs\) must be shorter than the 2 training epochs$"):
        resolved(["--config_path", str(SIGNER_INDEPENDENT), "--epochs", "2", "--set", "training.schedule=cosine",
                  "--set", "training.warmup_epochs=2"])


def test_resume_key_holds_the_recipe():
    from main_functional import resume_key
    base = ["--config_path", str(SIGNER_INDEPENDENT)]
    key = resume_key(resolved(base), load_config(SIGNER_INDEPENDENT))
    assert key["label_smoothing"] == 0.0 and key["augmentation"]["flip"] == "swap" and "epochs" not in key
    smoothed = ["training.label_smoothing=0.1"]
    assert resume_key(resolved(base + ["--set", smoothed[0]]), load_config(SIGNER_INDEPENDENT, smoothed)) != key
    cosine = ["training.schedule=cosine"]
    assert resume_key(resolved(base + ["--set", cosine[0]]), load_config(SIGNER_INDEPENDENT, cosine))["epochs"] == 60


def test_pipeline_defaults_read_the_config(capsys):
    import config
    assert config.main(["--recipe", str(SIGNER_INDEPENDENT)]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    assert (lines["EPOCHS"], lines["LR"], lines["BATCH_SIZE"]) == ("60", "0.001", "32")
    assert recipes.pipeline_defaults(True, load_config(REFERENCE_CONFIG)) == recipes.pipeline_defaults(True)


# ----------------------------------------------------------------------------------------------- switches
def small_clip():
    """(3 frames, 4 points, 2): points 0-1 detected everywhere, point 2 missing in frame 1, point 3 never."""
    kp = np.array([[[0.2, 0.3], [0.6, 0.7], [0.4, 0.5], [0.0, 0.0]]] * 3)
    kp[1, 2] = 0.0
    return kp


def test_reference_flip_mirrors_every_point_without_swapping():
    kp, mirror = small_clip(), np.array([1, 0, 3, 2])
    out = aug.flip(kp, mirror, "mirror_only")
    np.testing.assert_allclose(out[..., 0], 1 - kp[..., 0])
    np.testing.assert_array_equal(out[..., 1], kp[..., 1])
    np.testing.assert_array_equal(out[:, 3], [[1.0, 0.0]] * 3)          # missing became (1, 0)
    swapped = aug.flip(kp, mirror, "swap")
    np.testing.assert_array_equal(swapped[:, 2], 0.0)                    # slot 2 <- missing slot 3
    np.testing.assert_allclose(swapped[:, 0, 0], 1 - kp[:, 1, 0])


def test_noise_on_missing_makes_missing_points_detected():
    kp, opts = small_clip(), AugmentOptions(noise_on_missing=True, clip=False)
    out = aug.add_noise(kp, np.random.default_rng(0), opts)
    assert aug.detected(out).all() and (out[:, 3] != 0).all()
    assert (out < 0).any()                                               # no re-clip
    assert not aug.detected(aug.add_noise(kp, np.random.default_rng(0)))[:, 3].any()


def test_origin_rotation_rotates_about_zero_without_clipping():
    kp = small_clip()
    opts = AugmentOptions(rotation_center="origin", clip=False)
    out = aug.rotate(kp, np.random.default_rng(3), opts)
    theta = np.deg2rad(np.random.default_rng(3).uniform(-15, 15))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    np.testing.assert_allclose(out, kp @ rot.T)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(kp, axis=-1))


def test_affine_scale_shear_shift_move_detected_points_only():
    kp = small_clip()
    valid = aug.detected(kp)
    centre = kp[valid].mean(axis=0)
    out = aug.affine(kp, np.random.default_rng(0), AugmentOptions(scale=(2.0, 2.0), clip=False))
    np.testing.assert_allclose(out[valid], centre + 2 * (kp[valid] - centre))
    np.testing.assert_array_equal(out[~valid], 0.0)
    shifted = aug.affine(kp, np.random.default_rng(1), AugmentOptions(shift=0.1))
    moves = (shifted - kp)[valid]
    assert np.allclose(moves, moves[0]) and np.abs(moves[0]).max() <= 0.1 and np.abs(moves[0]).min() > 0
    sheared = aug.affine(kp, np.random.default_rng(2), AugmentOptions(shear=0.5, clip=False))
    np.testing.assert_allclose(sheared[valid][:, 1], kp[valid][:, 1])    # x-shear keeps y
    assert not np.allclose(sheared[valid][:, 0], kp[valid][:, 0])


def test_hand_drop_zeroes_one_hand_for_the_whole_clip(demo_root, demo_cfg):
    clip = load_split(demo_root, "all", demo_cfg, max_samples=1).clips[0]
    hands = hand_positions(demo_cfg)
    assert [h.tolist() for h in hands] == [list(range(23, 44)), list(range(44, 65))]
    out = augment(clip, np.random.default_rng(0), mirror_permutation(demo_cfg), hands=hands,
                  options=AugmentOptions(p_augment=0.0, hand_drop=1.0))
    dropped = [not out[:, h].any() for h in hands]
    assert sum(dropped) == 1
    kept = hands[dropped.index(False)]
    np.testing.assert_array_equal(out[:, kept], clip[:, kept])


def test_hand_hold_fills_missing_frames_from_the_nearest_detected_one():
    kp = np.zeros((6, 5, 2))
    kp[:, 0] = 0.5                                   # a body point, always detected
    kp[1, 1:3], kp[4, 1:3] = 0.2, 0.8                # hand A seen in frames 1 and 4 only
    kp[2, 3:5] = 0.6                                 # hand B seen in frame 2 only
    hands = [np.array([1, 2]), np.array([3, 4])]
    out = aug.hold_hands(kp, np.random.default_rng(0), hands, 1.0)
    np.testing.assert_array_equal(out[:, 1, 0], [0.2, 0.2, 0.2, 0.8, 0.8, 0.8])
    np.testing.assert_array_equal(out[:, 3, 0], [0.6] * 6)
    np.testing.assert_array_equal(out[:, 0], kp[:, 0])
    never = kp.copy()
    never[:, 3:5] = 0.0                              # a hand never seen stays missing
    assert not aug.hold_hands(never, np.random.default_rng(0), hands, 1.0)[:, 3:5].any()
    assert aug.hold_hands(kp, np.random.default_rng(0), hands, 0.0) is kp


def test_frame_drop_zeroes_whole_frames_and_keeps_the_length():
    kp = np.full((40, 4, 2), 0.5)
    out = aug.drop_frames(kp, np.random.default_rng(0), 0.3)
    zero = ~out.any(axis=(1, 2))
    assert len(out) == 40 and 0 < zero.sum() < 40
    np.testing.assert_array_equal(out[~zero], kp[~zero])
    assert aug.drop_frames(kp[:1], np.random.default_rng(0), 1.0) is not None
    assert aug.drop_frames(kp[:1], np.random.default_rng(0), 1.0).any()    # never every frame


def test_disabled_transforms_leave_the_clip_alone():
    kp = small_clip()
    still = AugmentOptions(p_augment=1.0, rotation_deg=0.0, noise_sigma=(0.0, 0.0), select_frames=False,
                           time_warp=False, flip="off")
    for seed in range(20):
        np.testing.assert_allclose(augment(kp, np.random.default_rng(seed), np.arange(4), options=still), kp)


# ----------------------------------------------------------------------------------------------- defaults
def legacy_augment(kp, rng, mirror, p=0.4):
    """The recipe as it was before AugmentOptions (frozen copy), to prove the defaults unchanged."""
    def keep(new, valid):
        return np.where(valid[..., None], np.clip(new, 0.0, 1.0), 0.0)

    def rotate(kp, rng):
        valid = aug.detected(kp)
        if not valid.any():
            return kp
        theta = np.deg2rad(rng.uniform(-15.0, 15.0))
        centre = kp[valid].mean(axis=0)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        return keep((kp - centre) @ rot.T + centre, valid)

    def noise(kp, rng):
        sigma = rng.uniform(0.01, 0.2)
        return keep(kp + rng.normal(0.0, sigma, size=kp.shape), aug.detected(kp))

    def select(kp, rng):
        t = len(kp)
        if t < 2:
            return kp
        target = int(rng.integers(max(1, t // 2), t))
        if rng.random() < 0.5:
            return kp[np.floor(np.linspace(0, t - 1, target)).astype(np.int64)]
        return kp[np.sort(rng.integers(0, t, size=target))]

    def warp(kp, rng):
        t = len(kp)
        idx = np.floor(np.linspace(0, t - 1, max(1, int(t * rng.uniform(1.1, 1.5))))).astype(np.int64)
        return subsample(kp[idx], 64)

    def flip(kp, rng):
        mirrored = np.stack([1.0 - kp[..., 0], kp[..., 1]], axis=-1)
        return np.where(aug.detected(kp)[..., None], mirrored, 0.0)[:, mirror, :]

    if rng.random() >= p:
        return kp
    while True:
        fired = False
        for step in (rotate, noise, select, warp, flip):
            if rng.random() < 0.5:
                kp, fired = step(kp, rng), True
        if fired:
            return kp


def test_default_switches_reproduce_the_recipe_exactly(demo_root, demo_cfg):
    clips = load_split(demo_root, "all", demo_cfg, max_samples=12).clips
    mirror, hands = mirror_permutation(demo_cfg), hand_positions(demo_cfg)
    for seed in range(100):
        old, new = np.random.default_rng(seed), np.random.default_rng(seed)
        for clip in clips:
            np.testing.assert_array_equal(augment(clip, new, mirror, hands=hands), legacy_augment(clip, old, mirror))
        assert old.random() == new.random()                              # the same number of draws


# ----------------------------------------------------------------------------------------------- mask
def test_nonzero_mask_only_for_training_batches(demo_cfg):
    clip = np.full((6, 65, 2), 0.5)
    clip[2] = 0.0                                                        # a frame with nothing detected
    clip[5] = 0.0                                                        # ... and a last one
    np.testing.assert_array_equal(nonzero_mask(clip), [1, 1, 0, 1, 1, 0])
    data = SplitData(Path("."), "train", clips=[clip], labels=[0], users=["u"], paths=["p"])
    still = AugmentOptions(p_augment=0.0, mask="nonzero")
    (inputs, _), = make_dataset(data, demo_cfg, 1, training=True, augmentation=still).take(1)
    np.testing.assert_array_equal(inputs["attention_mask"].numpy(), [[1, 1, 0, 1, 1]])  # trimmed after frame 4
    (inputs, _), = make_dataset(data, demo_cfg, 1, training=True,
                                augmentation=AugmentOptions(p_augment=0.0)).take(1)
    np.testing.assert_array_equal(inputs["attention_mask"].numpy(), [[1] * 6])
    (inputs, _), = make_dataset(data, load_config(SIGNER_INDEPENDENT, ["training.augmentation.mask=nonzero"]),
                                1).take(1)                                # evaluation: the length mask
    np.testing.assert_array_equal(inputs["attention_mask"].numpy(), [[1] * 6])


# ----------------------------------------------------------------------------------------------- schedule, loss
def test_cosine_schedule_values():
    lr, low = 1e-3, 1e-5
    assert recipes.cosine_lr(0, lr, low, 10, 110) == pytest.approx(1e-4)
    assert recipes.cosine_lr(9, lr, low, 10, 110) == pytest.approx(lr)
    assert recipes.cosine_lr(10, lr, low, 10, 110) == pytest.approx(lr)
    assert recipes.cosine_lr(60, lr, low, 10, 110) == pytest.approx((lr + low) / 2)
    assert recipes.cosine_lr(110, lr, low, 10, 110) == pytest.approx(low)
    assert recipes.cosine_lr(500, lr, low, 10, 110) == pytest.approx(low)
    assert recipes.cosine_lr(0, lr, low, 0, 100) == pytest.approx(lr)
    from training_callbacks import WarmupCosine
    schedule = WarmupCosine(lr, low, 10, 110)
    for step in (0, 3, 9, 10, 37, 60, 109, 110, 200):
        assert float(schedule(step)) == pytest.approx(recipes.cosine_lr(step, lr, low, 10, 110), rel=1e-6)


def test_label_smoothing_loss_equals_the_manual_computation():
    from main_functional import sparse_crossentropy
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], dtype=np.float32)
    labels = np.array([0, 2])
    eps, n = 0.1, 3
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = np.full((2, n), eps / n)
    target[np.arange(2), labels] += 1 - eps
    manual = -(target * log_p).sum(axis=1).mean()
    assert float(np.mean(sparse_crossentropy(n, eps)(labels, logits))) == pytest.approx(manual, rel=1e-5)
    plain = sparse_crossentropy(n)(labels, logits)
    assert float(plain) == pytest.approx(-log_p[np.arange(2), labels].mean(), rel=1e-5)


# ----------------------------------------------------------------------------------------------- a run
def test_one_epoch_run_from_a_full_training_block(demo_root, tiny_config_path, tmp_path):
    import fix_loso
    import train_loso_functional
    from runs import run_paths
    fix_loso.main(["--base_root", str(demo_root), "--holdouts", "user01"])
    block = yaml.safe_load(SIGNER_INDEPENDENT.read_text())["training"] | {
        "epochs": 1, "batch_size": 16, "lr": 3e-3, "schedule": "cosine", "min_lr": 1e-5}
    block["augmentation"] |= {"flip": "mirror_only", "noise_on_missing": True, "clip": False,
                              "rotation_center": "origin", "mask": "nonzero", "scale": [0.8, 1.2],
                              "shear": 0.1, "shift": 0.05, "hand_drop": 0.2, "frame_drop": 0.05}
    config = write_config(tmp_path, block, base=Path(tiny_config_path))
    out = tmp_path / "out"
    code = train_loso_functional.main([
        "--config_path", str(config), "--base_data_path", str(demo_root), "--holdout_only", "user01",
        "--no_validation", "--dataset_name", "demo", "--output_root", str(out),
        "--set", "training.label_smoothing=0.1"])
    assert code == 0
    paths = run_paths("demo", "loso", str(out))
    record = json.loads((paths.metadata_dir() / "demo_LOSO_user01_latest.json").read_text())
    assert record["success"] and (record["training"]["epochs"], record["training"]["batch_size"]) == (1, 16)
    assert record["config_overrides"] == ["training.label_smoothing=0.1"]
    training = record["training"]
    assert (training["schedule"], training["label_smoothing"], training["lr"]) == ("cosine", 0.1, 3e-3)
    assert training["augmentation"]["flip"] == "mirror_only" and training["augmentation"]["scale"] == [0.8, 1.2]
    assert math.isfinite(record["test"]["loss"])
    from training_callbacks import read_history
    lr = read_history(paths.training_csv("demo_LOSO_user01"))["lr"]   # logged under the schedule too: the
    steps = math.ceil(record["train_samples"] / 16)                     # rate of the epoch's last step
    assert lr == [pytest.approx(recipes.cosine_lr(steps - 1, 3e-3, 1e-5, 0, steps), rel=1e-5)]
