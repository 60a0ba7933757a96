"""Base of the class-wise synthetic poisons (regions, low_frequency): one pattern per class, added.

A subclass only names the function of ``synthetic.ops`` that draws the per-class perturbations
(``delta``; it takes every field of the subclass's Params plus ``num_classes``, ``shape`` and
``seed``); drawing and crafting (pattern indexed by label, added, exported with round-half-up) are
the same for all of them. Import-light: no torch here.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from poisonbench.api import CraftContext, Paper, Poison, Split, export_uint8


class ClassWisePattern(Poison):
    """A class-wise additive pattern within ±eps; subclasses name their ``delta`` function."""

    kind = "random"
    applied = "class"
    threat_model = "linf"
    # Regions and low-frequency patterns are the synthetic poisons introduced by this study.
    paper = Paper(title="Poisons that are learned faster are more effective", venue="CVPR Workshops",
                  year=2022, url="https://arxiv.org/abs/2204.08615", authors="Sandoval-Segura et al.")

    delta: ClassVar[str] = ""  # function of poisonbench.plugins.synthetic.ops drawing the patterns

    def perturbation(self, *, num_classes: int, shape: tuple[int, int, int], seed: int):
        """Float32 (K, H, W, C) per-class perturbation before quantisation (fraction of the pixel range)."""
        from poisonbench.plugins.synthetic import ops

        draw = getattr(ops, self.delta)
        return draw(num_classes=num_classes, shape=shape, seed=seed, **dataclasses.asdict(self.params))

    def craft(self, clean: Split, *, ctx: CraftContext):
        delta = self.perturbation(num_classes=ctx.num_classes, shape=clean.image_shape, seed=ctx.seed)
        return export_uint8(clean.images, delta, index=clean.labels)
