"""Hostile or broken plugins during `poisonbench run`: named in one line each, the rest keeps working.

One run holds: a third-party distribution whose second entry point raises on import, a plugin whose
registration hook raises, a plugin that registers a non-Poison, and a plugin whose four poisons
return NaN, out-of-budget, wrong-dtype or relabelled data. Each failure is one line naming the
plugin; the clean cell and the good third-party poison's cell still finish; the run exits 1.
Listing with --no-plugins / allow-lists, and the catalog-level failures, are covered in
test_cli_catalog.py and test_registry.py.
"""

from __future__ import annotations

import pytest
import torch

from poisonbench.api import Poison
from poisonbench.hookspecs import hookimpl
from poisonbench.results import read_records

from .helpers_reliability import run_main, tiny_suite
from .plugin_fixtures import catalog_of, registering, serve_to_cli, third_party_site

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = 8 / 255


class _Bad(Poison):
    family = "bad"
    kind = "random"
    applied = "sample"

    def budget(self):
        return EPS


class BadNaN(_Bad):
    """Returns a float tensor full of NaN."""

    name = "bad_nan"

    def craft(self, clean, *, ctx):
        return torch.full(clean.images.shape, float("nan"))


class BadBudget(_Bad):
    """Moves every pixel by 40 levels, five times its 8/255 budget."""

    name = "bad_budget"

    def craft(self, clean, *, ctx):
        return (clean.images.to(torch.int16) + 40).clamp(0, 255).to(torch.uint8)


class BadDtype(_Bad):
    """Returns the images as float32 in [0, 255] instead of uint8."""

    name = "bad_dtype"

    def craft(self, clean, *, ctx):
        return clean.images.float()


class BadRelabel(_Bad):
    """Flips every label (in place) and returns the images unchanged."""

    name = "bad_relabel"

    def craft(self, clean, *, ctx):
        clean.labels.copy_((clean.labels + 1) % ctx.num_classes)
        return clean.images.clone()


class RaisingRegistration:
    @hookimpl
    def poisonbench_register_poisons(self, register):
        raise RuntimeError("registration blew up")


class NotAPoison:
    @hookimpl
    def poisonbench_register_poisons(self, register):
        register(dict)


@pytest.fixture
def hostile_catalog(tmp_path, monkeypatch):
    site = third_party_site(tmp_path / "site", dist="pb_reliability-1.0", good="rel_good", broken="rel_broken",
                            poison="rel_good")
    monkeypatch.syspath_prepend(str(site))
    catalog = catalog_of(("evil-plugin", registering(poisons=[BadNaN, BadBudget, BadDtype, BadRelabel])),
                         ("raising-plugin", RaisingRegistration()), ("not-a-poison-plugin", NotAPoison()),
                         installed=True)
    serve_to_cli(monkeypatch, catalog)
    return catalog


REASONS = {"bad_nan": "NaN", "bad_budget": "over the budget", "bad_dtype": "expected uint8",
           "bad_relabel": "modified the clean images or labels"}


def test_bad_plugin_output_fails_its_cells_naming_the_plugin_and_the_rest_run(hostile_catalog, tmp_path,
                                                                             capsys):
    poisons = "[clean, rel_good, " + ", ".join(REASONS) + "]"
    suite, out = tiny_suite(tmp_path, poisons=poisons, epochs=1), tmp_path / "run"
    code, _, err = run_main(capsys, "run", suite, "--out", out, "-q")
    lines = err.strip().splitlines()
    assert code == 1, err
    for name, reason in REASONS.items():
        naming = [line for line in lines if f"poison '{name}' (plugin 'evil-plugin')" in line]
        assert len(naming) == 1 and reason in naming[0], (name, err)
    for plugin in ("rel_broken", "raising-plugin", "not-a-poison-plugin"):
        assert len([line for line in lines if f"plugin '{plugin}'" in line]) == 1, (plugin, err)
    assert "registration blew up" in err and "broken on purpose" in err
    assert lines[-1].startswith("error: 4 training group(s) failed")
    assert sorted(r["poison"]["name"] for r in read_records(out)) == ["clean", "rel_good"]
    cached = [p for p in (tmp_path / "cache" / "poisons").glob("*.json")]
    assert len(cached) == 2  # nothing was cached for the rejected poisons
