"""Augmentation keeps shapes and validity and never returns an empty or too-long clip."""
import numpy as np
import pytest

from augmentations import add_noise, augment, detected, flip, rotate, select_frames, time_warp
from keypoints import mirror_permutation
from dataset import load_split


@pytest.fixture(scope="module")
def clips(demo_root, demo_cfg):
    return load_split(demo_root, "all", demo_cfg, max_samples=20).clips


def test_augment_keeps_validity(clips, demo_cfg):
    rng, mirror = np.random.default_rng(0), mirror_permutation(demo_cfg)
    for _ in range(10):
        for clip in clips:
            out = augment(clip, rng, mirror, p=1.0)
            assert 1 <= len(out) <= 64 and out.shape[1:] == clip.shape[1:]
            assert out.min() >= 0 and out.max() <= 1


def test_point_transforms_keep_missing_points_missing(clips, demo_cfg):
    rng, clip = np.random.default_rng(1), clips[0]
    missing = ~detected(clip)
    assert missing.any()
    for step in (rotate, add_noise):
        out = step(clip, rng)
        assert (out[missing] == 0).all() and out.shape == clip.shape


def test_flip_swaps_hand_slots(clips, demo_cfg):
    clip = clips[0]
    out = flip(clip, mirror_permutation(demo_cfg))
    left, right = slice(23, 44), slice(44, 65)
    np.testing.assert_array_equal(detected(out[:, left]), detected(clip[:, right]))
    valid = detected(clip[:, right])
    np.testing.assert_allclose(out[:, left][valid][:, 0], 1 - clip[:, right][valid][:, 0])


def test_time_edits_never_empty_or_too_long():
    rng = np.random.default_rng(2)
    one = np.full((1, 5, 2), 0.5)
    long = np.full((64, 5, 2), 0.5)
    for _ in range(50):
        assert len(select_frames(one, rng)) == 1
        assert 32 <= len(select_frames(long, rng)) <= 63
        assert len(time_warp(long, rng)) == 64 and len(time_warp(one, rng)) >= 1
