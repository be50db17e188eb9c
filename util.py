"""The utility drawer every script shares: one-line user errors and the CLI wrapper that prints
them (a full disk included), the --help formatter and bounded flag types, atomic writes, checking
an output path, reading a JSON file the run needs, seeding, logging and the git commit of the
checkout. Imports no TensorFlow and nothing of the project's.

The run tree (artefact paths and names, experiment names) is not here: it lives in runs.py.
"""
from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import logging
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
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
    """A JSON file the run needs; a missing, unreadable or invalid file is one `error` naming it and `what`."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: {what} is not valid JSON ({e})") from None
    except OSError as e:  # a folder, or a path through a file
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None


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
