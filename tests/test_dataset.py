"""Loading the on-disk format (demo, real MLR511, the reference system's own pickle) and bad-input errors."""
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from config import load_config
from dataset import DataError, load_sample, load_split, make_dataset, read_label_maps
from preprocessing import preprocess


def test_demo_split_loads(demo_root, demo_cfg):
    data = load_split(demo_root, "all", demo_cfg)
    assert len(data) == 120 and set(data.users) == {"user01", "user02", "user03", "user04"}
    kp, mask, labels = data.padded(demo_cfg)
    assert kp.shape == (120, 64, 65, 2) and mask.shape == (120, 64) and kp.dtype == np.float32
    assert sorted(set(labels)) == list(range(10))


def test_batches_carry_a_length_prefix_mask(demo_root, tiny_cfg):
    data = load_split(demo_root, "all", tiny_cfg, max_samples=12)
    for training in (False, True):
        for inputs, labels in make_dataset(data, tiny_cfg, batch_size=4, training=training, seed=1):
            mask = inputs["attention_mask"].numpy()
            lengths = mask.sum(1).astype(int)
            assert inputs["keypoints"].shape[1] == mask.shape[1] == lengths.max() <= 64
            for row, n in zip(mask, lengths):
                assert (row[:n] == 1).all() and (row[n:] == 0).all()
            padding = inputs["keypoints"].numpy()[mask == 0]
            assert (padding == 0).all()


def test_training_batches_are_seeded(demo_root, tiny_cfg):
    data = load_split(demo_root, "all", tiny_cfg, max_samples=8)
    first = lambda s: [x["keypoints"].numpy() for x, _ in make_dataset(data, tiny_cfg, 2, training=True, seed=s)]
    a, b, c = first(3), first(3), first(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, c))


def test_training_pipeline_runs_lean(demo_root, tiny_cfg):
    """No tf.data autotuner and one pipeline thread: folds trained side by side keep their cores."""
    data = load_split(demo_root, "all", tiny_cfg, max_samples=8)
    options = make_dataset(data, tiny_cfg, 2, training=True).options()
    assert options.autotune.enabled is False and options.threading.private_threadpool_size == 1


def epoch_batches(data, cfg, batch_size, **kw):
    """One training epoch as numpy: [(keypoints, mask, labels), ...]."""
    return [(x["keypoints"].numpy(), x["attention_mask"].numpy(), y.numpy())
            for x, y in make_dataset(data, cfg, batch_size, training=True, **kw)]


def test_batches_are_the_per_clip_pipeline_stacked(demo_root, tiny_cfg):
    """Training batches are built in numpy: each row is exactly augment -> normalize_groups -> pad_clip of one
    clip, in the permutation's order, trimmed to the batch's longest clip."""
    from augmentations import augment
    from keypoints import mirror_permutation, selected_groups
    from preprocessing import normalize_groups, pad_clip
    data = load_split(demo_root, "all", tiny_cfg, max_samples=10)
    rng = np.random.default_rng([5, 0])
    rows = []
    for i in rng.permutation(len(data)):
        rows.append(pad_clip(normalize_groups(augment(data.clips[i], rng, mirror_permutation(tiny_cfg)),
                                              selected_groups(tiny_cfg))) + (data.labels[i],))
    start = 0
    for kp, mask, labels in epoch_batches(data, tiny_cfg, 4, seed=5):
        expected = rows[start:start + len(labels)]
        start += len(labels)
        assert np.array_equal(kp, np.stack([r[0] for r in expected])[:, :kp.shape[1]])
        assert np.array_equal(mask, np.stack([r[1] for r in expected])[:, :kp.shape[1]])
        assert labels.tolist() == [r[2] for r in expected]
    assert start == len(data)


