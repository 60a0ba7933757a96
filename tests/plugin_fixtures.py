"""An in-test plugin (a poison, a victim and a dataset) registered on fresh managers — nothing installed."""

from __future__ import annotations

import functools
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

from poisonbench.api import Dataset, Defense, Poison, Victim
from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import load_plugins, new_manager
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins import baselines, defenses


@dataclass(frozen=True)
class StripesParams:
    eps: float = 8 / 255
    width: int = 2
    steps: int = 10


class Stripes(Poison):
    """Test poison: vertical stripes of ±eps (class-wise)."""

    name = "stripes"
    family = "stripes"
    kind = "random"
    applied = "class"
    Params = StripesParams

    def craft(self, clean, *, ctx):
        images = clean.images.clone()
        images[:, :, :: self.params.width] = images[:, :, :: self.params.width].clamp(max=247) + 8
        return images


class TinyNet(Victim):
    """Test victim."""

    name = "tinynet"

    def build(self, *, num_classes, in_channels, image_size):
        import torch

        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))


@dataclass(frozen=True)
class TinySetParams:
    size: int = 8


class TinySet(Dataset):
    """Test dataset (never loaded by these tests)."""

    name = "tinyset"
    Params = TinySetParams
    image_shape = (8, 8, 1)
    num_classes = 2


class LastButOne(Defense):
    """Test defense: keeps the epoch before the last."""

    name = "last_but_one"

    def select_epoch(self, history):
        return max(1, len(history["test_acc"]) - 1)


CATALOG_HOOKS = {"poisons": "poisonbench_register_poisons", "victims": "poisonbench_register_victims",
                 "defenses": "poisonbench_register_defenses", "datasets": "poisonbench_register_datasets"}


def registering(**classes) -> types.SimpleNamespace:
    """A plugin object whose catalog hooks register the given classes, in order.

    ``registering(victims=[TinyNet], datasets=[TinySet])``: one keyword per catalog hook
    (poisons, victims, defenses, datasets); an entry is a class or a preset
    ``(cls, name, keywords)``, e.g. ``(Stripes, "S4", {"params": {"width": 4}})``.
    """
    plugin = types.SimpleNamespace()
    for kind, entries in classes.items():
        def hook(register, entries=tuple(entries)):
            for cls, *preset in (entry if isinstance(entry, tuple) else (entry,) for entry in entries):
                register(cls, *preset[:1], **(preset[1] if len(preset) > 1 else {}))

        setattr(plugin, CATALOG_HOOKS[kind], hookimpl(hook))
    return plugin


def catalog_of(*plugins, installed: bool = False) -> Catalog:
    """A catalog of ``plugins`` (objects or modules; ``(name, plugin)`` names one) on a fresh manager.

    ``installed=True`` starts from the entry-point plugins (``load_plugins``) instead of none.
    """
    pm, infos = load_plugins() if installed else (new_manager(), [])
    for plugin in plugins:
        name, plugin = plugin if isinstance(plugin, tuple) else (None, plugin)
        pm.register(plugin, name=name)
    return Catalog.from_manager(pm, infos)


def serve_to_cli(monkeypatch, catalog: Catalog) -> Catalog:
    """Make the CLI (``Settings.catalog``) use ``catalog`` for the rest of the test."""
    from poisonbench.cli import Settings

    monkeypatch.setattr(Settings, "catalog", lambda self: catalog)
    return catalog


def third_party_site(site: Path, *, dist: str, good: str, broken: str, poison: str) -> Path:
    """A third-party distribution in ``site`` (a folder to put on sys.path) with two entry points.

    ``dist`` is ``name-version``; entry point ``good`` (module ``pb_<good>``) registers one poison
    named ``poison`` that adds 2 levels to every pixel (within any budget); entry point ``broken``
    (module ``pb_<broken>``) raises ImportError on import.
    """
    name, version = dist.rsplit("-", 1)
    info = site / f"{dist}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[poisonbench]\n{good} = pb_{good}\n{broken} = pb_{broken}\n")
    (site / f"pb_{good}.py").write_text(textwrap.dedent(f"""
        from poisonbench.api import Poison
        from poisonbench.hookspecs import hookimpl

        class Good(Poison):
            '''Adds 2 levels to every pixel (within any budget).'''
            name = "{poison}"
            kind = "random"
            applied = "sample"

            def craft(self, clean, *, ctx):
                return clean.images.clamp(max=253) + 2

        @hookimpl
        def poisonbench_register_poisons(register):
            register(Good)
    """))
    (site / f"pb_{broken}.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    return site


TestPlugin = functools.partial(
    registering, poisons=[Stripes, (Stripes, "S4", {"params": {"width": 4}, "description": "stripes every 4 px"})],
    victims=[TinyNet], defenses=[LastButOne], datasets=[TinySet])
"""A fresh test plugin: Stripes (+ preset S4), TinyNet, LastButOne and TinySet."""


def test_catalog(*, with_installed: bool = False) -> Catalog:
    """Built-in baselines and defenses (+ the installed plugins when asked) plus the test plugin."""
    builtin = () if with_installed else (("baselines", baselines), ("defenses", defenses))
    return catalog_of(*builtin, ("test-plugin", TestPlugin()), installed=with_installed)


test_catalog.__test__ = False  # not a test function
