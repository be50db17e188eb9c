"""The fuzz harness (#31): generated configs, model cards, label maps and sample pickles, valid
ones, mutations of valid ones and hostile ones, each either loads or is refused with the project's
one-line error (a UserError subclass naming the file), never another exception, within a time and
memory bound.

Every file is read by a worker process (WORKER) under a memory limit (RLIMIT_AS, MEMORY_LIMIT) and a
per-file time bound (FILE_TIMEOUT, enforced by the harness): a crash (numpy segfaults on some
hostile pickles), a hang or a traceback of the worker fails the example, and Hypothesis shrinks it
to a small one. The worker also reports its peak memory, which must stay under PEAK_MB, and a
refusal may not be a MemoryError or RecursionError in disguise (a limit checked too late).

Default run (pytest tests/test_fuzz.py): EXAMPLES = 40 generated files of each kind (config, card,
label maps, sample), the same ones every run (derandomized), plus the command lines `config.py` and
`dataset.py` on CLI_EXAMPLES batches of generated files; about 20 s on a 2-core machine. Long run on
demand, with fresh random files: SIGNBART_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py
"""
import codecs
import json
import os
import pickle
import select
import subprocess
import sys
import tempfile
from itertools import count
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import model_hparams
from test_reliability_data import limited, one_error_line, run_limited
from util import REPO_DIR

LONG_RUN = "SIGNBART_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("SIGNBART_FUZZ_EXAMPLES", 40))  # generated files of each kind
CLI_EXAMPLES = max(2, EXAMPLES // 20)                          # command-line runs of each script
FILE_TIMEOUT = 30    # seconds the worker may take on one file (each takes well under one)
PEAK_MB = 1024       # resident memory the worker may reach (reading a sample takes ~100 MB)
DEMO_CONFIG = REPO_DIR / "configs" / "demo-65kpts.yaml"
LABELS = [f"G{i:02d}" for i in range(1, 11)]

fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG_RUN,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.filter_too_much])
cli_fuzz = settings(fuzz, max_examples=CLI_EXAMPLES)

WORKER = r'''
import json, resource, sys, traceback
from util import UserError
import config, dataset, tflite_runtime

CFG = config.load_config("configs/demo-65kpts.yaml")


class TenOutputs:
    output = {"shape": [1, 10]}


def load(kind, path):
    if kind == "config":
        config.load_config(path)
    elif kind == "card":
        tflite_runtime.resolve_config(path)
        tflite_runtime.output_labels(TenOutputs(), path)
    elif kind == "labels":
        dataset.read_label_maps(path)
    else:
        dataset.load_split(path, "all", CFG)


def peak_mb():
    """This process's own peak resident memory (VmHWM starts afresh at exec; ru_maxrss would carry
    the forking pytest process's peak over, since rusage survives execve)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


for line in sys.stdin:
    job = json.loads(line)
    try:
        load(job["kind"], job["path"])
        result = {"outcome": "ok"}
    except UserError as e:
        result = {"outcome": "refused", "type": type(e).__name__, "message": str(e)}
    except Exception as e:
        result = {"outcome": "crash", "type": type(e).__name__,
                  "message": "".join(traceback.format_exception(e))[-3000:]}
    result["peak_mb"] = peak_mb()
    print(json.dumps(result), flush=True)
'''


