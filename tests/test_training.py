"""FP32 training: the LOSO CLI writes the whole output tree, runs are deterministic given the seed, the held-out
signer is checked before training and never trained on, validation comes from training signers, --resume ends
like an uninterrupted run, and a failed run never replaces the record of a successful one."""
import csv
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import dataset
import fix_loso
import main_functional
import train_full_dataset
import train_loso_functional
from main_functional import TrainSettings, carve_validation, train
from runs import loso_data_path, run_paths
from util import UserError
from tf_env import keras

HOLDOUT = "user01"
EXP = f"demo_LOSO_{HOLDOUT}"


@pytest.fixture(scope="module")
def loso_base(demo_root):
    fix_loso.main(["--base_root", str(demo_root), "--holdouts", HOLDOUT])
    return demo_root


@pytest.fixture(scope="module")
def cli_run(loso_base, tiny_config_path, tmp_path_factory):
    """A 2-epoch LOSO run through train_loso_functional's CLI, recording every pickle read and when fit() ended."""
    events = []
    real_load_sample, real_fit = dataset.load_sample, main_functional.fit

    def spy_load_sample(path):
        events.append(("read", str(path)))
        return real_load_sample(path)

    def spy_fit(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        events.append(("fit done", ""))
        return result

    out = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dataset, "load_sample", spy_load_sample)
        mp.setattr(main_functional, "fit", spy_fit)
        code = train_loso_functional.main([
            "--config_path", str(tiny_config_path), "--base_data_path", str(loso_base), "--holdout_only", HOLDOUT,
            "--epochs", "2", "--batch_size", "8", "--no_validation", "--dataset_name", "demo",
            "--output_root", str(out)])
    assert code == 0
    paths = run_paths("demo", "loso", str(out))
    return paths, events, json.loads((paths.metadata_dir() / f"{EXP}_latest.json").read_text())


def history(paths, exp=EXP):
    with open(paths.training_csv(exp)) as f:
        return list(csv.DictReader(f))


def test_two_epoch_run_writes_the_full_output_tree(cli_run):
    paths, _, record = cli_run
    ckpt = paths.checkpoint_dir(EXP)
    for name in ("final_model.h5", "final_model_fp32.tflite", "final_model_fp32.json", "labels.txt", "metadata.json",
                 "resume/state.json"):
        assert (ckpt / name).is_file(), name
    assert paths.run_log(EXP).is_file() and "epoch 2/2" in paths.run_log(EXP).read_text()
    assert [row["epoch"] for row in history(paths)] == ["0", "1"]
    assert any(paths.tensorboard_dir(EXP).rglob("events.out.tfevents.*"))
    assert paths.curves_png(EXP).stat().st_size > 10_000
    assert len(list(paths.metadata_dir().glob(f"{EXP}_2*.json"))) == 1


def test_metadata_records_the_run(cli_run, tiny_cfg):
    paths, _, record = cli_run
    from model_functional import build_model
    assert record["success"] and record["seed"] == 42
    assert (record["training"]["epochs"], record["training"]["batch_size"]) == (2, 8)
    for key in ("epochs", "lr", "batch_size", "learning_rate"):  # each setting recorded once: in training
        assert key not in record and key not in record["settings"], key
    assert record["settings"]["scheduler_factor"] == 0.1 and "seed" not in record["settings"]
    assert record["model_parameters"] == build_model(tiny_cfg).count_params()
    assert record["holdout_user"] == HOLDOUT and HOLDOUT not in record["train_users"]
    assert record["test_users"] == [HOLDOUT] and record["test"]["samples"] == 30
    assert 0 <= record["test"]["accuracy"] <= record["test"]["top5_accuracy"] <= 1
    assert record["tflite_parity"]["passed"] and record["seconds_per_epoch"] > 0
    assert record["git_commit"] and record["duration_seconds"] > 0
    assert record["tf_threads"]["cpu_count"] == os.cpu_count()  # thread pools are part of the recipe


def test_held_out_signer_is_read_once_before_training_and_never_trained_on(cli_run):
    _, events, record = cli_run
    end = events.index(("fit done", ""))
    held_out = [i for i, (kind, path) in enumerate(events) if f"{HOLDOUT}_" in path.rsplit("/", 1)[-1]]
    assert held_out and max(held_out) < end, "the test split is checked before the first epoch"
    assert len(held_out) == 30, "the test split is read once"
    assert HOLDOUT not in record["train_users"] and record["train_samples"] == 90


def test_eval_task_reproduces_the_test_metrics(cli_run, loso_base, tiny_config_path, capsys):
    paths, _, record = cli_run
    main_functional.main(["--task", "eval", "--experiment_name", EXP, "--config_path", str(tiny_config_path),
                          "--data_path", str(loso_data_path(loso_base, HOLDOUT)), "--dataset_name", "demo",
                          "--output_root", str(paths.root)])
    assert f"top-1 {record['test']['accuracy']:.4f}, top-5 {record['test']['top5_accuracy']:.4f}" in capsys.readouterr().out


