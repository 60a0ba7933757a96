"""REM: robust error-minimising noise (Fu et al., ICLR 2022), unlearnable examples that survive adversarial training.

Threat model: additive L∞ noise, ``eps`` = ρ_u = 8/255, sample-wise, integer grey levels by
construction (stored as whole levels every step; the crafting model trains on the rounded noise).
Objective (min-min-max): min_θ Σ_i min_{|δ_i|≤ρ_u} E_{t∼T} max_{|r_i|≤ρ_a} CE(f_θ(t(x_i+δ_i) + r_i), y_i),
with T the training augmentation (crop with zero padding ``crop_padding`` + horizontal flip) and
ρ_a = ``rho_a`` < ρ_u the adversarial-training radius the noise is made to survive (ρ_a = 0 reduces
REM to error-minimising noise with EOT). The crafting model is trained from scratch during
crafting (adversarially, radius ρ_a), not taken from the harness's clean-trained surrogates.
Algorithm and step order: ``rem_ops`` (the authors' released code, read as follows):

* every PGD (noise and adversarial training) runs with the model in eval mode, the SGD step in
  train mode; the loader shuffles, drops the last partial batch and cycles;
* after the last training step the noise of *every* image is regenerated with the final model
  (the released code iterates its shuffled drop-last loader, leaving ≈80 images with older noise);
* rounding is half up (the released code uses numpy's half-to-even: differences are negligible).

Params (units: pixel fractions unless stated):
  eps                 ρ_u, the noise budget (8/255)
  rho_a               adversarial-training radius during crafting (4/255; must be < eps)
  noise_steps         sign-descent steps per noise update (10), step ``noise_step_size`` (null = eps/5)
  eot_samples         augmentations averaged per noise step (5)
  adv_steps           PGD steps of the inner maximisation (10), step ``adv_step_size`` (null = rho_a/5)
  train_steps         crafting-model SGD steps [batches] (5000 ≈ 12.8 CIFAR-10 epochs)
  batch_size          images per step (128)
  lr, lr_decay_steps, lr_gamma   SGD lr 0.1, × lr_gamma (0.1) every lr_decay_steps (2000) steps
  momentum, weight_decay         0.9, 5e-4
  model               victim-registry name of the crafting model, built fresh (resnet18)
  crop_padding, flip  the augmentation T (4 px, true)
  round_steps         steps per round [steps]: the craft state is saved after each round (and
                      every round_steps batches of the final pass); an interrupted craft resumes
                      from its last finished round. Does not change the result.

Resuming: the state (model, momentum buffers, noise, round) lives under ``<cache
dir>/craft-state/`` (see ``poisonbench.api.craft_state``) and is removed once the craft finishes.

Presets: ``REM`` (the released script ``gen_rem.sh``, CIFAR-10 settings: about a GPU-day on
ResNet-18) and ``REM-cpu`` (CPU-sized, not paper-faithful: small_cnn, 200 steps (lr decay every 80),
4 noise steps of 2/255 with one augmentation each, 2 PGD steps of 2/255 inside ρ_a = 4/255; a few
minutes on 9,000 Fashion-MNIST images on 2 cores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from poisonbench.api import CraftContext, Paper, Split, check_ranges, register_presets
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins.unlearnable import ErrorMinimising


@dataclass(frozen=True)
class RemParams:
    eps: float = 8 / 255  # ρ_u, L∞ budget as a pixel fraction
    rho_a: float = 4 / 255  # adversarial-training radius, pixel fraction (< eps)
    noise_steps: int = 10
    noise_step_size: float | None = None  # pixel fraction; null = eps / 5
    eot_samples: int = 5  # augmentations per noise step
    adv_steps: int = 10
    adv_step_size: float | None = None  # pixel fraction; null = rho_a / 5
    train_steps: int = 5000  # crafting-model SGD steps (batches)
    batch_size: int = 128  # images
    lr: float = 0.1
    lr_decay_steps: int = 2000  # steps between lr decays
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    model: str = "resnet18"  # victim-registry name, trained from scratch during crafting
    crop_padding: int = 4  # pixels of zero padding of the random crop
    flip: bool = True  # random horizontal flip in the augmentation
    round_steps: int = 100  # steps between saved craft states (resume points)

    def __post_init__(self):
        check_ranges(self, fraction=("eps",), positive=("noise_step_size", "adv_step_size", "lr"),
                     at_least_one=("noise_steps", "eot_samples", "train_steps", "batch_size", "lr_decay_steps",
                                   "round_steps"),
                     non_negative=("adv_steps", "crop_padding", "momentum", "weight_decay", "lr_gamma"))
        if self.eps * 255 > 127:
            raise ValueError("eps above 127/255 cannot be stored as int8 grey levels")
        if not 0 <= self.rho_a < self.eps:
            raise ValueError(f"rho_a must be in [0, eps), got {self.rho_a} (eps {self.eps})")

    @property
    def noise_alpha(self) -> float:
        return self.noise_step_size if self.noise_step_size is not None else self.eps / 5

    @property
    def adv_alpha(self) -> float:
        return self.adv_step_size if self.adv_step_size is not None else self.rho_a / 5


class RobustUnlearnable(ErrorMinimising):
    """Robust error-minimising noise (REM): min-min-max with an adversarially trained crafting model.

    Error-minimising and L∞ (the family base); ``stats``: steps run and the crafting model's robust
    loss/accuracy over its last round.
    """

    name = "rem"
    applied = "sample"
    paper = Paper(title="Robust Unlearnable Examples: Protecting Data Against Adversarial Learning",
                  venue="ICLR", year=2022, url="https://openreview.net/forum?id=baUQQPwQiAg",
                  authors="Fu et al.")
    Params = RemParams
    contract_params: ClassVar[dict[str, Any]] = {
        "model": "small_cnn", "train_steps": 2, "noise_steps": 2, "eot_samples": 1, "adv_steps": 1,
        "batch_size": 8,
    }

    def craft(self, clean: Split, *, ctx: CraftContext):
        from poisonbench.plugins.unlearnable import rem_ops

        label = getattr(self, "registry_name", self.name)
        params = {k: v for k, v in asdict(self.params).items() if k != "round_steps"}
        poisoned, self.stats = rem_ops.craft(clean, ctx=ctx, p=self.params, label=label, params_json=params)
        return poisoned


CPU_PRESET = {"model": "small_cnn", "train_steps": 200, "lr_decay_steps": 80, "noise_steps": 4,
              "noise_step_size": 2 / 255, "eot_samples": 1, "adv_steps": 2, "adv_step_size": 2 / 255,
              "round_steps": 20}


PRESETS = {  # name: (params, description)
    "REM": ({}, "robust error-minimising noise, ρ_u 8/255, ρ_a 4/255, 5000 steps, EOT 5 (Fu et al. 2022)"),
    "REM-cpu": (CPU_PRESET, "CPU-sized REM (not paper-faithful): small_cnn, 200 steps, 4 noise steps of 2/255, "
                            "EOT 1, 2 PGD steps of 2/255"),
}


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, RobustUnlearnable, PRESETS)
