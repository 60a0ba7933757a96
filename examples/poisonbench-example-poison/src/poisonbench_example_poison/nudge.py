"""Surrogate nudge: one signed-gradient step per image that makes a clean-trained surrogate more sure.

The second example poison shows the surrogate side of the plugin API. Threat model: additive,
sample-wise, L∞ ≤ eps (fraction of the pixel range). For every image x with label y the poison takes
one step against the gradient of the surrogate's loss, δ = −eps · sign(∇ₓ CE(f(x), y)) — the
one-step, sample-wise cousin of error-minimising "unlearnable examples" (Huang et al., ICLR 2021,
https://arxiv.org/abs/2101.04898), which iterate this against a model trained alongside the noise.

What it uses from ``poisonbench.api``:

- ``SurrogateParams`` / ``UsesSurrogate``: the ``surrogate`` victim and its training recipe as
  params (``surrogate_epochs: 5`` …), the cache key, and ``surrogate_model(ctx, label)`` — the
  harness trains the surrogate once with its own trainer, caches it and hands it over frozen;
- ``ctx.advance_bar``: a progress bar (a no-op outside a run);
- ``batches``/``num_batches``, ``to_float``, ``autocast``/``autocast_dtype``: batching, the uint8 → [0, 1]
  conversion and the device's precision;
- ``export_uint8``: the round-half-up export every built-in poison uses.

Params:
  eps         -- L∞ budget as a fraction of the pixel range (8/255 ≈ 0.031)
  batch_size  -- images per gradient step (memory only; the result does not depend on it)
  precision   -- auto (bf16 autocast on CUDA, fp32 elsewhere), fp32 or bf16 for the surrogate's forward
  surrogate*  -- the surrogate victim and its recipe (a small CNN trained for 5 epochs by default)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from poisonbench.api import Paper, Poison, SurrogateParams, UsesSurrogate, check_ranges


@dataclass(frozen=True)
class NudgeParams(SurrogateParams):
    eps: float = 8 / 255
    batch_size: int = 256  # images per gradient step
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    surrogate: str = "small_cnn"
    surrogate_epochs: int = 5
    surrogate_milestones: list[int] = field(default_factory=lambda: [4])

    def __post_init__(self):
        check_ranges(self, fraction=("eps",), at_least_one=("batch_size",))


class SurrogateNudge(UsesSurrogate, Poison):
    """One signed-gradient step per image lowering a clean-trained surrogate's loss (error-minimising)."""

    name = "surrogate_nudge"
    kind, applied, threat_model = "min", "sample", "linf"  # error-minimising, one δ per image, L∞
    paper = Paper(title="Unlearnable Examples: Making Personal Data Unexploitable", venue="ICLR", year=2021,
                  url="https://arxiv.org/abs/2101.04898", authors="Huang et al.")
    Params = NudgeParams
    contract_params = {"batch_size": 10}

    def craft(self, clean, *, ctx):
        import torch
        import torch.nn.functional as F

        from poisonbench.api import (
            autocast,
            autocast_dtype,
            batches,
            export_uint8,
            num_batches,
            to_float,
        )

        model = self.surrogate_model(ctx, self.name)  # trained, cached, frozen, on ctx.device
        dtype = autocast_dtype(str(ctx.device), self.params.precision)
        advance = ctx.advance_bar(f"{self.name} crafting", num_batches(len(clean), self.params.batch_size))
        steps = []
        with torch.inference_mode(False), torch.enable_grad():  # the harness may call us under no_grad
            for start, stop in batches(len(clean), self.params.batch_size):
                x = to_float(clean.images[start:stop], ctx.device).requires_grad_(True)
                with autocast(str(ctx.device), dtype):
                    loss = F.cross_entropy(model(x).float(), clean.labels[start:stop].to(x.device))
                (grad,) = torch.autograd.grad(loss, x)
                steps.append((-self.params.eps * grad.sign()).cpu())
                advance(1, loss=float(loss.detach()))
        delta = torch.cat(steps) if steps else torch.zeros(0, *clean.images.shape[1:]).permute(0, 3, 1, 2)
        return export_uint8(clean.images, delta, channels_first=True)
