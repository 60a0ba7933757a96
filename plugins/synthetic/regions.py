"""Class-wise random regions poisons R1 … R128, RN (Sandoval-Segura et al., CVPR-W 2022, Table 1).

Threat model: L∞, additive, class-wise. For each class c a random sign pattern is drawn:
B ∈ {0,1}^{n×C} ~ Bernoulli(0.5), v = ε·(2B − 1), and each C-vector is tiled over one region of the
image grid; every image of class c gets the same v. Layout (the decisions in docs/poisons.md): square n
is a √n × √n grid (R4 2×2, RN = 1024 → per pixel on 32×32), R2 the left/right halves, R128 an
8-row × 16-column grid of 4 × 2 px patches; in general rows = the largest divisor of n not above
√n. Sizes that do not divide evenly get regions as equal as integer boundaries allow.

Params:
  regions  -- number of regions n (an integer ≥ 1; a grid finer than the image is one pixel each)
  eps      -- L∞ budget as a fraction of the pixel range (default 8/255)
  signed   -- true: values ±ε (the paper); false: {0, +ε} (the authors' related public code)
  distinct -- redraw until all classes have different patterns (on 1-channel images R4 has only
              2^4 = 16 patterns, so two of 10 classes often coincide; a warning says so otherwise)
"""

from __future__ import annotations

from dataclasses import dataclass

from poisonbench.api import check_ranges
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins.synthetic.class_wise import ClassWisePattern

EPS = 8 / 255
PRESETS = {"R1": 1, "R2": 2, "R4": 4, "R16": 16, "R64": 64, "R128": 128, "RN": 1024}


@dataclass(frozen=True)
class RegionsParams:
    regions: int = 4
    eps: float = EPS
    signed: bool = True
    distinct: bool = False

    def __post_init__(self):
        check_ranges(self, fraction=("eps",), at_least_one=("regions",))


class Regions(ClassWisePattern):
    """Class-wise random ±ε patterns constant over n image regions (R1…R128, RN)."""

    name = "regions"
    Params = RegionsParams
    delta = "regions_delta"


@hookimpl
def poisonbench_register_poisons(register):
    register(Regions)
    for name, n in PRESETS.items():
        what = (
            "each pixel (1024 regions on 32×32)"
            if name == "RN"
            else f"{n} region{'s' if n > 1 else ''}"
        )
        register(
            Regions,
            name,
            params={"regions": n},
            description=f"class-wise random ±8/255 over {what}",
        )
