"""TAP, untargeted: the error-maximising adversarial poison Fowl et al. released (NeurIPS 2021).

The targeted variant (``pgd``: P10, P100, P250) pushes every image towards (y + 1) mod K; the
poison the authors actually released — and the one most later papers compare against as "TAP" —
is the untargeted recipe (``--recipe untargeted``): ascend the cross-entropy of the *true* label.
Everything else is the targeted attack's machinery, unchanged: R = 8 restarts of T = 250 signed
steps of 0.05·ε = 0.4/255, δ initialised as clip(ε·N(0, 1), ±ε), batches of 512 in fixed order, a
fresh differentiable shift/flip per image and step, the surrogate in eval mode, δ projected on the
ε-ball and the [0, 1] box after every step. The objective minimised is −CE(f(A(x + δ)), y); the
restart kept is the one with the lowest last-pass mean objective, i.e. the largest mean CE (the
loss of each batch is measured before its update, as the released code does).

Threat model: additive L∞, ``eps`` 8/255, sample-wise, every training image poisoned.
Surrogate: the harness's clean-trained surrogate (any registered victim with the 40-epoch recipe,
``surrogate_*`` params), cached and shared with the targeted presets of the same recipe.

Presets: ``TAP`` (the released recipe: 250 steps, 8 restarts, ResNet-18 surrogate; GPU-hours on
CIFAR-10) and ``TAP-cpu`` (CPU-sized, not paper-faithful: 20 steps of 1/255, one restart, on a
3-epoch small_cnn surrogate — the same surrogate as the demo's targeted PGD poison).
Params: those of ``pgd`` (see the adversarial family), with ``target`` fixed to ``untargeted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import register_presets
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins.adversarial import PgdParams, TargetedPGD


@dataclass(frozen=True)
class TapParams(PgdParams):
    target: Literal["untargeted"] = "untargeted"  # ascend CE of the true label


class UntargetedTAP(TargetedPGD):
    """Untargeted adversarial poison (TAP as released): ascend CE(f(A(x + δ)), y) on a clean surrogate.

    Kind (max), application (sample-wise), threat model (L∞), paper (Fowl et al., NeurIPS 2021) and
    contract params are the targeted attack's, inherited: the same paper, the other recipe.
    """

    name = "tap"
    family = "tap"
    Params = TapParams


CPU_PRESET = {"steps": 20, "step_size": 1 / 255, "restarts": 1, "surrogate": "small_cnn",
              "surrogate_epochs": 3, "surrogate_milestones": [2]}
PRESETS = {  # name: (params, description)
    "TAP": ({}, "untargeted adversarial poison as released: 250 steps, 8 restarts, resnet18 surrogate "
                "(Fowl et al. 2021)"),
    "TAP-cpu": (CPU_PRESET, "CPU-sized untargeted TAP (not paper-faithful): 20 steps of 1/255, 1 restart, "
                            "3-epoch small_cnn surrogate"),
}


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, UntargetedTAP, PRESETS)
