"""Class-wise checkerboard poison: each class gets a ±eps checkerboard of its own cell size and phase.

Threat model: additive, L∞ ≤ eps (fraction of the pixel range; 8/255 by default), class-wise
(every image of class c receives the same perturbation). Like the paper's synthetic "regions"
poisons it is a shortcut a network learns faster than the real features.

Params:
  eps   -- L∞ budget as a fraction of the pixel range (8/255 ≈ 0.031)
  cell  -- side of one checkerboard square in pixels for class 0; class c uses cell + c % 3
"""

from __future__ import annotations

from dataclasses import dataclass

from poisonbench.api import Poison, check_ranges, export_uint8
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class CheckerboardParams:
    eps: float = 8 / 255
    cell: int = 2

    def __post_init__(self):
        check_ranges(self, fraction=("eps",), at_least_one=("cell",))  # ValueError naming the field


class Checkerboard(Poison):
    """Class-wise ±eps checkerboard; cell size and phase depend on the class and the seed."""

    name = "checkerboard"
    kind = "random"
    applied = "class"
    Params = CheckerboardParams
    contract_params = {}  # already cheap

    def craft(self, clean, *, ctx):
        import torch

        n, height, width, channels = clean.images.shape
        gen = torch.Generator().manual_seed(ctx.seed)
        phases = torch.randint(0, 2, (ctx.num_classes,), generator=gen)
        rows = torch.arange(height).view(height, 1)
        cols = torch.arange(width).view(1, width)
        advance = ctx.advance_bar("checkerboard patterns", ctx.num_classes)  # a no-op outside a run
        deltas = []
        for c in range(ctx.num_classes):
            size = self.params.cell + c % 3
            board = ((rows // size + cols // size + phases[c]) % 2).float() * 2 - 1  # ±1
            deltas.append(board.unsqueeze(-1).expand(height, width, channels) * self.params.eps)
            advance(1, cell=size)
        delta = torch.stack(deltas)  # (K, H, W, C) fraction of the pixel range, one per class
        # The export every built-in uses: clamp(x + floor(255·δ + 0.5), 0, 255), δ picked by label.
        return export_uint8(clean.images, delta, index=clean.labels)


@hookimpl
def poisonbench_register_poisons(register):
    from poisonbench_example_poison.nudge import SurrogateNudge

    register(Checkerboard)
    register(Checkerboard, "CB4", params={"cell": 4}, description="checkerboard with 4-px cells")
    register(SurrogateNudge)