class Worker:
    """The loader process: one file per request; restarted after a crash or a time-out."""

    def __init__(self):
        self.proc = None

    def start(self):
        env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], cwd=REPO_DIR, env=env,
                                     text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, preexec_fn=limited)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def load(self, kind: str, path: Path) -> dict:
        """What the worker did with the file: {'outcome': 'ok' | 'refused' | 'crash' | 'died' |
        'timeout', 'message', 'peak_mb'}."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps({"kind": kind, "path": str(path)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], FILE_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        code = self.proc.poll()
        self.stop()
        return {"outcome": "timeout" if ready == [] else "died", "message": f"exit code {code}"}

    def check(self, kind: str, path: Path, names=None) -> str:
        """Assert the file loads or is refused with one line naming it (`names`: what the line
        names, default the path); returns the outcome."""
        result = self.load(kind, path)
        where = f"{kind} file {path}"
        outcome, message = result["outcome"], result.get("message", "")
        assert outcome in ("ok", "refused"), f"{where}: {outcome}: {message}"
        assert result["peak_mb"] < PEAK_MB, f"{where}: the worker took {result['peak_mb']:.0f} MB"
        if result["outcome"] == "refused":
            message = result["message"]
            assert message and "\n" not in message, f"{where}: not one line: {message!r}"
            assert str(names or path) in message, f"{where}: the line does not name it: {message}"
            for hidden in ("MemoryError", "RecursionError"):
                assert hidden not in message, f"{where}: a limit checked too late: {message}"
        return result["outcome"]


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


class Files:
    """Fresh, unique paths under one temporary folder (Hypothesis runs an example many times)."""

    def __init__(self, root: Path):
        self.root, self.numbers = root, count()

    def folder(self) -> Path:
        path = self.root / f"f{next(self.numbers)}"
        path.mkdir()
        return path


@pytest.fixture(scope="module")
def files():
    with tempfile.TemporaryDirectory(prefix="signbart-fuzz-") as root:
        yield Files(Path(root))


# --------------------------------------------------------------------------------- generated values
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-100, 1000), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["0-64", "0-22", "23-43", "0-999999999", "5-2", "a-b", "-1", "inf", "nan",
                     "1e-3", "", "plateau", "mirror_only", "G01"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
SEEDS = st.integers(0, 2**32 - 1)


def laughs(width: int, depth: int) -> str:
    """A YAML alias bomb: width**depth strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{d}: &l{d} [{', '.join([f'*l{d - 1}'] * width)}]" for d in range(1, depth)]
    return "\n".join(lines) + "\n"


def flip_bytes(data: bytes, seed: int, flips: int) -> bytes:
    rng, out = np.random.default_rng(seed), bytearray(data)
    for _ in range(flips):
        if out:
            out[int(rng.integers(len(out)))] = int(rng.integers(256))
    return bytes(out)


# ----------------------------------------------------------------------------------- configs
CONFIG_TEXTS = [p.read_text() for p in sorted((REPO_DIR / "configs").glob("*.yaml"))]
CONFIG_KEYS = ["layout", "joint_idx", "groups", "num_labels", "d_model", "encoder_layers",
               "encoder_attention_heads", "dropout", "attention_mask_value",
               "max_position_embeddings", "batch_size", "weight_decay", "rest_hand_cutoff",
               "dominant_hand_ratio", "description", "training", "bogus"]
TRAINING_KEYS = ["epochs", "lr", "weight_decay", "schedule", "warmup_epochs", "min_lr",
                 "label_smoothing", "bucket_batches", "batch_size", "augmentation"]
SNIPPETS = ["d_model: 64", "groups:\n  pose: [0]", "x: &a [1, 2]\ny: *a", "z: *undefined",
            "!!python/object/apply:os.system ['true']", "\t- tab", "<<: {d_model: 8}", "---\na: 1",
            "lr: .inf", "dropout: .nan", "joint_idx: [0-999999999]", "\x00\x01", "key: 2024-13-01",
            "num_labels: " + "9" * 5000, "a: !!binary aGVsbG8=", "? [1, 2]\n: x"]


@st.composite
def valid_config(draw) -> bytes:
    """A real config with a training block of values in range (these load)."""
    raw = yaml.safe_load(draw(st.sampled_from(CONFIG_TEXTS)))
    epochs = draw(st.integers(2, 200))
    raw["training"] = {"epochs": epochs, "warmup_epochs": draw(st.integers(0, epochs - 1)),
                       "lr": draw(st.floats(1e-6, 1.0)), "min_lr": draw(st.floats(0, 1e-3)),
                       "label_smoothing": draw(st.floats(0, 0.9)),
                       "schedule": draw(st.sampled_from(["plateau", "cosine"]))}
    raw["dropout"] = draw(st.floats(0, 0.99))
    return yaml.safe_dump(raw).encode("utf-8")


