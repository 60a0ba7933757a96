"""Torch code of four defenses: UEraser augmentation and K-max loss, COIN, PGD adversarial training, orthogonal projection.

Pure functions on tensors; the registration modules beside this one (``ueraser``, ``coin``,
``adversarial_training``, ``orthogonal_projection``) bind them to the harness. Conventions:

* Batch images are float (B, C, H, W) in [0, 1] pixel units (not normalised); ``forward`` is the
  model with normalisation inside, so every ε, step and α below is in pixel units.
* Every random draw is a pure function of an integer ``seed``: COIN, the PGD start and the
  projection's data order draw from a CPU ``torch.Generator`` (identical on every device);
  kornia draws from torch's global RNG, so ``seeded_global_rng`` forks that RNG (CPU and the
  batch's CUDA device), seeds it, and restores it afterwards — the trainer's own RNG stream is
  untouched.
* Any image size and channel count: nothing assumes 32×32 or C = 3.

kornia is imported lazily (only UEraser needs it); its version is pinned in pyproject.toml.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

from poisonbench.api import derive_seed, export_uint8

# -- shared ------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | str):
    """Run a block with torch's global RNG seeded by ``seed`` (CPU + ``device``), then restore it."""
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def cpu_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) % (2**63))


# -- UEraser ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def ueraser_pipeline(plasma_p: float):
    """APBench's UEraser augmentation ``U``: plasma brightness, plasma contrast, channel shuffle, TrivialAugment."""
    import kornia.augmentation as K
    from kornia.augmentation.auto import TrivialAugment

    return K.AugmentationSequential(
        K.RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), same_on_batch=False,
                                 p=plasma_p, keepdim=True),
        K.RandomPlasmaContrast(roughness=(0.3, 0.7), p=plasma_p),
        K.RandomChannelShuffle(same_on_batch=False, p=0.5, keepdim=True),
        TrivialAugment(),
    )


def jpeg_roundtrip(x01: torch.Tensor, *, qualities: list[int]) -> torch.Tensor:
    """Per-image JPEG encode/decode at ``qualities[i]`` (libjpeg via torchvision.io); C = 1 or 3."""
    from torchvision.io import decode_jpeg, encode_jpeg

    levels = export_uint8(x01, channels_first=True).permute(0, 3, 1, 2)
    out = [decode_jpeg(encode_jpeg(img.contiguous(), quality=int(q))) for img, q in zip(levels, qualities, strict=True)]
    return torch.stack(out).to(x01.device, torch.float32).div_(255).to(x01.dtype)


def ueraser_augment(x01: torch.Tensor, *, seed: int, plasma_p: float = 1.0, jpeg: str = "none") -> torch.Tensor:
    """One draw of ``U`` on a batch; output in [0, 1], same shape, dtype and device, seeded by ``seed``.

    ``jpeg``: ``"none"``; ``"random"`` = APBench's ``U_jpeg``: one quality q ∈ [10, 99] per call,
    each image JPEG'd on its own (not APBench's one tall JPEG of the stacked batch, which leaks
    across borders), then ``U``; ``"q10_after"`` = the UEraser library's ``UEraserJPEG``: ``U``,
    then JPEG q10 per image.
    """
    gen = cpu_generator(seed)
    x = x01.detach().float()
    if jpeg == "random":
        q = int(torch.randint(10, 100, (1,), generator=gen))
        x = jpeg_roundtrip(x, qualities=[q] * len(x))
    rng = seeded_global_rng(int(torch.randint(0, 2**62, (1,), generator=gen)), x.device)
    with rng, torch.autocast(device_type=x.device.type, enabled=False):  # fp32 even under bf16 autocast
        out = ueraser_pipeline(float(plasma_p))(x)
    if jpeg == "q10_after":
        out = jpeg_roundtrip(out, qualities=[10] * len(out))
    return out.clamp_(0, 1).to(x01.dtype)


