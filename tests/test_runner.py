"""`poisonbench run`: planning, shared trainings, the run directory contract, resume, lock, signals."""

from __future__ import annotations

import json
import os
import signal
import textwrap

import pytest
import torch
from filelock import FileLock

from poisonbench.api import Defense, Victim
from poisonbench.cli import main
from poisonbench.errors import ArtifactError, BadInput
from poisonbench.executors import get_executor
from poisonbench.hookspecs import hookimpl
from poisonbench.results import LOCK_FILE, append_record, cell_metrics, read_records
from poisonbench.runner import plan_run, select_cells
from poisonbench.suite import load_suite

from .plugin_fixtures import catalog_of, registering, serve_to_cli

CONTRACT_KEYS = {"cell_id", "dataset", "victim", "poison", "defense", "seed", "poison_sha256",
                 "metrics", "history", "wall_s"}
METRIC_KEYS = {"peak_test_acc", "peak_epoch", "final_test_acc", "selected_test_acc", "selected_epoch",
               "epochs_to_loss_threshold", "val_selected_test_acc", "val_selected_epoch",
               "early_loss", "early_loss_epochs"}  # every training: peak, val-selected, final; learning speed


def write_suite(tmp_path, *, poisons=("clean", "R4"), victim="{name: small_cnn, params: {width: 4}}",
                defenses="[early_stopping, {name: early_stopping, params: {select: val}}, none]",
                epochs=2):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""\
        suite: tiny
        dataset:
          name: synthetic
          params: {{n_train: 80, n_test: 40, num_classes: 4, image_size: 8, channels: 3}}
          val_split: 16
        victims: [{victim}]
        poisons: [{", ".join(poisons)}]
        defenses: {defenses}
        seeds: [0]
        train: {{epochs: {epochs}, batch_size: 32, lr: 0.05, milestones: [1], eval_batch_size: 64}}
        """))
    return path


def run_main(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


class SwapChannels(Defense):
    """Test defense that transforms the training data (so it cannot share a training)."""

    name = "swap_channels"

    @property
    def transforms_data(self):
        return True

    def transform_train(self, train, *, seed):
        return type(train)(train.images.flip(-1).contiguous(), train.labels)


class SigintNet(Victim):
    """Test victim whose 3rd training forward sends SIGINT to this process (once per test)."""

    name = "sigint_net"
    calls = {"n": 0}

    def build(self, *, num_classes, in_channels, image_size):
        calls = self.calls

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(in_channels * image_size * image_size, num_classes)

            def forward(self, x):
                if self.training:
                    calls["n"] += 1
                    if calls["n"] == 3:
                        os.kill(os.getpid(), signal.SIGINT)
                return self.linear(x.flatten(1))

        return Net()


class Broken(Victim):
    """Test victim that cannot be built."""

    name = "broken_net"

    def build(self, *, num_classes, in_channels, image_size):
        raise RuntimeError("this victim is broken on purpose")


class Recorder:
    seen: list = []

    @hookimpl
    def poisonbench_cell_finished(self, record):
        Recorder.seen.append(record)
        record["metrics"]["peak_test_acc"] = -1.0  # an observer cannot change results


class Crasher:
    @hookimpl
    def poisonbench_cell_finished(self, record):
        raise ValueError("observer bug")


@pytest.fixture
def catalog_with_tests(monkeypatch):
    """The installed plugins + test plugins, used by the CLI too (Settings.catalog patched)."""
    catalog = catalog_of(("test-extras", registering(defenses=[SwapChannels], victims=[SigintNet, Broken])),
                         ("crashing-observer", Crasher()), ("recording-observer", Recorder()), installed=True)
    serve_to_cli(monkeypatch, catalog)
    Recorder.seen = []
    SigintNet.calls["n"] = 0
    return catalog


def test_plan_shares_training_unless_a_defense_transforms_data(tmp_path, catalog_with_tests):
    defenses = "[early_stopping, {name: early_stopping, params: {select: val}}, none, swap_channels]"
    suite = load_suite(write_suite(tmp_path, defenses=defenses), catalog_with_tests)
    plan = plan_run(suite, catalog=catalog_with_tests)
    assert len(plan.cells) == 8 and len(plan.crafts) == 2
    sizes = sorted(len(g.cells) for g in plan.groups)
    assert sizes == [1, 1, 3, 3]
    swapped = [g for g in plan.groups if g.transform_defense]
    assert {g.transform_defense["name"] for g in swapped} == {"swap_channels"}
    assert len({g.group_id for g in plan.groups}) == 4
    json.dumps(plan.to_json())  # serialisable for remote executors
    only = plan_run(suite, catalog=catalog_with_tests, only=["R*"])
    assert {c.poison.name for c in only.cells} == {"R4"} and len(only.crafts) == 1


def test_only_without_match_is_bad_input(tmp_path, catalog_with_tests):
    suite = load_suite(write_suite(tmp_path), catalog_with_tests)
    with pytest.raises(BadInput, match="matched no cell"):
        select_cells(suite.cells(), ["nothing*"])
    with pytest.raises(BadInput, match="unknown executor"):
        get_executor("slurm")


def test_run_writes_contract_records_then_rerun_trains_nothing(tmp_path, capsys, catalog_with_tests,
                                                               monkeypatch):
    out = tmp_path / "run"
    code, stdout, err = run_main(capsys, "run", str(write_suite(tmp_path)), "--out", str(out), "--json")
    assert code == 0, err
    records = read_records(out)
    assert len(records) == 6 and [json.loads(line)["cell_id"] for line in stdout.splitlines()] == \
        [r["cell_id"] for r in records]
    for record in records:
        assert CONTRACT_KEYS <= set(record) and set(record["metrics"]) == METRIC_KEYS
        assert record["poison"]["kind"] in ("baseline", "random") and record["diverged"] is False
        history, metrics = record["history"], record["metrics"]
        assert len(history["train_loss"]) == len(history["test_acc"]) == len(history["val_acc"]) == 2
        assert all(0 <= a <= 1 for a in history["test_acc"]) and 1 <= metrics["peak_epoch"] <= 2
        assert metrics["peak_test_acc"] == max(history["test_acc"])
    by_defense = {json.dumps(r["defense"], sort_keys=True): r for r in records if r["poison"]["name"] == "R4"}
    assert len({r["train_group"] for r in by_defense.values()}) == 1  # one shared training
    assert by_defense['{"name": "none", "params": {}}']["metrics"]["selected_epoch"] == 2
    assert not (out / "checkpoints").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["suite"]["suite"] == "tiny" and manifest["finished"] and manifest["versions"]["torch"]
    # observers: each got its own copy, a crashing one is named and does not stop the run
    assert len(Recorder.seen) == 6 and records[0]["metrics"]["peak_test_acc"] >= 0
    assert "observer 'crashing-observer' failed" in err

    def no_training(**kwargs):
        raise AssertionError("re-run trained again")

    monkeypatch.setattr("poisonbench.executors.local.run_training_group", no_training)
    code, _, err = run_main(capsys, "run", str(write_suite(tmp_path)), "--out", str(out))
    assert code == 0 and "0 run, 6 already done" in err
    assert len(read_records(out)) == 6
    code, _, err = run_main(capsys, "run", str(write_suite(tmp_path)), "--out", str(out), "--no-resume")
    assert code == 2 and "already holds a run" in err


def test_dry_run_runs_nothing(tmp_path, capsys, catalog_with_tests):
    out = tmp_path / "run"
    code, stdout, _ = run_main(capsys, "run", str(write_suite(tmp_path)), "--out", str(out), "--dry-run")
    assert code == 0 and "2 trainings" in stdout and "64 images" in stdout and "nothing was run" in stdout
    assert not out.exists()
    code, stdout, _ = run_main(capsys, "run", str(write_suite(tmp_path)), "--dry-run", "--json")
    plan = json.loads(stdout)
    assert code == 0 and len(plan["cells"]) == 6 and plan["image_passes"] == 2 * 2 * 64


def test_second_run_on_a_locked_directory_is_refused(tmp_path, capsys, catalog_with_tests):
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / LOCK_FILE)):
        code, _, err = run_main(capsys, "run", str(write_suite(tmp_path)), "--out", str(out), "-q")
    assert code == 2 and LOCK_FILE in err and not (out / "cells.jsonl").exists()


def test_sigint_checkpoints_exits_3_and_rerun_resumes(tmp_path, capsys, catalog_with_tests):
    suite = write_suite(tmp_path, poisons=("clean",), victim="sigint_net", defenses="[none]", epochs=3)
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "run", str(suite), "--out", str(out), "-q")
    assert code == 3 and "interrupted; re-run the same command to resume" in err
    assert read_records(out) == [] and list((out / "checkpoints").glob("*/train.safetensors"))
    code, _, err = run_main(capsys, "run", str(suite), "--out", str(out), "-q")
    assert code == 0, err
    (record,) = read_records(out)
    assert record["epochs"] == 3 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_failing_group_is_reported_and_others_still_run(tmp_path, capsys, catalog_with_tests):
    suite = tmp_path / "two.yaml"
    suite.write_text(write_suite(tmp_path, defenses="[none]").read_text().replace(
        "victims: [{name: small_cnn, params: {width: 4}}]",
        "victims: [broken_net, {name: small_cnn, params: {width: 4}}]"))
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "run", str(suite), "--out", str(out), "-q")
    assert code == 1 and "failed" in err
    assert {r["victim"]["name"] for r in read_records(out)} == {"small_cnn"}
    assert "broken on purpose" in next((out / "failures").iterdir()).read_text()


def test_records_file_survives_torn_lines(tmp_path):
    append_record(tmp_path, {"cell_id": "a", "x": 1})
    with open(tmp_path / "cells.jsonl", "a") as handle:
        handle.write('{"cell_id": "b", "x"')  # a writer killed mid-line
    assert [r["cell_id"] for r in read_records(tmp_path)] == ["a"]
    append_record(tmp_path, {"cell_id": "c", "x": 3})
    assert [r["cell_id"] for r in read_records(tmp_path)] == ["a", "c"]
    with open(tmp_path / "cells.jsonl", "a") as handle:
        handle.write("garbage\n")
    with pytest.raises(ArtifactError, match="cells.jsonl:4"):
        read_records(tmp_path)


def test_cell_metrics_follow_the_contract():
    history = {"train_loss": [2.0, 0.7, 0.4, 0.45], "test_acc": [0.2, 0.6, 0.6, 0.5]}
    metrics = cell_metrics(history, selected_epoch=4, loss_threshold=0.5)
    contract = {"peak_test_acc": 0.6, "peak_epoch": 2, "final_test_acc": 0.5, "selected_test_acc": 0.5,
                "selected_epoch": 4, "epochs_to_loss_threshold": 3, "val_selected_test_acc": None,
                "val_selected_epoch": None}
    assert {k: metrics[k] for k in contract} == contract
    with_val = cell_metrics({**history, "val_acc": [0.1, 0.3, 0.9, 0.9]}, selected_epoch=4, loss_threshold=0.5)
    assert (with_val["val_selected_epoch"], with_val["val_selected_test_acc"]) == (3, 0.6)  # earliest best val
    assert cell_metrics(history, selected_epoch=1, loss_threshold=0.1)["epochs_to_loss_threshold"] is None


def test_progress_plain_live_and_quiet():
    import io

    from poisonbench.util.progress import RunProgress

    plain = io.StringIO()
    with RunProgress(stream=plain, live=False) as progress:
        advance = progress.factory("[1/1] ")("train", 4)
        advance(2)
        advance(0, epoch="1/2", loss=0.51234, acc=0.5)
        advance(2)
        progress.log("done x")
    lines = plain.getvalue().splitlines()
    assert lines[0] == "[1/1] train [2/4] epoch 1/2  loss 0.5123  acc 0.5" and lines[-1] == "done x"
    quiet = io.StringIO()
    with RunProgress(stream=quiet, quiet=True) as progress:
        progress.bar("cells", 3)(3, epoch="1/1")
        progress.log("hidden")
    assert quiet.getvalue() == ""
    live = io.StringIO()
    with RunProgress(stream=live, live=True) as progress:
        progress.bar("cells", 2, keep=True)(1)
        advance = progress.bar("train", 2)
        advance(2, epoch="1/1", loss=0.1)
        advance(0, epoch="1/1", loss=0.1, acc=0.9)  # the trainer's end-of-epoch stats after the last batch
        progress.log("a line")
    assert "a line" in live.getvalue()
