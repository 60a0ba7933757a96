"""Every built-in poison and defense declares its paper (``Plugin.paper``); ``list`` shows it."""

from __future__ import annotations

import json

import pytest

from poisonbench.api import Paper
from poisonbench.cli import main


def _builtin(entries):
    """Entries of plugins shipped with poisonbench (third-party providers are ``dist:name``)."""
    return [e for e in entries if ":" not in e.provider]


def test_every_builtin_poison_and_defense_declares_its_paper(catalog):
    missing = []
    for entry in _builtin(catalog.poisons.entries()):
        if getattr(entry.cls, "kind", None) != "baseline" and not isinstance(entry.cls.paper, Paper):
            missing.append(f"poison {entry.name}")
    for entry in _builtin(catalog.defenses.entries()):
        if not getattr(entry.cls, "deprecated", "") and entry.name != "none" and not isinstance(entry.cls.paper, Paper):
            missing.append(f"defense {entry.name}")
    assert missing == []
    for entry in _builtin(catalog.poisons.entries()) + _builtin(catalog.defenses.entries()):
        paper = entry.cls.paper
        if paper is not None:
            assert paper.title and paper.venue and 1990 < paper.year < 2100, entry.name
            assert paper.url.startswith("https://"), entry.name


def test_paper_cites_and_serialises():
    paper = Paper(title="Unlearnable Examples", venue="ICLR", year=2021, url="https://arxiv.org/abs/2101.04898",
                  authors="Huang et al.")
    assert paper.cite() == "Huang et al., ICLR 2021"
    assert Paper(title="t", venue="arXiv", year=2017, url="https://x").cite() == "arXiv 2017"
    assert paper.to_json()["url"] == "https://arxiv.org/abs/2101.04898"
    with pytest.raises(AttributeError):
        paper.year = 2022  # frozen


def test_list_json_and_table_show_the_paper(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: one line per poison
    with pytest.raises(SystemExit) as exc:
        main(["list", "poisons", "P250", "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)[0]["paper"]["title"] == "Adversarial Examples Make Strong Poisons"
    with pytest.raises(SystemExit) as exc:
        main(["list", "poisons", "R4"])
    assert exc.value.code == 0
    assert "Sandoval-Segura" in capsys.readouterr().out