def ueraser_loss(forward, x01: torch.Tensor, y: torch.Tensor, *, seed: int, repeats: int,
                 plasma_p: float = 1.0, jpeg: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """UEraser's loss: max over ``repeats`` fresh augmentations of the per-sample CE, then the mean.

    One forward pass per copy in train mode (as APBench's loop: BatchNorm statistics update once
    per copy), not one pass over the tiled K·B batch (the library variant, whose BN statistics
    differ). ``repeats=1`` is UEraser-Lite's plain CE on one augmentation. Returns
    ``(loss, logits of the last copy)``, the logits APBench counts training accuracy on.
    """
    losses, logits = [], None
    for k in range(repeats):
        xk = ueraser_augment(x01, seed=derive_seed(seed, "copy", k), plasma_p=plasma_p, jpeg=jpeg)
        logits = forward(xk)
        losses.append(F.cross_entropy(logits.float(), y, reduction="none"))
    return torch.stack(losses).max(dim=0).values.mean(), logits


# -- COIN ---------------------------------------------------------------------------------------


def coin_displacements(shape: tuple[int, ...], *, alpha: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel ``(dy, dx)`` ~ U(−α, α), shape (B, 1, H, W): one field per image, shared by its channels."""
    b, _, h, w = shape
    u = torch.rand(2, b, 1, h, w, generator=cpu_generator(seed))
    return (u[0] * 2 - 1) * alpha, (u[1] * 2 - 1) * alpha


def _scipy_wrap(coord: torch.Tensor, n: int) -> torch.Tensor:
    """scipy ``mode="wrap"``: coordinates in [0, n−1] as is, others modulo n−1 (not n)."""
    if n == 1:
        return torch.zeros_like(coord)
    outside = (coord < 0) | (coord > n - 1)
    return torch.where(outside, torch.remainder(coord, n - 1), coord)


def coin_warp(x01: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``x01`` at (row + dy, col + dx) with scipy's "wrap", then truncation to grey levels.

    Matches ``scipy.ndimage.map_coordinates(order=1, mode="wrap")`` per channel followed by
    ``np.uint8(clip(·, 0, 1) · 255)``. Arithmetic runs on the 0–255 scale with ``a + w·(b − a)``, and
    a 1e-3 grey-level guard before the floor keeps exact levels exact (a constant image stays
    constant; the reference's float error can drop such a pixel one level).
    """
    b, c, h, w = x01.shape
    dev = x01.device
    rows = _scipy_wrap(torch.arange(h, device=dev, dtype=torch.float32).view(1, 1, h, 1) + dy.to(dev), h)
    cols = _scipy_wrap(torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, 1, w) + dx.to(dev), w)
    r0, c0 = rows.floor(), cols.floor()
    wr, wc = rows - r0, cols - c0
    r0, c0 = r0.long().clamp_(0, h - 1), c0.long().clamp_(0, w - 1)
    r1, c1 = (r0 + 1).clamp_(max=h - 1), (c0 + 1).clamp_(max=w - 1)
    flat = x01.float().mul(255).reshape(b, c, h * w)

    def gather(r, cc):
        index = (r * w + cc).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, index).reshape(b, c, h, w)

    top = gather(r0, c0) + wc * (gather(r0, c1) - gather(r0, c0))
    bottom = gather(r1, c0) + wc * (gather(r1, c1) - gather(r1, c0))
    out = top + wr * (bottom - top)
    return torch.floor(out.clamp(0, 255) + 1e-3).clamp_(max=255).div_(255).to(x01.dtype)


def coin_transform(x01: torch.Tensor, *, alpha: float, seed: int) -> torch.Tensor:
    """COIN on a batch (B, C, H, W) in [0, 1]: random per-pixel bilinear displacement of up to α pixels."""
    dy, dx = coin_displacements(tuple(x01.shape), alpha=alpha, seed=seed)
    return coin_warp(x01, dy, dx)


# -- PGD adversarial training ------------------------------------------------------------------


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def pgd_attack(forward, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
               norm: str = "linf", random_start: str = "uniform", seed: int) -> torch.Tensor:
    """Error-maximising PGD around ``x`` (in [0, 1]); returns detached ``x_adv`` within the ε ball and [0, 1].

    ``random_start``: ``"uniform"`` (Madry: U(−ε, ε) per pixel for L∞, a uniform-radius random
    direction for L2, then clamp), ``"gaussian"`` (APBench: ``step · N(0, 1)``, no clamp), ``"none"``.
    L∞ steps by ``step · sign(∇)``; L2 by ``step · ∇/‖∇‖`` with per-sample renormalisation onto the
    ball (APBench's ``L_2``). Gradients are taken with respect to the input only
    (``torch.autograd.grad``), so parameter ``.grad`` is never touched. The caller sets eval mode.
    """
    x = x.detach().float()
    gen = cpu_generator(seed)
    if random_start == "uniform":
        noise = torch.rand(x.shape, generator=gen).mul_(2).sub_(1).to(x.device)
        if norm == "l2":
            radius = torch.rand(len(x), generator=gen).to(x.device).view(-1, *([1] * (x.dim() - 1)))
            noise = noise / _per_sample_norm(noise) * radius * eps
        else:
            noise = noise * eps
        x_adv = (x + noise).clamp(0, 1)
    elif random_start == "gaussian":
        x_adv = x + step * torch.randn(x.shape, generator=gen).to(x.device)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(forward(x_adv).float(), y)
        (grad,) = torch.autograd.grad(loss, [x_adv])
        with torch.no_grad():
            if norm == "l2":
                delta = x_adv + step * grad / _per_sample_norm(grad) - x
                delta = delta * torch.clamp(eps / _per_sample_norm(delta), max=1.0)
            else:
                delta = (x_adv + step * grad.sign() - x).clamp(-eps, eps)
            x_adv = (x + delta).clamp(0, 1)
    return x_adv.detach()


