"""The run tree: every artefact path and file name, experiment names and their parsing, signer
discovery and LOSO batches. Imports no TensorFlow. (Errors, atomic writes, seeding and logging are
the utility drawer's: util.py.)

The run tree, computed here and nowhere else (scripts and the pipeline shell ask this module):
  <output_root>/<dataset>/<loso|full>/
    checkpoints/<exp>/        final_model.h5, final_model_fp32.tflite (+ .json card), metadata.json
    logs/run_logs/<exp>.log   logs/training_csv/<exp>_training.csv   logs/tensorboard/<exp>/
    logs/sweep/[<prefix>/]<stage>_<user>.log   (sweep.py: one log per task, every attempt)
    out-imgs/<exp>/training_curves.png
    training_metadata/<exp>_<timestamp>.json, <exp>_latest.json
    exports/ptq[_<prefix>]/<user>/  model_<mode>.tflite (PTQ_FILES); model_fp32.onnx, model_int8.onnx
                                    (ONNX_FILES, onnx_export.py), each with its card <name>.onnx.json
    exports/qat[_<prefix>]/<user>/  qat_<mode>.tflite (QAT_FILES), qat_model_weights.h5,
                                    qat_metadata.json
    results/[<prefix>/]       enrollment[_<runtime>]/ (evaluate_enrollment.py)
  <model>.prototypes.json beside any .tflite (<model>.onnx.prototypes.json beside a .onnx): a user's
  enrollment (prototypes_path)
  <output_root>/sweeps/<id>.json   a sweep's table of tasks; <id>.shared its shared-filesystem probe
<output_root> is --output_root, else $SIGNBART_OUTPUT_ROOT, else outputs/.

A run folder has one owner at a time (RunLock: checkpoints/<exp>.lock). A run of an experiment
that finished already writes into a staging tree, <dataset>/<run_type>/.staging/<exp>/, and
RunPaths.promote moves its artefacts over the finished run's only once it succeeded
(docs/safety.md#run-folders).
Experiment names: [<prefix>_]<dataset>_LOSO_<user> (loso_experiment_name) and <dataset>_full
(full_experiment_name); parse_experiment_name is their inverse. LOSO data folders:
<base>_LOSO_<user> (loso_data_path; loso_data_user is its inverse).

The pipeline shell reads the tree, and the holdout list, from the CLI:
    python runs.py paths --dataset_name demo --output_root outputs --exp_prefix p \\
        --holdouts user01,user02 --ptq_modes dynamic       # NAME=value lines
    python runs.py holdouts all data/demo-65kpts          # the holdouts, space-separated
    python runs.py variant_prefix 65kpts --dataset_name arabic_asl   # arabic_asl_65kpts_pose_hands
and what is done, the same tests as sweep.py's:
    python runs.py state train user01=outputs/demo/loso/checkpoints/demo_LOSO_user01  # user01 todo
    python runs.py state ptq --modes dynamic user01=outputs/demo/loso/exports/ptq/user01
    python runs.py results_current outputs/demo/loso/results/summary_table.csv outputs/demo/loso
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from recipes import DEFAULT_DATASET_NAME, DEFAULT_HOLDOUTS
from util import HelpFormatter, UserError, cli, one_line, setup_logging

USER_RE = re.compile(r"^user\d+$")
SAMPLE_RE = re.compile(r"^(user\d+)_(G\d+)_(.+)\.pkl$")

# artefact file names
FINAL_MODEL = "final_model.h5"            # checkpoints/<exp>/: the trained FP32 Keras model
FP32_TFLITE = "final_model_fp32.tflite"   # checkpoints/<exp>/: its TFLite export (+ .json card)
CHECKPOINT_METADATA = "metadata.json"     # checkpoints/<exp>/: config and data path of the run
RESUME_DIR = "resume"                     # checkpoints/<exp>/: the epoch checkpoint of --resume
RESUME_STATE_FILE = "state.json"          # in it: the epoch and LR-schedule state
RESUME_STATE = f"{RESUME_DIR}/{RESUME_STATE_FILE}"
PTQ_FILES = {  # PTQ converter mode -> file in exports/ptq*/<user>/
    "fp32": "model_fp32.tflite", "dynamic": "model_dynamic_int8.tflite",
    "float16": "model_float16.tflite", "int8": "model_int8.tflite",
    "int8_io": "model_int8_io.tflite", "int16x8": "model_int16x8.tflite"}
QAT_FILES = {"dynamic": "qat_dynamic_int8.tflite", "int8": "qat_int8.tflite"}  # mode -> file
ONNX_FILES = {  # ONNX mode (onnx_export.py) -> file in exports/ptq*/<user>/, beside the PTQ models
    "onnx-fp32": "model_fp32.onnx", "onnx-int8": "model_int8.onnx"}
ONNX_SUFFIX = ".onnx"                     # a model file with this suffix runs in ONNX Runtime
QAT_WEIGHTS = "qat_model_weights.h5"      # legacy HDF5 weights (".weights.h5" selects Keras 3's)
QAT_METADATA = "qat_metadata.json"        # written last by a QAT run
LOCK_SUFFIX = ".lock"                     # checkpoints/<exp>.lock: the owner of a run folder
STAGING_DIR = ".staging"                  # <dataset>/<run_type>/.staging/<exp>/: a replacing run
PROTOTYPES_SUFFIX = ".prototypes.json"    # <model stem>.prototypes.json: enrollment beside a .tflite
ENROLLMENT_DIR = "enrollment"             # results/[<prefix>/]enrollment[_<runtime>]/
# the exported models of a LOSO fold by mode (loso_model): fp32 = the checkpoint's own export; PTQ modes
# in exports/ptq*/<user>/ (PTQ_FILES; its fp32 file is the checkpoint's twin); qat-<mode> in exports/qat*/;
# onnx-<mode> beside the PTQ models (ONNX_FILES)
LOSO_MODEL_MODES = ("fp32", *(m for m in PTQ_FILES if m != "fp32"), *(f"qat-{m}" for m in QAT_FILES),
                    *ONNX_FILES)


# A training run record (training_metadata/<exp>_*.json) holds the resolved recipe once, in its
# `training` block; records written before that block existed hold epochs, learning_rate and
# batch_size at the top level (committed results/ folders have both shapes).
RECORD_RECIPE_KEYS = {"epochs": "epochs", "lr": "learning_rate", "batch_size": "batch_size"}


def recorded_recipe(record: dict) -> dict:
    """The training recipe of a run record of either shape: its `training` block, else the
    top-level epochs / learning_rate / batch_size of an older record (as epochs, lr, batch_size)."""
    older = {key: record[old] for key, old in RECORD_RECIPE_KEYS.items() if old in record}
    return older | record.get("training", {})


def model_base(model_path) -> str:
    """What a model's own files beside it are named after: the stem of a .tflite, the whole name of
    a .onnx (model_fp32.onnx sits beside model_fp32.tflite and must not share its card)."""
    path = Path(model_path)
    return path.name if path.suffix == ONNX_SUFFIX else path.stem


def model_kind(model_path) -> str:
    """'ONNX model' or 'TFLite model', by the file's suffix (for messages)."""
    return "ONNX model" if Path(model_path).suffix == ONNX_SUFFIX else "TFLite model"


