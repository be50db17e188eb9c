"""The utility drawer every script shares: one-line user errors and the CLI wrapper that prints
them (a full disk included), the --help formatter and bounded flag types, atomic writes, checking
an output path, reading a JSON file the run needs (no key given twice) and checking the types of its
fields, the size a nested value expands to (expanded_size), seeding, logging, the quiet console and the git commit of the checkout. Imports no
TensorFlow and nothing of the project's.

Quiet console: TensorFlow's C++ logs (TF_CPP_MIN_LOG_LEVEL=3), its absl logs, the lines that the
TFLite converter and interpreter print natively (NATIVE_NOISE) and the `tf.lite.Interpreter is
deprecated` warning are silenced in our processes (tf_env.py before it imports TensorFlow,
tflite_runtime.py around every interpreter). SIGNBART_VERBOSE=1 in the environment, or --verbose on
a training or export script, brings them back.

The run tree (artefact paths and names, experiment names) is not here: it lives in runs.py.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import logging
import math
import os
import pickle
import random
import re
import reprlib
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parent


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the module docstring's layout and shows every flag's default."""


class UserError(Exception):
    """A problem with the user's input (file, flag, data) that deserves one clear line, not a traceback."""
    exit_code = 2


class RunFailed(UserError):
    """A run that went through and failed its own checks (a training loss that is not finite, an
    export that fails its parity check): one line too, but exit code 1."""
    exit_code = 1


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def disk_full(e: BaseException) -> str | None:
    """The one line for an error that a full disk (or quota) caused, whoever raised it: an OSError
    with ENOSPC/EDQUOT, or a library error that wraps one (TensorFlow's ResourceExhaustedError,
    h5py's OSError without errno) and says so; None for any other error."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if ((isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS)
                or any(t in text for t in DISK_FULL_TEXTS)):
            named = re.search(r"(/[^\s;]+); (?:No space left on device|Disk quota exceeded)", text)
            filename = getattr(e, "filename", None) or (named and named.group(1))
            if filename:
                return f"{filename}: no space left on device (free some space, then re-run)"
            first = text.splitlines()[0][:300]
            return f"no space left on device ({first}); free some space, then re-run"
        e = e.__cause__ or e.__context__
    return None


def one_line(e: BaseException) -> str | None:
    """The message of an error a user can act on (UserError, a file-system error, a full disk), else
    None (a bug: show its traceback)."""
    full = disk_full(e)
    if full:
        return full
    if isinstance(e, (UserError, OSError)):
        return str(e)
    return None


def exit_code(e: BaseException) -> int:
    """2 for bad input and the file system (a full disk included), 1 for a run that failed."""
    return getattr(e, "exit_code", 2)


def cli(main):
    """Decorator for script entry points: a UserError, a file-system error (missing file, a folder
    where a file should be, no permission) or a full disk, whoever raised it, becomes `error: ...`
    and exit code 2 (RunFailed: 1). Unprintable characters in output (a file name that is not
    UTF-8) are escaped."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="backslashreplace")
        try:
            return main(*args, **kwargs)
        except Exception as e:
            line = one_line(e)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(exit_code(e))
    return run


def bounded(kind: type, ok, wants: str):
    """An argparse `type=` that reads a flag as `kind` (floats must be finite) and refuses a value
    for which ok(value) is false: `error: argument --epochs: must be >= 1, got 0`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind.__name__}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or not ok(value):
            finite = "finite and " if kind is float else ""
            raise argparse.ArgumentTypeError(f"must be {finite}{wants}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# ----------------------------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path, data: bytes) -> Path:
    """Write to a temp file in the same folder, then rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; a plain open() would follow the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def check_output(path, what: str, folder: bool = False) -> Path:
    """Refuse, before any work is done, an output that cannot be written: a folder where a file
    goes (or a file where a folder goes), a path through a file, or a folder one cannot write to."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        wrong = "a file, not a folder" if folder else "a folder, not a file"
        raise UserError(f"{what} {path}: is {wrong}")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {path}: cannot be created, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {existing} is not writable")
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path, what: str, error: type[Exception] = UserError):
    """A JSON file the run needs; a missing, unreadable or invalid file (parse_json) is one `error`
    naming it and `what`."""
    try:
        with open(path) as f:
            return parse_json(f.read(), f"{path}: {what}", error)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: {what} is not valid JSON ({e})") from None
    except OSError as e:  # a folder, or a path through a file
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None


def parse_json(text, where: str, error: type[Exception] = UserError):
    """json.loads that refuses a key given twice in one object (plain JSON keeps the last one
    silently); invalid JSON, an integer of more than 4300 digits or nesting too deep for the parser
    is one `error`."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as e:  # JSONDecodeError, a repeated key, a huge integer, bytes not in UTF-8
        raise error(f"{where} is not valid JSON ({e})") from None
    except RecursionError:
        raise error(f"{where} is not valid JSON (nested too deeply)") from None