def adversarial_loss(model, forward, x: torch.Tensor, y: torch.Tensor, **attack) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD-AT's loss on one batch: attack in eval mode (BatchNorm statistics frozen), then CE on x_adv only.

    ``attack`` holds ``pgd_attack``'s keyword arguments. Restores the model's train/eval mode and
    returns ``(loss, logits on x_adv)`` computed in the mode the model was in (train).
    """
    was_training = model.training
    model.eval()
    try:
        x_adv = pgd_attack(forward, x, y, **attack)
    finally:
        model.train(was_training)
    logits = forward(x_adv)
    return F.cross_entropy(logits.float(), y), logits


# -- orthogonal projection ---------------------------------------------------------------------


def fit_linear(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, epochs: int, lr: float,
               batch_size: int, milestones: tuple[float, ...], seed: int, device: str = "cpu") -> torch.Tensor:
    """Weights W (K, D) of a bias-free linear classifier on flattened [0, 1] pixels (step 1 of the method).

    PyTorch's default ``nn.Linear`` init (U(±1/√D)) from a seeded generator; plain SGD (no
    momentum, no weight decay) on mean CE; lr × 0.1 at each milestone (fractions of ``epochs``:
    0.5, 0.75 of 20 = epochs 10, 15); batches in a seeded order per epoch (the reference does not
    shuffle, which harms on a class-sorted split). Images stay uint8 and are converted per batch.
    """
    n, d = len(images), images[0].numel()
    gen = cpu_generator(seed)
    w = ((torch.rand(num_classes, d, generator=gen) * 2 - 1) / math.sqrt(d)).to(device)
    flat = images.reshape(n, d)
    marks = [round(m * epochs) for m in milestones]
    for epoch in range(epochs):
        rate = lr * 0.1 ** sum(epoch >= m for m in marks)
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = flat[idx].to(device).float().div_(255)
            yb = labels[idx].to(device)
            probs = torch.softmax(xb @ w.T, dim=1)
            probs[torch.arange(len(idx), device=device), yb] -= 1  # ∂CE/∂logits, per sample
            w -= rate * (probs.T @ xb) / len(idx)
    return w


def projection_basis(w: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis Q (D, K) of the span of the row-normalised class weights (reduced QR)."""
    wn = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.linalg.qr(wn.T.double(), mode="reduced").Q.float()


def project_out(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``x − (x Q) Qᵀ`` for rows x (N, D): removes every component in the span of Q (no clipping)."""
    return x - (x @ q) @ q.T


def orthogonal_projection(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, epochs: int,
                          lr: float, batch_size: int, milestones: tuple[float, ...], seed: int,
                          device: str = "cpu", chunk: int = 4096) -> tuple[torch.Tensor, dict]:
    """Fit, project, quantise: uint8 (N, H, W, C) images with the linear classifier's directions removed.

    The projected floats leave [0, 1]; they are stored as ``floor(255·clamp(x, 0, 1) + 0.5)`` and
    the fraction of clamped values is returned with the fit's training accuracy in ``stats``.
    """
    w = fit_linear(images, labels, num_classes=num_classes, epochs=epochs, lr=lr, batch_size=batch_size,
                   milestones=milestones, seed=seed, device=device)
    q = projection_basis(w)
    n, d = len(images), images[0].numel()
    out = torch.empty_like(images)
    clipped, correct = 0, 0
    for start in range(0, n, chunk):
        xb = images[start:start + chunk].reshape(-1, d).to(device).float().div_(255)
        correct += int(((xb @ w.T).argmax(1) == labels[start:start + chunk].to(device)).sum())
        xr = project_out(xb, q)
        clipped += int(((xr < 0) | (xr > 1)).sum())
        out[start:start + chunk] = export_uint8(xr.reshape(-1, *images.shape[1:]))
    stats = {"linear_train_acc": correct / max(1, n), "clipped_fraction": clipped / max(1, n * d),
             "directions": int(q.shape[1])}
    return out, stats