def card_path(model_path) -> Path:
    """The model card written beside a model: <stem>.json for a .tflite, <name>.json for a .onnx."""
    return Path(model_path).with_name(model_base(model_path) + ".json")


def prototypes_path(model_path) -> Path:
    """A user's enrollment saved beside a model: <model base>.prototypes.json (model_base)."""
    return Path(model_path).with_name(model_base(model_path) + PROTOTYPES_SUFFIX)


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

    @property
    def checkpoints_root(self) -> Path:
        return self.base / "checkpoints"

    @property
    def exports_root(self) -> Path:
        return self.base / "exports"

    def checkpoint_dir(self, exp: str) -> Path:
        return self.checkpoints_root / exp

    def run_log(self, exp: str) -> Path:
        return self.base / "logs" / "run_logs" / f"{exp}.log"

    def resume_dir(self, exp: str) -> Path:
        return self.checkpoint_dir(exp) / RESUME_DIR

    def final_model(self, exp: str) -> Path:
        return self.checkpoint_dir(exp) / FINAL_MODEL

    def fp32_tflite(self, exp: str) -> Path:
        return self.checkpoint_dir(exp) / FP32_TFLITE

    def training_csv(self, exp: str) -> Path:
        return self.base / "logs" / "training_csv" / f"{exp}_training.csv"

    def tensorboard_dir(self, exp: str) -> Path:
        return self.base / "logs" / "tensorboard" / exp

    def curves_png(self, exp: str) -> Path:
        return self.base / "out-imgs" / exp / "training_curves.png"

    def metadata_dir(self) -> Path:
        return self.base / "training_metadata"

    def latest_record(self, exp: str) -> Path:
        return self.metadata_dir() / f"{exp}_latest.json"

    def record(self, exp: str, timestamp: str) -> Path:
        return self.metadata_dir() / f"{exp}_{timestamp}.json"

    def new_record(self, exp: str, timestamp: str) -> Path:
        """record(exp, timestamp), or <exp>_<timestamp>_<n>.json when a run of the same second wrote that one."""
        path, n = self.record(exp, timestamp), 0
        while path.exists():
            n += 1
            path = self.metadata_dir() / f"{exp}_{timestamp}_{n}.json"
        return path

    def experiments(self) -> list[str]:
        """Names of the experiments with a checkpoint folder or a latest training record."""
        ckpt_root, meta_root = self.checkpoints_root, self.metadata_dir()
        names = [d.name for d in ckpt_root.iterdir() if d.is_dir()] if ckpt_root.is_dir() else []
        if meta_root.is_dir():
            names += [f.name[:-len("_latest.json")] for f in meta_root.glob("*_latest.json")]
        return sorted(set(names))

    def lock_file(self, exp: str) -> Path:
        return self.checkpoints_root / f"{exp}{LOCK_SUFFIX}"

    def finished(self, exp: str) -> bool:
        """A run of `exp` finished successfully: its latest record or its metadata says so."""
        return (holds_success(self.latest_record(exp))
                or holds_success(self.checkpoint_dir(exp) / CHECKPOINT_METADATA))

    def run_artefacts(self, exp: str) -> list[Path]:
        """What one run of `exp` writes and a new run replaces as a whole, the record last (the run
        log and the time-stamped records are histories: every run appends to them)."""
        return [self.checkpoint_dir(exp), self.training_csv(exp), self.tensorboard_dir(exp),
                self.curves_png(exp).parent, self.latest_record(exp)]

    def staging(self, exp: str) -> RunPaths:
        """The tree a run replacing a finished run of `exp` writes into (promote moves it in)."""
        return RunPaths(self.base / STAGING_DIR / exp, self.dataset, self.run_type)

    def promote(self, staged: RunPaths, exp: str) -> None:
        """Replace the artefacts of `exp` with those of a staged run that succeeded (an artefact the
        staged run lacks is removed, so nothing of the old run is left), the record last; SIGINT and
        SIGTERM wait until every artefact is in place."""
        with signals_deferred():
            for new, final in zip(staged.run_artefacts(exp), self.run_artefacts(exp)):
                replace_path(new, final)

    def sweep_log(self, prefix: str, stage: str, user: str) -> Path:
        """logs/sweep/[<prefix>/]<stage>_<user>.log: the output of one sweep task, every attempt."""
        folder = self.base / "logs" / "sweep"
        return (folder / prefix if prefix else folder) / f"{stage}_{user}.log"

    def export_dir(self, kind: str, prefix: str = "", user: str = "") -> Path:
        """exports/<ptq|qat>[_<prefix>][/<user>]"""
        d = self.exports_root / (f"{kind}_{prefix}" if prefix else kind)
        return d / user if user else d

    def results_dir(self, prefix: str = "") -> Path:
        """results/[<prefix>/]"""
        return self.base / "results" / prefix if prefix else self.base / "results"

    def enrollment_dir(self, prefix: str = "", runtime: str = "") -> Path:
        """results/[<prefix>/]enrollment[_<runtime>]: evaluate_enrollment.py's output (runtime: '' for
        the pinned one)."""
        return self.results_dir(prefix) / (f"{ENROLLMENT_DIR}_{runtime}" if runtime else ENROLLMENT_DIR)

    def loso_holdouts(self, prefix: str = "") -> list[str]:
        """Holdouts with a checkpoint folder or a latest record of exactly [<prefix>_]<dataset>_LOSO_<user>."""
        parsed = [parse_experiment_name(name, self.dataset) for name in self.experiments()]
        return sorted({e.user for e in parsed if e and e.run_type == "loso" and e.prefix == prefix})

    def loso_model(self, user: str, mode: str, prefix: str = "") -> Path:
        """The .tflite (or .onnx) of one LOSO fold in one of LOSO_MODEL_MODES."""
        if mode not in LOSO_MODEL_MODES:
            raise UserError(f"unknown model mode {mode!r}; choose from {list(LOSO_MODEL_MODES)}")
        if mode == "fp32":
            return self.fp32_tflite(loso_experiment_name(self.dataset, user, prefix))
        if mode in ONNX_FILES:
            return self.export_dir("ptq", prefix, user) / ONNX_FILES[mode]
        if mode in ONNX_FILES:
            return self.export_dir("ptq", prefix, user) / ONNX_FILES[mode]
        if mode.startswith("qat-"):
            return self.export_dir("qat", prefix, user) / QAT_FILES[mode[len("qat-"):]]
        return self.export_dir("ptq", prefix, user) / PTQ_FILES[mode]