def _unique_keys(pairs: list) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"key {brief(key)} is given twice")
        obj[key] = value
    return obj


# ------------------------------------------------------------------------------------------ records
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict = 3, 60, 60, 6, 4


def brief(value, limit: int = 80) -> str:
    """repr(value), shortened: an error message quotes what it refuses without printing (or walking)
    a huge, deeply nested or self-referencing value."""
    text = _BRIEF.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


NUMBER = (int, float)  # a JSON number (true/false are not numbers here)


@dataclass(frozen=True)
class ListOf:
    """A JSON list whose every item is `kind` (a type, a tuple of types, or another
    ListOf/MapOf/dict)."""
    kind: object


@dataclass(frozen=True)
class MapOf:
    """A JSON object with any keys whose every value is `kind`."""
    kind: object


def check_fields(record, fields: dict, where: str, required=(), error: type[Exception] = UserError):
    """`record` is a JSON object whose keys named in `fields` hold the JSON types given there (null
    and an absent key pass, except for the `required` keys; required=True: every key, nested ones
    too; a nested dict of fields checks a nested object); otherwise one `error` naming `where` and
    the key. Returns the record."""
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got {_json_type(record)}")
    for key in (fields if required is True else required):
        if record.get(key) is None:
            raise error(f"{where}: '{key}' is missing")
    for key, kind in fields.items():
        if record.get(key) is not None:
            _check_value(record[key], kind, f"{where}: '{key}'", required is True, error)
    return record


def _check_value(value, kind, where: str, every_key: bool, error) -> None:
    if isinstance(kind, dict):
        check_fields(value, kind, where, every_key or (), error)
    elif isinstance(kind, (ListOf, MapOf)):
        container = list if isinstance(kind, ListOf) else dict
        if not isinstance(value, container):
            raise error(f"{where} must be {_kind_name(container)}, got {_shown(value)}")
        for item in (value if container is list else value.values()):
            if item is not None:
                _check_value(item, kind.kind, f"{where} (an item)", every_key, error)
    elif not _is_kind(value, kind):
        raise error(f"{where} must be {_kind_name(kind)}, got {_shown(value)}")


