"""Batch defenses: Gaussian noise (ECLIPSE), cutout, mixup and cutmix, applied per batch on the device.

They act after random crop/flip on float images in [0, 1] (before normalisation, so std and fill
values are pixel units), in the fixed order noise → cutout → mixup | cutmix. Every draw comes from
the batch's seed (training seed, defense name, epoch, step): a resumed run is bit-identical.
Mixup and cutmix change the labels (a ``MixedTarget``) and so the loss; at most one of them per
chain. Their recorded training accuracy is the soft one, ``Σ (1-λ)·1(ŷ=y_a) + λ·1(ŷ=y_b) / N``,
not comparable with plain runs. Test and validation images are untouched.

Threat model: a victim who may augment its own training data, knowing nothing of the poison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import Defense, MixedTarget, Paper

ECLIPSE = Paper(title="ECLIPSE: Expunging Clean-label Indiscriminate Poisons via Sparse Diffusion Purification",
                venue="ESORICS", year=2024, url="https://arxiv.org/abs/2406.15093", authors="Wang et al.")
CUTOUT = Paper(title="Improved Regularization of Convolutional Neural Networks with Cutout",
               venue="arXiv", year=2017, url="https://arxiv.org/abs/1708.04552", authors="DeVries and Taylor")
MIXUP = Paper(title="mixup: Beyond Empirical Risk Minimization", venue="ICLR", year=2018,
              url="https://arxiv.org/abs/1710.09412", authors="Zhang et al.")
CUTMIX = Paper(title="CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features",
               venue="ICCV", year=2019, url="https://arxiv.org/abs/1905.04899", authors="Yun et al.")


@dataclass(frozen=True)
class NoiseParams:
    std: float = 0.05  # per-pixel Gaussian std, [0, 1] pixel units (ECLIPSE --std)
    gray_p: float = 0.0  # probability an RGB image is first made grey (ECLIPSE --p 0.4); skipped for C=1
    quantize: Literal["floor", "none"] = "floor"  # floor(255·x)/255 as ECLIPSE's ToPILImage does

    def __post_init__(self):
        if self.std < 0 or not 0 <= self.gray_p <= 1:
            raise ValueError("std must be >= 0 and gray_p in [0, 1]")


class GaussianNoise(Defense):
    """Gaussian noise augmentation, ECLIPSE's corruption-compensation module (fresh noise per batch)."""

    name = "gaussian_noise"
    stage = "batch"
    rank = 10
    Params = NoiseParams
    paper = ECLIPSE

    def batch(self, x, target, *, ctx):
        from poisonbench.plugins.defenses import ops

        p = self.params
        return ops.gaussian_noise(x, std=p.std, gray_p=p.gray_p, quantize=p.quantize,
                                  generator=ctx.generator), target


@dataclass(frozen=True)
class CutoutParams:
    length: int | Literal["auto"] = "auto"  # box side in pixels; auto = round(H/2) (16 at 32 px, 14 at 28)


class Cutout(Defense):
    """Cutout: one length×length box per image set to 0 (black, in pixel space), centre anywhere.

    The box is clipped at the borders (so often smaller); the same box in all channels. APBench and
    ISS use length 16 at 32 px after ToTensor without normalisation, hence the black fill.
    """

    name = "cutout"
    stage = "batch"
    rank = 20
    Params = CutoutParams
    paper = CUTOUT

    def length_for(self, height: int) -> int:
        return int(round(height / 2)) if self.params.length == "auto" else int(self.params.length)

    def check_data(self, *, image_shape):
        length, side = self.length_for(image_shape[0]), min(image_shape[:2])
        if length < 1 or length > side:
            return [("length", f"length {length} does not fit {image_shape[0]}×{image_shape[1]} images "
                               f"(1..{side} pixels)")]
        return []

    def batch(self, x, target, *, ctx):
        from poisonbench.plugins.defenses import ops

        return ops.cutout(x, length=self.length_for(x.shape[2]), generator=ctx.generator), target


@dataclass(frozen=True)
class MixParams:
    alpha: float = 1.0  # Beta(alpha, alpha) for the mixing weight (1 = uniform)
    prob: float = 1.0  # probability an image is mixed
    per_sample: bool = True  # one weight per image (kornia/APBench); false = one per batch

    def __post_init__(self):
        if self.alpha <= 0 or not 0 <= self.prob <= 1:
            raise ValueError("alpha must be positive and prob in [0, 1]")


class _Mixing(Defense):
    stage = "batch"
    rank = 30
    defines_loss = True  # the mixed cross-entropy of the default loss, on a MixedTarget
    Params = MixParams

    def op(self):
        raise NotImplementedError

    def batch(self, x, target, *, ctx):
        if isinstance(target, MixedTarget):
            raise ValueError(f"{self.name}: the batch is already mixed")
        p = self.params
        mixed, y_a, y_b, lam = self.op()(x, target, alpha=p.alpha, prob=p.prob, per_sample=p.per_sample,
                                         generator=ctx.generator, seed=ctx.seed)
        return mixed, MixedTarget(y_a, y_b, lam)


class Mixup(_Mixing):
    """Mixup as APBench runs it (kornia ``RandomMixUpV2``): x' = (1-λ)x + λ x[perm], λ ~ U(0,1) per image."""

    name = "mixup"
    paper = MIXUP

    def op(self):
        from poisonbench.plugins.defenses import ops

        return ops.mixup


class Cutmix(_Mixing):
    """CutMix as APBench runs it (kornia ``RandomCutMixV2``): a partner's box pasted, λ = its area.

    Implemented natively: kornia's newer ``use_correct_lambda`` returns 1 − area, which would invert
    APBench's loss weights. Preset ``cutmix_batch`` is the CutMix paper's recipe (prob 0.5, one box
    per batch).
    """

    name = "cutmix"
    paper = CUTMIX

    def op(self):
        from poisonbench.plugins.defenses import ops

        return ops.cutmix
