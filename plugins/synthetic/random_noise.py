"""The random-noise baseline: sample-wise uniform noise in [−ε, ε] (the usual sanity check).

Threat model: L∞, additive, sample-wise. Every pixel of every image gets independent U(−ε, ε) noise
(drawn from a local generator seeded by the cell seed). It should barely hurt a victim: a poison
that does no better than this is not a poison.

Params:
  eps -- L∞ budget as a fraction of the pixel range (default 8/255)
"""

from __future__ import annotations

from dataclasses import dataclass

from poisonbench.api import CraftContext, Paper, Poison, Split, check_ranges
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class RandomNoiseParams:
    eps: float = 8 / 255

    def __post_init__(self):
        check_ranges(self, fraction=("eps",))


class RandomNoise(Poison):
    """Sample-wise uniform ±ε noise: the random baseline that should barely hurt."""

    name = "random_noise"
    kind = "random"
    applied = "sample"
    threat_model = "linf"
    Params = RandomNoiseParams
    paper = Paper(title="Poisons that are learned faster are more effective", venue="CVPR Workshops",
                  year=2022, url="https://arxiv.org/abs/2204.08615", authors="Sandoval-Segura et al.")  # the RN row of its Table 1

    def perturbation(self, *, count: int, shape: tuple[int, int, int], seed: int):
        """Float32 (N, H, W, C) per-image perturbation before quantisation."""
        from poisonbench.plugins.synthetic.ops import uniform_noise

        return uniform_noise(count=count, shape=shape, eps=self.params.eps, seed=seed)

    def craft(self, clean: Split, *, ctx: CraftContext):
        from poisonbench.plugins.synthetic.ops import random_noise_images

        return random_noise_images(clean.images, eps=self.params.eps, seed=ctx.seed)


@hookimpl
def poisonbench_register_poisons(register):
    register(RandomNoise)