def _is_kind(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _kind_name(kind) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a JSON object"}
    if kind == NUMBER:
        return "a number"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _shown(value) -> str:
    return f"{_json_type(value)} {brief(value, 40)}"


def _json_type(value) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_pickle(path, obj) -> Path:
    return atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def atomic_save(path, save_fn) -> Path:
    """For writers that need a file name (h5, tflite via libraries): save_fn(tmp_path), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        save_fn(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# ------------------------------------------------------------------------------------------ limits
class Expansion(Exception):
    """Raised by expanded_size: `reason` is 'itself' (a container inside itself), 'depth' or 'size';
    `item` is the container where it was found."""

    def __init__(self, reason: str, item):
        super().__init__(reason)
        self.reason, self.item = reason, item


def expanded_size(root, children, leaf_size=lambda item: 1, limit=None, max_depth=None) -> int:
    """How many values `root` stands for when a shared part counts at each of its references (what
    expanding it, e.g. numpy.asarray, a repr or a YAML alias, would build), found without expanding
    it: each distinct container is walked once, without recursion. children(x): an iterator over the
    parts of a container, None for a leaf. Expansion when a container holds itself, nests deeper
    than max_depth or the size passes limit."""
    items = children(root)
    if items is None:
        return leaf_size(root)
    done, path, stack, end = {}, {id(root)}, [[root, items, 1]], object()
    while True:
        frame = stack[-1]
        item = next(frame[1], end)
        if item is end:
            stack.pop()
            path.discard(id(frame[0]))
            done[id(frame[0])] = frame[2]
            if not stack:
                return frame[2]
            size, frame = frame[2], stack[-1]
        else:
            inner = None if id(item) in done else children(item)
            if inner is not None:
                if id(item) in path:
                    raise Expansion("itself", item)
                if max_depth is not None and len(stack) >= max_depth:
                    raise Expansion("depth", item)
                path.add(id(item))
                stack.append([item, inner, 1])
                continue
            size = done[id(item)] if id(item) in done else leaf_size(item)
        frame[2] += size
        if limit is not None and frame[2] > limit:
            raise Expansion("size", frame[0])


# ----------------------------------------------------------------------------------------------- reproducibility
def set_seed(seed: int) -> None:
    """Seed python, numpy and (if imported) TensorFlow, with deterministic TF ops."""
    random.seed(seed)
    np.random.seed(seed)
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        tf.random.set_seed(seed)
        tf.config.experimental.enable_op_determinism()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def setup_logging(log_file=None, name: str = "signbart") -> logging.Logger:
    """Log to stdout and, when given, to a file (appending)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    logger.propagate = False
    return logger


# ----------------------------------------------------------------------------------------------- quiet console
VERBOSE_ENV = "SIGNBART_VERBOSE"  # "1": TensorFlow's own console (C++ and absl logs, warnings) is kept
# What TensorFlow and TFLite write to file descriptor 2 from C++, whatever Python's logging says:
NATIVE_NOISE = (
    "All log messages before absl::InitializeLog() is called",     # absl's first line in a process
    re.compile(r"^[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "),            # absl INFO / WARNING (converter)
    "fully_quantize: ",                                            # the integer quantizer's settings
    "Created TensorFlow Lite XNNPACK delegate for CPU",            # TFLite's first interpreter
)
INTERPRETER_DEPRECATION = r"\s*Warning: tf\.lite\.Interpreter is deprecated"  # TF's converter uses it


def verbose() -> bool:
    """True when SIGNBART_VERBOSE is set (and not 0): TensorFlow's console is not silenced."""
    return os.environ.get(VERBOSE_ENV, "0").strip() not in ("", "0")


class VerboseFlag(argparse.Action):
    """--verbose: sets SIGNBART_VERBOSE=1 for this process (and the processes it starts) while the
    flags are parsed, before TensorFlow is imported."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[VERBOSE_ENV] = "1"
        setattr(namespace, self.dest, True)


def add_verbose_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--verbose", action=VerboseFlag,
                    help=f"keep TensorFlow's C++/absl logs and warnings (as {VERBOSE_ENV}=1)")


def quiet_tensorflow() -> None:
    """Call before TensorFlow is imported: its C++ logs off (TF_CPP_MIN_LOG_LEVEL=3 unless set) and
    the interpreter deprecation warning ignored. Nothing when verbose()."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=INTERPRETER_DEPRECATION, category=UserWarning)


def is_noise(line: str, noise) -> bool:
    return any(n.search(line) if isinstance(n, re.Pattern) else n in line for n in noise)


NATIVE_STDERR = threading.RLock()  # held while file descriptor 2 is redirected (one thread at a time)


@contextlib.contextmanager
def native_noise_dropped(noise=NATIVE_NOISE):
    """Run the block with file descriptor 2 captured, then pass on every line that is not `noise`
    (substrings or compiled patterns). A block that raises passes everything on; verbose() captures
    nothing. One thread at a time (NATIVE_STDERR): threads that swapped fd 2 at once would restore
    each other's capture."""
    if verbose():
        yield
        return
    with NATIVE_STDERR:
        sys.stderr.flush()
        saved, failed = os.dup(2), True
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
                failed = False
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                lines = captured.read().decode(errors="replace").splitlines(keepends=True)
                sys.stderr.write("".join(line for line in lines if failed or not is_noise(line, noise)))
                sys.stderr.flush()
