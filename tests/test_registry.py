"""Registries: presets, prefixes, natural sort, fnmatch, duplicates and "did you mean"."""

from __future__ import annotations

import pytest

from poisonbench.api import Poison, Victim
from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import new_manager
from poisonbench.catalog.registry import Registry
from poisonbench.errors import BadInput, DuplicateName, UnknownName
from poisonbench.hookspecs import hookimpl

from .plugin_fixtures import Stripes, TestPlugin, test_catalog


def test_in_test_plugin_on_fresh_manager_is_listed():
    catalog = test_catalog()
    assert "stripes" in catalog.poisons.names()
    assert catalog.poisons.names("S?") == ["S4"]  # case-insensitive: "S*" also matches stripes
    entry, _ = catalog.poisons.lookup("S4")
    assert entry.provider == "test-plugin" and entry.defaults == {"width": 4}
    assert catalog.defenses.create("last_but_one").select_epoch({"test_acc": [0.1, 0.5, 0.2]}) == 2
    assert catalog.victims.names() == ["tinynet"] and catalog.datasets.names() == ["tinyset"]
    described = entry.describe()
    assert described["family"] == "stripes" and described["applied"] == "class"
    assert described["params"]["width"]["default"] == 4


def test_preset_defaults_are_overridden_by_params():
    catalog = test_catalog()
    poison = catalog.poisons.create("S4", {"steps": 3})
    assert (poison.params.width, poison.params.steps) == (4, 3)
    assert poison.registry_name == "S4"


def test_natural_sort_and_pattern():
    registry = Registry("poison", Poison)
    for n in (16, 2, 128, 1, 4):
        registry.add(Stripes, f"R{n}", params={"width": n})
    registry.add(Stripes)
    assert registry.names() == ["R1", "R2", "R4", "R16", "R128", "stripes"]
    assert registry.names("r1*") == ["R1", "R16", "R128"]


def test_duplicate_names_name_both_providers():
    registry = Registry("poison", Poison)
    registry.add(Stripes, provider="first")
    with pytest.raises(DuplicateName, match="'first' and 'second'"):
        registry.add(Stripes, provider="second")


def test_duplicate_across_plugins_is_an_error():
    class Other:
        @hookimpl
        def poisonbench_register_poisons(self, register):
            register(Stripes)

    pm = new_manager()
    pm.register(TestPlugin(), name="one")
    pm.register(Other(), name="two")
    with pytest.raises(DuplicateName, match="'one' and 'two'"):
        Catalog.from_manager(pm)


def test_unknown_name_suggests():
    catalog = test_catalog()
    with pytest.raises(UnknownName, match="Did you mean: stripes"):
        catalog.poisons.lookup("stripe")


def test_bad_preset_params_are_rejected():
    registry = Registry("poison", Poison)
    with pytest.raises(BadInput, match="unknown param 'widht'.*'width'"):
        registry.add(Stripes, "bad", params={"widht": 3})


def test_prefix_entries():
    class Timmish(Victim):
        name = "timmish"

        from dataclasses import dataclass as _dc

        @_dc(frozen=True)
        class Params:
            arch: str = "resnet18"

    registry = Registry("victim", Victim)
    registry.add(Timmish, prefix="timm", prefix_param="arch")
    victim = registry.create("timm:convnext_nano")
    assert victim.params.arch == "convnext_nano"
    assert "timm:anything" in registry and "timm:" not in registry
    assert [e.name for e in registry.entries("timm*")] == ["timm"]


def test_broken_registration_is_reported_and_others_keep_working():
    class Broken:
        @hookimpl
        def poisonbench_register_poisons(self, register):
            register(object)  # not a Poison

    class Raises:
        @hookimpl
        def poisonbench_register_poisons(self, register):
            raise RuntimeError("boom")

    pm = new_manager()
    pm.register(TestPlugin(), name="good")
    pm.register(Broken(), name="broken")
    pm.register(Raises(), name="raises")
    catalog = Catalog.from_manager(pm)
    assert "stripes" in catalog.poisons.names()
    assert any("'broken'" in f for f in catalog.failures)
    assert any("'raises'" in f and "boom" in f for f in catalog.failures)
