"""Tensor code of the synthetic poisons (regions, low frequency, random noise).

Private helper of regions.py, low_frequency.py and random_noise.py beside it, imported
inside their methods so that listing plugins never imports torch. Perturbations are float32 in
pixel-fraction units (8/255 ≈ 0.0314), shaped (H, W, C) per class or per image.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from poisonbench.api import export_uint8
from poisonbench.errors import BadInput

# Images per random draw: fixed, so the bytes never change; temporaries of 256×32×32×3 stay in cache.
# Exports go through ``poisonbench.api.export_uint8`` (numpy, chunked; its docstring has the why).
NOISE_CHUNK = 256


def generator(seed: int) -> torch.Generator:
    """A local CPU generator (never the global RNG), so results depend only on the seed."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


# -- regions ---------------------------------------------------------------------------------
def region_grid(regions: int, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the region grid: rows = the largest divisor of n not above √n.

    This gives √n × √n for square n (R4 2×2, RN=1024 32×32), 1 × 2 for R2 (left/right halves) and
    8 × 16 for R128 (4 × 2 px patches on 32×32), the decisions of docs/poisons.md. A grid finer than the image
    is capped at one pixel per region (RN is per-pixel at any size).
    """
    if regions < 1:
        raise BadInput(f"regions must be >= 1, got {regions}")
    rows = max(d for d in range(1, math.isqrt(regions) + 1) if regions % d == 0)
    return min(rows, height), min(regions // rows, width)


def boundaries(cells: int, length: int) -> torch.Tensor:
    """Region index of each of ``length`` pixels for ``cells`` near-equal regions (±1 pixel)."""
    return (torch.arange(length) * cells) // length


def draw_region_signs(
    *, num_classes: int, cells: int, channels: int, distinct: bool, gen: torch.Generator
) -> torch.Tensor:
    """Bernoulli(0.5) bits (K, cells, C); with ``distinct`` redraw until all classes differ."""
    bits = torch.randint(0, 2, (num_classes, cells, channels), generator=gen, dtype=torch.uint8)
    patterns = cells * channels
    if patterns < 63 and num_classes > 2**patterns and distinct:
        raise BadInput(
            f"regions: distinct patterns impossible, {num_classes} classes but only "
            f"2^{patterns} patterns ({cells} regions × {channels} channels)"
        )
    for _ in range(10_000):
        dup = _duplicate_classes(bits)
        if not dup or not distinct:
            break
        for k in dup:  # redraw later duplicates only, in class order (deterministic)
            bits[k] = torch.randint(0, 2, (cells, channels), generator=gen, dtype=torch.uint8)
    dup = _duplicate_classes(bits)
    if dup and distinct:
        raise BadInput(f"regions: no distinct patterns for {num_classes} classes in 10,000 draws")
    if dup:
        warnings.warn(
            f"regions: classes {dup} draw the same pattern as an earlier class ({cells} regions × "
            f"{channels} channel{'s' if channels != 1 else ''}); they are indistinguishable — "
            "set distinct: true to redraw",
            stacklevel=2,
        )
    return bits


def _duplicate_classes(bits: torch.Tensor) -> list[int]:
    seen: set[bytes] = set()
    dup = []
    for k in range(bits.shape[0]):
        key = bits[k].numpy().tobytes()
        if key in seen:
            dup.append(k)
        seen.add(key)
    return dup


def regions_delta(
    *,
    regions: int,
    num_classes: int,
    shape: tuple[int, int, int],
    eps: float,
    signed: bool,
    distinct: bool,
    seed: int,
) -> torch.Tensor:
    """Class-wise perturbations (K, H, W, C): each region a constant ±ε (or {0, +ε}) per channel."""
    height, width, channels = shape
    rows, cols = region_grid(regions, height, width)
    bits = draw_region_signs(
        num_classes=num_classes,
        cells=rows * cols,
        channels=channels,
        distinct=distinct,
        gen=generator(seed),
    ).to(torch.float32)
    values = eps * (2 * bits - 1) if signed else eps * bits  # (K, rows·cols, C)
    cell = boundaries(rows, height)[:, None] * cols + boundaries(cols, width)[None, :]  # (H, W)
    return values[:, cell.reshape(-1)].reshape(num_classes, height, width, channels)


# -- low frequency ---------------------------------------------------------------------------
def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n×n, float64): the DCT of x is D @ x, its inverse D.T @ y."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    mat = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    mat[0] /= math.sqrt(2)
    return mat


def low_frequency_delta(
    *, n: int, num_classes: int, shape: tuple[int, int, int], eps: float, scale: str, seed: int
) -> torch.Tensor:
    """Class-wise perturbations (K, H, W, C): orthonormal inverse 2-D DCT of an N(0,1) block."""
    height, width, channels = shape
    if n < 1 or n > min(height, width):
        raise BadInput(
            f"low_frequency: n must be in 1..{min(height, width)} for {height}×{width} images, "
            f"got {n}"
        )
    coeffs = torch.zeros(num_classes, height, width, channels, dtype=torch.float64)
    block = torch.randn(num_classes, n, n, channels, generator=generator(seed), dtype=torch.float64)
    coeffs[:, :n, :n, :] = block
    d_h, d_w = dct_matrix(height), dct_matrix(width)
    # idctn over axes (H, W) with norm="ortho" is D_H.T @ Z @ D_W per class and channel
    v = (d_h.T @ coeffs.permute(0, 3, 1, 2) @ d_w).permute(0, 2, 3, 1)
    if scale == "rescale":
        peak = v.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
        v = eps * v / peak[:, None, None, None]
    else:
        v = v.clamp(-eps, eps)
    return v.to(torch.float32).contiguous()


# -- random noise ----------------------------------------------------------------------------
def _noise(u: np.ndarray, eps: float) -> np.ndarray:
    """U(0,1) draws → U(−ε, ε), in place, float32."""
    np.multiply(u, np.float32(2 * eps), out=u)
    np.subtract(u, np.float32(eps), out=u)
    return u


def noise_chunks(*, count: int, shape: tuple[int, int, int], eps: float, seed: int):
    """Yield ``(start, δ)``: δ float32 (≤ NOISE_CHUNK, H, W, C) ~ U(−ε, ε), in fixed chunks."""
    gen = generator(seed)
    for start in range(0, count, NOISE_CHUNK):
        size = min(NOISE_CHUNK, count - start)
        yield start, _noise(torch.rand((size, *shape), generator=gen).numpy(), eps)


def uniform_noise(
    *, count: int, shape: tuple[int, int, int], eps: float, seed: int
) -> torch.Tensor:
    """Sample-wise perturbations (N, H, W, C) before quantisation (tests; crafting streams them)."""
    parts = [d for _, d in noise_chunks(count=count, shape=shape, eps=eps, seed=seed)]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.empty((0, *shape))


def random_noise_images(images: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
    """Poisoned uint8 images with fresh U(−ε, ε) noise per image, streamed chunk by chunk."""
    src = images.detach().cpu().contiguous()
    out = torch.empty_like(src)
    for start, delta in noise_chunks(count=src.shape[0], shape=tuple(src.shape[1:]), eps=eps, seed=seed):
        stop = start + delta.shape[0]
        out[start:stop] = export_uint8(src[start:stop], torch.from_numpy(delta))
    return out
