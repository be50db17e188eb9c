"""Normalization math on hand-made frames, subsampling and the length mask."""
import numpy as np
import pytest

from preprocessing import length_mask, normalize_groups, pad_clip, uniform_frame_indices


def frame(points):
    return np.array([points], dtype=np.float64)  # (T=1, n, 2)


def test_wide_group_becomes_padded_square():
    kp = frame([[0.2, 0.5], [0.6, 0.6]])  # w = 0.4 > h = 0.1
    out = normalize_groups(kp, [np.array([0, 1])])
    # dx = 0.02, dy = 0.02 + 0.15 = 0.17 -> box x [0.18, 0.62], y [0.33, 0.77]
    np.testing.assert_allclose(out[0], [[0.02 / 0.44, 0.17 / 0.44], [0.42 / 0.44, 0.27 / 0.44]], rtol=1e-6)


def test_undetected_points_are_ignored_and_stay_zero():
    kp = frame([[0.2, 0.5], [0.6, 0.6], [0.0, 0.0]])
    out = normalize_groups(kp, [np.array([0, 1, 2])])
    ref = normalize_groups(kp[:, :2], [np.array([0, 1])])
    np.testing.assert_array_equal(out[0, :2], ref[0])
    assert (out[0, 2] == 0).all()


def test_all_zero_group_and_single_point():
    kp = frame([[0.0, 0.0], [0.0, 0.0], [0.3, 0.4]])
    out = normalize_groups(kp, [np.array([0, 1]), np.array([2])])
    assert (out[0, :2] == 0).all(), "an undetected group stays zero"
    np.testing.assert_allclose(out[0, 2], [0.3, 0.4], rtol=1e-6)  # zero-size box: left as it is


def test_box_is_clamped_to_unit_square():
    kp = frame([[0.0, 0.01], [0.99, 0.02]])  # the padded box would leave [0, 1]
    out = normalize_groups(kp, [np.array([0, 1])])
    assert out.min() >= 0 and out.max() <= 1
    assert out[0, 1, 0] == pytest.approx(0.99)  # start clamped to 0, end clamped to 1


def test_groups_are_independent():
    kp = frame([[0.1, 0.1], [0.2, 0.3], [0.7, 0.7], [0.9, 0.8]])
    both = normalize_groups(kp, [np.array([0, 1]), np.array([2, 3])])
    alone = normalize_groups(kp[:, 2:], [np.array([0, 1])])
    np.testing.assert_array_equal(both[0, 2:], alone[0])


def test_subsampling_and_mask():
    assert list(uniform_frame_indices(10)) == list(range(10))
    idx = uniform_frame_indices(100)
    assert len(idx) == 64 and idx[0] == 0 and idx[-1] == 99 and (np.diff(idx) > 0).all()
    mask = length_mask(5)
    assert mask.dtype == np.float32 and mask.sum() == 5 and (mask[:5] == 1).all()
    padded, m = pad_clip(np.ones((70, 3, 2)))
    assert padded.shape == (64, 3, 2) and m.sum() == 64
