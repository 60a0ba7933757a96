"""Torch code of the image-squeezing and augmentation defenses: batched, seeded, PIL-exact where it matters.

Preprocess ops take and return uint8 (N, H, W, C) CPU tensors; batch ops take float (B, C, H, W)
in [0, 1] on any device and draw every random number from the given ``torch.Generator`` (or, for
Beta draws, a numpy generator seeded from the batch seed), so a batch is a pure function of its seed.
"""

from __future__ import annotations

import math
import multiprocessing

import numpy as np
import torch
import torch.nn.functional as F

JPEG_CHUNK = 512  # images per encode/decode call


# -- preprocess (uint8 NHWC) ---------------------------------------------------------------------

def jpeg(images: torch.Tensor, *, quality: int, threads: int | None = None) -> torch.Tensor:
    """Per-image JPEG round trip at ``quality`` with libjpeg's defaults (4:2:0, ISLOW, IJG tables).

    Each image is encoded on its own (tiling a batch into one JPEG bleeds across borders). RGB
    images are coded as YCbCr, 1-channel images as single-component greyscale JPEGs. Byte-identical
    to ``PIL.Image.save(buf, "JPEG", quality=q)`` then ``Image.open`` (tests check it). The images
    are split over ``threads`` worker processes (default: torch's intra-op thread count).
    """
    import warnings

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codec for TorchCodec; still libjpeg
        warnings.simplefilter("ignore", DeprecationWarning)
        return _jpeg(images, quality=quality, threads=threads)


def _jpeg(images: torch.Tensor, *, quality: int, threads: int | None) -> torch.Tensor:
    n = len(images)
    workers = max(1, min(math.ceil(n / JPEG_CHUNK), threads or torch.get_num_threads()))
    if workers == 1 or not _can_fork(images):
        out = torch.empty_like(images)
        _jpeg_range(images, out, 0, n, quality=quality)
        return out
    # torchvision's codec holds the GIL (measured: two threads took as long as one), so the
    # workers are forked processes: each reads the parent's images (copy-on-write) and writes its
    # range of one shared-memory output. 50,000 32×32×3 images: 3.06 s → 1.76 s on 2 cores.
    out = torch.empty_like(images).share_memory_()
    bounds = [round(n * k / workers) for k in range(workers + 1)]
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_jpeg_worker, args=(images, out, lo, hi), kwargs={"quality": quality})
             for lo, hi in zip(bounds, bounds[1:], strict=False)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
    if failed:
        raise RuntimeError(f"jpeg: a worker process exited with code {failed[0]}")
    return out


def _can_fork(images: torch.Tensor) -> bool:
    """Forked workers only for CPU data, where fork exists, and before CUDA is initialised."""
    return (images.device.type == "cpu" and "fork" in multiprocessing.get_all_start_methods()
            and not torch.cuda.is_initialized())


def _jpeg_worker(images: torch.Tensor, out: torch.Tensor, lo: int, hi: int, *, quality: int) -> None:
    """A forked worker: one intra-op thread first (the parent's OpenMP pool does not survive fork)."""
    import warnings

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", DeprecationWarning)  # as in ``jpeg``; this process only
    _jpeg_range(images, out, lo, hi, quality=quality)


def _jpeg_range(images: torch.Tensor, out: torch.Tensor, lo: int, hi: int, *, quality: int) -> None:
    """JPEG round trip of ``images[lo:hi]`` into ``out[lo:hi]``, ``JPEG_CHUNK`` images per codec call."""
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    mode = ImageReadMode.RGB if images.shape[-1] == 3 else ImageReadMode.GRAY
    chw = images.permute(0, 3, 1, 2)
    for start in range(lo, hi, JPEG_CHUNK):
        stop = min(hi, start + JPEG_CHUNK)
        encoded = encode_jpeg([chw[i].contiguous() for i in range(start, stop)], quality=int(quality))
        out[start:stop] = torch.stack(decode_jpeg(encoded, mode=mode)).permute(0, 2, 3, 1)


LUMA = (19595.0, 38470.0, 7471.0)  # PIL's fixed-point ITU-R 601 weights (sum 65536)


