"""Torch code of the error-maximising poisons: batched targeted PGD / MI-FGSM and their export.

Used by ``plugins/adversarial/__init__.py`` (imported inside ``craft`` so listing stays torch-free).
The attack follows docs/poisons.md (P*, M*): per batch of images (fixed order) and per
step, L = mean CE(f(augment(x + δ)), t); δ ← δ − α·sign(direction); δ ← clip(δ, −ε, ε);
δ ← clip(x + δ, 0, 1) − x. PGD's direction is ∇δL; MI-FGSM's is g ← μ·g + ∇δL/‖∇δL‖₁ (per image).

Ordering: the original loops "for step: for batch"; the surrogate is in eval mode, so batches are
independent and we loop "for batch: for step" (better locality, same result) — every random draw
(init noise, augmentation) comes from a generator seeded by (seed, restart, batch), so the result
does not depend on the loop order or the device the noise would otherwise be drawn on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import (
    autocast,
    autocast_dtype,
    derive_seed,
    sample_shift_flip,
    shift_flip,
    to_float,
)


@dataclass(frozen=True)
class AttackConfig:
    """One attack, in pixel-fraction units (8/255 ≈ 0.0314 is 8 intensity levels)."""

    eps: float
    steps: int
    step_size: float
    restarts: int = 1
    init: Literal["normal", "uniform", "zero"] = "normal"
    augment: bool = False
    max_shift: float = 4.0  # pixels, for the differentiable shift of the augmentation
    flip: bool = True
    batch_size: int = 512
    momentum: float | None = None  # None = PGD; a float = MI-FGSM's μ
    momentum_in_update: bool = True  # False: compute g but step with sign(∇) (authors' public code)
    objective: Literal["targeted", "untargeted"] = "targeted"
    precision: Literal["fp32", "bf16"] = "fp32"
    # NHWC activations: tensor cores on CUDA; oneDNN on CPU (small_cnn PGD ~1.5× faster, measured
    # on 2 shared x86 cores, torch 2.14). The caller converts the model to match.
    channels_last: bool = True

    @property
    def effective_restarts(self) -> int:
        """Restarts that can differ: zero init without augmentation makes them all coincide."""
        deterministic = self.init == "zero" and not self.augment
        return 1 if deterministic else self.restarts


def next_class_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The target map of docs/poisons.md: t = (y + 1) mod K."""
    return (labels + 1) % num_classes


def random_targets(labels: torch.Tensor, num_classes: int, *, seed: int) -> torch.Tensor:
    """A uniformly random class other than y per image (seeded)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "random-targets"))
    offset = torch.randint(1, num_classes, labels.shape, generator=gen)
    return (labels + offset) % num_classes


def init_delta(shape: tuple[int, ...], *, cfg: AttackConfig, gen: torch.Generator) -> torch.Tensor:
    """Initial δ on the CPU: N(0,1)·ε clipped to ±ε (docs/poisons.md), uniform in [−ε, ε], or zeros."""
    if cfg.init == "zero":
        return torch.zeros(shape)
    if cfg.init == "uniform":
        return (torch.rand(shape, generator=gen) * 2 - 1) * cfg.eps
    return (torch.randn(shape, generator=gen) * cfg.eps).clamp(-cfg.eps, cfg.eps)




def attack_batch(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: AttackConfig,
    delta: torch.Tensor,
    thetas: torch.Tensor | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``cfg.steps`` steps on one batch; returns (δ, per-image objective of the last step).

    ``x`` float (B, C, H, W) in [0, 1]; ``delta`` the initial δ (same shape, same device);
    ``thetas`` (steps, B, 2, 3) affine matrices of the augmentation, or None.
    The objective is CE to the target (targeted) or −CE to the true label (untargeted); lower is
    better for the attacker, and the step descends it.
    """
    sign = 1.0 if cfg.objective == "targeted" else -1.0
    # Pixels shifted in from outside take the model's normalisation mean (zero in normalised space).
    fill = getattr(model, "mean", None) if thetas is not None else None
    fill = fill if isinstance(fill, torch.Tensor) else None  # a model without a normalisation: black
    g = torch.zeros_like(delta) if cfg.momentum is not None else None
    losses = torch.zeros(x.shape[0], device=x.device)
    for t in range(cfg.steps):
        delta.requires_grad_(True)
        inp = x + delta
        if thetas is not None:
            inp = shift_flip(inp, thetas[t], fill=fill)
        with autocast(str(x.device), autocast_dtype(str(x.device), cfg.precision)):
            logits = model(inp)
        losses = sign * F.cross_entropy(logits.float(), targets, reduction="none")
        (grad,) = torch.autograd.grad(losses.mean(), delta)
        with torch.no_grad():
            direction = grad
            if g is not None:
                l1 = grad.abs().sum(dim=tuple(range(1, grad.dim())), keepdim=True)
                g = cfg.momentum * g + grad / l1.clamp_min(1e-30)
                direction = g if cfg.momentum_in_update else grad
            delta = delta.detach() - cfg.step_size * direction.sign()
            delta = delta.clamp_(-cfg.eps, cfg.eps)
            delta = (x + delta).clamp_(0.0, 1.0).sub_(x)
        if on_step is not None:
            on_step(t, losses.detach())
    return delta.detach(), losses.detach()