def holds_success(path: Path) -> bool:
    """A JSON record at `path` says `"success": true`."""
    try:
        return json.loads(Path(path).read_text()).get("success") is True
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------------- finished stages
# What counts as done, stage by stage, for the pipeline shells (through `runs.py state` and
# `runs.py results_current`) and sweep.py alike. Each test looks at what a stage writes last, so a
# stage killed half-way never looks finished.
def fold_trained(paths: RunPaths, exp: str) -> bool:
    """final_model.h5, its FP32 export and card, and a latest record that says success."""
    ckpt = paths.checkpoint_dir(exp)
    return (all((ckpt / name).is_file() for name in (FINAL_MODEL, FP32_TFLITE, card_path(FP32_TFLITE)))
            and holds_success(paths.latest_record(exp)))


def fold_resumable(paths: RunPaths, exp: str) -> bool:
    """An epoch checkpoint exists (the training continues with --resume)."""
    return (paths.checkpoint_dir(exp) / RESUME_STATE).is_file()


def ptq_done(export_dir, modes, onnx_modes=()) -> bool:
    """The model card of every PTQ mode and of every ONNX mode (fp32, int8) the PTQ step writes
    (each card is written after its model); the modes as parse_ptq_modes / parse_onnx_modes give them."""
    files = [PTQ_FILES[mode] for mode in modes] + [ONNX_FILES[f"onnx-{m}"] for m in onnx_modes]
    return all(card_path(Path(export_dir) / name).is_file() for name in files)