def test_length_bucketing_pads_less_and_keeps_every_clip(demo_root, tiny_cfg):
    data = load_split(demo_root, "all", tiny_cfg)
    plain = epoch_batches(data, tiny_cfg, 8, seed=2)
    bucketed = epoch_batches(data, tiny_cfg, 8, seed=2, bucket_batches=4)
    again = epoch_batches(data, tiny_cfg, 8, seed=2, bucket_batches=4)
    assert len(bucketed) == len(plain) == -(-len(data) // 8)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(bucketed, again)), "bucketing is seeded"
    assert sorted(np.concatenate([b[2] for b in bucketed])) == sorted(data.labels)
    frames = lambda batches: sum(kp.shape[0] * kp.shape[1] for kp, _, _ in batches)  # noqa: E731
    real = lambda batches: sum(m.sum() for _, m, _ in batches)  # noqa: E731
    assert frames(bucketed) < frames(plain)
    assert frames(bucketed) / real(bucketed) < 1.15


def test_reference_pickle_loads_as_is(shared_data):
    path = shared_data / "reference-sample" / "user12_G10_R10.pkl"
    sample = load_sample(path)
    assert sample["keypoints"].dtype == np.float64 and sample["keypoints"].shape == (38, 90, 3)
    for name in ("arabic-asl-65kpts", "arabic-asl-90kpts"):
        out = preprocess(sample["keypoints"], load_config(f"configs/{name}.yaml"))
        assert out.shape[0] == 38 and 0 <= out.min() and out.max() <= 1
        assert (out[:, 23:44] == 0).all(), "user12's left hand is never detected and must stay exactly 0"


@pytest.mark.parametrize("name", ["arabic-asl-65kpts", "arabic-asl-90kpts"])
def test_real_mlr511_normalizes_into_unit_range(shared_data, name):
    cfg = load_config(f"configs/{name}.yaml")
    data = load_split(shared_data / "mlr511-90kpts", "all", cfg)
    assert len(data) == 1200 and len(set(data.users)) == 12
    for clip, norm in zip(data.clips, data.normalized(cfg)):
        assert 0 <= norm.min() and norm.max() <= 1
        missing = np.all(clip == 0, axis=-1)
        assert (norm[missing] == 0).all()


@pytest.fixture
def bad_root(demo_root, tmp_path):
    root = tmp_path / "bad"
    (root / "all" / "G01").mkdir(parents=True)
    for name in ("label2id.json", "id2label.json"):
        shutil.copy(demo_root / name, root / name)
    good = load_sample(demo_root / "all" / "G01" / "user01_G01_R01.pkl")
    return root, good


def put(root, name, obj, raw=False):
    path = root / "all" / "G01" / name
    path.write_bytes(obj if raw else pickle.dumps(obj))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda g: b"\x80\x04not a pickle", "cannot read pickle"),
    (lambda g: {"class": "G01"}, "not a sample dict with a 'keypoints' array"),
    (lambda g: g | {"keypoints": g["keypoints"][:, :42]}, "42 keypoints per frame, but .* reads pickles with 65 or 90"),
    (lambda g: g | {"keypoints": np.where(np.ones_like(g["keypoints"]) > 0, np.nan, 0)}, "NaN or infinite"),
    (lambda g: g | {"keypoints": g["keypoints"][:0]}, r"empty sequence \(0 frames\)"),
    (lambda g: g | {"class": "G99"}, "class 'G99' is not in .*label2id.json"),
    (lambda g: g | {"class": ["G01"]}, r"class \['G01'\] is not a label name"),
    (lambda g: g | {"keypoints": [[[0.5, 0.5]] * 65, [[0.5, 0.5]] * 64]}, "keypoints are ragged"),
    (lambda g: g | {"keypoints": np.round(g["keypoints"] * 100).astype(np.int64)},
     "keypoints are int64, expected floats"),
    (lambda g: g | {"keypoints": np.zeros_like(g["keypoints"])}, r"all zeros \(nothing was detected"),
    (lambda g: g | {"keypoints": g["keypoints"].astype(np.complex64)}, "keypoints are complex64, expected floats"),
    (lambda g: g | {"keypoints": "not an array"}, r"keypoints have shape \(\)"),
    (lambda g: [g], "not a sample dict"),
    (lambda g: pickle.dumps(g)[:-20], "cannot read pickle .*truncated|cannot read pickle"),
    (lambda g: pickle.dumps(g | {"extra": Path("x")}), "refused to load pathlib.PosixPath"),
])
def test_bad_samples_name_the_file(bad_root, demo_cfg, make, message):
    root, good = bad_root
    obj = make(good)
    path = put(root, "user01_G01_R01.pkl", obj, raw=isinstance(obj, bytes))
    with pytest.raises(DataError, match=message) as err:
        load_split(root, "all", demo_cfg)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_skip_bad_counts_skips(bad_root, demo_cfg):
    root, good = bad_root
    put(root, "user01_G01_R01.pkl", good)
    put(root, "user01_G01_R02.pkl", b"garbage", raw=True)
    data = load_split(root, "all", demo_cfg, skip_bad=True)
    assert len(data) == 1 and len(data.skipped) == 1 and "user01_G01_R02.pkl" in data.skipped[0][0]


