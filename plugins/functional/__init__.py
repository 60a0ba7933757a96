"""Functional error-maximising poisons FC, FCS, FCSD: ReColorAdv colour map, StAdv flow, additive δ.

Paper: Laidlaw & Feizi, "Functional Adversarial Attacks" (NeurIPS 2019) — ReColorAdv (C), combined
with StAdv (S, Xiao et al. 2018) and an additive δ (D) — as benchmarked by Sandoval-Segura et al.
(CVPR-W 2022), Table 1. The algorithm and its decisions: docs/poisons.md, section FC, FCS, FCSD.

Threat model ``functional`` (not an L∞ ball): every image is attacked on its own (sample-wise,
untargeted) through x → colour lattice (C) → flow (S) → + δ (D), minimising the Carlini–Wagner margin
Z_y − max_{j≠y} Z_j of a clean-trained surrogate plus 0.05 × the smoothness penalties, with Adam
(lr 1e-3, 100 steps from the identity, last iterate kept). ``budget()`` is None; the manifest
records the component bounds (``component_bounds``) and the harness records the measured L∞.

Params:
  components   which of "color", "flow", "delta" are on (any order; always applied C → S → D):
               FC = [color], FCS = [color, flow], FCSD = [color, flow, delta] (the family default)
  color_bound  max change of each lattice node per channel, in scaled CIELUV units
               (L/100, (u+100)/200, (v+100)/200): 0.06 ≈ 6 L* or 12 u*/v* units
  lattice      colour-lattice nodes along (L, u, v): [16, 32, 32]
  flow_bound   max displacement per pixel and axis in grid_sample units ([-1, 1] spans the
               image): 0.05 = 2.5 % of the width (0.8 px on 32 px)
  eps          L∞ bound of δ as a fraction of the pixel range (8/255)
  steps, lr    Adam iterations (100) and learning rate (1e-3)
  reg_weight   weight of the colour + flow smoothness penalties (0.05; δ's weight is 0)
  batch_size   images attacked together (512; images are independent, so only speed depends on it)
  precision    auto = bf16 autocast of the surrogate's forward on CUDA, fp32 on CPU; the colour,
               flow and δ arithmetic is always fp32
  surrogate    victim name of the surrogate architecture (resnet18); surrogate_* its training recipe
               (``ctx.surrogate``; shared with P*/M*, so one surrogate per seed serves all)

Grayscale (1-channel) images: replicated to RGB for the colour map and averaged back (a grey
output stays exactly grey); gray colours sit on the lattice's u = v = 0.5 axis, so effectively the
L axis of the lattice acts. Flow and δ work on any channel count; the colour map needs 1 or 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from poisonbench.api import CraftContext, Paper, Poison, Split, SurrogateParams, UsesSurrogate
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl

Component = Literal["color", "flow", "delta"]
ORDER = ("color", "flow", "delta")


@dataclass(frozen=True)
class FunctionalParams(SurrogateParams):
    components: list[Component] = field(default_factory=lambda: list(ORDER))
    color_bound: float = 0.06
    lattice: list[int] = field(default_factory=lambda: [16, 32, 32])
    flow_bound: float = 0.05
    eps: float = 8 / 255
    steps: int = 100
    lr: float = 1e-3
    reg_weight: float = 0.05
    batch_size: int = 512
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self):
        if not self.components or len(set(self.components)) != len(self.components):
            raise ValueError(f"components must be a non-empty list without repeats, got {self.components}")
        # Canonical order (the composition is always C → S → D), so equal poisons share a cache key.
        object.__setattr__(self, "components", sorted(self.components, key=ORDER.index))
        for key in ("color_bound", "flow_bound", "eps", "lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.eps > 1 or self.reg_weight < 0:
            raise ValueError("eps must be at most 1 (a pixel fraction) and reg_weight non-negative")
        if len(self.lattice) != 3 or min(self.lattice) < 2:
            raise ValueError(f"lattice must be 3 node counts of at least 2, got {self.lattice}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")


class Functional(UsesSurrogate, Poison):
    """ReColorAdv + StAdv + δ error-maximising poison on a surrogate (Laidlaw & Feizi 2019)."""

    name = "functional"
    paper = Paper(title="Functional Adversarial Attacks", venue="NeurIPS", year=2019,
                  url="https://arxiv.org/abs/1906.00001", authors="Laidlaw & Feizi")
    kind = "max"
    applied = "sample"
    threat_model = "functional"
    version = 1
    Params = FunctionalParams
    contract_params = {"steps": 2, "batch_size": 10}

    def budget(self) -> None:
        return None  # not an L∞ ball: see component_bounds

    def component_bounds(self) -> dict[str, float]:
        p = self.params
        bounds = {"color": p.color_bound, "flow": p.flow_bound, "delta": p.eps}
        return {c: bounds[c] for c in ORDER if c in p.components}

    def manifest_extras(self) -> dict:
        return {"component_bounds": self.component_bounds(),
                "component_units": {"color": "scaled CIELUV per channel",
                                    "flow": "grid_sample units ([-1, 1] spans the image)",
                                    "delta": "fraction of the pixel range (L∞)"}}

    def attack_config(self, device: str = "cpu"):
        from poisonbench.api import resolved_precision
        from poisonbench.plugins.functional import ops

        p = self.params
        return ops.AttackConfig(color="color" in p.components, flow="flow" in p.components,
                                delta="delta" in p.components, color_bound=p.color_bound,
                                flow_bound=p.flow_bound, eps=p.eps, lattice_shape=tuple(p.lattice),
                                steps=p.steps, lr=p.lr, reg_weight=p.reg_weight,
                                precision=resolved_precision(p.precision, device))

    def craft(self, clean: Split, *, ctx: CraftContext):
        from poisonbench.plugins.functional import ops

        channels, label = clean.image_shape[2], getattr(self, "registry_name", self.name)
        if "color" in self.params.components and channels not in (1, 3):
            raise BadInput(f"poison '{label}': the colour component needs 1 or 3 channels, the "
                           f"data has {channels} (use components without 'color')")
        model = self.surrogate_model(ctx, label)
        cfg, size = self.attack_config(ctx.device), self.params.batch_size
        advance = ctx.advance_bar(f"{label} crafting", -(-len(clean) // size) * cfg.steps)
        return ops.craft_poison(model, clean.images, clean.labels, cfg=cfg, batch_size=size,
                                device=ctx.device, on_step=lambda m: advance(1, margin=round(m, 3)))


@hookimpl
def poisonbench_register_poisons(register):
    register(Functional)
    for name, components, what in (("FC", ["color"], "C"), ("FCS", ["color", "flow"], "C+S"),
                                   ("FCSD", list(ORDER), "C+S+D")):
        register(Functional, name, params={"components": components},
                 description=f"100-step functional {what} (Laidlaw & Feizi 2019)")
    # CPU-sized (named as such): FCSD with 5 Adam steps on a 3-epoch small_cnn surrogate.
    register(Functional, "FCSD-cpu", params={"components": list(ORDER), "steps": 5, "surrogate": "small_cnn",
                                             "surrogate_epochs": 3, "surrogate_milestones": [2]},
             description="CPU-sized functional C+S+D: 5 Adam steps, 3-epoch small_cnn surrogate")