def qat_done(export_dir) -> bool:
    """qat_metadata.json (written last by a QAT run)."""
    return (Path(export_dir) / QAT_METADATA).is_file()


def results_current(table, folders, path_contains: str = "") -> bool:
    """The results table exists and no .tflite under `folders` (whose path holds `path_contains`)
    is newer."""
    table = Path(table)
    if not table.is_file():
        return False
    newest = table.stat().st_mtime
    return not any(model.stat().st_mtime > newest for folder in map(Path, folders)
                   if folder.is_dir() for model in folder.rglob("*.tflite")
                   if path_contains in str(model))


def checkpoint_run(folder) -> tuple[RunPaths, str] | None:
    """(run tree, experiment) of a checkpoint folder <root>/<dataset>/<run_type>/checkpoints/<exp>;
    None when `folder` is not in a checkpoints/ folder."""
    folder = Path(folder)
    if folder.parent.name != "checkpoints":
        return None
    run_tree = folder.parent.parent
    return RunPaths(run_tree.parent.parent, run_tree.parent.name, run_tree.name), folder.name


def stage_state(stage: str, folder, modes=(), onnx_modes=()) -> str:
    """'done', 'resume' (an interrupted training: it continues with --resume) or 'todo' of one
    fold's stage: 'train' of its checkpoint folder, 'ptq' or 'qat' of its export folder."""
    if stage == "train":
        run = checkpoint_run(folder)
        if run is None:
            raise UserError(f"{folder} is not a folder <output_root>/<dataset>/<run_type>/"
                            "checkpoints/<experiment>")
        paths, exp = run
        return ("done" if fold_trained(paths, exp) else
                "resume" if fold_resumable(paths, exp) else "todo")
    done = ptq_done(folder, modes, onnx_modes) if stage == "ptq" else qat_done(folder)
    return "done" if done else "todo"


