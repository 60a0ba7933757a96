"""COIN: move every pixel by a random sub-pixel offset (bilinear interpolation) in each training batch.

Paper: Li, Wang, Yu, Hu, Zhou, Zhang and Zhang, "Detecting and Corrupting Convolution-based
Unlearnable Examples", AAAI 2025, https://arxiv.org/abs/2311.18403 (code: wxldragon/COIN, whose
``train.py`` does not run as committed; the transform here follows the complete ``COIN_trans`` of
the authors' later DUNE code).

Threat model: a victim-side defense aimed at convolution-based (multiplicative, unbounded) poisons
such as CUDA; it randomises the pixel grid so a class-wise blur kernel no longer lines up. Where it
acts: training batches only (stage ``batch``), after crop/flip, on the [0, 1] batch. Test and
validation images are untouched.

The transform, per image and per step: ``dx, dy ~ U(−α, α)`` independently for every pixel (one
field per image, shared by its channels); output pixel (i, j) is the bilinear interpolation of the
image at (i + dy, j + dx), with scipy's ``map_coordinates(order=1, mode="wrap")`` boundary rule
(coordinates outside [0, N−1] wrap modulo N−1, not N); the result is clipped to [0, 1] and truncated
to grey levels (``floor(255·x) / 255``), as the reference's ``np.uint8`` cast does.

Params:
  alpha -- maximum displacement in pixels (default 2.0 = the reference's severity 4; severities
           1–7 are 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2). Kept at 2.0 on 28 px images; scale ∝ H/32
           for large images by setting it (an unverified rule of thumb).

Any size and channel count: the field is per pixel of an H×W grid; on 1-channel images
(Fashion-MNIST) the single channel is resampled exactly like each RGB channel. ``alpha`` must stay
below the smaller image side minus one (larger offsets wrap around the whole image). Cost: one
gather per batch on the device (≈ free next to the forward pass). Determinism: the offsets come
from a CPU generator seeded by the batch seed, identical on every device. The only deviation from
the reference: a 1e-3 grey-level guard before the truncation, so exact grey levels stay exact
(the reference's float error can drop such a pixel by one level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from poisonbench.api import Defense, Paper
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class CoinParams:
    alpha: float = 2.0  # maximum per-pixel displacement, in pixels (severity 4)

    def __post_init__(self):
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a number of pixels >= 0, got {self.alpha}")


class Coin(Defense):
    """COIN: random per-pixel bilinear displacement of up to alpha pixels, redrawn every batch."""

    name = "coin"
    stage = "batch"
    rank = 10
    Params = CoinParams
    paper = Paper(title="Detecting and Corrupting Convolution-based Unlearnable Examples", venue="AAAI",
                  year=2025, url="https://arxiv.org/abs/2311.18403", authors="Li, Wang et al.")

    def check_data(self, *, image_shape):
        side = min(image_shape[0], image_shape[1])
        if self.params.alpha >= max(1, side - 1):
            return [("alpha", f"param 'alpha': {self.params.alpha:g} px must be below {max(1, side - 1)} "
                              f"(the smaller image side {side} minus one)")]
        return []

    def identity_on(self, *, image_shape):
        return "alpha 0 moves no pixel: coin is the identity" if self.params.alpha == 0 else None

    def batch(self, x, target, *, ctx):
        from poisonbench.plugins.defenses.robust_ops import coin_transform

        return coin_transform(x, alpha=self.params.alpha, seed=ctx.seed), target


@hookimpl
def poisonbench_register_defenses(register):
    register(Coin)
