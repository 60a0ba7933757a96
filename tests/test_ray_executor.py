"""`poisonbench run --executor ray`: the same cells as the local executor, a worker killed mid-cell,
resume after the driver stopped, and the install hint without Ray.

One local Ray instance (2 CPUs, no dashboard) serves the whole module: Ray's start-up is the slow
part on a small CI machine. Records are compared with the local executor's run of the same suite
in this process at one torch thread (a Ray task gets one thread per requested CPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from poisonbench.cli import main
from poisonbench.crafting.artifacts import read_artifact
from poisonbench.results import CELLS_FILE, append_record, read_records

SMOKE = Path(__file__).resolve().parent.parent / "suites" / "smoke.yaml"
VOLATILE = ("wall_s", "finished")  # timing and timestamp differ between runs by nature


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def stable(records: list[dict], *, drop: tuple[str, ...] = ()) -> dict[str, dict]:
    """Records by cell_id without the fields that legitimately change from run to run."""
    return {r["cell_id"]: {k: v for k, v in r.items() if k not in VOLATILE + drop} for r in records}


def cached_artifacts(cache_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Cached artifacts by file name (= cache key): (images, labels)."""
    paths = sorted((cache_dir / "poisons").glob("*.safetensors"))
    return {p.name: (a.images, a.labels) for p in paths for a in [read_artifact(p)]}


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[list[dict], Path]:
    """The smoke suite run by the local executor (one torch thread, like a 1-CPU Ray task):
    its records and its artifact cache (a later run using that cache gets the same sha256s)."""
    root = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["--cache-dir", str(root / "cache"), "run", str(SMOKE), "--out", str(root / "run"),
                  "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert exc.value.code == 0
    records = read_records(root / "run")
    assert len(records) == 4
    return records, root / "cache"


@pytest.mark.ray
def test_ray_gives_the_local_executors_cells(ray_instance, local_run, tmp_path, capsys):
    local_records, local_cache = local_run
    out = tmp_path / "ray"
    code, _, err = run_cli(capsys, "--cache-dir", tmp_path / "cache", "run", SMOKE, "--out", out,
                           "--executor", "ray", "--quiet")
    assert code == 0, err
    records = read_records(out)
    # crafted anew in a Ray task: the same pixels, but the file's sha256 covers its creation time
    sha = ("poison_sha256",)
    assert stable(records, drop=sha) == stable(local_records, drop=sha)
    crafted, reference = cached_artifacts(tmp_path / "cache"), cached_artifacts(local_cache)
    assert crafted.keys() == reference.keys() and len(crafted) == 2
    for key, (images, labels) in crafted.items():
        assert torch.equal(images, reference[key][0]) and torch.equal(labels, reference[key][1])
    assert all(r["metrics"]["peak_test_acc"] is not None for r in records)
    assert json.loads((out / "manifest.json").read_text())["executor"] == "ray"
    assert not (out / "checkpoints").exists()  # dropped once every cell of a group is recorded

    # re-running the finished command runs nothing and leaves cells.jsonl as it was
    before = (out / CELLS_FILE).read_bytes()
    code, _, err = run_cli(capsys, "--cache-dir", tmp_path / "cache", "run", SMOKE, "--out", out,
                           "--executor", "ray")
    assert code == 0 and "0 run, 4 already done" in err
    assert (out / CELLS_FILE).read_bytes() == before


@pytest.mark.ray
def test_object_store_mode_resumes_a_partial_run(ray_instance, local_run, tmp_path, capsys,
                                                 monkeypatch):
    """Paths declared unshared: artifacts travel through the object store; a driver stopped
    after one training group leaves its cells recorded, and the re-run trains only the rest."""
    monkeypatch.setenv("POISONBENCH_RAY_SHARED_FS", "0")
    local_records, local_cache = local_run
    out = tmp_path / "ray"
    first = local_records[0]["train_group"]
    for record in local_records:  # what a driver interrupted after its first group left behind
        if record["train_group"] == first:
            append_record(out, record)
    code, _, err = run_cli(capsys, "--cache-dir", local_cache, "run", SMOKE, "--out", out,
                           "--executor", "ray")
    assert code == 0, err
    # smoke trains once per cell (none and mixup differ), so the first group holds one cell
    assert "artifacts via object store" in err and "3 run, 1 already done" in err
    assert stable(read_records(out)) == stable(local_records)


@pytest.mark.ray
def test_worker_killed_mid_cell_is_retried_from_its_checkpoint(ray_instance, local_run, tmp_path,
                                                               capsys, monkeypatch):
    """The first training task to report epoch 1 (reported right after its checkpoint) has its
    worker process SIGKILLed, once per run directory; Ray retries the task and it resumes."""
    from poisonbench.executors import ray_worker

    out = tmp_path / "ray"
    marker = out / ".worker-killed"

    def killed_after_epoch_1(**kwargs):
        import os
        import signal

        from poisonbench.executors import ray_worker as worker

        real = worker._progress

        def progress(relay, key, prefix):
            factory = real(relay, key, prefix)

            def bar(description, total):
                advance = factory(description, total)

                def step(n=1, **fields):
                    advance(n, **fields)
                    if str(fields.get("epoch", "")).split("/")[0] == "1":
                        try:
                            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                        except FileExistsError:
                            return
                        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-training

                return step

            bar.flush = factory.flush
            return bar

        worker._progress = progress
        try:
            return worker.train_on_worker(**kwargs)
        finally:
            worker._progress = real

    monkeypatch.setattr(ray_worker, "train_task", ray_instance.remote(killed_after_epoch_1))
    local_records, local_cache = local_run
    code, _, err = run_cli(capsys, "--cache-dir", local_cache, "run", SMOKE, "--out", out,
                           "--executor", "ray")
    assert code == 0, err
    assert marker.exists()  # the worker really died once
    assert "resumed from its epoch-1 checkpoint" in err
    assert "epoch 2/2" in err  # per-training progress relayed from the workers
    records = read_records(out)
    assert sorted(r["cell_id"] for r in records) == sorted(r["cell_id"] for r in local_records)
    assert stable(records) == stable(local_records)  # the resumed training is bit-identical


def test_without_ray_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "poisonbench.executors.ray_executor", raising=False)
    code, _, err = run_cli(capsys, "run", SMOKE, "--out", tmp_path / "run", "--executor", "ray")
    assert code == 2
    assert "pip install 'poisonbench[ray]'" in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_ray_options_need_the_ray_executor(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", SMOKE, "--out", tmp_path / "run", "--address", "auto")
    assert code == 2 and "--executor ray" in err
    assert not (tmp_path / "run").exists()
