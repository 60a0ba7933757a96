"""Torch code of the unlearnable-examples poisons (SU, CU): bi-level min-min noise crafting.

Kept out of plugins/unlearnable/__init__.py so that listing plugins never imports torch. Follows
docs/poisons.md, section SU, CU. Layout inside: images NCHW float in [0, 1] on ``ctx.device``,
perturbations δ NCHW float; no normalisation and no augmentation during crafting. Everything random
(model init, shuffles, the CU subset) derives from ``ctx.seed`` through a local generator.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import CraftContext, Split, default_catalog, export_uint8
from poisonbench.errors import RunFailed
from poisonbench.plugins.unlearnable.convergence import Convergence


def min_min(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    delta0: torch.Tensor,
    *,
    steps: int,
    alpha: float,
    eps: float,
) -> torch.Tensor:
    """Error-minimising sign-gradient descent from ``delta0``; returns δ with |δ| ≤ eps.

    x′ = clamp(x + δ0, 0, 1); repeat: x′ ← x′ − α·sign(∇CE); δ = clip(x′ − x, ±eps);
    x′ = clamp(x + δ, 0, 1). δ itself is not clamped to the image range (export clamps x + δ).
    The caller puts the model in eval mode; only the input gets a gradient.
    """
    delta = delta0.clamp(-eps, eps)
    xp = (x + delta0).clamp(0, 1)
    for _ in range(steps):
        xp.requires_grad_(True)
        loss = F.cross_entropy(model(xp), y)
        (grad,) = torch.autograd.grad(loss, xp)
        xp = xp.detach() - alpha * grad.sign()
        delta = (xp - x).clamp(-eps, eps)
        xp = (x + delta).clamp(0, 1)
    return delta.detach()


def index_stream(
    n: int, batch: int, *, shuffle: bool, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of indices cycling over ``range(n)`` (reshuffled each pass when asked).

    Batches run across pass boundaries, so every batch has ``min(batch, n)`` indices and a
    BatchNorm model never sees a batch of one unless n == 1.
    """
    batch = min(batch, n)
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch:
            order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
            pending = torch.cat([pending, order])
        yield pending[:batch]
        pending = pending[batch:]


def stratified_subset(
    labels: torch.Tensor, *, fraction: float, gen: torch.Generator
) -> torch.Tensor:
    """Sorted indices of a seeded per-class share (round half up, at least one image per class)."""
    picked = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        k = max(1, int(fraction * len(members) + 0.5))
        picked.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.sort(torch.cat(picked)).values


