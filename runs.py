"""Run plumbing shared by every script: output paths, experiment names, signer discovery, atomic writes,
seeding, logging, and turning user errors into one clear line.

Output layout (SPEC §7.4), computed here and nowhere else:
  <output_root>/<dataset>/<loso|full>/
    checkpoints/<exp>/        final_model.h5, final_model_fp32.tflite (+ .json card), metadata.json
    logs/run_logs/<exp>.log   logs/training_csv/<exp>_training.csv   logs/tensorboard/<exp>/
    out-imgs/<exp>/training_curves.png
    training_metadata/<exp>_<timestamp>.json, <exp>_latest.json
    exports/ptq[_<prefix>]/<user>/ ...   exports/qat[_<prefix>]/<user>/ ...
    results/
<output_root> is --output_root, else $SIGNBART_OUTPUT_ROOT, else outputs/.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_HOLDOUTS = "user01,user08,user11"
DEFAULT_SEED = 42
USER_RE = re.compile(r"^user\d+$")
SAMPLE_RE = re.compile(r"^(user\d+)_(G\d+)_(.+)\.pkl$")
REPO_DIR = Path(__file__).resolve().parent


class UserError(Exception):
    """A problem with the user's input (file, flag, data) that deserves one clear line, not a traceback."""


def cli(main):
    """Decorator for script entry points: a UserError or a file-system error (missing file, a folder where a file
    should be, no permission, disk full; the message names the path) becomes `error: ...` and exit code 2."""
    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (UserError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return run


# ----------------------------------------------------------------------------------------------- paths
def output_root(arg: str | None = None) -> Path:
    return Path(arg or os.environ.get("SIGNBART_OUTPUT_ROOT") or "outputs")


@dataclass(frozen=True)
class RunPaths:
    """All artefact paths of one <dataset>/<run_type> tree."""
    root: Path
    dataset: str
    run_type: str  # "loso" or "full"

    @property
    def base(self) -> Path:
        return Path(self.root) / self.dataset / self.run_type

    def checkpoint_dir(self, exp: str) -> Path:
        return self.base / "checkpoints" / exp

    def run_log(self, exp: str) -> Path:
        return self.base / "logs" / "run_logs" / f"{exp}.log"

    def training_csv(self, exp: str) -> Path:
        return self.base / "logs" / "training_csv" / f"{exp}_training.csv"

    def tensorboard_dir(self, exp: str) -> Path:
        return self.base / "logs" / "tensorboard" / exp

    def curves_png(self, exp: str) -> Path:
        return self.base / "out-imgs" / exp / "training_curves.png"

    def metadata_dir(self) -> Path:
        return self.base / "training_metadata"

    def export_dir(self, kind: str, prefix: str = "", user: str = "") -> Path:
        """exports/<ptq|qat>[_<prefix>][/<user>]"""
        d = self.base / "exports" / (f"{kind}_{prefix}" if prefix else kind)
        return d / user if user else d

    def results_dir(self) -> Path:
        return self.base / "results"


def run_paths(dataset: str, run_type: str, root: str | None = None) -> RunPaths:
    return RunPaths(output_root(root), dataset, run_type)


def loso_experiment_name(dataset: str, user: str, prefix: str = "") -> str:
    name = f"{dataset}_LOSO_{user}"
    return f"{prefix}_{name}" if prefix else name


def full_experiment_name(dataset: str) -> str:
    return f"{dataset}_full"


def loso_data_path(base_data_path: str, user: str) -> Path:
    return Path(f"{str(base_data_path).rstrip('/')}_LOSO_{user}")


def require_file(path, what: str) -> Path:
    """Exact path or a clear error; never a fuzzy fallback to another run's artefact."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return path


# ----------------------------------------------------------------------------------------------- signers
def parse_sample_name(filename: str):
    """'user01_G03_R07.pkl' -> ('user01', 'G03'); None when the name does not follow the convention."""
    m = SAMPLE_RE.match(Path(filename).name)
    return (m.group(1), m.group(2)) if m else None


def discover_users(root, split: str = "all") -> list[str]:
    """Signers found in <root>/<split>/G*/*.pkl file names (user\\d+ only; symlinked class folders followed)."""
    users = set()
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise UserError(f"{split_dir}: split folder not found")
    for class_dir in sorted(split_dir.iterdir()):
        if class_dir.is_dir():  # is_dir() follows symlinks
            for f in os.listdir(class_dir):
                parsed = parse_sample_name(f)
                if parsed and USER_RE.match(parsed[0]):
                    users.add(parsed[0])
    return sorted(users)


def parse_holdouts(arg: str | None, base_data_path, holdout_only: str = "") -> list[str]:
    """--holdout_only wins; 'all' discovers users in <base>/all; else a comma list (default user01,user08,user11)."""
    if holdout_only:
        return [holdout_only]
    arg = arg or DEFAULT_HOLDOUTS
    if arg.strip().lower() == "all":
        users = discover_users(base_data_path)
        if not users:
            raise UserError(f"{base_data_path}/all: no userXX_GYY_*.pkl files found to discover holdouts")
        return users
    return comma_list(arg)


def comma_list(arg: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the items of a comma-separated flag, blanks dropped."""
    return [item.strip() for item in arg.split(",") if item.strip()]


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


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


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