@st.composite
def mutated_config(draw) -> bytes:
    raw = yaml.safe_load(draw(st.sampled_from(CONFIG_TEXTS)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "top", "training", "augmentation", "group"]))
        value = draw(VALUES)
        if where == "top":
            key = draw(st.sampled_from(CONFIG_KEYS))
            if draw(st.booleans()):
                raw.pop(key, None)
            else:
                raw[key] = value
        elif where == "group" and isinstance(raw.get("groups"), dict) and raw["groups"]:
            raw["groups"][draw(st.sampled_from(sorted(map(str, raw["groups"]))))] = value
        else:
            training = isinstance(raw.get("training", {}), dict)
            block = raw.setdefault("training", {}) if training else {}
            if where == "augmentation":
                block = block.setdefault("augmentation", {}) if isinstance(
                    block.get("augmentation", {}), dict) else {}
            keys = TRAINING_KEYS + ["flip", "scale", "p_each", "mask", "x"]
            block[draw(st.sampled_from(keys))] = value
    return yaml.safe_dump(raw, allow_unicode=True).encode("utf-8")


@st.composite
def edited_config(draw) -> bytes:
    text = draw(st.sampled_from(CONFIG_TEXTS))
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(SNIPPETS) | st.text(max_size=40)))
    data = "\n".join(lines).encode("utf-8")
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return flip_bytes(data, draw(SEEDS), draw(st.integers(0, 3)))


@st.composite
def hostile_config(draw) -> bytes:
    base = draw(st.sampled_from(CONFIG_TEXTS))
    kind = draw(st.sampled_from(["laughs", "recursive", "nested", "ranges", "large", "utf16"]))
    if kind == "laughs":
        width, depth = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        text = laughs(width, depth) + base.replace("description:", "old_description:")
        text += f"description: *l{depth - 1}\n"
    elif kind == "recursive":
        text = base + draw(st.sampled_from(["training: &t {augmentation: *t}\n",
                                            "joint_idx: &j [0, *j]\n", "bogus: &b {a: [*b]}\n"]))
    elif kind == "nested":
        n = draw(st.integers(1, 20_000))
        text = base + "bogus: " + "[" * n + "]" * n + "\n"
    elif kind == "ranges":
        text = base.replace("joint_idx:", "old_joint_idx:") + "joint_idx: [" + ", ".join(
            ['"0-64"'] * draw(st.integers(1, 4000))) + "]\n"
    elif kind == "large":
        text = base + "#" * draw(st.integers(60_000, 70_000)) + "\n"
    else:
        return base.encode("utf-16")
    return text.encode("utf-8")


CONFIGS = st.one_of(valid_config(), mutated_config(), edited_config(), hostile_config())


@fuzz
@given(data=CONFIGS)
def test_fuzzed_configs_load_or_are_one_line(worker, files, data):
    path = files.folder() / "config.yaml"
    path.write_bytes(data)
    worker.check("config", path)


@cli_fuzz
@given(texts=st.lists(CONFIGS, min_size=4, max_size=4))
def test_config_cli_gives_one_error_line_per_bad_file(worker, files, texts):
    paths = []
    for data in texts:
        paths.append(files.folder() / "config.yaml")
        paths[-1].write_bytes(data)
    refused = [p for p in paths if worker.check("config", p) == "refused"]
    result = run_limited("config.py", *paths)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and result.returncode == (1 if refused else 0)
    assert len(lines) == len(refused) and all(line.startswith(f"ERROR {p}: ")
                                              for line, p in zip(lines, refused)), result.stderr


# ----------------------------------------------------------------------------------- model cards
def base_card() -> dict:
    from config import load_config
    cfg = load_config(DEMO_CONFIG)
    return {"card_version": 3, "mode": "fp32", "model": model_hparams(cfg), "layout": cfg["layout"],
            "joint_idx": cfg["joint_idx"], "groups": cfg["groups"], "labels": LABELS,
            "label_names": {"G01": "Hi"}, "config_path": str(DEMO_CONFIG), "size_bytes": 1000,
            "resting_hands": {"cutoff": 0.0}, "dominant_hand": {"ratio": 0.0},
            "parity": {"clips": 8, "max_abs_logit_diff": 1e-6, "argmax_identical": 8,
                       "passed": True}}