def test_same_seed_gives_the_same_metrics(cli_run, loso_base, tiny_config_path, tmp_path):
    paths, _, record = cli_run
    again = train(TrainSettings(experiment_name=EXP, config_path=str(tiny_config_path),
                                data_path=str(loso_data_path(loso_base, HOLDOUT)), dataset_name="demo",
                                run_type="loso", holdout_user=HOLDOUT, epochs=2, batch_size=8, seed=42,
                                output_root=str(tmp_path)))
    assert history(run_paths("demo", "loso", str(tmp_path))) == history(paths)
    assert again["test"] == record["test"]


def test_resume_continues_from_the_last_epoch(cli_run, loso_base, tiny_config_path, tmp_path):
    """A finished run (a copy of the CLI's 2-epoch run) continued to 3 epochs trains the third epoch only."""
    cli_paths, _, first = cli_run
    shutil.copytree(cli_paths.root, tmp_path, dirs_exist_ok=True)
    resumed = train(TrainSettings(experiment_name=EXP, config_path=str(tiny_config_path),
                                  data_path=str(loso_data_path(loso_base, HOLDOUT)), dataset_name="demo",
                                  run_type="loso", holdout_user=HOLDOUT, epochs=3, batch_size=8, resume=True,
                                  output_root=str(tmp_path)))
    paths = run_paths("demo", "loso", str(tmp_path))
    assert first["epochs_this_session"] == 2 and resumed["initial_epoch"] == 2
    assert resumed["epochs_this_session"] == 1
    assert [row["epoch"] for row in history(paths)] == ["0", "1", "2"]


def test_resume_without_a_checkpoint_names_the_path(loso_base, tiny_config_path, tmp_path):
    settings = TrainSettings(experiment_name=EXP, config_path=str(tiny_config_path),
                             data_path=str(loso_data_path(loso_base, HOLDOUT)), dataset_name="demo", run_type="loso",
                             holdout_user=HOLDOUT, epochs=1, resume=True, output_root=str(tmp_path))
    with pytest.raises(UserError, match="no checkpoint to resume from in .*resume"):
        train(settings)


def test_training_split_containing_the_held_out_signer_is_rejected(loso_base, tiny_config_path, tmp_path):
    settings = TrainSettings(experiment_name="demo_LOSO_user02", config_path=str(tiny_config_path),
                             data_path=str(loso_data_path(loso_base, HOLDOUT)), dataset_name="demo", run_type="loso",
                             holdout_user="user02", epochs=1, output_root=str(tmp_path))
    with pytest.raises(UserError, match="contains files of the held-out signer user02"):
        train(settings)


def fake_split(users_per_clip, labels):
    return dataset.SplitData(root=None, split="train", clips=[np.zeros((3, 2, 2))] * len(labels), labels=labels,
                             users=users_per_clip, paths=[f"{u}_{i}.pkl" for i, u in enumerate(users_per_clip)])


def test_validation_is_carved_from_training_signers():
    data = fake_split(["user02"] * 4 + ["user03"] * 4 + ["user04"] * 4, [0, 1, 2, 3] * 3)
    settings = TrainSettings(experiment_name="x", config_path="", data_path="", dataset_name="d", run_type="loso",
                             val_users=("user03",))
    fit, val = carve_validation(data, settings)
    assert set(val.users) == {"user03"} and "user03" not in fit.users and len(fit) + len(val) == 12
    settings.val_users, settings.val_fraction = (), 0.25
    fit, val = carve_validation(data, settings)
    assert sorted(val.labels) == [0, 1, 2, 3] and len(fit) == 8 and not set(val.paths) & set(fit.paths)
    settings.val_users = ("user09",)
    with pytest.raises(UserError, match="not among the training signers"):
        carve_validation(data, settings)


def test_full_dataset_training_uses_all_and_evaluates_nothing(demo_root, tiny_config_path, tmp_path):
    train_full_dataset.main(["--config_path", str(tiny_config_path), "--base_data_path", str(demo_root),
                             "--epochs", "1", "--batch_size", "16", "--dataset_name", "demo",
                             "--output_root", str(tmp_path)])
    paths = run_paths("demo", "full", str(tmp_path))
    record = json.loads((paths.metadata_dir() / "demo_full_latest.json").read_text())
    assert record["success"] and record["train_samples"] == 120 and "test" not in record
    assert record["train_users"] == ["user01", "user02", "user03", "user04"]
    assert (paths.checkpoint_dir("demo_full") / "final_model_fp32.tflite").is_file()


