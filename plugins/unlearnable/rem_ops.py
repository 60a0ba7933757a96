"""Torch code of REM (robust error-minimising noise): min-min-max crafting with EOT, resumable.

Step s (a batch of a shuffled, drop-last pass): ``δ = rem_noise(θ, x, y)`` (eval mode), stored as
whole grey levels; the batch plus its noise is augmented (crop + flip; clipped after), attacked by
``pgd_max`` within ρ_a (eval mode), and the model takes one SGD step there (train mode). After the
last step every image's noise is regenerated with the final model, in order (no drop-last leftovers).

``rem_noise`` is the unlearnable examples' error-minimising sign descent (``ops.min_min``) with the
loss taken at the PGD-adversarial point ``xd + r*`` of the augmented noisy image (r* constant when
differentiating w.r.t. δ), its gradient summed over ``eot_samples`` fresh augmentations (EOT).

Every random draw of step s (batch order, δ's start, augmentations, PGD starts, the global RNG of a
dropout model) derives from (seed, s) via ``derive_seed`` on the CPU: a run resumed at a finished
round takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import CraftContext, Split, craft_state, data_digest, derive_seed
from poisonbench.plugins.unlearnable.ops import build_model


def sample_crop_flip(n: int, *, padding: int, flip: bool, gen: torch.Generator):
    """Per-image crop offsets in [0, 2·padding] (dy, dx) and flip flags, drawn on the CPU."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return offsets[:, 0], offsets[:, 1], flips


def crop_flip(x: torch.Tensor, aug, *, padding: int) -> torch.Tensor:
    """Random crop with zero padding, then horizontal flip, of NCHW ``x``; differentiable (a gather)."""
    dy, dx, flips = (t.to(x.device) for t in aug)
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)) if padding > 0 else x
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + dx[:, None]  # (n, w)
    rows = torch.arange(h, device=x.device)[None, :] + dy[:, None]  # (n, h)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing over (batch, row, col) with the channel axis kept: (n, h, w, C) -> NCHW
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def pgd_max(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, *, rho: float, steps: int, alpha: float,
            gen: torch.Generator) -> torch.Tensor:
    """Error-maximising L∞ PGD with a uniform random start: z ← clip(clip(z + α·sign∇CE, x0 ± ρ), 0, 1)."""
    if rho <= 0 or steps <= 0:
        return x0.detach()
    z = x0.detach() + ((torch.rand(x0.shape, generator=gen) * 2 - 1) * rho).to(x0.device)
    for _ in range(steps):
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(z), y), z)
        with torch.no_grad():
            z = torch.minimum(torch.maximum(z + alpha * grad.sign(), x0 - rho), x0 + rho).clamp_(0, 1)
    return z.detach()


def rem_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, p: Any, gen: torch.Generator) -> torch.Tensor:
    """Robust error-minimising δ for a batch (model in eval mode): |δ| ≤ eps, float NCHW."""
    delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * p.eps).to(x.device)
    for _ in range(p.noise_steps):
        grad = torch.zeros_like(delta)
        for _ in range(p.eot_samples):
            aug = sample_crop_flip(x.shape[0], padding=p.crop_padding, flip=p.flip, gen=gen)
            delta.requires_grad_(True)
            xd = crop_flip((x + delta).clamp(0, 1), aug, padding=p.crop_padding)
            xa = pgd_max(model, xd.detach(), y, rho=p.rho_a, steps=p.adv_steps, alpha=p.adv_alpha, gen=gen)
            loss = F.cross_entropy(model(xd + (xa - xd).detach()), y)
            grad += torch.autograd.grad(loss, delta)[0]
            delta = delta.detach()
        delta = (delta - p.noise_alpha * grad.sign()).clamp_(-p.eps, p.eps)
    return delta.detach()


def levels(delta: torch.Tensor) -> torch.Tensor:
    """Whole grey levels floor(255·δ + 0.5) as int8 (|δ| ≤ 8/255 … 127/255)."""
    return torch.floor(delta * 255 + 0.5).to(torch.int8)


