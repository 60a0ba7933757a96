"""Training augmentation as batched tensor ops on the device: random crop with zero padding + flip.

Equivalent to torchvision's ``RandomCrop(size, padding=p)`` followed by ``RandomHorizontalFlip()``
applied per image, but done for a whole batch of uint8 NHWC images with one gather: output pixel
(i, j) of image b is padded[b, dy_b + i, dx_b + j'] with j' = W-1-j when b is flipped. All random
numbers of an epoch (order, offsets, flips) are drawn up front from one CPU generator, so an epoch
is reproducible from its seed alone and identical on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class EpochPlan:
    """One epoch's randomness: sample order and, per position in that order, crop offset and flip."""

    order: torch.Tensor  # (N,) int64 permutation of the training set
    dy: torch.Tensor | None  # (N,) int64 in [0, 2p], None without crop
    dx: torch.Tensor | None
    flip: torch.Tensor | None  # (N,) bool, None without flip

    def to(self, device: str | torch.device) -> EpochPlan:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return EpochPlan(move(self.order), move(self.dy), move(self.dx), move(self.flip))

    def batch(self, start: int, stop: int) -> tuple[torch.Tensor, ...]:
        part = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return part(self.order), part(self.dy), part(self.dx), part(self.flip)


def plan_epoch(n: int, *, generator: torch.Generator, augment: list[str] | tuple[str, ...],
               padding: int, shuffle: bool = True) -> EpochPlan:
    """Draw an epoch's order, crop offsets and flips from ``generator`` (a CPU generator).

    The draw order is fixed (permutation, then offsets, then flips) so the plan is a pure
    function of the generator's seed.
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    dy = dx = flip = None
    if "crop" in augment and padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
        dy, dx = offsets[:, 0].contiguous(), offsets[:, 1].contiguous()
    if "flip" in augment:
        flip = torch.randint(0, 2, (n,), generator=generator).bool()
    return EpochPlan(order, dy, dx, flip)


def crop_flip(images: torch.Tensor, *, dy: torch.Tensor | None, dx: torch.Tensor | None,
              flip: torch.Tensor | None, padding: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Random-crop (padding ``padding``) and flip a batch of NHWC images; same shape and dtype.

    ``dy``/``dx`` are per-image offsets into the padded image (``padding`` = centre, i.e. no shift);
    ``flip`` marks images to mirror horizontally. Any of them may be None (that op is skipped).
    ``fill``: per-channel pad value (C,) in the images' dtype; None pads with zeros (black).
    """
    if dy is None and flip is None:
        return images
    b, h, w, _ = images.shape
    device = images.device
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    if dy is None:  # flip only: index the unpadded batch
        source, row_idx = images, rows.expand(b, h)
        col_idx = cols.expand(b, w)
    else:
        if fill is None or padding == 0:
            source = F.pad(images, (0, 0, padding, padding, padding, padding))  # pads W and H with zeros
        else:  # a canvas of the fill colour with the images copied into its centre
            source = fill.to(images.dtype).expand(b, h + 2 * padding, w + 2 * padding, -1).clone()
            source[:, padding:padding + h, padding:padding + w] = images
        row_idx = dy[:, None] + rows
        col_idx = dx[:, None] + cols
    if flip is not None:
        base = col_idx[:, :1] if dy is not None else torch.zeros((b, 1), dtype=torch.long, device=device)
        mirrored = base + (w - 1 - cols)
        col_idx = torch.where(flip[:, None], mirrored, col_idx)
    batch_idx = torch.arange(b, device=device)[:, None, None]
    return source[batch_idx, row_idx[:, :, None], col_idx[:, None, :]]


def pad_fill(config_fill: str, mean, *, channels: int, device) -> torch.Tensor | None:
    """The uint8 pad colour for ``TrainConfig.crop_fill``: None for black, round(255·mean) for mean."""
    if config_fill != "mean":
        return None
    values = [round(255 * float(m)) for m in (mean if len(mean) == channels else list(mean)[:1] * channels)]
    return torch.tensor(values, dtype=torch.uint8, device=device)


def to_model_input(images: torch.Tensor, *, scale: torch.Tensor, shift: torch.Tensor,
                   channels_last: bool = True) -> torch.Tensor:
    """uint8 NHWC -> float NCHW ``x/255·(1/std) - mean/std`` (``scale``/``shift`` shaped (1, C, 1, 1)).

    Permuting NHWC to NCHW gives a channels_last-strided view for free; ``contiguous`` is only
    forced when the caller wants the classic layout.
    """
    x = images.permute(0, 3, 1, 2)
    if not channels_last:
        x = x.contiguous()
    return x.to(scale.dtype) * scale + shift


def normalisation(mean, std, *, channels: int, normalize: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) such that ``x_uint8 * scale + shift`` equals ``(x/255 - mean)/std``."""
    if not normalize:
        mean, std = (0.0,) * channels, (1.0,) * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {channels}-channel images")
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, channels, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t
