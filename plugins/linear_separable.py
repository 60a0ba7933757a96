"""LSP — synthetic linearly separable shortcut noise: class-clustered Gaussian patches with a fixed L2 norm.

Paper: Yu, Zhang, Chen, Yin, Liu, "Availability Attacks Create Shortcuts", KDD 2022,
https://arxiv.org/abs/2111.00898 (code: github.com/dayu11/Availability-Attacks-Create-Shortcuts).

Threat model ``l2``: additive noise whose per-image L2 norm (pixel units, over H·W·C) is exactly
ε₂ before clipping and export; no surrogate. ε₂ = ``eps_lin``·√d with ``eps_lin`` = 6/255, i.e. the
noise's RMS per entry is 6/255 and ε₂ = 1.3041 at 32×32×3, 0.6588 at 28×28×1 (it scales with √d by
construction). It is not L∞-bounded: single entries reach ≈ 17/255.

Algorithm (sample-wise draws from one Gaussian cluster per class): the image is cut into a grid of
``patch_size``² patches (⌈H/p⌉ × ⌈W/p⌉ cells; the last row/column is cropped, so 28 px with p = 7
or 8 both work); F = cells·C features. Class centroids are K distinct vertices of the hypercube
{−class_sep, +class_sep}^F; for class c a mixing matrix A_c ~ U(−1, 1)^{F×F} is drawn, and each
image of class c gets z = N(0, I_F)·A_c + centroid_c, spread over its patches (grid row, grid
column, channel in row-major order), rescaled to L2 norm ε₂ and added.

Decisions: the authors draw with scikit-learn's ``make_classification``; this is a native numpy
re-implementation of the same distribution (PCG64 seeded with the poison seed; not bit-identical
to scikit-learn, whose column shuffle only relabels features). Each class draws exactly its own
image count (the official code's equal class shares crash on unbalanced data). Default export is
round-half-up like every poisonbench poison; ``quantize: floor`` truncates as the authors'
pipeline does. ``eps_l2`` overrides the radius directly (1.0 is the label one re-evaluation uses).

Params (units in brackets):
  eps_lin [pixel fraction]  RMS per entry of the noise; ε₂ = eps_lin·√(H·W·C) (6/255)
  eps_l2 [pixel units]      explicit L2 radius overriding eps_lin·√d (null)
  patch_size [px]           side of the constant patches; null = ⌈min(H, W)/4⌉ (8 on 32², 7 on
                            28², a 4×4 grid), 32 for images larger than 64 px
  class_sep [feature units] half side of the centroid hypercube (10)
  quantize                  round (half up) | floor (the declared budget then adds the half level
                            per entry that truncation may add: ε₂ + 0.5·√d/255)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from poisonbench.api import CraftContext, Paper, Poison, Split, check_ranges, register_presets
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl

CHUNK = 4096  # images expanded from patch grid to pixels per export step (bounded memory)


@dataclass(frozen=True)
class LSPParams:
    eps_lin: float = 6 / 255  # RMS per entry [pixel fraction]; ε₂ = eps_lin·√d
    eps_l2: float | None = None  # L2 radius [pixel units]; overrides eps_lin·√d when set
    patch_size: int | None = None  # [px]; None = ⌈min(H, W)/4⌉, or 32 above 64 px
    class_sep: float = 10.0  # centroid hypercube half side [feature units]
    quantize: Literal["round", "floor"] = "round"

    def __post_init__(self):
        check_ranges(self, positive=("eps_lin", "eps_l2", "class_sep"), at_least_one=("patch_size",))  # or null


def patch_side(shape: tuple[int, int, int], patch_size: int | None) -> int:
    """The patch side for images (H, W, C): the param, or ⌈min(H, W)/4⌉ (32 above 64 px)."""
    if patch_size is not None:
        return patch_size
    side = min(shape[0], shape[1])
    return math.ceil(side / 4) if side <= 64 else 32


def lsp_features(labels, *, num_classes: int, features: int, class_sep: float, seed: int):
    """Float64 (N, F) noise features: image i of class c gets N(0, I)·A_c + centroid_c (unnormalised)."""
    import numpy as np

    labels = np.asarray(labels)
    if num_classes > 2**min(features, 62):
        raise BadInput(f"LSP: {num_classes} classes need more than {features} patch features "
                       "(lower patch_size)")
    rng = np.random.Generator(np.random.PCG64(seed))
    for _ in range(1000):  # K distinct hypercube vertices (collisions only when 2^F is close to K)
        bits = rng.integers(0, 2, size=(num_classes, features))
        if len(np.unique(bits, axis=0)) == num_classes:
            break
    else:
        raise BadInput(f"LSP: no {num_classes} distinct centroids among 2^{features} vertices (lower patch_size)")
    centroids = (2.0 * bits - 1.0) * class_sep
    out = np.empty((labels.shape[0], features))
    for c in range(num_classes):
        mixing = rng.uniform(-1.0, 1.0, size=(features, features))
        idx = np.flatnonzero(labels == c)
        out[idx] = rng.standard_normal((idx.size, features)) @ mixing + centroids[c]
    return out


def expand(features, *, shape: tuple[int, int, int], patch: int, eps2: float):
    """Float32 (n, H, W, C) noise: features spread over p×p patches, cropped, each image at L2 = eps2."""
    import numpy as np

    height, width, channels = shape
    grid_h, grid_w = -(-height // patch), -(-width // patch)
    cells = features.reshape(-1, grid_h, grid_w, channels)
    full = np.repeat(np.repeat(cells, patch, axis=1), patch, axis=2)[:, :height, :width, :]
    norms = np.sqrt(np.einsum("nhwc,nhwc->n", full, full))  # float64 features: exact enough to 1e-12
    return (full * (eps2 / norms)[:, None, None, None]).astype(np.float32)


class LinearSeparable(Poison):
    """LSP: class-clustered Gaussian patch noise, linearly separable by construction, L2-bounded."""

    name = "linear_separable"
    kind = "random"
    applied = "sample"
    threat_model = "l2"
    Params = LSPParams
    paper = Paper(title="Availability Attacks Create Shortcuts", venue="KDD", year=2022,
                  url="https://arxiv.org/abs/2111.00898", authors="Yu et al.")

    def budget(self) -> float:
        return self.budget_for((32, 32, 3))

    def budget_label(self) -> str:
        if self.params.eps_l2 is not None:
            return f"L2 {self.params.eps_l2:.4g}"
        return f"L2 {self.budget_for((32, 32, 3)):.4g} at 32×32×3, ∝√d"

    def radius(self, shape: tuple[int, int, int]) -> float:
        """ε₂ in pixel units = eps_l2, or eps_lin·√(H·W·C) (a floor export adds half a level per entry
        to the budget: ``Poison.budget_for``)."""
        p = self.params
        return p.eps_l2 if p.eps_l2 is not None else p.eps_lin * math.sqrt(math.prod(shape))

    def craft(self, clean: Split, *, ctx: CraftContext):
        import torch

        from poisonbench.api import export_uint8

        shape = clean.image_shape
        patch = patch_side(shape, self.params.patch_size)
        features = (-(-shape[0] // patch)) * (-(-shape[1] // patch)) * shape[2]
        z = lsp_features(clean.labels.numpy(), num_classes=ctx.num_classes, features=features,
                         class_sep=self.params.class_sep, seed=ctx.seed)
        out = torch.empty_like(clean.images)
        advance = ctx.advance_bar("LSP noise", len(clean))
        for start in range(0, len(clean), CHUNK):
            stop = min(start + CHUNK, len(clean))
            delta = expand(z[start:stop], shape=shape, patch=patch, eps2=self.radius(shape))
            out[start:stop] = export_uint8(clean.images[start:stop], torch.from_numpy(delta),
                                           rounding=self.params.quantize)
            advance(stop - start)
        return out


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, LinearSeparable, {
        "LSP": ({}, "LSP: class-clustered Gaussian patch noise, L2 = 6/255·√d (1.304 on CIFAR)")})
