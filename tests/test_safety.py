"""Hostile and malformed files: pickles and .h5 files cannot run code, written files follow the umask, and
file-system errors are one line (docs/safety.md)."""
import os
import pickle
import subprocess

import numpy as np
import pytest

import safe_pickle
from util import UserError, atomic_write_json, cli
from safe_pickle import UnsafePickleError, load_pickle


class Payload:
    """Unpickling this runs `command` (what a hostile sample pickle does with plain pickle.load)."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("function, name", [
    (os.system, "posix.system"), (subprocess.check_call, "subprocess.check_call"), (eval, "builtins.eval"),
    (exec, "builtins.exec"), (getattr, "builtins.getattr"), (__import__, "builtins.__import__"),
])
def test_pickles_that_call_anything_are_refused(tmp_path, function, name):
    marker = tmp_path / "ran"
    args = {os.system: (f"touch {marker}",), subprocess.check_call: (["touch", str(marker)],),
            eval: (f"open({str(marker)!r}, 'w')",), exec: (f"open({str(marker)!r}, 'w')",),
            getattr: ("text", "upper"), __import__: ("os",)}[function]
    path = tmp_path / "user01_G01_R01.pkl"
    path.write_bytes(pickle.dumps({"keypoints": np.zeros((1, 1, 2)), "class": Payload(function, *args)}))
    with pytest.raises(UnsafePickleError, match=f"refused to load {name}: sample pickles may hold only"):
        load_pickle(path)
    assert not marker.exists()


def test_plain_values_and_numpy_load_with_every_protocol():
    sample = {"keypoints": np.random.default_rng(0).random((3, 65, 3)).astype(np.float32), "class": "G01",
              "n": np.int64(3), "x": np.float32(0.5), "flags": {1, 2}, "frozen": frozenset("a"), "c": 1 + 2j,
              "b": b"raw", "t": (1, None, True), "strided": np.ones((4, 4))[::2],
              "f": np.asfortranarray(np.ones((2, 3)))}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_pickle.loads(pickle.dumps(sample, protocol=protocol))
        assert loaded.keys() == sample.keys() and loaded["keypoints"].dtype == np.float32
        assert all(np.array_equal(loaded[k], sample[k]) for k in ("keypoints", "strided", "f"))
        assert {k: loaded[k] for k in ("n", "x", "flags", "frozen", "c", "b", "t")} == \
            {k: sample[k] for k in ("n", "x", "flags", "frozen", "c", "b", "t")}


def test_every_real_pickle_loads_as_with_plain_pickle(shared_data):
    paths = sorted((shared_data / "mlr511-90kpts" / "all").glob("*/*.pkl"))
    paths.append(shared_data / "reference-sample" / "user12_G10_R10.pkl")
    assert len(paths) == 1201
    for path in paths:
        safe, plain = load_pickle(path), pickle.loads(path.read_bytes())
        assert safe.keys() == plain.keys() and safe["keypoints"].dtype == plain["keypoints"].dtype
        assert np.array_equal(safe["keypoints"], plain["keypoints"])


def test_fuzzed_bytes_only_raise_unsafe_pickle_error(shared_data):
    real = (shared_data / "reference-sample" / "user12_G10_R10.pkl").read_bytes()
    rng = np.random.default_rng(7)
    for i in range(500):
        if i % 2:
            blob = bytearray(real[:int(rng.integers(len(real)))])
        else:
            blob = bytearray(real)
            for _ in range(int(rng.integers(1, 8))):
                blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
        try:
            safe_pickle.loads(bytes(blob))
        except UnsafePickleError as e:
            assert "\n" not in str(e)


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o002, 0o664), (0o022, 0o644)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "record.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_file_system_errors_are_one_line(tmp_path, capsys):
    @cli
    def main():
        (tmp_path / "a file").write_text("x")
        (tmp_path / "a file" / "inside.json").write_text("y")

    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "a file/inside.json" in err
    assert len(err.strip().splitlines()) == 1


def test_h5_with_a_lambda_layer_is_never_deserialized(tmp_path, tiny_cfg):
    """A hostile .h5 whose Lambda layer runs code when Keras rebuilds the model from the file: load_model
    builds from the config instead, so the code never runs; the file does not fit and is one UserError."""
    from model_functional import load_model
    from tf_env import keras
    marker = tmp_path / "ran"
    code = f"lambda x: __import__('pathlib').Path({str(marker)!r}).touch() or x"
    inputs = keras.Input((4,))
    hostile = keras.Model(inputs, keras.layers.Lambda(eval(code))(keras.layers.Dense(4)(inputs)))
    path = tmp_path / "final_model.h5"
    hostile.save(path)
    marker.unlink()  # building the hostile model ran the lambda once, here in the test
    with pytest.raises(UserError, match="final_model.h5: cannot load its weights into the model of"):
        load_model(path, tiny_cfg)
    assert not marker.exists()
    keras.models.load_model(path)  # what model loading did before: rebuilding the file's model runs its code
    assert marker.exists()


def test_weights_only_loading_reads_a_full_model_h5(tmp_path, tiny_cfg):
    from model_functional import build_model, load_model
    model = build_model(tiny_cfg)
    path = tmp_path / "final_model.h5"
    model.save(path, include_optimizer=False)
    loaded = load_model(path, tiny_cfg)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loaded.get_weights()))


def test_pretrained_from_another_label_set_keeps_all_but_the_head(tmp_path, tiny_cfg):
    """Pre-training on another dataset: a .h5 of the same network with another number of labels gives every
    weight but the classification head, which is new and sized for this config."""
    from model_functional import build_model, load_pretrained
    source = build_model(dict(tiny_cfg, num_labels=tiny_cfg["num_labels"] + 3))
    path = tmp_path / "final_model.h5"
    source.save(path, include_optimizer=False)
    model, taken = load_pretrained(path, tiny_cfg)
    assert taken.startswith("every weight but the classification head")
    for layer, trained in zip(model.layers, source.layers):
        if layer.name == "classifier":
            assert layer.kernel.shape[-1] == tiny_cfg["num_labels"]
        else:
            assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), trained.get_weights()))
    same, taken = load_pretrained(path, dict(tiny_cfg, num_labels=tiny_cfg["num_labels"] + 3))
    assert taken == "every weight"
    assert all(np.array_equal(a, b) for a, b in zip(same.get_weights(), source.get_weights()))


def test_pretrained_from_another_network_is_one_error(tmp_path, tiny_cfg):
    from model_functional import build_model, load_pretrained
    path = tmp_path / "wide.h5"
    build_model(dict(tiny_cfg, d_model=tiny_cfg["d_model"] * 2, num_labels=3)).save(path, include_optimizer=False)
    with pytest.raises(UserError, match="wide.h5: cannot load its weights into the model of"):
        load_pretrained(path, tiny_cfg)
    (tmp_path / "junk.h5").write_bytes(b"not an h5 file")
    with pytest.raises(UserError, match=r"junk.h5: not a readable \.h5 file"):
        load_pretrained(tmp_path / "junk.h5", tiny_cfg)
