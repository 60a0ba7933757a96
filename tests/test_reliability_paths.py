"""Paths named in suites and leaderboard entries cannot escape their roots (``..``, absolute, symlinks).

A suite may read files only under its own folder (then ``--data-dir`` / ``--allow-path``), whatever
the working folder is: every case runs from the folder *above* the suite, where the outside file
is within reach of a cwd-based policy. ``..`` from the suite's own folder is covered in
test_validate.py (include), test_file_poison.py (file poison) and test_image_folder.py (root).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from poisonbench.leaderboard.store import read_entry, write_entry

from .helpers_byo import TINY_TRAIN, make_tree
from .helpers_reliability import run_main
from .helpers_report import write_run

ESCAPE = "escapes the allowed folders"
SYNTH = "dataset: {name: synthetic, params: {n_train: 8, n_test: 4, num_classes: 2, image_size: 8}}\n"


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """``tmp/proj/`` (the suite's folder) and ``tmp/outside/`` (a valid poison file, a base suite and
    an image tree); the working folder is ``tmp/``, above both."""
    proj, outside = tmp_path / "proj", tmp_path / "outside"
    proj.mkdir()
    outside.mkdir()
    np.save(outside / "ref.npy", np.zeros((8, 8, 8, 3), dtype=np.uint8))
    (outside / "base.yaml").write_text("victims: [small_cnn]\n")
    make_tree(outside / "photos", n_train=2, n_test=1)
    os.symlink(outside / "ref.npy", proj / "link.npy")  # a file link pointing out
    os.symlink(outside, proj / "shared")  # a folder link pointing out
    monkeypatch.chdir(tmp_path)
    return proj, outside


def _ways_out(outside: Path, name: str) -> dict[str, str]:
    return {"dotdot": f"../outside/{name}", "absolute": str(outside / name), "dir-symlink": f"shared/{name}"}


@pytest.mark.parametrize("way", ["absolute", "dir-symlink"])
def test_include_cannot_escape_the_suite_folder(way, layout, capsys):
    proj, outside = layout
    suite = proj / "suite.yaml"
    suite.write_text(f"include: {_ways_out(outside, 'base.yaml')[way]}\nsuite: s\n{SYNTH}poisons: [clean]\n")
    code, _, err = run_main(capsys, "validate", suite)
    assert code == 2 and ESCAPE in err and err.count("suite.yaml:1:") == 1, err


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("way", ["dotdot", "absolute", "dir-symlink", "file-symlink"])
def test_file_poison_path_cannot_escape_the_suite_folder(way, command, layout, tmp_path, capsys):
    proj, outside = layout
    path = {**_ways_out(outside, "ref.npy"), "file-symlink": "link.npy"}[way]
    suite = proj / "suite.yaml"
    suite.write_text(f"suite: s\n{SYNTH}victims: [small_cnn]\n"
                     f"poisons: [{{name: file, params: {{path: '{path}'}}}}]\n{TINY_TRAIN}")
    extra = ["--out", tmp_path / "run", "-q"] if command == "run" else []
    code, _, err = run_main(capsys, command, suite, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and ESCAPE in lines[0] and lines[1:] == ["1 problem; nothing was run."], err
    assert not (tmp_path / "run").exists()


def test_allow_path_opens_one_more_folder(layout, tmp_path, capsys):
    proj, outside = layout
    suite = proj / "suite.yaml"
    suite.write_text(f"suite: s\n{SYNTH}victims: [small_cnn]\n"
                     f"poisons: [{{name: file, params: {{path: '{outside / 'ref.npy'}'}}}}]\n{TINY_TRAIN}")
    code, out, err = run_main(capsys, "validate", "--allow-path", outside, suite)
    assert code == 0 and "ok" in out, err


@pytest.mark.parametrize("way", ["dotdot", "absolute", "dir-symlink"])
def test_image_folder_root_cannot_escape_the_suite_folder(way, layout, tmp_path, capsys):
    proj, outside = layout
    suite = proj / "suite.yaml"
    suite.write_text(f"suite: s\ndataset: {{name: image_folder, root: '{_ways_out(outside, 'photos')[way]}', "
                     f"image_size: 8}}\nvictims: [small_cnn]\npoisons: [clean]\n{TINY_TRAIN}")
    code, _, err = run_main(capsys, "run", suite, "--out", tmp_path / "run", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and ESCAPE in err, err
    assert not (tmp_path / "run" / "cells.jsonl").exists()


# -- leaderboard entries ------------------------------------------------------------------------

HOSTILE = ["../../../escaped", "/tmp/absolute", "..", "a/../../b", "~root"]


@pytest.mark.parametrize("name", HOSTILE)
def test_entry_files_stay_under_the_board_whatever_the_names(name, tmp_path, capsys):
    records = [dict(r) for r in _records()]
    for record in records:
        record["victim"] = {"name": name, "params": {}}
    run = write_run(tmp_path / "run", seeds=(0,), epochs=4, records=records, suite=name)
    board = tmp_path / "board"
    (board / "entries").mkdir(parents=True)
    code, _, err = run_main(capsys, "leaderboard", "add", run, "--dir", board, "--poison", "R4")
    assert code == 0, err
    written = [p for p in tmp_path.rglob("*.json") if not p.is_relative_to(tmp_path / "run")]
    assert len(written) == 1 and written[0].parent.parent == board / "entries"
    assert read_entry(written[0])["suite"]["name"] == name  # the name itself is kept, as data


def _records():
    from .helpers_report import POISONS, fake_record

    return [fake_record(p, seed=0, epochs=4) for p in POISONS]


@pytest.mark.parametrize("way", ["dotdot", "absolute", "dir-symlink", "file-symlink"])
def test_verify_refuses_a_file_poison_entry_reading_outside(way, layout, tmp_path, capsys):
    proj, outside = layout
    run = write_run(tmp_path / "run", seeds=(0,), epochs=4)
    board = tmp_path / "board"
    (board / "entries").mkdir(parents=True)
    assert run_main(capsys, "leaderboard", "add", run, "--dir", board, "--poison", "R4")[0] == 0
    (entry,) = (board / "entries").glob("*/*.json")
    data = read_entry(entry)
    data["poison"].update(name="file", params={"path": {**_ways_out(outside, "ref.npy"),
                                                        "file-symlink": "link.npy"}[way]})
    write_entry(entry, data)
    os.chdir(proj)  # verify resolves against the working folder: the project, not its parent
    code, _, err = run_main(capsys, "leaderboard", "verify", entry, "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and ESCAPE in err, err