CARD_PATHS = [("model", "num_labels"), ("model", "d_model"), ("model", "dropout"), ("model",),
              ("layout",), ("joint_idx",), ("groups",), ("groups", "pose"), ("labels",),
              ("label_names",), ("parity",), ("parity", "passed"), ("resting_hands", "cutoff"),
              ("dominant_hand",), ("size_bytes",), ("mode",), ("config_path",)]


@st.composite
def mutated_card(draw) -> bytes:
    card = base_card()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(CARD_PATHS))
        value = draw(JSON_VALUES | st.sampled_from([[0, 1, 99], ["0", "1"], 77, "65", LABELS[:9],
                                                    LABELS + ["G11"], [[0, 1]], -1, 10**30]))
        block = card
        for key in path[:-1]:
            block = block[key] if isinstance(block.get(key), dict) else block.setdefault(key, {})
            if not isinstance(block, dict):
                break
        else:
            if draw(st.integers(0, 4)) == 0:
                block.pop(path[-1], None)
            else:
                block[path[-1]] = value
    return json.dumps(card, allow_nan=True).encode("utf-8")


@st.composite
def hostile_card(draw) -> bytes:
    text = json.dumps(base_card())
    kind = draw(st.sampled_from(["nested", "twice", "bigint", "flipped", "cut", "json value"]))
    if kind == "nested":
        n = draw(st.integers(1, 200_000))
        return ("[" * n + "]" * n).encode()
    if kind == "twice":
        return text.replace('"layout": 65', '"layout": 65, "layout": 90').encode()
    if kind == "bigint":
        digits = "9" * draw(st.integers(4000, 6000))
        return text.replace('"layout": 65', f'"layout": {digits}').encode()
    if kind == "flipped":
        return flip_bytes(text.encode(), draw(SEEDS), draw(st.integers(1, 5)))
    if kind == "cut":
        return text.encode()[:draw(st.integers(0, len(text)))]
    return json.dumps(draw(JSON_VALUES), allow_nan=True).encode()


@st.composite
def valid_card(draw) -> bytes:
    """A card as an export writes it, with other names and parity numbers (these load)."""
    card = base_card()
    card["label_names"] = draw(st.dictionaries(st.sampled_from(LABELS), st.text(max_size=10)))
    card["parity"] = {"clips": draw(st.integers(0, 64)), "passed": draw(st.booleans()),
                      "max_abs_logit_diff": draw(st.floats(0, 1))}
    card["mode"] = draw(st.sampled_from(["fp32", "float16", "dynamic", "int8", "int8_io"]))
    card["resting_hands"] = {"cutoff": draw(st.sampled_from([0.0, 0.5, 1.0]))}
    return json.dumps(card).encode("utf-8")


@fuzz
@given(data=st.one_of(valid_card(), mutated_card(), hostile_card()))
def test_fuzzed_model_cards_load_or_are_one_line(worker, files, data):
    folder = files.folder()
    (folder / "model.tflite").write_bytes(b"only the card beside it is read")
    (folder / "model.json").write_bytes(data)
    worker.check("card", folder / "model.tflite", names=folder)


# ----------------------------------------------------------------------------------- label maps
@st.composite
def label_maps(draw) -> tuple[bytes, bytes]:
    labels = draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=8, unique=True)
                  | st.just(LABELS))
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = {str(i): label for label, i in label2id.items()}
    kind = draw(st.sampled_from(["valid", "mutated", "twice", "json value", "flipped", "hostile"]))
    if kind == "mutated":
        target = label2id if draw(st.booleans()) else id2label
        key = draw(st.sampled_from(sorted(target)) | st.text(max_size=5))
        target[key] = draw(JSON_VALUES | st.integers(-5, 20))
    texts = [json.dumps(label2id).encode(), json.dumps(id2label).encode()]
    side = draw(st.integers(0, 1))
    if kind == "twice":
        texts[side] = texts[side].replace(b"{", b'{"0": 0, "0": 1, ', 1)
    elif kind == "json value":
        texts[side] = json.dumps(draw(JSON_VALUES), allow_nan=True).encode()
    elif kind == "flipped":
        texts[side] = flip_bytes(texts[side], draw(SEEDS), 3)
    elif kind == "hostile":
        n = draw(st.integers(1, 100_000))
        texts[side] = draw(st.sampled_from(["[" * n + "]" * n, '{"G01": ' + "9" * 5000 + "}",
                                            '{"' + "9" * 5000 + '": "G01"}', "NaN", ""])).encode()
    return texts[0], texts[1]