def luma_pil(images: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """PIL's ``convert("L")`` of uint8 RGB (N, H, W, 3): ``(19595 R + 38470 G + 7471 B + 32768) >> 16``.

    Computed as a float32 matmul, which is exact: every partial sum is an integer below
    65536·255 + 32768 < 2^24, and the division by 65536 is by a power of two (measured 2× faster
    than int32 arithmetic, ~3× faster than PIL on 2 cores).
    """
    weights = torch.tensor(LUMA, dtype=torch.float32)
    out = torch.empty(images.shape[:-1], dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = torch.matmul(images[start:start + chunk].to(torch.float32), weights)
        out[start:start + chunk] = part.add_(32768).div_(65536).floor_().to(torch.uint8)
    return out


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """PIL ``convert("L")`` copied to 3 channels (torchvision ``Grayscale(3)`` on PIL images)."""
    return luma_pil(images)[..., None].expand(*images.shape[:-1], 3).contiguous()


def bit_depth(images: torch.Tensor, *, bits: int) -> torch.Tensor:
    """Keep the top ``bits`` bits of every value (``RandomPosterize(bits, p=1)``): a floor, not rounding."""
    return images & ((0xFF << (8 - bits)) & 0xFF)


# Devillard's 19 compare-exchange network: the median of 9 values ends in position 4.
MEDIAN9 = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
           (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def median(images: torch.Tensor, *, kernel_size: int, chunk: int = 256) -> torch.Tensor:
    """k×k median per channel with replicate borders (= PIL ``MedianFilter(k)``), in chunks.

    k = 3 runs a min/max sorting network on the uint8 views (exact, ~15× faster than PIL per
    image); other sizes take the median of unfolded windows (k·k odd: the middle value, exact).
    """
    if kernel_size == 3:
        return _median3(images)
    _, h, w, c = images.shape

    def window_median(x: torch.Tensor) -> torch.Tensor:
        windows = F.unfold(x, kernel_size).reshape(-1, c, kernel_size * kernel_size, h, w)
        return windows.median(dim=2).values  # k*k is odd: the middle value, exact

    return _filter_channels(images, pad=kernel_size // 2, mode="replicate", chunk=chunk, fn=window_median)


def _filter_channels(images: torch.Tensor, *, pad: int, mode: str, chunk: int, fn) -> torch.Tensor:
    """Run ``fn`` on every channel of uint8 (N, H, W, C) images padded by ``pad`` (``mode``), in
    chunks: ``fn`` maps float (B·C, 1, H + 2·pad, W + 2·pad) to (B, C, H, W) or (B·C, 1, H, W);
    the result is rounded and clamped back to uint8 (N, H, W, C)."""
    n, h, w, c = images.shape
    out = torch.empty_like(images)
    for start in range(0, n, chunk):
        x = images[start:start + chunk].permute(0, 3, 1, 2).float()
        b = x.shape[0]
        y = fn(F.pad(x.reshape(b * c, 1, h, w), (pad, pad, pad, pad), mode=mode)).reshape(b, c, h, w)
        out[start:start + chunk] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


def _median3(images: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    n, h, w, _ = images.shape
    rows = torch.arange(-1, h + 1).clamp(0, h - 1)  # replicate border by index
    cols = torch.arange(-1, w + 1).clamp(0, w - 1)
    out = torch.empty_like(images)
    for start in range(0, n, chunk):
        padded = images[start:start + chunk].index_select(1, rows).index_select(2, cols)
        v = [padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
        for i, j in MEDIAN9:
            v[i], v[j] = torch.minimum(v[i], v[j]), torch.maximum(v[i], v[j])
        out[start:start + chunk] = v[4]
    return out


def gaussian_taps(kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision's 1-D Gaussian: taps at integer offsets, normalised to sum 1 (float64)."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    return pdf / pdf.sum()


def gaussian_blur(images: torch.Tensor, *, kernel_size: int, sigma: float, chunk: int = 1024) -> torch.Tensor:
    """torchvision ``GaussianBlur(k, sigma)`` on uint8 images: separable, reflect padding, rounded."""
    taps = gaussian_taps(kernel_size, sigma).float()

    def separable(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))

    return _filter_channels(images, pad=kernel_size // 2, mode="reflect", chunk=chunk, fn=separable)


def blur_is_identity(kernel_size: int, sigma: float) -> bool:
    """True when the blur cannot move a uint8 value: 255·(1 − centre weight²) < 0.5 (rounding)."""
    centre = float(gaussian_taps(kernel_size, sigma)[kernel_size // 2])
    return 255.0 * (1.0 - centre * centre) < 0.5


# -- batch ops (float B×C×H×W in [0, 1]) ----------------------------------------------------------

def beta(alpha: float, size: int, *, seed: int, device) -> torch.Tensor:
    """``size`` Beta(alpha, alpha) draws from a numpy generator seeded with ``seed`` (float32)."""
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=size)
    return torch.from_numpy(draws).float().to(device)


def gaussian_noise(x: torch.Tensor, *, std: float, gray_p: float, quantize: str,
                   generator: torch.Generator) -> torch.Tensor:
    """ECLIPSE's compensation: grey with prob ``gray_p`` (RGB only), + N(0, std²), clamp, floor to 1/255."""
    b, c = x.shape[:2]
    if gray_p > 0 and c == 3:
        grey = torch.rand(b, generator=generator, device=x.device) < gray_p
        levels = (x * 255).round().to(torch.int32)
        luma = ((19595 * levels[:, 0] + 38470 * levels[:, 1] + 7471 * levels[:, 2] + 32768) >> 16).float() / 255
        x = torch.where(grey[:, None, None, None], luma[:, None].expand_as(x), x)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x = (x + std * noise).clamp(0, 1)
    return torch.floor(x * 255) / 255 if quantize == "floor" else x


def cutout(x: torch.Tensor, *, length: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one length×length box per image, centred anywhere (clipped at borders), all channels."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=x.device)
    half = length // 2
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    inside_r = (rows[None] >= (cy - half).clamp(0, h)[:, None]) & (rows[None] < (cy + half).clamp(0, h)[:, None])
    inside_c = (cols[None] >= (cx - half).clamp(0, w)[:, None]) & (cols[None] < (cx + half).clamp(0, w)[:, None])
    box = inside_r[:, :, None] & inside_c[:, None, :]
    return x * (~box)[:, None].to(x.dtype)


def mixup(x: torch.Tensor, y: torch.Tensor, *, alpha: float, prob: float, per_sample: bool,
          generator: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x', y_a, y_b, lam)`` with ``x' = (1-lam) x + lam x[perm]`` (kornia ``RandomMixUpV2`` semantics)."""
    b = x.shape[0]
    perm = torch.randperm(b, generator=generator, device=x.device)
    lam = beta(alpha, b if per_sample else 1, seed=seed, device=x.device).expand(b).clone()
    lam = lam * (torch.rand(b, generator=generator, device=x.device) < prob).float()
    mixed = (1 - lam)[:, None, None, None] * x + lam[:, None, None, None] * x[perm]
    return mixed, y, y[perm], lam


def cutmix(x: torch.Tensor, y: torch.Tensor, *, alpha: float, prob: float, per_sample: bool,
           generator: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste a box from a permuted partner; ``lam`` = the pasted area fraction (partner's weight).

    per_sample (APBench/kornia ``RandomCutMixV2``): per image b ~ Beta, sides floor(sqrt(1-b)·H|W),
    box wholly inside. Otherwise (CutMix paper code): one λ ~ Beta per batch, box centred uniformly,
    clipped at the borders, λ recomputed from the clipped area.
    """
    b, _, h, w = x.shape
    dev = x.device
    perm = torch.randperm(b, generator=generator, device=dev)
    apply = torch.rand(b if per_sample else 1, generator=generator, device=dev).expand(b) < prob
    u = torch.rand(2, b, generator=generator, device=dev)
    if per_sample:
        r = torch.sqrt(1 - beta(alpha, b, seed=seed, device=dev))
        ch, cw = torch.floor(r * h).long(), torch.floor(r * w).long()
        y0 = torch.floor(u[0] * (h - ch - 1).clamp(min=0)).long()
        x0 = torch.floor(u[1] * (w - cw - 1).clamp(min=0)).long()
        y1, x1 = y0 + ch, x0 + cw
    else:
        r = math.sqrt(1 - float(beta(alpha, 1, seed=seed, device="cpu")[0]))
        cut_h, cut_w = int(h * r), int(w * r)
        cy = torch.floor(u[0, :1] * h).long().expand(b)
        cx = torch.floor(u[1, :1] * w).long().expand(b)
        y0, y1 = (cy - cut_h // 2).clamp(0, h), (cy + cut_h // 2).clamp(0, h)
        x0, x1 = (cx - cut_w // 2).clamp(0, w), (cx + cut_w // 2).clamp(0, w)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    box = ((rows[None] >= y0[:, None]) & (rows[None] < y1[:, None]))[:, :, None] \
        & ((cols[None] >= x0[:, None]) & (cols[None] < x1[:, None]))[:, None, :]
    box = box & apply[:, None, None]
    lam = box.flatten(1).float().mean(1)
    return torch.where(box[:, None], x[perm], x), y, y[perm], lam