def attack_set(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: AttackConfig,
    seed: int,
    restart: int,
    device: torch.device,
    advance: Callable[..., None] | None = None,
) -> tuple[torch.Tensor, float]:
    """One restart over the whole set: (δ float N×C×H×W on ``device``, mean last-pass objective)."""
    n = images.shape[0]
    delta_all = torch.empty((n, images.shape[3], images.shape[1], images.shape[2]), device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)

    def on_step(t: int, losses: torch.Tensor) -> None:
        if advance is not None:
            fields = {"restart": restart + 1, "step": t + 1}
            if t % 10 == 9 or t == cfg.steps - 1:  # .item() syncs the device: not every step
                fields["loss"] = round(float(losses.mean()), 4)
            advance(1, **fields)

    for b, start in enumerate(range(0, n, cfg.batch_size)):
        stop = min(start + cfg.batch_size, n)
        x = to_float(images[start:stop], device)
        gen = torch.Generator().manual_seed(derive_seed(seed, "attack", restart, b))
        delta = init_delta(tuple(x.shape), cfg=cfg, gen=gen).to(device)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            delta = delta.contiguous(memory_format=torch.channels_last)
        thetas = None
        if cfg.augment:
            thetas = sample_shift_flip(cfg.steps, x.shape[0], height=x.shape[2], width=x.shape[3],
                                       max_shift=cfg.max_shift, flip=cfg.flip, gen=gen).to(device)
        delta, losses = attack_batch(model, x, targets[start:stop].to(device), cfg=cfg, delta=delta,
                                     thetas=thetas, on_step=on_step)
        delta_all[start:stop] = delta
        total += losses.double().sum()
    return delta_all, float(total) / max(n, 1)


def craft_perturbation(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    cfg: AttackConfig,
    seed: int,
    device: str | torch.device = "cpu",
    advance: Callable[..., None] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """δ (N, C, H, W) for a whole set and the score of every restart run; export with
    ``export_uint8(images, delta, channels_first=True)``.

    Keeps the restart whose last pass has the lowest mean objective over the whole set (docs/poisons.md;
    ties keep the earlier restart). ``advance(n=1, **fields)`` is called per (restart, batch, step).
    """
    device = torch.device(device)
    model.eval()
    best: torch.Tensor | None = None
    scores: list[float] = []
    with torch.inference_mode(False), torch.enable_grad():  # callers may be in no_grad
        for restart in range(cfg.effective_restarts):
            delta, score = attack_set(model, images, targets, cfg=cfg, seed=seed, restart=restart,
                                      device=device, advance=advance)
            if best is None or score < min(scores):
                best = delta
            scores.append(score)
    assert best is not None
    return best, scores
