"""Base of the class-wise synthetic poisons (regions, low_frequency): one pattern per class, added.

A subclass only says how to draw the per-class perturbation; crafting (pattern indexed by label,
added, exported with round-half-up) is the same for all of them. Import-light: no torch here.
"""

from __future__ import annotations

from poisonbench.api import CraftContext, Poison, Split


class ClassWisePattern(Poison):
    """A class-wise additive pattern within ±eps; subclasses implement ``perturbation``."""

    kind = "random"
    applied = "class"
    threat_model = "linf"

    def perturbation(self, *, num_classes: int, shape: tuple[int, int, int], seed: int):
        """Float32 (K, H, W, C) per-class perturbation before quantisation (fraction of the pixel range)."""
        raise NotImplementedError

    def craft(self, clean: Split, *, ctx: CraftContext):
        from poisonbench.plugins.synthetic.ops import export

        delta = self.perturbation(num_classes=ctx.num_classes, shape=clean.image_shape, seed=ctx.seed)
        return export(clean.images, delta, clean.labels)
