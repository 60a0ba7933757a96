"""Error-maximising poisons: targeted PGD (P10, P100, P250) and targeted MI-FGSM (M10, M100, M250).

Papers: Fowl et al., "Adversarial Examples Make Strong Poisons" (NeurIPS 2021) for PGD; Dong et
al., "Boosting Adversarial Attacks with Momentum" (CVPR 2018) for MI-FGSM; both as benchmarked by
Sandoval-Segura et al. (CVPR-W 2022), Table 1. The algorithm and its decisions: docs/poisons.md.

Threat model: additive, sample-wise, L∞ ≤ ``eps`` (fraction of the pixel range; 8/255 ≈ 0.0314),
images kept in [0, 1], labels unchanged. Each image is attacked towards the target class
(y + 1) mod K on a surrogate trained on the clean training set (``ctx.surrogate``).

Params (units: pixel fractions unless stated):
  eps          L∞ budget (8/255)
  steps        attack steps; one step is one pass over every image
  step_size    α per step (PGD: 0.4/255 fixed, as the original; MI-FGSM: null = eps/steps)
  restarts     random restarts; the one with the lowest final-pass mean target loss is kept
               (zero init without augmentation makes restarts coincide: one is run)
  target       next = (y + 1) mod K (docs/poisons.md); random = a seeded random other class; untargeted =
               maximise the loss of the true label
  augment      differentiable ±4 px shift and horizontal flip of the input at every step (PGD)
  init         normal = clip(N(0,1)·eps) (PGD), uniform in ±eps, zero (MI-FGSM)
  batch_size   images per attacked batch (512)
  precision    fp32 (default, as the original code) | bf16 | auto (bf16 autocast on CUDA, fp32 on
               CPU). Sign-gradient steps are sensitive to it: measured with perf/bench_bf16_sign.py
               (small_cnn, Fashion-MNIST, CPU), bf16 autocast flips the sign of 4-9% of the gradient
               components (0.3-1.9% of those above the median magnitude) and changes 19-33% of a
               10-20-step artifact's bytes, so the default stays fp32 (reproducible artifacts);
               bf16 is an opt-in speed-up (docs/measurement.md)
  momentum, momentum_in_update   MI-FGSM only: μ (1.0); false = the authors' public code, which
               computes the momentum but steps with sign(∇)
  surrogate    victim name of the surrogate architecture (P10/P100: resnet50 as the paper)
  surrogate_*  the surrogate's training recipe (epochs 40, batch 128, SGD 0.1 Nesterov, …)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import (
    CraftContext,
    Paper,
    Poison,
    Split,
    SurrogateParams,
    UsesSurrogate,
    check_ranges,
    register_presets,
)
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class PgdParams(SurrogateParams):
    eps: float = 8 / 255
    steps: int = 250
    step_size: float | None = 0.4 / 255  # null = eps / steps
    restarts: int = 8
    target: Literal["next", "random", "untargeted"] = "next"
    augment: bool = True
    init: Literal["normal", "uniform", "zero"] = "normal"
    batch_size: int = 512
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # of the attack's forward/backward (see doc)

    def __post_init__(self):
        check_ranges(self, fraction=("eps",), at_least_one=("steps", "restarts", "batch_size"),
                     positive=("step_size",))  # step_size null = eps / steps


@dataclass(frozen=True)
class MifgsmParams(PgdParams):
    step_size: float | None = None  # eps / steps
    augment: bool = False
    init: Literal["normal", "uniform", "zero"] = "zero"
    momentum: float = 1.0
    momentum_in_update: bool = True


class SurrogateAttack(UsesSurrogate, Poison):
    """Base of the family (P*, M*, TAP, SEP): error-maximising, sample-wise L∞ perturbations crafted
    on clean-trained surrogates (``surrogate_*`` params, ``self.surrogate_model``)."""

    kind = "max"
    applied = "sample"
    threat_model = "linf"


class TargetedPGD(SurrogateAttack):
    """Targeted PGD towards (y+1) mod K on a clean-trained surrogate (Fowl et al. 2021)."""

    name = "pgd"
    paper = Paper(title="Adversarial Examples Make Strong Poisons", venue="NeurIPS", year=2021,
                  url="https://arxiv.org/abs/2106.10807", authors="Fowl et al.")
    version = 2  # 2: the crafting shift/flip pads with the normalisation mean, not black
    Params = PgdParams
    contract_params = {"steps": 2, "restarts": 2, "batch_size": 10}

    def attack_config(self, device: str = "cpu"):
        from poisonbench.api import resolved_precision
        from poisonbench.plugins.adversarial import ops

        p = self.params
        momentum = getattr(p, "momentum", None)
        return ops.AttackConfig(
            eps=p.eps, steps=p.steps, step_size=p.step_size if p.step_size is not None else p.eps / p.steps,
            restarts=p.restarts, init=p.init, augment=p.augment, batch_size=p.batch_size,
            momentum=momentum, momentum_in_update=getattr(p, "momentum_in_update", True),
            objective="untargeted" if p.target == "untargeted" else "targeted",
            precision=resolved_precision(p.precision, device), channels_last=True)

    def craft(self, clean: Split, *, ctx: CraftContext):
        import torch

        from poisonbench.api import export_uint8
        from poisonbench.plugins.adversarial import ops

        label = getattr(self, "registry_name", self.name)
        model = self.surrogate_model(ctx, label)
        cfg = self.attack_config(str(ctx.device))
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.params.target == "random":
            targets = ops.random_targets(clean.labels, ctx.num_classes, seed=ctx.seed)
        elif self.params.target == "next":
            targets = ops.next_class_targets(clean.labels, ctx.num_classes)
        else:
            targets = clean.labels.clone()
        n_batches = -(-len(clean) // cfg.batch_size)
        advance = ctx.advance_bar(f"{label} crafting", cfg.effective_restarts * n_batches * cfg.steps)
        delta, _ = ops.craft_perturbation(model, clean.images, targets, cfg=cfg, seed=ctx.seed, device=ctx.device,
                                          advance=advance)
        return export_uint8(clean.images, delta, channels_first=True)  # floor(255·clamp(x/255 + δ) + 0.5)


class TargetedMIFGSM(TargetedPGD):
    """Targeted MI-FGSM (μ = 1, L1-normalised gradients, step eps/steps) on a surrogate (Dong et al. 2018)."""

    name = "mifgsm"
    family = "mifgsm"  # a family of its own, not the parent's "pgd"
    # MI-FGSM itself is Dong et al. (CVPR 2018); as a poison it is benchmarked by the study below.
    paper = Paper(title="Poisons that are learned faster are more effective", venue="CVPR Workshops",
                  year=2022, url="https://arxiv.org/abs/2204.08615", authors="Sandoval-Segura et al.")
    Params = MifgsmParams


@hookimpl
def poisonbench_register_poisons(register):
    # CPU-sized presets (named as such): 20 steps, one restart, a 3-epoch small_cnn surrogate —
    # minutes on a 2-core CPU for ~10k small images. PGD takes 1/255 steps so the 8/255 ball is
    # reached in 8.
    pgd = {f"P{steps}": ({"steps": steps, "surrogate": surrogate},
                         f"{steps}-step targeted PGD, {surrogate} surrogate (Fowl et al. 2021)")
           for steps, surrogate in ((10, "resnet50"), (100, "resnet50"), (250, "resnet18"))}
    pgd["P-cpu"] = ({**CPU_SURROGATE, "steps": 20, "restarts": 1, "step_size": 1 / 255},
                    "CPU-sized targeted PGD: 20 steps of 1/255, 1 restart, 3-epoch small_cnn surrogate")
    register_presets(register, TargetedPGD, pgd)
    mifgsm = {f"M{steps}": ({"steps": steps}, f"{steps}-step targeted MI-FGSM, resnet18 surrogate (Dong et al. 2018)")
              for steps in (10, 100, 250)}
    mifgsm["M-cpu"] = ({**CPU_SURROGATE, "steps": 20}, "CPU-sized targeted MI-FGSM: 20 steps, 3-epoch small_cnn surrogate")
    register_presets(register, TargetedMIFGSM, mifgsm)


CPU_SURROGATE = {"surrogate": "small_cnn", "surrogate_epochs": 3, "surrogate_milestones": [2]}
