"""Baseline poisons: ``clean`` (the unmodified training set, every suite's reference)."""

from __future__ import annotations

from poisonbench.api import CraftContext, Poison, Split
from poisonbench.hookspecs import hookimpl


class Clean(Poison):
    """The unmodified training set; its peak accuracy is the reference every poison is compared to."""

    name = "clean"
    kind = "baseline"
    applied = "sample"

    def budget(self) -> float:
        return 0.0

    def craft(self, clean: Split, *, ctx: CraftContext):
        return clean.images.clone()


@hookimpl
def poisonbench_register_poisons(register):
    register(Clean)