def build_model(
    ctx: CraftContext, *, name: str, image_shape: tuple[int, int, int], seed: int
) -> nn.Module:
    """A fresh crafting model from the victim registry, initialised from ``seed`` (global RNG untouched)."""
    catalog = ctx.catalog
    if catalog is None:
        catalog = default_catalog()
    h, _, c = image_shape
    victim = catalog.victims.create(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = victim.build(num_classes=ctx.num_classes, in_channels=c, image_size=h)
    return model.to(ctx.device)


class _Crafter:
    """State of one crafting run: data on the device, model, optimiser, noise."""

    def __init__(self, clean: Split, *, ctx: CraftContext, params: Any, classwise: bool):
        self.p = params
        self.classwise = classwise
        self.device = torch.device(ctx.device)
        self.gen = torch.Generator().manual_seed(int(ctx.seed))
        model_seed = int(torch.randint(2**62, (1,), generator=self.gen))
        self.model = build_model(
            ctx, name=params.model, image_shape=tuple(clean.images.shape[1:]), seed=model_seed
        )
        self.opt = torch.optim.SGD(
            self.model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            weight_decay=params.weight_decay,
        )
        # uint8 on the device (a quarter of float32); converted per batch.
        self.images = clean.images.to(self.device).permute(0, 3, 1, 2)
        self.labels = clean.labels.to(self.device)
        n, c, h, w = self.images.shape
        rows = ctx.num_classes if classwise else n
        self.delta = torch.zeros(rows, c, h, w, device=self.device)  # noise starts at zero
        # SU cycles the set in order; CU reshuffles every pass (docs/poisons.md).
        self.train_batches = index_stream(n, params.batch_size, shuffle=classwise, gen=self.gen)
        if classwise:
            subset = stratified_subset(clean.labels, fraction=params.subset_fraction, gen=self.gen)
            self.check_idx = subset
        else:
            self.check_idx = torch.arange(n)

    def x(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx.to(self.device)].float().div_(255)

    def noise(self, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.to(self.device)
        return self.delta[self.labels[idx]] if self.classwise else self.delta[idx]

    def train_model(self) -> None:
        self.model.train()
        for _ in range(self.p.train_steps):
            idx = next(self.train_batches)
            xp = (self.x(idx) + self.noise(idx)).clamp(0, 1)
            loss = F.cross_entropy(self.model(xp), self.labels[idx.to(self.device)])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.p.grad_clip)
            self.opt.step()

    @torch.no_grad()
    def refresh_batchnorm(self) -> None:
        """Recompute every BatchNorm's running statistics on the current poisoned data.

        After only ``train_steps`` steps per round the running averages (momentum 0.1) lag the
        weights, so the eval-mode model the noise is fitted to and judged by is not the model that
        was trained (on 3,000 Fashion-MNIST images, round 1: 41% eval-mode vs 74% batch-statistics
        accuracy). One forward pass in train mode with a cumulative average fixes that.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        self.model.train()
        for idx in torch.split(self.check_idx, self.p.batch_size):
            self.model((self.x(idx) + self.noise(idx)).clamp(0, 1))
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        self.model.eval()

    def update_noise(self) -> None:
        if self.p.refresh_batchnorm:
            self.refresh_batchnorm()
        self.model.eval()
        if self.classwise:
            order = self.check_idx[torch.randperm(len(self.check_idx), generator=self.gen)]
        else:
            order = self.check_idx
        for idx in torch.split(order, self.p.batch_size):
            y = self.labels[idx.to(self.device)]
            eta = min_min(
                self.model,
                self.x(idx),
                y,
                self.noise(idx),
                steps=self.p.attack_steps,
                alpha=self.p.step_size,
                eps=self.p.eps,
            )
            if not self.classwise:
                self.delta[idx.to(self.device)] = eta
                continue
            # δ_c ← clip(mean of η over the batch's images of class c); other classes unchanged.
            sums = torch.zeros_like(self.delta).index_add_(0, y, eta)
            counts = torch.bincount(y, minlength=len(self.delta))
            present = counts > 0
            mean = sums[present] / counts[present].view(-1, 1, 1, 1)
            self.delta[present] = mean.clamp(-self.p.eps, self.p.eps)

    @torch.no_grad()
    def accuracy(self) -> float:
        if self.p.refresh_batchnorm:
            self.refresh_batchnorm()
        self.model.eval()
        correct = 0
        for idx in torch.split(self.check_idx, self.p.batch_size):
            xp = (self.x(idx) + self.noise(idx)).clamp(0, 1)
            pred = self.model(xp).argmax(1)
            correct += int((pred == self.labels[idx.to(self.device)]).sum())
        return correct / len(self.check_idx)

    def poisoned(self) -> torch.Tensor:
        index = self.labels if self.classwise else None  # CU: one δ per class
        return export_uint8(self.images.permute(0, 2, 3, 1), self.delta, index=index, channels_first=True)


def craft(clean: Split, *, ctx: CraftContext, params: Any, classwise: bool, label: str):
    """Run the min-min loop; return (poisoned uint8 NHWC on CPU, stats for the manifest).

    Runs inside a forked global RNG seeded from ``ctx.seed``: a crafting model with dropout is
    deterministic too, and the caller's RNG state is left as it was.
    """
    device = torch.device(ctx.device)
    forked = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(int(ctx.seed))
        return _min_min_loop(clean, ctx=ctx, params=params, classwise=classwise, label=label)


def _min_min_loop(clean: Split, *, ctx: CraftContext, params: Any, classwise: bool, label: str):
    crafter = _Crafter(clean, ctx=ctx, params=params, classwise=classwise)
    advance = ctx.advance_bar(f"crafting {label} (min-min rounds)", params.max_rounds)
    watch = Convergence(stop_acc=params.stop_acc, num_classes=ctx.num_classes,
                        stall_rounds=params.stall_rounds)
    acc, warned = 0.0, False
    for rounds in range(1, params.max_rounds + 1):
        crafter.train_model()
        crafter.update_noise()
        acc = crafter.accuracy()
        watch.add(acc)
        advance(1, round=rounds, **watch.fields())
        if acc > params.stop_acc:
            stats = {"crafting_rounds": rounds, "crafting_acc": acc, "converged": True,
                     "crafting_accs": [round(a, 4) for a in watch.accs]}
            return crafter.poisoned(), stats
        if watch.stalled and not warned:
            warned = True
            if params.on_stall == "fail":
                raise RunFailed(watch.stall_message(label) + "; or set on_stall: warn")
            warnings.warn(watch.stall_message(label), stacklevel=2)
    if params.on_max_rounds == "keep":
        stats = {"crafting_rounds": params.max_rounds, "crafting_acc": acc, "converged": False,
                 "crafting_accs": [round(a, 4) for a in watch.accs]}
        return crafter.poisoned(), stats
    where = f"its {params.subset_fraction:.0%} subset" if classwise else "the poisoned set"
    raise RunFailed(
        f"{label} did not reach {params.stop_acc:.0%} accuracy on {where} after "
        f"{params.max_rounds} rounds (last {acc:.1%}); raise max_rounds, lower stop_acc, "
        "use a larger eps or a stronger crafting model, or set on_max_rounds: keep"
    )
