"""CUDA — convolution-based unlearnable data: every image is blurred by its class's random filter.

Paper: Sadasivan, Soltanolkotabi, Feizi, "CUDA: Convolution-based Unlearnable Datasets", CVPR 2023,
https://arxiv.org/abs/2303.04278.

Licence notice: the authors' repository is under a non-commercial, single-copy licence. This
module was written from a description of the paper's method only; no code of that repository was
read, copied or ported.

Threat model ``filter`` (unbounded): nothing is added and no Lp norm bounds the change; the class
signal is the filter. A convolution multiplies the image spectrum by the filter's frequency
response, so Δ = H_y ⊛ x − x grows with local contrast (edges) and is large in every norm. What
bounds it are the declared params (filter size, weight range, centre weight, normalisation); the
artifact check enforces shape and dtype only, and the manifest records PSNR and mean |Δ|.

Algorithm: a private key (the poison seed, numpy PCG64) draws, for each class k and channel c, a
``kernel_size``² filter with off-centre weights ~ U(0, ``blur_parameter``) and centre weight
``centre_weight``, divided by its sum (``normalize: sum``, so mean brightness is kept). Image x of
class y becomes clamp(conv(x, W_y), 0, 1): a depthwise convolution (each channel by its own
filter; ``per_channel: false`` shares one filter across channels), zero padding of
``kernel_size // 2`` (``reflect`` optional), no bias, as torch's conv2d (cross-correlation) —
then exported round-half-up (``quantize: floor`` truncates).

Decisions where the method description is not explicit (each a param): weight distribution
U(0, p_b) with centre 1; sum normalisation (without it the expected gain at p_b = 0.3 is ≈ 2.2 and
most pixels saturate to white, unlike the paper's blurred-but-natural images); independent filters
per channel; zero padding (it darkens the one-pixel border under sum normalisation). Defaults:
kernel 3, p_b = 0.3 (the authors' CIFAR-10 command line). Any K, C, H, W: K·C independent draws.

Params (units in brackets):
  kernel_size [px]        odd side of the square filters (3)
  blur_parameter          upper end of the off-centre weights' uniform range (0.3)
  centre_weight           the centre weight before normalisation (1.0)
  per_channel             one filter per class and channel (true) or per class (false)
  normalize               sum (each filter sums to 1) | none
  padding_mode            zeros | reflect
  quantize                round (half up) | floor
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import CraftContext, Paper, Poison, Split, check_ranges, register_presets
from poisonbench.hookspecs import hookimpl

CHUNK = 2048  # images filtered per step


@dataclass(frozen=True)
class CUDAParams:
    kernel_size: int = 3  # [px], odd
    blur_parameter: float = 0.3  # off-centre weights ~ U(0, blur_parameter)
    centre_weight: float = 1.0
    per_channel: bool = True
    normalize: Literal["sum", "none"] = "sum"
    padding_mode: Literal["zeros", "reflect"] = "zeros"
    quantize: Literal["round", "floor"] = "round"

    def __post_init__(self):
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        check_ranges(self, non_negative=("blur_parameter",), positive=("centre_weight",))


def class_filters(*, num_classes: int, channels: int, params: CUDAParams, seed: int):
    """(K, C, ks, ks) float32 filters drawn from the key ``seed`` (class-major, then channel)."""
    import numpy as np
    import torch

    rng = np.random.Generator(np.random.PCG64(seed))
    ks = params.kernel_size
    draws = channels if params.per_channel else 1
    out = np.empty((num_classes, draws, ks, ks))
    for k in range(num_classes):
        for c in range(draws):
            w = rng.uniform(0.0, params.blur_parameter, size=(ks, ks))
            w[ks // 2, ks // 2] = params.centre_weight
            out[k, c] = w / w.sum() if params.normalize == "sum" else w
    filters = torch.from_numpy(out).float()
    return filters if params.per_channel else filters.expand(-1, channels, -1, -1).contiguous()


def apply_filters(x, filters, labels, *, padding_mode: str):
    """clamp(depthwise conv of x (B, C, H, W) in [0, 1] with its class's filters (K, C, ks, ks), 0, 1)."""
    import torch
    import torch.nn.functional as F

    channels, ks = x.shape[1], filters.shape[-1]
    pad = ks // 2
    padded = F.pad(x, (pad,) * 4, mode="reflect" if padding_mode == "reflect" else "constant")
    out = torch.empty_like(x)
    for k in labels.unique().tolist():
        members = labels == k
        out[members] = F.conv2d(padded[members], filters[k].unsqueeze(1), groups=channels)
    return out.clamp_(0.0, 1.0)


class ConvolutionFilter(Poison):
    """CUDA: a random class-wise blur filter (private key = seed) convolved with every image."""

    name = "convolution"
    kind = "random"
    applied = "class"
    threat_model = "filter"
    Params = CUDAParams
    paper = Paper(title="CUDA: Convolution-based Unlearnable Datasets", venue="CVPR", year=2023,
                  url="https://arxiv.org/abs/2303.04278", authors="Sadasivan et al.")

    def budget(self) -> None:
        return None

    def budget_label(self) -> str:
        p = self.params
        return f"filter {p.kernel_size}×{p.kernel_size}, p_b {p.blur_parameter:g}"

    def craft(self, clean: Split, *, ctx: CraftContext):
        import torch

        from poisonbench.api import export_uint8, to_float

        filters = class_filters(num_classes=ctx.num_classes, channels=clean.image_shape[2],
                                params=self.params, seed=ctx.seed)
        out = torch.empty_like(clean.images)
        advance = ctx.advance_bar("CUDA filters", len(clean))
        for start in range(0, len(clean), CHUNK):
            stop = min(start + CHUNK, len(clean))
            x = apply_filters(to_float(clean.images[start:stop]), filters, clean.labels[start:stop],
                              padding_mode=self.params.padding_mode)
            out[start:stop] = export_uint8(x, channels_first=True, rounding=self.params.quantize)
            advance(stop - start)
        return out


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, ConvolutionFilter, {
        "CUDA": ({}, "CUDA: class-wise random 3×3 blur per channel (U(0, 0.3), centre 1, sum 1); unbounded")})
