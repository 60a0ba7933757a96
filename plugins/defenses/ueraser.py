"""UEraser: train on heavy random augmentations (kornia plasma, channel shuffle, TrivialAugment), optionally the worst of K.

Paper: Qin, Gao, Zhao, Ye and Xu, "Learning the Unlearnable: Adversarial Augmentations Suppress
Unlearnable Example Attacks", arXiv 2023, https://arxiv.org/abs/2303.15127 (code: lafeat/ueraser).
The configuration is APBench's ``defense/ueraser.py``, the code behind APBench's "U-max" column.

Threat model: a victim-side defense against any availability poison (the poisoner controls the
training images, not the training). Where it acts: training batches only (stage ``batch``, and it
defines the loss), after crop/flip, on the [0, 1] batch. Test and validation images are untouched.

The augmentation ``U`` (kornia 0.9.0, pinned in pyproject.toml; APBench pins 0.6.12, whose classes
and TrivialAugment policy are the same):
``RandomPlasmaBrightness(roughness 0.3–0.7, intensity 0.5–1.0, p=plasma_p)`` →
``RandomPlasmaContrast(roughness 0.3–0.7, p=plasma_p)`` → ``RandomChannelShuffle(p=0.5)`` →
``TrivialAugment()`` (one op per call for the whole batch, magnitudes per image).

The loss: in the first ``adversarial_epochs`` epochs every step draws ``repeats`` fresh copies
``U(x)``, runs one train-mode forward per copy (BatchNorm statistics update once per copy, as in
APBench's loop; the library's single pass over the tiled K·B batch shares statistics and is not the
same), and minimises the mean over images of the per-image maximum cross-entropy. Later epochs use
one copy and plain cross-entropy. Training accuracy counts the last copy's logits (as APBench).

Params:
  repeats            -- K, augmented copies per step in adversarial epochs (default 5)
  adversarial_epochs -- how many epochs, from the first, use the K-max loss: 0 = UEraser-Lite,
                        "all" = UEraser-Max, 50 = UEraser (APBench's and the LSP script's value for
                        200 epochs; the suite owns the schedule, so on 100 epochs it is the first half)
  jpeg               -- "none"; "random" (APBench's ``U_jpeg``: one quality in [10, 99] per call,
                        JPEG before ``U``); "q10_after" (the library's ``UEraserJPEG``: JPEG q10 after)
  plasma_p           -- probability of each plasma op (default 1.0; APBench uses 0.8 with jpeg)

Presets: ``ueraser_lite`` (0), ``ueraser`` (the standard, 50), ``ueraser_max`` ("all"),
``ueraser_jpeg`` (jpeg "random", plasma_p 0.8).

Decisions: JPEG is applied per image (APBench encodes the stacked batch as one tall JPEG, which
leaks blocks across image borders, and subtracts a 0.5/255 bias; neither is kept) and is detached:
no straight-through gradient, since images carry none here. Augmentations run in fp32 even under
bf16 autocast. Because the copies are drawn inside the loss, a ``cutout`` in the same chain acts
before ``U`` rather than after it.

Cost: Lite ≈ one plain step plus augmentation; an adversarial epoch ≈ K× the compute and K× the
activation memory. On 1-channel images (Fashion-MNIST) the channel shuffle is a no-op; plasma, every
TrivialAugment op and JPEG (mode L) work on C = 1. Determinism: copy k of a step draws from
``derive_seed(batch seed, "copy", k)``; kornia's global-RNG draws are forked, seeded and restored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import Defense, Paper
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class UEraserParams:
    repeats: int = 5  # K: augmented copies per step in adversarial epochs
    adversarial_epochs: int | Literal["all"] = 50  # epochs from the first with the K-max loss; 0 = Lite
    jpeg: Literal["none", "random", "q10_after"] = "none"  # JPEG round trip inside the augmentation
    plasma_p: float = 1.0  # probability of each plasma op

    def __post_init__(self):
        if not 1 <= self.repeats <= 64:
            raise ValueError(f"repeats must be in [1, 64], got {self.repeats}")
        if self.adversarial_epochs != "all" and self.adversarial_epochs < 0:
            raise ValueError(f"adversarial_epochs must be >= 0 or 'all', got {self.adversarial_epochs}")
        if not 0.0 <= self.plasma_p <= 1.0:
            raise ValueError(f"plasma_p must be in [0, 1], got {self.plasma_p}")


class UEraser(Defense):
    """UEraser: kornia plasma + channel shuffle + TrivialAugment per batch, max loss over K copies."""

    name = "ueraser"
    stage = "batch"
    rank = 10
    defines_loss = True
    Params = UEraserParams
    contract_params = {"repeats": 2}  # cheapest settings for poisonbench.testing's contract check
    paper = Paper(title="Learning the Unlearnable: Adversarial Augmentations Suppress Unlearnable Example Attacks",
                  venue="arXiv", year=2023, url="https://arxiv.org/abs/2303.15127", authors="Qin et al.")

    def check_data(self, *, image_shape):
        if self.params.jpeg != "none" and image_shape[2] not in (1, 3):
            return [("jpeg", f"param 'jpeg': JPEG needs 1 or 3 channels, the images have {image_shape[2]}")]
        return []

    def copies(self, epoch: int) -> int:
        """Augmented copies per step in (0-based) ``epoch``: ``repeats`` while adversarial, else 1."""
        limit = self.params.adversarial_epochs
        return self.params.repeats if (limit == "all" or epoch < limit) else 1

    def loss(self, f, x, target, *, ctx):
        from poisonbench.plugins.defenses.robust_ops import ueraser_loss

        return ueraser_loss(f, x, target, seed=ctx.seed, repeats=self.copies(ctx.epoch),
                            plasma_p=self.params.plasma_p, jpeg=self.params.jpeg)


@hookimpl
def poisonbench_register_defenses(register):
    register(UEraser, description="UEraser (standard): K=5 max-loss augmentation for the first 50 epochs")
    register(UEraser, "ueraser_lite", params={"adversarial_epochs": 0},
             description="UEraser-Lite: one kornia augmentation per step, plain cross-entropy")
    register(UEraser, "ueraser_max", params={"adversarial_epochs": "all"},
             description="UEraser-Max: K=5 max-loss augmentation in every epoch (APBench's U-max)")
    register(UEraser, "ueraser_jpeg", params={"jpeg": "random", "plasma_p": 0.8},
             description="UEraser with APBench's random-quality JPEG before the augmentation")
