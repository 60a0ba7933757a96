"""Every shipped suite validates; the demo covers the families it promises; the example plugin runs."""

from __future__ import annotations

import json
import pathlib

import pytest

from poisonbench.cli import main
from poisonbench.suite import load_suite

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITES = sorted(p for p in (ROOT / "suites").glob("*.yaml") if not p.name.startswith("_"))
EXAMPLE = ROOT / "examples" / "poisonbench-example-poison"


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_shipped_suite_validates(path, catalog):
    suite = load_suite(path, catalog)
    assert suite.cells()


def test_paper_suite_is_table_1(catalog):
    suite = load_suite(ROOT / "suites" / "paper.yaml", catalog)
    table1 = {"P10", "P100", "P250", "M10", "M100", "M250", "FC", "FCS", "FCSD", "SU", "CU", "R1", "R2",
              "R4", "R16", "R64", "R128", "RN", "LF2", "LF3", "LF4", "LF5", "LF6", "LF7", "LF8"}
    assert {p.name for p in suite.poisons} == table1 | {"clean"}
    assert [v.name for v in suite.victims] == ["resnet18"] and suite.train.epochs == 100
    # no selection defense: every training records peak, val-selected (5,000 held out) and final
    assert [d.name for d in suite.defenses] == ["none"] and suite.dataset.val_split == 5000


def test_demo_suite_mixes_the_promised_families(catalog):
    suite = load_suite(ROOT / "suites" / "demo.yaml", catalog)
    families = {catalog.poisons.lookup(p.name)[0].cls.family for p in suite.poisons}
    assert {"clean", "random_noise", "regions", "low_frequency", "unlearnable", "pgd"} <= families
    assert suite.dataset_component.name == "fashion_mnist_demo"


def _example_installed() -> bool:
    from importlib import metadata

    return any(ep.name == "checkerboard" for ep in metadata.entry_points(group="poisonbench"))


@pytest.mark.skipif(not _example_installed(), reason="example plugin not installed (make test installs it)")
def test_example_plugin_is_listed_and_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "poisons", "--json"])
    assert exit_info.value.code == 0
    names = {item["name"] for item in json.loads(capsys.readouterr().out)}
    assert {"checkerboard", "CB4"} <= names
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(EXAMPLE / "suite.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
    assert exit_info.value.code == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert {r["poison"]["name"] for r in records} == {"clean", "checkerboard", "CB4"}
