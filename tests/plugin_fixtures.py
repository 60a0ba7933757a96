"""An in-test plugin (a poison, a victim and a dataset) registered on fresh managers — nothing installed."""

from __future__ import annotations

from dataclasses import dataclass

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


class TestPlugin:
    @hookimpl
    def poisonbench_register_poisons(self, register):
        register(Stripes)
        register(Stripes, "S4", params={"width": 4}, description="stripes every 4 px")

    @hookimpl
    def poisonbench_register_victims(self, register):
        register(TinyNet)

    @hookimpl
    def poisonbench_register_defenses(self, register):
        register(LastButOne)

    @hookimpl
    def poisonbench_register_datasets(self, register):
        register(TinySet)


def test_catalog(*, with_installed: bool = False) -> Catalog:
    """Built-in baselines and defenses (+ the installed plugins when asked) plus the test plugin."""
    if with_installed:
        pm, infos = load_plugins()
    else:
        pm, infos = new_manager(), []
        pm.register(baselines, name="baselines")
        pm.register(defenses, name="defenses")
    pm.register(TestPlugin(), name="test-plugin")
    return Catalog.from_manager(pm, infos)


test_catalog.__test__ = False  # not a test function
