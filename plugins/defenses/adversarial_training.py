"""PGD adversarial training: every step trains on worst-case images within an ε ball around the batch.

Paper: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, https://arxiv.org/abs/1706.06083. As a defense against
availability poisons it is the "AT" column of ISS (Liu et al., ICML 2023) and APBench; the defaults
follow APBench's ``madrys.py`` (ε 8/255, step 2/255, 10 steps, attack in eval mode, loss on the
adversarial images only).

Threat model: a victim-side defense against L∞/L2-bounded poisons (error-minimising, error-
maximising, shortcut noise within a budget): training on the worst case inside a ball at least as
large as the poison's makes a perturbation of that size useless as a shortcut. It cannot remove
what lies outside the ball (one-pixel and other L0 poisons, functional/unbounded ones). Where it
acts: stage ``training`` — it replaces the loss of every step, after crop/flip and the batch
defenses, on the [0, 1] batch. Test and validation images are untouched (clean accuracy is reported).

Per step: the victim goes to eval mode (BatchNorm running statistics and dropout frozen), a random
start is drawn, ``steps`` PGD steps ascend the cross-entropy (``x ← Π_ball(x + step·sign(∇))``,
clamped to [0, 1]), the victim returns to train mode and the step's loss is the cross-entropy on the
adversarial batch alone. The attack differentiates with respect to the images only, so parameter
gradients are never computed inside it (the same effect as switching them off).

Params (all in [0, 1] pixel units; the normalisation sits inside the model):
  eps          -- radius of the ball: L∞ per pixel (default 8/255), or the L2 norm of the whole
                  image's perturbation with ``norm: l2`` (use ~0.5 there, not 8/255)
  step         -- PGD step size, same units; null = eps/4 (= APBench's 2/255 at 8/255)
  steps        -- PGD iterations per training step (default 10)
  random_start -- "uniform" (Madry: U(−ε, ε) per pixel, then clamp; default), "gaussian"
                  (APBench: step·N(0, 1), no clamp) or "none"
  norm         -- "linf" (default) or "l2" (APBench's L_2: normalised gradient steps, per-image
                  projection onto the ball)

Presets: ``at8`` (ε 8/255, step 2/255), ``at4`` (4/255, 1/255), ``at2`` (2/255, 0.5/255).

Any size and channel count: ε per pixel does not depend on H, W or C; keep 8/255 on Fashion-MNIST
(1 channel) to match the poisons' budgets. Cost: ≈ steps + 1 forward/backward passes per step, so
an epoch costs ≈ (steps + 1)× a plain one (``perf/bench_defense_cost.py`` measures it).
Determinism: the random start comes from a CPU generator seeded by the batch seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from poisonbench.api import Defense, Paper
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class AdversarialTrainingParams:
    eps: float = 8 / 255  # ball radius, pixel fraction (L∞) or whole-image L2 norm
    step: float | None = None  # PGD step size, same units; None = eps / 4
    steps: int = 10  # PGD iterations per training step
    random_start: Literal["uniform", "gaussian", "none"] = "uniform"
    norm: Literal["linf", "l2"] = "linf"

    def __post_init__(self):
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.norm == "linf" and self.eps > 1:
            raise ValueError(f"eps must be in (0, 1] for norm linf (a fraction of the pixel range), got {self.eps}")
        if self.step is not None and not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be > 0 (or null for eps/4), got {self.step}")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be in [1, 1000], got {self.steps}")

    @property
    def step_size(self) -> float:
        return self.step if self.step is not None else self.eps / 4


class AdversarialTraining(Defense):
    """PGD adversarial training (Madry et al.): train on the worst case within an ε ball, every step."""

    name = "adversarial_training"
    stage = "training"
    rank = 10
    defines_loss = True
    Params = AdversarialTrainingParams
    contract_params = {"steps": 1}  # cheapest settings for poisonbench.testing's contract check
    paper = Paper(title="Towards Deep Learning Models Resistant to Adversarial Attacks", venue="ICLR",
                  year=2018, url="https://arxiv.org/abs/1706.06083", authors="Madry et al.")

    def attack_kwargs(self, seed: int) -> dict:
        p = self.params
        return {"eps": p.eps, "step": p.step_size, "steps": p.steps, "norm": p.norm,
                "random_start": p.random_start, "seed": seed}

    def loss(self, f, x, target, *, ctx):
        from poisonbench.plugins.defenses.robust_ops import adversarial_loss

        return adversarial_loss(ctx.model, f, x, target, **self.attack_kwargs(ctx.seed))


@hookimpl
def poisonbench_register_defenses(register):
    register(AdversarialTraining, description="PGD-AT, L∞ ε 8/255, step ε/4, 10 steps (Madry; APBench defaults)")
    for radius in (8, 4, 2):
        register(AdversarialTraining, f"at{radius}", params={"eps": radius / 255, "step": radius / 4 / 255},
                 description=f"PGD-AT, L∞ ε {radius}/255, step {radius / 4:g}/255, 10 steps")