class RemCrafter:
    """One REM craft: model, optimiser and integer noise; ``train_step`` / ``regenerate`` / state."""

    def __init__(self, clean: Split, *, ctx: CraftContext, p: Any):
        self.p, self.seed, self.device = p, int(ctx.seed), torch.device(ctx.device)
        self.images = clean.images.to(self.device).permute(0, 3, 1, 2)  # uint8 NCHW
        self.labels = clean.labels.to(self.device)
        self.model = build_model(ctx, name=p.model, image_shape=tuple(clean.images.shape[1:]),
                                 seed=derive_seed(self.seed, "rem-model"))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        self.noise = torch.zeros(self.images.shape, dtype=torch.int8, device=self.device)
        self.batch = min(p.batch_size, len(self.labels))
        self.per_epoch = max(1, len(self.labels) // self.batch)  # drop_last
        self._perm: tuple[int, torch.Tensor] | None = None

    def x(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx].float().div_(255)

    def batch_indices(self, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "rem-epoch", epoch))
            self._perm = (epoch, torch.randperm(len(self.labels), generator=gen).to(self.device))
        return self._perm[1][pos * self.batch:(pos + 1) * self.batch]

    def train_step(self, step: int) -> tuple[float, float]:
        """One min-min-max step; returns (loss, accuracy) of the SGD step on the adversarial batch."""
        p = self.p
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "rem-step", step))
        torch.manual_seed(derive_seed(self.seed, "rem-global", step))  # dropout etc. (caller forks the RNG)
        for group in self.opt.param_groups:
            group["lr"] = p.lr * p.lr_gamma ** (step // p.lr_decay_steps)
        idx = self.batch_indices(step)
        x, y = self.x(idx), self.labels[idx]
        self.model.eval()
        self.noise[idx] = levels(rem_noise(self.model, x, y, p=p, gen=gen))
        aug = sample_crop_flip(len(idx), padding=p.crop_padding, flip=p.flip, gen=gen)
        xd = crop_flip(x + self.noise[idx].float() / 255, aug, padding=p.crop_padding).clamp_(0, 1)
        xa = pgd_max(self.model, xd, y, rho=p.rho_a, steps=p.adv_steps, alpha=p.adv_alpha, gen=gen)
        self.model.train()
        logits = self.model(xa)
        loss = F.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), float((logits.argmax(1) == y).float().mean())

    def regenerate(self, b: int) -> None:
        """Final pass: fresh noise for the b-th batch of the set in order, with the final model."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "rem-final", b))
        torch.manual_seed(derive_seed(self.seed, "rem-final-global", b))
        idx = torch.arange(b * self.p.batch_size, min((b + 1) * self.p.batch_size, len(self.labels)),
                           device=self.device)
        self.model.eval()
        self.noise[idx] = levels(rem_noise(self.model, self.x(idx), self.labels[idx], p=self.p, gen=gen))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        for i, param in enumerate(self.opt.param_groups[0]["params"]):
            buf = self.opt.state.get(param, {}).get("momentum_buffer")
            if buf is not None:
                out[f"optim/{i}"] = buf
        out["noise"] = self.noise
        return out

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, strict=True)
        for i, param in enumerate(self.opt.param_groups[0]["params"]):
            if f"optim/{i}" in tensors:
                self.opt.state[param]["momentum_buffer"] = tensors[f"optim/{i}"].to(self.device).clone()
        self.noise.copy_(tensors["noise"].to(self.device))

    def poisoned(self) -> torch.Tensor:
        """clamp(X + noise, 0, 255) as uint8 NHWC on the CPU (the noise is integer by construction)."""
        out = (self.images.to(torch.int16) + self.noise.to(torch.int16)).clamp_(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous().cpu()


def craft(clean: Split, *, ctx: CraftContext, p: Any, label: str, params_json: dict) -> tuple[torch.Tensor, dict]:
    """Run (or resume) the REM craft; return (poisoned uint8 NHWC, stats for the manifest)."""
    device = torch.device(ctx.device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
            torch.inference_mode(False), torch.enable_grad():
        crafter = RemCrafter(clean, ctx=ctx, p=p)
        state = craft_state(ctx, label=label, identity={"params": params_json,
                                                        "data": data_digest(clean.images, clean.labels)})
        n_final = -(-len(clean) // p.batch_size)
        meta = {"step": 0, "final": 0, "round_loss": None, "round_acc": None}
        saved = state.load() if state is not None else None
        if saved is not None:
            meta, tensors = saved
            crafter.restore(tensors)
        advance = ctx.advance_bar(f"crafting {label} (min-min-max steps, then final noise)", p.train_steps + n_final)
        advance(meta["step"] + meta["final"])
        seen: list[tuple[float, float]] = []  # (loss, robust accuracy) of this round's steps
        for step in range(meta["step"], p.train_steps):
            loss, acc = crafter.train_step(step)
            seen.append((loss, acc))
            done = step + 1
            if done % p.round_steps == 0 or done == p.train_steps:
                means = [sum(v) / len(seen) for v in zip(*seen, strict=True)]
                meta, seen = {"step": done, "final": 0, "round_loss": means[0], "round_acc": means[1]}, []
                if state is not None:
                    state.save(meta, crafter.state_tensors())
            advance(1, step=done, loss=round(loss, 4), robust_acc=round(acc, 3))
        for b in range(meta["final"], n_final):
            crafter.regenerate(b)
            if state is not None and ((b + 1) % p.round_steps == 0 and b + 1 < n_final):
                state.save({**meta, "final": b + 1}, crafter.state_tensors())
            advance(1, final_batch=b + 1)
        out = crafter.poisoned()
    if state is not None:
        state.clear()
    stats = {"crafting_steps": p.train_steps, "crafting_last_round_loss": meta["round_loss"],
             "crafting_last_round_robust_acc": meta["round_acc"]}
    return out, stats
