"""AR — autoregressive perturbations: one linear AR process per class, a fresh L2-scaled realisation per image.

Paper: Sandoval-Segura, Singla, Geiping, Goldblum, Goldstein, Jacobs, "Autoregressive Perturbations
for Data Poisoning", NeurIPS 2022, https://arxiv.org/abs/2206.03693
(code: github.com/psandovalsegura/autoregressive-poisoning).

Threat model ``l2``: per-image L2 norm of the perturbation (pixel units, over H·W·C) = ε₂ before
clipping and export; no surrogate. ε₂ = 1.0 at 32×32×3 (the authors' CIFAR-10/100 and SVHN
setting) and, like the authors' STL-10 setting (3.0 at 96×96×3), scales with √d: ε₂(d) =
``eps``·√(d/3072) (0.505 on 28×28×1). Large single entries: L∞ ≈ 26–38/255 at ε₂ = 1.

Algorithm: class k owns an AR process (``ops`` describes the recurrence). For every image a field
of (H + crop) × (W + crop) Gaussian noise is run through its class's process, the first ``crop``
rows and columns (top, left) are dropped, the rest is scaled to L2 = ε₂ and added (channel c of the
process ↔ image channel c). Each class's matched filter (its coefficients with the current pixel at
−1) gives exactly zero on its own class's fields, which is what makes the noise a shortcut.

Coefficients: for C = 3 and K ≤ 10 the authors' released CIFAR-10 processes (the first K). Other
(K, C) run the authors' search, seeded with ``finder_seed`` so the processes are a fixed key like
the released ones, not a per-seed draw; the crafting seed draws only the Gaussian starts. The
search's acceptance threshold ``required_response`` defaults to 10·C/3 for K ≤ 10 (the authors'
10 for C = 3; 10 finds too few 1-channel processes in practice) and 3·C/3 above 10 classes (the
authors' 100-class setting). With C = 3 and K > 10 the CIFAR-10 processes are the first ten. A
process that diverges is rejected (coefficients over 10, raw norms over 50), and a non-finite
perturbation is an error, never an exported black image.

Not provided: the authors' optional Gaussian noise inside the recurrence (off by default there).
``AR-linf`` is their L∞ 8/255 variant (the released coefficients were tuned for L2; the authors
call it suboptimal).

Params (units in brackets):
  eps [pixel units]      L2 radius at 32×32×3, 1.0 (or the L∞ radius [pixel fraction] for AR-linf)
  scale_eps              scale the L2 radius by √(d/3072) for other image sizes (true)
  crop [px]              rows/columns generated above and left of the image, then dropped (4)
  required_response      the search's threshold (null = the defaults above)
  max_candidates         the search fails with a clear error after this many candidates (100000)
  finder_seed            seed of the search (0)
  quantize               round (half up) | floor
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from poisonbench.api import CraftContext, Paper, Poison, Split, check_ranges, register_presets
from poisonbench.hookspecs import hookimpl

CHUNK = 2048  # images generated at once: fields of 2048×3×36×36 float32 ≈ 32 MB


@dataclass(frozen=True)
class ARParams:
    eps: float = 1.0  # L2 radius at 32×32×3 [pixel units]
    scale_eps: bool = True  # ε₂ = eps·√(H·W·C/3072) on other shapes
    crop: int = 4  # [px] generated above/left of the image and dropped
    required_response: float | None = None  # finder threshold; None = 10·C/3 (K ≤ 10) or C (K > 10)
    max_candidates: int = 100_000  # finder gives up after this many candidates
    finder_seed: int = 0  # seed of the coefficient search (fixed key, independent of the poison seed)
    quantize: Literal["round", "floor"] = "round"

    def __post_init__(self):
        check_ranges(self, positive=("eps",), at_least_one=("max_candidates",))
        if self.crop < 2:
            raise ValueError(f"crop must be >= 2 (the recurrence's two-pixel border), got {self.crop}")


class Autoregressive(Poison):
    """AR: a class-wise autoregressive process, a sample-wise realisation per image, L2-bounded."""

    name = "autoregressive"
    kind = "random"
    applied = "sample"
    threat_model = "l2"
    Params = ARParams
    paper = Paper(title="Autoregressive Perturbations for Data Poisoning", venue="NeurIPS", year=2022,
                  url="https://arxiv.org/abs/2206.03693", authors="Sandoval-Segura et al.")
    contract_params = {"max_candidates": 5000}

    def radius(self, shape: tuple[int, int, int]) -> float:
        d = shape[0] * shape[1] * shape[2]
        return self.params.eps * (math.sqrt(d / 3072) if self.params.scale_eps else 1.0)

    def budget(self) -> float:
        return self.budget_for((32, 32, 3))

    def budget_label(self) -> str:
        return f"L2 {self.params.eps:.4g} at 32×32×3" + (", ∝√d" if self.params.scale_eps else "")

    def coefficients(self, *, num_classes: int, channels: int):
        """(K, C, 3, 3) float32 processes for this dataset (see the module docstring)."""
        from poisonbench.plugins.autoregressive import ops

        required = self.params.required_response
        if required is None:
            required = (10.0 if num_classes <= 10 else 3.0) * channels / 3
        return ops.find_coefficients(num_classes, channels, required_response=float(required),
                                     max_candidates=self.params.max_candidates,
                                     seed=self.params.finder_seed).clone()

    def scale(self, delta, eps: float):
        from poisonbench.plugins.autoregressive import ops

        return ops.scale_l2(delta, eps)

    def craft(self, clean: Split, *, ctx: CraftContext):
        import torch

        from poisonbench.api import export_uint8
        from poisonbench.plugins.autoregressive import ops

        height, width, channels = clean.image_shape
        coeffs = self.coefficients(num_classes=ctx.num_classes, channels=channels)
        eps = self.radius(clean.image_shape)
        gen = torch.Generator().manual_seed(ctx.seed)
        out = torch.empty_like(clean.images)
        advance = ctx.advance_bar("AR noise", len(clean))
        for start in range(0, len(clean), CHUNK):
            stop = min(start + CHUNK, len(clean))
            raw = ops.generate(coeffs, clean.labels[start:stop], size=(height, width), crop=self.params.crop,
                               gen=gen)
            delta = self.scale(raw, eps)
            out[start:stop] = export_uint8(clean.images[start:stop], delta, channels_first=True,
                                           rounding=self.params.quantize)
            advance(stop - start)
        return out


@dataclass(frozen=True)
class ARLinfParams(ARParams):
    eps: float = 8 / 255  # L∞ radius [pixel fraction] (scale_eps does not apply)


class AutoregressiveLinf(Autoregressive):
    """AR with an L∞ radius: each realisation scaled to max |δ| = eps (the authors' L∞ variant)."""

    name = "autoregressive_linf"
    threat_model = "linf"
    Params = ARLinfParams

    def radius(self, shape: tuple[int, int, int]) -> float:
        return self.params.eps

    def budget_label(self) -> str:
        return f"L∞ {self.params.eps * 255:.3g}/255"

    def scale(self, delta, eps: float):
        from poisonbench.plugins.autoregressive import ops

        unit = ops.scale_l2(delta, 1.0)  # checks finiteness; L∞ scaling is scale-invariant after it
        return unit * (eps / unit.flatten(1).abs().amax(dim=1)).view(-1, 1, 1, 1)


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, Autoregressive, {
        "AR": ({}, "AR: class-wise autoregressive processes, L2 = 1.0 at 32×32×3 (×√(d/3072))")})
    register_presets(register, AutoregressiveLinf, {
        "AR-linf": ({}, "AR with L∞ 8/255 (the authors' variant; the coefficients were tuned for L2)")})
