"""Tensor helpers with one implementation each: the uint8 export, batching, differentiable shift/flip.

The uint8 export is the one rule every poison uses to turn a perturbation into bytes: pixel values
are fractions of the range ([0, 1], so 8/255 ≈ 0.0314) and the exported byte is
``floor(255·clamp(x, 0, 1) + 0.5)`` (round half up). For an additive poison on clean bytes x this is
``clamp(x + floor(255·δ + 0.5), 0, 255)``, computed exactly in int16 from the float32 levels: that
is what ``export_uint8(images, delta)`` does. The integer form runs as numpy on the CPU in chunks
of ``EXPORT_CHUNK`` images: numpy runs each element-wise op on one thread, and torch's intra-op
threads on such small chunks measured 10× slower on a loaded 2-core machine
(perf/bench_synthetic_poisons.py).

Torch is imported inside the functions, so importing this module (``poisonbench.api`` does, lazily)
stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Images per export step: temporaries of 256×32×32×3 stay in cache (~1.5–3 MB).
EXPORT_CHUNK = 256


def quantize(delta: torch.Tensor) -> torch.Tensor:
    """Whole grey levels ``floor(255·δ + 0.5)`` as int16 on the CPU (round half up).

    Computed in float32, or in float64 when ``delta`` is float64 (perturbations read from files).
    """
    import numpy as np
    import torch

    dtype = torch.float64 if delta.dtype == torch.float64 else torch.float32
    arr = np.array(delta.detach().cpu().to(dtype).numpy(), order="C", copy=True)
    np.multiply(arr, arr.dtype.type(255), out=arr)
    np.add(arr, arr.dtype.type(0.5), out=arr)
    np.floor(arr, out=arr)
    return torch.from_numpy(arr.astype(np.int16))


def export_uint8(images: torch.Tensor, delta: torch.Tensor | None = None, *, index: torch.Tensor | None = None,
                 channels_first: bool = False, rounding: str = "round") -> torch.Tensor:
    """Poisoned bytes, uint8 (N, H, W, C) on the CPU, by the round-half-up rule above.

    Two forms:

    * ``export_uint8(clean, delta)``: ``clean`` is the clean uint8 (N, H, W, C) split, ``delta`` the
      additive perturbation in pixel fractions, (N, H, W, C) — or (N, C, H, W) with
      ``channels_first=True`` — or one per class, (K, …), picked per image by ``index`` (labels).
    * ``export_uint8(poisoned)``: ``poisoned`` is a float image batch in [0, 1] (values outside are
      clamped), (N, H, W, C) or, with ``channels_first=True``, (N, C, H, W) — for poisons that are
      not additive (functional transforms).

    ``rounding="floor"`` truncates instead (``floor(255·x)``, as some reference code's uint8 cast
    does): it exports the value half a level lower (δ − 0.5/255, or x − 0.5/255), subtracted in the
    input's dtype before the rule above.
    """
    import numpy as np
    import torch

    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    shift = 0.5 / 255 if rounding == "floor" else None  # floor(255·v) = round-half-up of v − ½ level
    if delta is None:
        x = images.detach()
        x = x if x.is_floating_point() else x.float()  # float64 stays float64
        x = (x if shift is None else x - shift).clamp(0.0, 1.0)
        out = torch.floor(x * 255.0 + 0.5).to(torch.uint8)
        return (out.permute(0, 2, 3, 1) if channels_first else out).contiguous().cpu()
    if shift is not None:
        delta = delta - shift
    levels = quantize(delta.permute(0, 2, 3, 1) if channels_first else delta).numpy()
    src = images.detach().cpu().contiguous().numpy()
    idx = None if index is None else np.asarray(index.detach().cpu() if torch.is_tensor(index) else index)
    out = np.empty_like(src)
    for start in range(0, src.shape[0], EXPORT_CHUNK):
        stop = start + EXPORT_CHUNK
        q = levels[idx[start:stop]] if idx is not None else levels[start:stop].copy()
        q += src[start:stop]  # int16: x + q never overflows
        np.clip(q, 0, 255, out=q)
        out[start:stop] = q
    return torch.from_numpy(out)


def to_float(images: torch.Tensor, device=None, *, channels_first: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, C) → float32 in [0, 1] on ``device``, (N, C, H, W) unless ``channels_first=False``."""
    x = images.to(device) if device is not None else images
    if channels_first:
        x = x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous()


def batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches covering ``range(n)``; the last may be shorter."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def num_batches(n: int, batch_size: int) -> int:
    """How many batches ``batches(n, batch_size)`` yields (for progress totals)."""
    return -(-n // batch_size)


# -- differentiable augmentation (crafting through augmentation, surrogate training) -------------

def sample_shift_flip(steps: int, n: int, *, height: int, width: int, max_shift: float = 4.0,
                      flip: bool = True, gen: torch.Generator) -> torch.Tensor:
    """Affine matrices (steps, n, 2, 3): uniform shift in [−max_shift, max_shift] px, flip p = 0.5."""
    import torch

    shift = (torch.rand(steps, n, 2, generator=gen) * 2 - 1) * max_shift
    flips = torch.rand(steps, n, generator=gen) < 0.5 if flip else torch.zeros(steps, n, dtype=torch.bool)
    theta = torch.zeros(steps, n, 2, 3)
    theta[..., 0, 0] = 1.0 - 2.0 * flips.float()  # −1 mirrors the x axis: a horizontal flip
    theta[..., 1, 1] = 1.0
    # With align_corners=False the [−1, 1] range spans the image, so one pixel is 2/W (2/H).
    theta[..., 0, 2] = shift[..., 0] * 2.0 / width
    theta[..., 1, 2] = shift[..., 1] * 2.0 / height
    return theta


def shift_flip(x: torch.Tensor, theta: torch.Tensor, *, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Apply per-image affine ``theta`` (n, 2, 3) to ``x`` (n, C, H, W): bilinear, padded with ``fill``.

    ``fill`` is the per-channel value (pixel units, broadcastable to (1, C, 1, 1)) that pixels shifted
    in from outside take. Pass the model's normalisation mean: zero padding *in normalised space*
    is the dataset-mean colour in pixel space, which is what the error-maximising poisons' original
    crafting code did (it shifted normalised tensors). ``None`` pads with 0 (black in pixel space).
    Bilinear sampling is linear, so ``grid_sample(x − fill) + fill`` pads with ``fill`` exactly.
    """
    import torch.nn.functional as F

    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    fill = fill.to(device=x.device, dtype=x.dtype).reshape(1, -1, 1, 1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