@fuzz
@given(maps=label_maps())
def test_fuzzed_label_maps_load_or_are_one_line(worker, files, maps):
    root = files.folder()
    (root / "label2id.json").write_bytes(maps[0])
    (root / "id2label.json").write_bytes(maps[1])
    worker.check("labels", root)


# ----------------------------------------------------------------------------------- sample pickles
class Reduce:
    """Pickles as `function(*args)` (with a BUILD `state` when given): how a file reaches numpy."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def valid_sample(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    frames, points = int(rng.integers(1, 120)), int(rng.choice([65, 90]))
    kp = rng.uniform(0.05, 0.95, (frames, points, 3)).astype(rng.choice([np.float32, np.float64]))
    kp[rng.random((frames, points)) < 0.2] = 0.0  # undetected points
    return {"keypoints": kp, "class": "G01", "user": "user01", "num_frames": frames}


MUTATIONS = {
    "dtype": lambda kp, rng: kp.astype(rng.choice(["int64", "int8", "bool", "complex64", "float16",
                                                   "uint8", "U3", "object"])),
    "frames": lambda kp, rng: kp[:int(rng.integers(0, 3))],
    "ndim": lambda kp, rng: kp.reshape(-1) if rng.random() < 0.5 else kp[None],
    "points": lambda kp, rng: kp[:, :int(rng.integers(1, max(2, kp.shape[1])))],
    "columns": lambda kp, rng: kp[..., :1] if rng.random() < 0.5 else np.concatenate([kp, kp], -1),
    "nan": lambda kp, rng: np.where(rng.random(kp.shape) < 0.01, rng.choice([np.nan, np.inf]), kp),
    "scale": lambda kp, rng: kp * rng.choice([960.0, 100.0, -1.0, -0.5, 1.9, 1e30]),
    "zeros": lambda kp, rng: np.zeros_like(kp),
    "face only": lambda kp, rng: np.concatenate([np.zeros_like(kp[:, :65]), kp[:, 65:]], 1),
    "lists": lambda kp, rng: kp.tolist(),
    "ragged": lambda kp, rng: [row.tolist() for row in kp[:, :2]] + [kp[0, :3].tolist()],
}
FIELD_VALUES = [None, 3, "G02", "G99", ["G01"], {"a": 1}, "x" * 10_000, -1, 10**40, float("nan")]


@st.composite
def mutated_sample(draw) -> bytes:
    sample, rng = valid_sample(draw(SEEDS)), np.random.default_rng(draw(SEEDS))
    for name in draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3)):
        kp = sample["keypoints"]
        if isinstance(kp, np.ndarray) and kp.ndim == 3 and kp.dtype.kind == "f" and kp.size:
            with np.errstate(all="ignore"):  # overflow and NaN casts are what is wanted here
                sample["keypoints"] = MUTATIONS[name](kp, rng)
    for key in draw(st.lists(st.sampled_from(["class", "user", "num_frames", "keypoints", "extra"]),
                             max_size=2)):
        sample[key] = draw(st.sampled_from(FIELD_VALUES) | JSON_VALUES)
    if draw(st.integers(0, 9)) == 0:
        sample = draw(st.sampled_from([[sample], (sample,), "text", None]))
    return pickle.dumps(sample, protocol=draw(st.integers(0, pickle.HIGHEST_PROTOCOL)))


@st.composite
def broken_sample(draw) -> bytes:
    data = pickle.dumps(valid_sample(draw(SEEDS)), protocol=draw(st.integers(0, 5)))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return flip_bytes(data, draw(SEEDS), draw(st.integers(0, 6)))


def deep_lists(depth: int) -> bytes:
    head = pickle.dumps({"keypoints": np.full((2, 65, 3), 0.5, np.float32), "class": "@@"}, 2)
    return head.replace(b"X\x02\x00\x00\x00@@", b"]" * depth + b"a" * (depth - 1))


def numpy_hostile(rng: np.random.Generator):
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer
    dtypes = ["O", "V8", "f8", "U5", "S3", "M8[s]", "<f4", ">i2", "?", "c8"]
    structured = np.dtype([("a", "f4"), ("b", "O")])
    dtype = np.dtype(rng.choice(dtypes)) if rng.random() < 0.8 else structured
    shape = tuple(int(n) for n in rng.choice([0, 1, 3, 10, 10**5, 10**9], size=rng.integers(1, 4)))
    state = (3, str(rng.choice(["<", ">", "|", "="])), None, None, None,
             int(rng.choice([-1, 1, 8, 2**40])), int(rng.choice([-1, 1, 4])),
             int(rng.integers(0, 64)))
    made = Reduce(np.dtype, (str(rng.choice(["V8", "f8", "U2", "O8"])), False, True), state)
    data = bytes(int(rng.choice([0, 1, 7, 8, 80])))
    objects, fortran = [None] * int(rng.integers(0, 3)), bool(rng.random() < 0.5)
    return rng.choice([
        Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data)),
        Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, objects)),
        Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, made, fortran, data)),
        Reduce(_reconstruct, (np.ndarray, shape, b"b")),
        Reduce(np.ndarray, (shape,)),
        Reduce(scalar, (made, data)),
        Reduce(_frombuffer, (data, dtype, shape, "C")),
        Reduce(codecs.encode, ("ab" * int(rng.integers(1, 50)),
                               str(rng.choice(["hex", "zlib", "base64", "latin1"])))),
    ])


@st.composite
def hostile_sample(draw) -> bytes:
    kind = draw(st.sampled_from(["deep", "shared", "itself", "numpy", "numpy"]))
    if kind == "deep":
        return deep_lists(draw(st.integers(2, 200_000 if LONG_RUN else 50_000)))
    if kind == "shared":
        frame = [[0.5, 0.5, 1.0]] * draw(st.sampled_from([2, 65, 90]))
        copies = draw(st.integers(1, 2_000_000 if LONG_RUN else 200_000))
        return pickle.dumps({"keypoints": [frame] * copies, "class": "G01"}, protocol=4)
    if kind == "itself":
        return b"\x80\x02}q\x00(X\t\x00\x00\x00keypointsq\x01]q\x02h\x02au."
    value = numpy_hostile(np.random.default_rng(draw(SEEDS)))
    sample = {"keypoints": value, "class": "G01"} if draw(st.booleans()) else {"class": value}
    try:
        return pickle.dumps(sample, protocol=draw(st.integers(2, 5)))
    except Exception:  # noqa: BLE001 - a combination the pickler itself cannot write
        return pickle.dumps({"keypoints": None, "class": "G01"})


@fuzz
@given(data=st.one_of(mutated_sample(), broken_sample(), hostile_sample()))
def test_fuzzed_sample_pickles_load_or_are_one_line(worker, files, data):
    root = sample_root(files)
    path = root / "all" / "G01" / "user01_G01_R01.pkl"
    path.write_bytes(data)
    worker.check("sample", root, names=path)


def sample_root(files: Files) -> Path:
    root = files.folder()
    (root / "all" / "G01").mkdir(parents=True)
    (root / "label2id.json").write_text(json.dumps({label: i for i, label in enumerate(LABELS)}))
    (root / "id2label.json").write_text(json.dumps(dict(enumerate(LABELS))))
    return root


@cli_fuzz
@given(samples=st.lists(st.one_of(mutated_sample(), broken_sample(), hostile_sample()),
                        min_size=3, max_size=3))
def test_dataset_cli_gives_one_error_line(files, samples):
    root = sample_root(files)
    for rep, data in enumerate(samples, start=1):
        (root / "all" / "G01" / f"user01_G01_R{rep:02d}.pkl").write_bytes(data)
    result = run_limited("dataset.py", "--config_path", DEMO_CONFIG, "--data_path", root)
    if result.returncode == 0:
        assert "Traceback" not in result.stderr and f"{root}/all:" in result.stdout
    else:
        assert str(root) in one_error_line(result, 2)