def test_missing_label_map_and_split(tmp_path, demo_cfg):
    with pytest.raises(DataError, match="label2id.json not found"):
        read_label_maps(tmp_path)
    (tmp_path / "label2id.json").write_text(json.dumps({"G01": 0}))
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "G01"}))
    with pytest.raises(DataError, match="split folder not found"):
        load_split(tmp_path, "train", demo_cfg)


def test_skip_bad_counts_malformed_fields(bad_root, demo_cfg):
    root, good = bad_root
    put(root, "user01_G01_R01.pkl", good)
    put(root, "user01_G01_R02.pkl", good | {"class": ["G01"]})
    put(root, "user01_G01_R03.pkl", good | {"keypoints": [[[0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]})
    data = load_split(root, "all", demo_cfg, skip_bad=True)
    assert len(data) == 1 and [p.rsplit("/", 1)[1] for p, _ in data.skipped] == ["user01_G01_R02.pkl",
                                                                                  "user01_G01_R03.pkl"]


@pytest.mark.parametrize("label2id, id2label, message", [
    ("{broken", '{"0": "G01"}', "label2id.json: label map label2id.json is not valid JSON"),
    (b"\xff\xfe\x00binary", '{"0": "G01"}', "label2id.json: label map label2id.json is not valid JSON"),
    ('["G01"]', '{"0": "G01"}', "label2id.json: expected"),
    ('{"G01": "zero"}', '{"0": "G01"}', "label2id.json: expected"),
    ('{"G01": 0}', '{"zero": "G01"}', "id2label.json: expected"),
    ('{"G01": 0}', '{"0": "G02"}', "disagree"),
])
def test_corrupt_label_maps_are_one_line(tmp_path, label2id, id2label, message):
    for name, content in (("label2id.json", label2id), ("id2label.json", id2label)):
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message) as err:
        read_label_maps(tmp_path)
    assert "\n" not in str(err.value)


def test_data_path_that_is_a_file_is_one_line(tmp_path, demo_cfg):
    not_a_folder = tmp_path / "data.pkl"
    not_a_folder.write_bytes(b"x")
    with pytest.raises(DataError, match="data.pkl/label2id.json: cannot read label map"):
        load_split(not_a_folder, "train", demo_cfg)


def test_fuzzed_pickles_give_data_errors_only(bad_root, demo_cfg):
    """Random bytes, truncations and bit flips of a real sample: every one is a DataError naming the file or a
    sample that still passes every check; never another exception."""
    root, good = bad_root
    data = pickle.dumps(good)
    rng = np.random.default_rng(1)
    for i in range(300):
        kind = i % 3
        if kind == 0:
            blob = rng.bytes(int(rng.integers(0, 200)))
        elif kind == 1:
            blob = data[:int(rng.integers(0, len(data)))]
        else:
            flipped = bytearray(data)
            for _ in range(int(rng.integers(1, 6))):
                flipped[int(rng.integers(len(flipped)))] = int(rng.integers(256))
            blob = bytes(flipped)
        path = put(root, "user01_G01_R01.pkl", blob, raw=True)
        try:
            load_split(root, "all", demo_cfg)
        except DataError as e:
            assert str(path) in str(e) and "\n" not in str(e)
