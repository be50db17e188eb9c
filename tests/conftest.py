"""Shared pytest fixtures: the demo dataset, its configs (full size and tiny), the real data in ../shared/data, and one
tiny trained LOSO fold with its PTQ and QAT exports, made once per session for every test that needs *a* model.
The shared exports are read-only: a test that changes files (model cards, weights) works on its own copy.

Background fixtures (@background_fixture): the whole-script runs (the shell pipelines) are subprocesses that leave
this process idle, so they start in one background thread when the session starts and run while the other tests
use this process; the test modules that wait for them run last. Their work is only subprocesses and files of
their own, so the order in which things finish changes no result."""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from types import SimpleNamespace
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config import load_config  # noqa: E402
from make_demo_dataset import make_demo_dataset  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_CONFIG = REPO / "configs" / "demo-65kpts.yaml"
TINY = {"d_model": 32, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "dropout": 0.1, "classifier_dropout": 0.2,
        "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "encoder_layers": 1, "decoder_layers": 1}


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A small demo dataset (4 signers x 10 signs x 3 reps = 120 clips), generated once per test session."""
    root = tmp_path_factory.mktemp("demo") / "demo-65kpts"
    make_demo_dataset(root, signers=4, signs=10, reps=3, seed=0)
    return root


@pytest.fixture(scope="session")
def demo_cfg():
    return load_config(DEMO_CONFIG)


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory):
    """The demo config shrunk to a 1+1-layer, d_model 32 model with light dropout (fast to build and train)."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text()) | TINY
    path = tmp_path_factory.mktemp("cfg") / "tiny-65kpts.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def tiny_cfg(tiny_config_path):
    return load_config(tiny_config_path)


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data (real MLR511 keypoints, videos, a reference pickle); skips when absent."""
    if not (SHARED_DATA / "mlr511-90kpts" / "label2id.json").exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... under pytest -n N (pytest-xdist); else None


def made_once(tmp_path_factory, name: str, make) -> dict:
    """make(folder) -> a JSON-able dict, run once per test run. Alone, in a folder of this session; under
    pytest-xdist, in a folder that every worker sees: the first worker that needs it makes it while the others
    wait on a file lock, then they read its result (nothing is made twice, whichever worker gets there first)."""
    if WORKER is None:
        return make(tmp_path_factory.mktemp(name))
    import fcntl
    root = tmp_path_factory.getbasetemp().parent / "made_once"  # the run's folder, above each worker's own
    root.mkdir(exist_ok=True)
    done = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its worker dies
        if not done.exists():
            folder = root / name
            if folder.exists():  # a worker that failed making it: start again
                shutil.rmtree(folder)
            folder.mkdir()
            done.write_text(json.dumps(make(folder)))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def trained_fold(demo_root, tiny_config_path, tmp_path_factory):
    """A tiny model trained for 8 epochs on one LOSO fold of the demo data (holdout user01), with its FP32 export.

    Fields: config_path, cfg, base_data_path, data_path (the LOSO fold), holdout, dataset, output_root,
    checkpoint_dir, h5, tflite, record (training metadata)."""
    def make(folder: Path) -> dict:
        import fix_loso
        from main_functional import TrainSettings, train
        from runs import loso_data_path, loso_experiment_name, run_paths
        data = folder / "demo-65kpts"
        shutil.copytree(demo_root, data)
        config = Path(shutil.copy(tiny_config_path, folder / tiny_config_path.name))
        fix_loso.main(["--base_root", str(data), "--holdouts", "user01"])
        out = folder / "outputs"
        exp = loso_experiment_name("demo", "user01")
        record = train(TrainSettings(experiment_name=exp, config_path=str(config),
                                     data_path=str(loso_data_path(data, "user01")), dataset_name="demo",
                                     run_type="loso", holdout_user="user01", epochs=8, lr=3e-3, batch_size=8,
                                     seed=42, output_root=str(out)))
        ckpt = run_paths("demo", "loso", str(out)).checkpoint_dir(exp)
        return {"config_path": str(config), "base_data_path": str(data),
                "data_path": str(loso_data_path(data, "user01")), "output_root": str(out),
                "checkpoint_dir": str(ckpt), "record": json.loads(json.dumps(record, default=str))}

    made = made_once(tmp_path_factory, "trained_fold", make)
    paths = {k: Path(v) for k, v in made.items() if k != "record"}
    ckpt = paths["checkpoint_dir"]
    return SimpleNamespace(**paths, cfg=load_config(paths["config_path"]), holdout="user01", dataset="demo",
                           h5=ckpt / "final_model.h5", tflite=ckpt / "final_model_fp32.tflite", record=made["record"])


@pytest.fixture(scope="session")
def ptq_exports(trained_fold, tmp_path_factory) -> Path:
    """Every PTQ mode of the trained fold (32 calibration clips, seed 42), exported once per session by ptq_export.py's
    CLI into its default folder: exports/ptq/user01 of the run tree holding the checkpoint. The checkpoint is a copy
    of the fold's output tree, so trained_fold.output_root stays as training left it. Returns that folder."""
    def make(root: Path) -> dict:
        import ptq_export
        shutil.copytree(trained_fold.output_root, root, dirs_exist_ok=True)
        checkpoint = root / trained_fold.h5.relative_to(trained_fold.output_root)
        ptq_export.main(["--config_path", str(trained_fold.config_path), "--checkpoint", str(checkpoint),
                         "--modes", "all", "--num_calibration_samples", "32"])
        return {"folder": str(root / "demo" / "loso" / "exports" / "ptq" / "user01")}

    return Path(made_once(tmp_path_factory, "ptq_outputs", make)["folder"])


@pytest.fixture(scope="session")
def cardless_models(ptq_exports, tmp_path_factory) -> dict:
    """{mode: path}: a copy of each shared PTQ export without its model card (its caller passes the config)."""
    from ptq_export import PTQ_FILES
    out = tmp_path_factory.mktemp("cardless")
    return {mode: Path(shutil.copy(ptq_exports / name, out / name)) for mode, name in PTQ_FILES.items()}


@pytest.fixture(scope="session")
def qat_fold(trained_fold, tmp_path_factory):
    """Two QAT epochs of the trained fold through train_loso_functional_qat.py's CLI, validating on training signer
    user02, with its qat_dynamic_int8 and qat_int8 exports: (output folder, qat_metadata.json)."""
    def make(out: Path) -> dict:
        import train_loso_functional_qat
        train_loso_functional_qat.main([
            "--config_path", str(trained_fold.config_path), "--data_path", str(trained_fold.data_path),
            "--checkpoint", str(trained_fold.h5), "--output_dir", str(out), "--qat_epochs", "2",
            "--batch_size", "8", "--val_users", "user02", "--num_calibration_samples", "64", "--seed", "1"])
        return {"folder": str(out)}

    out = Path(made_once(tmp_path_factory, "qat", make)["folder"])
    return out, json.loads((out / "qat_metadata.json").read_text())


# ----------------------------------------------------------------------------------------------- background work
BACKGROUND = {}    # fixture name -> its function, registered by @background_fixture when the modules are collected
CHILDREN = set()   # processes started by spawn(), stopped when the session ends
STOPPING = threading.Event()
SPAWNING = threading.Lock()


def fixture_values(func, request) -> dict:
    """{argument: the session fixture of that name} for a background fixture's function."""
    arguments = func.__code__.co_varnames[:func.__code__.co_argcount]
    return {arg: request.getfixturevalue(arg) for arg in arguments}


def background_fixture(func):
    """A session fixture whose function runs in the background thread from the start of the session (when a
    selected test uses it). Its arguments are session fixtures, set up at the start; its work must be subprocesses
    started with spawn() and files of its own. The fixture returns the function's result (or raises its error)."""
    BACKGROUND[func.__name__] = func

    @pytest.fixture(scope="session", name=func.__name__)
    def wait_for_it(request, _background_jobs):
        if WORKER is not None:  # under pytest-xdist the other workers are the parallel work: run it now
            return func(**fixture_values(func, request))
        return _background_jobs[func.__name__].result()

    wait_for_it.__doc__ = func.__doc__
    return wait_for_it


def spawn(cmd, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a session of its own (so that its whole process group can be stopped); the
    session's teardown stops it if it still runs."""
    with SPAWNING:
        if STOPPING.is_set():
            raise RuntimeError("the test session is ending")
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        CHILDREN.add(proc)
    return proc


def run_process(cmd, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, capture_output=True, text=True) through spawn()."""
    with spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise
    CHILDREN.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of a spawn()ed process, SIGKILL if it is still there after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    CHILDREN.discard(proc)


def pytest_collection_modifyitems(items):
    """Alone, the test modules that wait for background work run after the others; under pytest-xdist
    (whole files per worker, --dist loadfile) they and the other long files run first, so that the last files
    handed out are short ones. A stable sort: the order stays the same within each group."""
    def waits(item) -> bool:
        return any(name in BACKGROUND for name in getattr(item, "fixturenames", ()))
    modules = {item.path for item in items if waits(item)}
    if WORKER is None:
        items.sort(key=lambda item: item.path in modules)
    else:
        items.sort(key=lambda item: (item.path not in modules, item.path.name not in LONG_FILES))


# The files that take longest (a minute or more of their own on a 2-core machine), handed out first under xdist.
LONG_FILES = {"test_reliability_runs.py", "test_training.py", "test_bench.py", "test_qat.py", "test_runtimes.py",
              "test_collect_results.py", "test_app_contract.py", "test_enrollment.py"}


@pytest.fixture(scope="session", autouse=True)
def _background_jobs(request):
    """{fixture name: Future}: every background fixture that a selected test uses, run one after the other in one
    thread, in the order the tests need them."""
    order = []
    for item in request.session.items:
        order += [name for name in item.fixturenames if name in BACKGROUND and name not in order]
    if WORKER is not None:
        order = []  # each worker runs what its files need when they need it (wait_for_it)
    jobs = {name: Future() for name in order}
    calls = []
    for name in order:  # the fixtures they take are set up here, in the main thread
        func = BACKGROUND[name]
        calls.append((jobs[name], func, fixture_values(func, request)))

    def work():
        for future, func, kwargs in calls:
            if STOPPING.is_set() or not future.set_running_or_notify_cancel():
                future.cancel()
                continue
            try:
                future.set_result(func(**kwargs))
            except BaseException as error:  # noqa: BLE001 - handed to the test that waits for it
                future.set_exception(error)

    if calls:
        threading.Thread(target=work, name="background fixtures", daemon=True).start()
    yield jobs
    with SPAWNING:
        STOPPING.set()
    for future in jobs.values():
        future.cancel()
    for proc in list(CHILDREN):
        stop(proc)


# ----------------------------------------------------------------------------------------------- real data model
LIVE_SIGNERS = ("user01", "user08")  # the signers of ../shared/data/mlr511-videos
LIVE_EPOCHS = 10


@pytest.fixture(scope="session")
def live_model(shared_data, tmp_path_factory):
    """A tiny model (TINY, 65 points) trained on the REAL MLR511 keypoints of user01 and user08, the two signers of
    ../shared/data/mlr511-videos (200 clips; 10 epochs at lr 3e-3, batch 8, seed 42; no held-out split), with its
    FP32 export and model card (label names included). Budget: about 1 minute of the 2-core VM when quiet (the
    first epoch builds the graph). It recognises its training signers' videos, e.g. user01/G09/R01.mp4 ("Go"),
    which is what the live-server tests stream. Returns the .tflite path."""
    def make(folder: Path) -> dict:
        from main_functional import TrainSettings, train
        from runs import run_paths
        root = folder / "data"
        source = shared_data / "mlr511-90kpts"
        for clip in sorted((source / "all").glob("G*/*.pkl")):
            if clip.name.split("_")[0] in LIVE_SIGNERS:
                (root / "train" / clip.parent.name).mkdir(parents=True, exist_ok=True)
                (root / "train" / clip.parent.name / clip.name).symlink_to(clip)
        for name in ("label2id.json", "id2label.json", "label2name.json"):
            shutil.copy(source / name, root / name)
        raw = yaml.safe_load((REPO / "configs" / "arabic-asl-65kpts.yaml").read_text()) | TINY
        raw.pop("training", None)
        config = root.parent / "tiny-mlr511-65kpts.yaml"
        config.write_text(yaml.safe_dump(raw))
        out = root.parent / "outputs"
        train(TrainSettings(experiment_name="live", config_path=str(config), data_path=str(root), dataset_name="mlr511",
                            run_type="full", test_split=None, epochs=LIVE_EPOCHS, lr=3e-3, batch_size=8, seed=42,
                            output_root=str(out)))
        return {"tflite": str(run_paths("mlr511", "full", str(out)).fp32_tflite("live"))}

    return Path(made_once(tmp_path_factory, "mlr511-live", make)["tflite"])
