"""Torch code of SEP (self-ensemble protection): sign descent towards a target class on a checkpoint ensemble.

Losses, per checkpoint m, with target t(y) = (y + ⌊K/2⌋) mod K: ``ce`` = CE(f_m(x), t);
``fa`` / ``fa_vr`` = MSE(φ_m(x), μ_m[t]) with φ_m the input of the model's last linear layer
(penultimate features) and μ_m[c] the mean of φ_m over the clean training images of class c (eval
mode, no augmentation, computed once per checkpoint). One step (models in eval mode):

    g_m = ∇_x L_m(x);  ḡ = mean_m g_m
    fa_vr: xv = x; G = 0; repeat m_inner: j ~ U{1..M}; G += ∇_x L_j(xv) − (g_j − ḡ);
           xv = clip(clip(xv − α·sign(G), x0 ± ε), 0, 1);   d = G      (SVRE inner loop)
    else:  d = ḡ
    x = clip(clip(x − α·sign(d), x0 ± ε), 0, 1)

The inner loop uses the centroids of the sampled checkpoint j (the released code uses those of the
last checkpoint of the outer loop, a bug). Batches are independent (eval mode, sign steps) except
that a batch shares its inner-loop draws j, which come from a generator seeded by (seed, batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import derive_seed, to_float
from poisonbench.errors import BadInput


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` (its classifier head), whose input is the penultimate feature."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BadInput("SEP's feature variants (fa, fa_vr) need a surrogate whose head is an nn.Linear; "
                       "use variant: ce or another surrogate")
    return linears[-1]


class Features:
    """Context manager capturing the penultimate features (the head's input) of every forward."""

    def __init__(self, model: nn.Module):
        self.head, self.value, self._hook = last_linear(model), None, None

    def __enter__(self) -> Features:
        def grab(_module, inputs):
            self.value = inputs[0].flatten(1)
        self._hook = self.head.register_forward_pre_hook(grab)
        return self

    def __exit__(self, *exc) -> None:
        self._hook.remove()


@torch.no_grad()
def centroids(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
              batch_size: int, device: torch.device) -> torch.Tensor:
    """(K, D) class means of the penultimate features over clean uint8 NHWC ``images`` (zeros if absent)."""
    sums, counts = None, torch.zeros(num_classes, device=device)
    with Features(model) as feats:
        for start in range(0, len(labels), batch_size):
            y = labels[start:start + batch_size].to(device)
            model(to_float(images[start:start + batch_size], device))
            phi = feats.value.float()
            sums = torch.zeros(num_classes, phi.shape[1], device=device) if sums is None else sums
            sums.index_add_(0, y, phi)
            counts += torch.bincount(y, minlength=num_classes).float()
    return sums / counts.clamp_min(1).unsqueeze(1)


def loss_fn(variant: str, model: nn.Module, mu: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """L_m(x, t): batch-mean CE to the target (``ce``) or MSE of the features to μ_m[t]."""
    if variant == "ce":
        return lambda x, t: F.cross_entropy(model(x), t)

    def feature_loss(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with Features(model) as feats:
            model(x)
        return F.mse_loss(feats.value.float(), mu[t])
    return feature_loss


def input_grad(loss: Callable, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x, t), x)
    return grad


def project(x: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp_(0, 1)


def sep_batch(losses: list[Callable], x0: torch.Tensor, t: torch.Tensor, *, p: Any,
              gen: torch.Generator) -> torch.Tensor:
    """The crafted images x (float NCHW in [0, 1]) of one batch after ``p.steps`` steps."""
    x, m = x0.clone(), len(losses)
    for _ in range(p.steps):
        grads = [input_grad(loss, x, t) for loss in losses]
        mean = torch.stack(grads).mean(0)
        direction = mean
        if p.variant == "fa_vr":
            xv, acc = x.clone(), torch.zeros_like(x)
            for _ in range(p.m_inner):
                j = int(torch.randint(m, (1,), generator=gen))
                acc = acc + input_grad(losses[j], xv, t) - (grads[j] - mean)
                xv = project(xv - p.step_size * acc.sign(), x0, p.eps)
            direction = acc
        x = project(x - p.step_size * direction.sign(), x0, p.eps)
    return x.detach()


def targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """t(y) = (y + ⌊K/2⌋) mod K."""
    return (labels + num_classes // 2) % num_classes


def craft_batches(models: list[nn.Module], images: torch.Tensor, labels: torch.Tensor, *, p: Any, seed: int,
                  num_classes: int, device: torch.device, done: dict[int, torch.Tensor],
                  on_batch: Callable[[int, torch.Tensor], None]) -> None:
    """Craft every batch not in ``done`` (batch index → δ levels); ``on_batch(b, levels)`` after each."""
    mus = [None] * len(models)
    if p.variant != "ce":
        mus = [centroids(m, images, labels, num_classes=num_classes, batch_size=p.batch_size, device=device)
               for m in models]
    losses = [loss_fn(p.variant, m, mu) for m, mu in zip(models, mus, strict=True)]
    all_t = targets(labels, num_classes)
    for b, start in enumerate(range(0, len(labels), p.batch_size)):
        if b in done:
            continue
        x0 = to_float(images[start:start + p.batch_size], device)
        gen = torch.Generator().manual_seed(derive_seed(seed, "sep-batch", b))
        x = sep_batch(losses, x0, all_t[start:start + p.batch_size].to(device), p=p, gen=gen)
        # whole grey levels floor(255·(x − x0) + 0.5): the project's round-half-up export rule
        on_batch(b, torch.floor((x - x0) * 255 + 0.5).to(torch.int8).cpu())
