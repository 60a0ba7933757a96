"""Class-wise low-frequency poisons LF2 … LF8 (Sandoval-Segura et al., CVPR-W 2022, Table 1).

Threat model: L∞, additive, class-wise. For each class: Z = zeros(H, W, C); Z[:n, :n, :] ~ N(0, 1);
v = orthonormal inverse 2-D DCT of Z over the spatial axes (``scipy.fft.idctn(Z, axes=(0, 1),
norm="ortho")``, computed here with a DCT matrix in torch); every image of the class gets v.

Params:
  n     -- side of the top-left block of DCT coefficients that is non-zero (1 ≤ n ≤ min(H, W))
  scale -- 'rescale' (the decision of docs/poisons.md): v ← ε·v / max|v|, so max|v| = ε exactly;
           'clip': v ← clip(v, −ε, ε) (the other reading)
  eps   -- L∞ budget as a fraction of the pixel range (default 8/255)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import check_ranges
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins.synthetic.class_wise import ClassWisePattern

EPS = 8 / 255


@dataclass(frozen=True)
class LowFrequencyParams:
    n: int = 3
    scale: Literal["rescale", "clip"] = "rescale"
    eps: float = EPS

    def __post_init__(self):
        check_ranges(self, fraction=("eps",), at_least_one=("n",))


class LowFrequency(ClassWisePattern):
    """Class-wise smooth patterns: inverse DCT of random low-frequency coefficients (LF2…LF8)."""

    name = "low_frequency"
    Params = LowFrequencyParams
    delta = "low_frequency_delta"


@hookimpl
def poisonbench_register_poisons(register):
    register(LowFrequency)
    for n in range(2, 9):
        register(
            LowFrequency,
            f"LF{n}",
            params={"n": n},
            description=f"class-wise low frequency, {n}×{n} DCT block, max |v| = 8/255",
        )