def settings_for(loso_base, tiny_config_path, out, **changes) -> TrainSettings:
    return TrainSettings(**{"experiment_name": EXP, "config_path": str(tiny_config_path),
                            "data_path": str(loso_data_path(loso_base, HOLDOUT)), "dataset_name": "demo",
                            "run_type": "loso", "holdout_user": HOLDOUT, "epochs": 3, "batch_size": 16,
                            "output_root": str(out)} | changes)


def h5_weights(path) -> list:
    arrays = []
    with h5py.File(path, "r") as f:
        f["model_weights"].visititems(lambda name, obj: arrays.append((name, obj[()]))
                                      if isinstance(obj, h5py.Dataset) else None)
    return arrays


class Interrupt(Exception):
    """Stands in for SIGKILL: the run stops in the middle of an epoch, after the checkpoint of the previous one."""


RECIPE_SETS = ("training.schedule=cosine", "training.warmup_epochs=1", "training.label_smoothing=0.1",
               "training.augmentation.mask=nonzero", "training.augmentation.hand_drop=0.5")


@pytest.mark.parametrize("overrides", [(), RECIPE_SETS], ids=["recipe", "cosine-smoothing-nonzero-mask"])
def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(cli_run, loso_base, tiny_config_path, tmp_path,
                                                                      monkeypatch, overrides):
    """Killed in the middle of epoch 2, resumed: the same weights, metrics and last history row as the run that was
    never interrupted (for the recipe: the CLI's 2-epoch run, with the same settings)."""
    if overrides:
        whole_paths = run_paths("demo", "loso", str(tmp_path / "whole"))
        whole = train(settings_for(loso_base, tiny_config_path, whole_paths.root, overrides=overrides))
    else:
        whole_paths, _, whole = cli_run
    settings = {"epochs": whole["training"]["epochs"], "batch_size": whole["training"]["batch_size"]}
    real_make_callbacks = main_functional.make_callbacks

    class StopInEpoch2(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if self.epoch == 1 and batch == 2:
                raise Interrupt

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    def make_callbacks_then_stop(*args, **kwargs):
        callbacks, resume, epoch_logger = real_make_callbacks(*args, **kwargs)
        return [*callbacks, StopInEpoch2()], resume, epoch_logger

    out = tmp_path / "resumed"
    with monkeypatch.context() as mp:
        mp.setattr(main_functional, "make_callbacks", make_callbacks_then_stop)
        with pytest.raises(Interrupt):
            train(settings_for(loso_base, tiny_config_path, out, overrides=overrides, **settings))
    resumed = train(settings_for(loso_base, tiny_config_path, out, resume=True, overrides=overrides, **settings))
    assert resumed["initial_epoch"] == 1 and resumed["epochs_this_session"] == settings["epochs"] - 1
    names = lambda ws: [n for n, _ in ws]  # noqa: E731
    whole_w, resumed_w = h5_weights(whole["final_model"]), h5_weights(resumed["final_model"])
    assert names(whole_w) == names(resumed_w)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(whole_w, resumed_w))
    assert resumed["test"] == whole["test"] and resumed["train"] == whole["train"]
    assert history(run_paths("demo", "loso", str(out)))[-1] == history(whole_paths)[-1]


def test_failed_resume_keeps_the_record_of_the_successful_run(cli_run, loso_base, tiny_config_path, tmp_path):
    """A --resume of a successful run (a copy of the CLI's run) with another config fails and changes no record."""
    cli_paths, _, done = cli_run
    shutil.copytree(cli_paths.root, tmp_path, dirs_exist_ok=True)
    paths = run_paths("demo", "loso", str(tmp_path))
    latest = paths.metadata_dir() / f"{EXP}_latest.json"
    summary = paths.checkpoint_dir(EXP) / "metadata.json"
    before = latest.read_text(), summary.read_text()
    other = tmp_path / "other.yaml"
    other.write_text(Path(tiny_config_path).read_text().replace("d_model: 32", "d_model: 16"))
    with pytest.raises(UserError, match="--resume: .* another config or seed"):
        train(settings_for(loso_base, other, tmp_path, epochs=3, batch_size=8, resume=True))
    assert (latest.read_text(), summary.read_text()) == before and done["success"]
    records = sorted(paths.metadata_dir().glob(f"{EXP}_2*.json"))  # the success, then the failure
    assert [json.loads(r.read_text())["success"] for r in records] == [True, False]


def test_bad_test_file_stops_the_run_before_the_first_epoch(loso_base, tiny_config_path, tmp_path, monkeypatch):
    data = tmp_path / "fold"
    shutil.copytree(loso_data_path(loso_base, HOLDOUT), data, symlinks=False)
    (data / "test" / "G01" / f"{HOLDOUT}_G01_R01.pkl").write_bytes(b"\x80\x04truncated")
    monkeypatch.setattr(main_functional, "fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(UserError, match=f"{HOLDOUT}_G01_R01.pkl: cannot read pickle"):
        train(settings_for(loso_base, tiny_config_path, tmp_path, data_path=str(data)))