def sweeps_dir(root) -> Path:
    """<output_root>/sweeps: the sweeps' task tables and shared-filesystem probes."""
    return Path(root) / "sweeps"


def replace_path(new: Path, final: Path) -> None:
    """Put file or folder `new` at `final`, replacing what is there (nothing when `new` is
    missing). A folder cannot be renamed over a folder: the old one is moved aside, then deleted."""
    if not new.exists():
        remove_path(final)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    if new.is_dir() and final.exists():
        aside = final.with_name(f".{final.name}.replaced-{os.getpid()}")
        remove_path(aside)
        os.rename(final, aside)
        os.rename(new, final)
        remove_path(aside)
    else:
        os.replace(new, final)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def signals_deferred():
    """SIGINT and SIGTERM received inside are delivered when it ends (main thread only: elsewhere a
    plain block)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            signal.raise_signal(received[0])


def run_paths(dataset: str, run_type: str, root: str | None = None) -> RunPaths:
    return RunPaths(output_root(root), dataset, run_type)


def loso_experiment_name(dataset: str, user: str, prefix: str = "") -> str:
    name = f"{dataset}_LOSO_{user}"
    return f"{prefix}_{name}" if prefix else name


def full_experiment_name(dataset: str) -> str:
    return f"{dataset}_full"


@dataclass(frozen=True)
class Experiment:
    """What an experiment name says: see parse_experiment_name."""
    dataset: str
    run_type: str        # "loso" or "full"
    user: str = ""       # the held-out signer of a LOSO experiment
    prefix: str = ""


LOSO_NAME_RE = re.compile(r"^(?P<dataset>.+)_LOSO_(?P<user>user\d+)$")
FULL_NAME_RE = re.compile(r"^(?P<dataset>.+)_full$")


VARIANT_NAMES = {"65kpts": "65kpts_pose_hands"}  # keypoint variant -> its name in prefixes


def variant_prefix(dataset: str, variant: str, root: str | None = None) -> str:
    """Experiment prefix of keypoint variant V (run_end_to_end_variants.sh): <dataset>_<name>,
    name = VARIANT_NAMES[V] (the reference README's arabic_asl_65kpts_pose_hands), else V with
    '-' -> '_'. Alias: a tree written under the older plain name (<dataset>_65kpts_seed<S>,
    <dataset>_65kpts_full) keeps it when it has runs under <root> and the new name has none."""
    plain = f"{dataset}_{variant.replace('-', '_')}"
    name = f"{dataset}_{VARIANT_NAMES[variant]}" if variant in VARIANT_NAMES else plain

    def has_runs(prefix: str) -> bool:
        return any(exp == f"{prefix}_full" or exp.startswith(f"{prefix}_seed")
                   for run_type in ("loso", "full")
                   for exp in run_paths(dataset, run_type, root).experiments())
    return plain if name != plain and not has_runs(name) and has_runs(plain) else name


def parse_experiment_name(name: str, dataset: str = "") -> Experiment | None:
    """The inverse of loso_experiment_name and full_experiment_name; None for any other name.

    With `dataset`, the name must be of that dataset and what precedes it is the prefix
    ('p_demo_LOSO_user01', 'demo' -> Experiment('demo', 'loso', 'user01', 'p')). Without it, a
    prefix cannot be told from the dataset: everything before _LOSO_/_full is the dataset."""
    loso, full = LOSO_NAME_RE.match(name), FULL_NAME_RE.match(name)
    if not (loso or full):
        return None
    user = loso["user"] if loso else ""
    if not dataset:
        return Experiment((loso or full)["dataset"], "loso" if loso else "full", user)
    standard = loso_experiment_name(dataset, user) if loso else full_experiment_name(dataset)
    if name == standard:
        return Experiment(dataset, "loso" if loso else "full", user)
    if name.endswith(f"_{standard}"):
        return Experiment(dataset, "loso" if loso else "full", user, name[:-len(standard) - 1])
    return None


def loso_data_path(base_data_path: str, user: str) -> Path:
    return Path(f"{str(base_data_path).rstrip('/')}_LOSO_{user}")


def loso_data_user(data_path) -> str:
    """The held-out signer of a LOSO data folder (<base>_LOSO_<user>), else ''."""
    m = re.search(r"_LOSO_(user\d+)$", Path(data_path).name)
    return m.group(1) if m else ""


def export_dir_for(checkpoint, kind: str) -> Path:
    """exports/<kind>[_<prefix>][/<user>] of the run tree holding `checkpoint`
    (<root>/<dataset>/<run_type>/checkpoints/<[prefix_]experiment>/final_model.h5)."""
    run = checkpoint_run(Path(checkpoint).resolve().parent)
    if run is None:
        raise UserError(f"{checkpoint} is not in <output_root>/<dataset>/<run_type>/checkpoints/"
                        "<experiment>/: pass --output_dir")
    paths, name = run
    of_dataset, any_dataset = parse_experiment_name(name, paths.dataset), parse_experiment_name(name)
    user = any_dataset.user if any_dataset else ""
    prefix = of_dataset.prefix if of_dataset else ""
    return paths.export_dir(kind, prefix, user)


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


def sample_repetition(filename: str) -> str | None:
    """'user01_G03_R07.pkl' -> 'R07' (the rest of the name); None when it does not follow the convention."""
    m = SAMPLE_RE.match(Path(filename).name)
    return m.group(3) if m else None


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


def parse_ptq_modes(arg: str, what: str = "PTQ modes") -> list[str]:
    """'dynamic,int8' (or 'all') -> PTQ modes, each a key of PTQ_FILES; `what` names them in the error."""
    modes = list(PTQ_FILES) if arg.strip() == "all" else comma_list(arg)
    unknown = [m for m in modes if m not in PTQ_FILES]
    if unknown or not modes:
        raise UserError(f"{what}: unknown mode(s) {unknown}; choose from {list(PTQ_FILES)} or 'all'")
    return modes


def parse_onnx_modes(arg: str) -> list[str]:
    """'fp32,int8' (or 'all') -> ONNX modes, each of ONNX_FILES without its 'onnx-'."""
    known = [m.removeprefix("onnx-") for m in ONNX_FILES]
    modes = known if arg.strip() == "all" else comma_list(arg)
    unknown = [m for m in modes if m not in known]
    if unknown or not modes:
        raise UserError(f"ONNX modes: unknown mode(s) {unknown}; choose from {known} or 'all'")
    return modes


def comma_list(arg: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the items of a comma-separated flag, blanks dropped."""
    return [item.strip() for item in arg.split(",") if item.strip()]


# ------------------------------------------------------------------------------------- LOSO batches
@dataclass
class LosoFold:
    """One held-out signer of a batch export: the exact checkpoint, its LOSO data folder and the
    output folder."""
    user: str
    checkpoint: Path
    data_path: Path
    output_dir: Path


def add_fold_args(ap) -> None:
    """The LOSO folds to work on (parse_holdouts reads them): flags of train_loso_functional.py
    and, through add_loso_args, of the batch scripts."""
    ap.add_argument("--base_data_path", required=True,
                    help="dataset root; folds are read from <base>_LOSO_<user>/")
    ap.add_argument("--holdouts", default=DEFAULT_HOLDOUTS,
                    help="comma list of holdout users, or 'all' (every signer found in <base>/all)")
    ap.add_argument("--holdout_only", default="",
                    help="this one holdout user only (overrides --holdouts)")
    ap.add_argument("--exp_prefix", default="",
                    help="experiment name prefix: <prefix>_<dataset>_LOSO_<user>")


def add_loso_args(ap, kind: str) -> None:
    """Flags of ptq_export_batch.py / train_loso_functional_qat_batch.py."""
    add_fold_args(ap)
    ap.add_argument("--dataset_name", default=DEFAULT_DATASET_NAME,
                    help="dataset folder name under the output root")
    ap.add_argument("--output_root", default="",
                    help="output root ('': $SIGNBART_OUTPUT_ROOT, else outputs)")
    ap.add_argument("--output_base_dir", default="",
                    help="folder holding <user>/ "
                         f"('': <root>/<dataset>/loso/exports/{kind}[_<prefix>])")


def loso_folds(args, kind: str) -> list[LosoFold]:
    """The folds named by add_loso_args flags; checkpoints are the exact final_model.h5 of each
    experiment."""
    paths = run_paths(args.dataset_name, "loso", args.output_root or None)
    folds = []
    for user in parse_holdouts(args.holdouts, args.base_data_path, args.holdout_only):
        experiment = loso_experiment_name(args.dataset_name, user, args.exp_prefix)
        output_dir = (Path(args.output_base_dir) / user if args.output_base_dir
                      else paths.export_dir(kind, args.exp_prefix, user))
        folds.append(LosoFold(user, paths.final_model(experiment),
                              loso_data_path(args.base_data_path, user), output_dir))
    return folds


def run_loso_batch(args, kind: str, what: str, job) -> int:
    """job(fold, logger) for every fold of the add_loso_args flags; a failing fold (missing
    checkpoint included) is logged without stopping the others. Returns the exit code: 1 if any
    fold failed."""
    logger = setup_logging(name=f"signbart.{kind}_batch")
    folds, failed = loso_folds(args, kind), []
    logger.info(f"{what} of {len(folds)} LOSO model(s): {', '.join(fold.user for fold in folds)}")
    for fold in folds:
        try:
            require_file(fold.checkpoint, f"{fold.user}: checkpoint")
            job(fold, logger)
        except Exception as e:  # a failing fold must not cost the other folds
            if one_line(e) is None:  # a bug: its traceback
                logger.exception(f"{fold.user}: failed")
            else:
                logger.error(one_line(e))
            failed.append(fold.user)
    logger.info(f"{len(folds) - len(failed)}/{len(folds)} fold(s) done"
                + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


# ---------------------------------------------------------------------------------- shell interface
def pipeline_paths(output_root: str | None, dataset: str, exp_prefix: str, holdouts: list[str],
                   full_exp_name: str = "") -> dict[str, str]:
    """Every path and file name run_end_to_end_pipeline.sh needs, by shell variable name (per
    holdout U: LOSO_EXP_U, LOSO_CKPT_U = its checkpoint folder). What is done the shell asks
    `runs.py state`."""
    loso, full = run_paths(dataset, "loso", output_root), run_paths(dataset, "full", output_root)
    full_exp = full_exp_name or full_experiment_name(dataset)
    values = {
        "LOSO_RUNS": loso.base, "FULL_RUNS": full.base, "LOSO_CHECKPOINTS": loso.checkpoints_root,
        "LOSO_EXPORTS": loso.exports_root, "RESULTS_DIR": loso.results_dir(exp_prefix),
        "PTQ_LOSO_DIR": loso.export_dir("ptq", exp_prefix),
        "QAT_LOSO_DIR": loso.export_dir("qat", exp_prefix),
        "PTQ_FULL_DIR": full.export_dir("ptq", exp_prefix),
        "QAT_FULL_DIR": full.export_dir("qat", exp_prefix),
        "FULL_EXP_NAME": full_exp, "FULL_CKPT": full.checkpoint_dir(full_exp),
        "FINAL_MODEL": FINAL_MODEL, "FP32_TFLITE": FP32_TFLITE,
        "PTQ_MODEL": PTQ_FILES["dynamic"], "QAT_MODEL": QAT_FILES["dynamic"],
    }
    for user in holdouts:
        exp = loso_experiment_name(dataset, user, exp_prefix)
        values |= {f"LOSO_EXP_{user}": exp, f"LOSO_CKPT_{user}": loso.checkpoint_dir(exp)}
    return {name: str(value) for name, value in values.items()}


@cli
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    paths = sub.add_parser("paths", formatter_class=HelpFormatter,
                           help="the pipeline's paths and file names as NAME=value lines")
    paths.add_argument("--output_root", default="",
                       help="output root ('': $SIGNBART_OUTPUT_ROOT, else outputs)")
    paths.add_argument("--dataset_name", default=DEFAULT_DATASET_NAME,
                       help="dataset folder under the output root")
    paths.add_argument("--exp_prefix", default="", help="experiment name prefix")
    paths.add_argument("--holdouts", default="", help="comma list of holdout users (resolved)")
    paths.add_argument("--full_exp_name", default="",
                       help="full-dataset experiment ('': <dataset>_full)")
    paths.add_argument("--ptq_modes", default="",
                       help="comma list of PTQ modes, or 'all': unknown ones are refused here, before "
                            "anything runs")
    variant = sub.add_parser("variant_prefix", formatter_class=HelpFormatter,
                             help="a keypoint variant's experiment prefix (variant_prefix)")
    variant.add_argument("variant", help="keypoint variant, e.g. 65kpts or 42kpts-hands")
    variant.add_argument("--output_root", default="",
                         help="output root searched for older names")
    variant.add_argument("--dataset_name", default=DEFAULT_DATASET_NAME,
                         help="dataset folder under the output root")
    state = sub.add_parser("state", formatter_class=HelpFormatter,
                           help="'<name> done|resume|todo' of each fold's stage (stage_state)")
    state.add_argument("stage", choices=("train", "ptq", "qat"))
    state.add_argument("folds", nargs="+", metavar="NAME=FOLDER",
                       help="a fold's name and its checkpoint (train) or export (ptq, qat) folder")
    state.add_argument("--modes", default="", help="comma list of PTQ modes (ptq)")
    state.add_argument("--onnx_modes", default="", help="comma list of ONNX modes (ptq; '': none)")
    current = sub.add_parser("results_current", formatter_class=HelpFormatter,
                             help="'yes' when a results table is newer than every .tflite under "
                                  "the folders, else 'no' (results_current)")
    current.add_argument("table", help="results table (summary_table.csv)")
    current.add_argument("folders", nargs="*", help="folders holding the models")
    current.add_argument("--path_contains", default="",
                         help="only the models whose path holds this text")
    holdouts = sub.add_parser("holdouts", formatter_class=HelpFormatter,
                              help="the holdout users, space-separated (parse_holdouts)")
    holdouts.add_argument("holdouts",
                          help="comma list of users, or 'all' (every signer in <base>/all)")
    holdouts.add_argument("base_data_path", help="dataset root")
    args = ap.parse_args(argv)
    if args.command == "holdouts":
        print(*parse_holdouts(args.holdouts, args.base_data_path))
        return 0
    if args.command == "state":
        modes = parse_ptq_modes(args.modes) if args.modes.strip() else []
        onnx = parse_onnx_modes(args.onnx_modes) if args.onnx_modes.strip() else []
        for fold in args.folds:
            name, sep, folder = fold.partition("=")
            if not (sep and name and folder):
                raise UserError(f"{fold!r} is not NAME=FOLDER")
            print(name, stage_state(args.stage, folder, modes, onnx))
        return 0
    if args.command == "results_current":
        print("yes" if results_current(args.table, args.folders, args.path_contains) else "no")
        return 0
    if args.command == "variant_prefix":
        print(variant_prefix(args.dataset_name, args.variant, args.output_root or None))
        return 0
    if args.ptq_modes.strip():
        parse_ptq_modes(args.ptq_modes)
    values = pipeline_paths(args.output_root or None, args.dataset_name, args.exp_prefix,
                            comma_list(args.holdouts), args.full_exp_name)
    for name, value in values.items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
