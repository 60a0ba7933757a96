"""Corrupt, truncated, foreign or hostile checkpoints, artifacts and run files: named, never restarted.

Every case goes through `poisonbench run`: the bad file is named in one line, it is left where it is
(no silent re-crafting or re-training from scratch), a pickle payload never runs, and temp files
left by a killed writer are removed by the next start.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from poisonbench.catalog import default_catalog
from poisonbench.results import read_records
from poisonbench.runner import CHECKPOINT_NAME, checkpoint_dir, plan_run
from poisonbench.suite import load_suite

from .helpers_reliability import PAYLOAD_KINDS, run_main, tiny_suite, write_payload

pytestmark = pytest.mark.usefixtures("one_thread")


def _group_id(suite: Path, poison: str = "clean") -> str:
    plan = plan_run(load_suite(suite, default_catalog()), catalog=default_catalog())
    return next(g.group_id for g in plan.groups if g.poison["name"] == poison)


def _foreign_checkpoint(path: Path) -> None:
    """A valid poisonbench checkpoint of another training (other model, data and seed)."""
    from poisonbench.training.trainer import train_victim

    from .helpers_training import MEAN, STD, tiny_config, tiny_model, tiny_splits

    train, test, _ = tiny_splits(n_train=32, n_test=16)
    train_victim(model=tiny_model(), train=train, test=test, val=None, config=tiny_config(epochs=1),
                 mean=MEAN, std=STD, seed=3, device="cpu", checkpoint_path=path)


def _bad_checkpoint(kind: str, path: Path, sentinel: Path) -> None:
    if kind in PAYLOAD_KINDS:
        write_payload(path, sentinel, kind=kind)
        return
    _foreign_checkpoint(path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "flipped_header":
        data = bytearray(path.read_bytes())
        data[12] ^= 0xFF  # inside the JSON header
        path.write_bytes(bytes(data))


CHECKPOINT_CASES = {"foreign": "different training run", "truncated": "corrupt or not a poisonbench",
                    "empty": "corrupt or not a poisonbench", "flipped_header": "corrupt or not a poisonbench",
                    "pickle": "corrupt or not a poisonbench", "torch_save": "corrupt or not a poisonbench"}


@pytest.mark.parametrize("kind", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_in_the_run_dir_is_named_and_never_restarted(kind, tmp_path, capsys):
    suite, out = tiny_suite(tmp_path), tmp_path / "run"
    checkpoint = checkpoint_dir(out, _group_id(suite)) / CHECKPOINT_NAME
    checkpoint.parent.mkdir(parents=True)
    _bad_checkpoint(kind, checkpoint, tmp_path / "SENTINEL")
    before = checkpoint.read_bytes()
    code, _, err = run_main(capsys, "run", suite, "--out", out, "-q")
    naming = [line for line in err.splitlines() if str(checkpoint) in line]
    assert code == 1, err
    assert len(naming) == 1 and CHECKPOINT_CASES[kind] in naming[0], err
    assert checkpoint.read_bytes() == before  # left for the user to inspect, not overwritten
    assert read_records(out) == [] and not (tmp_path / "SENTINEL").exists()


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory):
    """A cache holding the clean and R4 artifacts of the tiny suite (one 1-epoch run)."""
    base = tmp_path_factory.mktemp("filled")
    suite = tiny_suite(base, poisons="[clean, R4]", epochs=1)
    from poisonbench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--cache-dir", str(base / "cache"), "run", str(suite), "--out", str(base / "run"), "-q"])
    assert exit_.value.code in (0, None)
    return base / "cache"


def _entry_of(cache: Path, poison: str) -> Path:
    for meta in (cache / "poisons").glob("*.json"):
        if json.loads(meta.read_text())["material"]["poison"] == poison:
            return meta.with_suffix(".safetensors")
    raise AssertionError(f"no cache entry for {poison}")


ARTIFACT_CASES = {"truncated": "not a poisonbench artifact", "pickle": "not a poisonbench artifact",
                  "torch_save": "not a poisonbench artifact", "foreign": "another cache key"}


@pytest.mark.parametrize("kind", sorted(ARTIFACT_CASES))
def test_bad_cached_artifact_is_named_and_never_recrafted(kind, filled_cache, tmp_path, capsys):
    cache = shutil.copytree(filled_cache, tmp_path / "cache")
    entry = _entry_of(cache, "clean")
    if kind == "truncated":
        entry.write_bytes(entry.read_bytes()[:-100])
    elif kind == "foreign":
        shutil.copy(_entry_of(cache, "R4"), entry)  # a valid artifact, of another poison
    else:
        write_payload(entry, tmp_path / "SENTINEL", kind=kind)
    before = entry.read_bytes()
    suite, out = tiny_suite(tmp_path, poisons="[clean, R4]", epochs=1), tmp_path / "run"
    code, _, err = run_main(capsys, "--cache-dir", cache, "run", suite, "--out", out, "-q")
    naming = [line for line in err.splitlines() if str(entry) in line]
    assert code == 1, err
    assert len(naming) == 1 and ARTIFACT_CASES[kind] in naming[0], err
    assert entry.read_bytes() == before and not (tmp_path / "SENTINEL").exists()
    assert [r["poison"]["name"] for r in read_records(out)] == ["R4"]  # the other cell still ran


@pytest.mark.parametrize("name,content,message", [
    ("cells.jsonl", '{"cell_id": "a"}\nnot json at all\n', "cells.jsonl:2"),
    ("cells.jsonl", '["a list, not a record"]\n', "cells.jsonl:1"),
    ("manifest.json", '{"suite": {"suite": "tiny"', "manifest.json"),
    ("manifest.json", '{"suite": {"suite": "other"}}', "holds results of suite 'other'"),  # foreign
], ids=["garbage-line", "not-a-record", "truncated-manifest", "foreign-manifest"])
def test_corrupt_run_files_stop_the_run_with_one_line_and_exit_2(name, content, message, tmp_path, capsys):
    suite, out = tiny_suite(tmp_path), tmp_path / "run"
    out.mkdir()
    (out / name).write_text(content)
    code, _, err = run_main(capsys, "run", suite, "--out", out, "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert (out / name).read_text() == content and not (out / "checkpoints").exists()


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_start(tmp_path, capsys):
    suite, out, cache = tiny_suite(tmp_path, epochs=1), tmp_path / "run", tmp_path / "cache"
    other = out / "checkpoints" / "other-group"  # a group of another --only selection: kept
    other.mkdir(parents=True)
    (other / CHECKPOINT_NAME).write_bytes(b"kept as is")
    debris = [out / ".manifest.json.99999.tmp", other / f".{CHECKPOINT_NAME}.99999.tmp",
              cache / "poisons" / f".tmp-{'ab' * 32}-99999-deadbeef.safetensors"]
    for path in debris:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    code, _, err = run_main(capsys, "--cache-dir", cache, "run", suite, "--out", out, "-q")
    assert code == 0, err
    assert [p for p in debris if p.exists()] == []
    assert (other / CHECKPOINT_NAME).read_bytes() == b"kept as is" and len(read_records(out)) == 1
