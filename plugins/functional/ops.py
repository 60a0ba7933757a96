"""Torch operations of the functional poisons: CIELUV colour lattice (ReColorAdv), StAdv flow, δ.

Everything is batched, differentiable where the attack needs gradients, and device-agnostic
(docs/poisons.md, section FC, FCS, FCSD; Laidlaw & Feizi 2019, "Functional adversarial attacks").

Conventions: images are float NCHW in [0, 1]. Colours in CIELUV are *scaled* to about [0, 1]:
(L/100, (u+100)/200, (v+100)/200). The colour lattice is a tensor (N, 3, R_L, R_u, R_v) —
channel-first so it is directly the ``input`` of a 5-D ``grid_sample`` — holding, for each lattice
node (i, j, k), the scaled LUV colour that the node's colour (i/(R_L-1), j/(R_u-1), k/(R_v-1)) maps to.
The flow is (N, H, W, 2) in ``grid_sample``'s normalised units ([-1, 1] spans the image), added to
the identity sampling grid.

Numerics: the forward sRGB→XYZ matrix is the 4-digit one of the ReColorAdv code; its inverse is the
exact matrix inverse (not the rounded 4-digit inverse), so RGB→LUV→RGB round-trips to < 1e-5
instead of ~1e-3. Branches of piecewise functions see clamped inputs so no gradient is NaN/inf.
With the rounded inverse patched in, transform, projection and smoothness match PyPI
``recoloradv`` 0.0.1 to < 1e-5 (tests/test_functional.py, when that package is installed).

Determinism: nothing is random. On CPU results are bit-identical run to run; on CUDA the
backward of ``grid_sample`` accumulates with atomics, so low float bits (rarely one grey level
after export) may vary between runs.

Speed (CPU, torch 2.14, 1 thread of a shared 2-core box at load ~8, tiny conv net, batch 512 of
3×32×32): ~2–3.5 s per iteration (FC ~1.9, FCSD ~3.3), dominated by the lattice projection
(512 × 16·32·32 nodes through LUV→RGB→LUV) and the smoothness penalty; both run in ~1 MB
chunks on CPU and in one piece on a GPU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from poisonbench.api import export_uint8

SRGB_TO_XYZ = (
    (0.4124, 0.3576, 0.1805),
    (0.2126, 0.7152, 0.0722),
    (0.0193, 0.1192, 0.9504),
)
# Exact inverse (the reference code rounds it to 4 digits too, which costs ~1e-3 in a round trip).
XYZ_TO_SRGB = tuple(
    tuple(row) for row in torch.linalg.inv(torch.tensor(SRGB_TO_XYZ, dtype=torch.float64)).tolist()
)
UP_WHITE, VP_WHITE, Y_WHITE = 0.1978, 0.4683, 1.0  # D65 white u', v' (CIE 1976 UCS) and luminance
EPS = 1e-10  # guards divisions and roots (same value as the reference implementation)
SMOOTH_EPS = 1e-10  # inside the square roots of the smoothness penalties
LATTICE_SHAPE = (16, 32, 32)  # (L, u, v) nodes, ReColorAdv's CIFAR setting
COLOR_CHANNELS = 3


@functools.lru_cache(maxsize=16)
def _cached_matrix(rows, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(rows, dtype=dtype, device=device)


def _matrix(rows, like: Tensor) -> Tensor:
    return _cached_matrix(rows, like.dtype, like.device)


def _mix(x: Tensor, matrix: Tensor) -> Tensor:
    """Apply a 3x3 colour matrix along dim 1 of (N, 3, ...)."""
    return torch.einsum("ij,nj...->ni...", matrix, x)


def srgb_to_linear(x: Tensor) -> Tensor:
    """sRGB companding → linear RGB (IEC 61966-2-1)."""
    high = ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(x < 0.04045, x / 12.92, high)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear RGB → sRGB companding; negative inputs stay on the linear branch."""
    high = 1.055 * x.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
    return torch.where(x < 0.0031308, 12.92 * x, high)


def rgb_to_xyz(rgb: Tensor) -> Tensor:
    return _mix(srgb_to_linear(rgb), _matrix(SRGB_TO_XYZ, rgb))


def xyz_to_rgb(xyz: Tensor) -> Tensor:
    return linear_to_srgb(_mix(xyz, _matrix(XYZ_TO_SRGB, xyz)))


def rgb_to_luv(rgb: Tensor) -> Tensor:
    """sRGB (N, 3, ...) in [0, 1] → scaled CIELUV (L/100, (u+100)/200, (v+100)/200)."""
    x, y, z = rgb_to_xyz(rgb).unbind(1)
    denom = x + 15 * y + 3 * z + EPS
    up, vp = 4 * x / denom, 9 * y / denom
    yr = y / Y_WHITE
    cube_root = 116 * yr.clamp(min=EPS) ** (1 / 3) - 16
    lum = torch.where(yr < (6 / 29) ** 3, (29 / 3) ** 3 * yr, cube_root)
    u = 13 * lum * (up - UP_WHITE)
    v = 13 * lum * (vp - VP_WHITE)
    return torch.stack([lum / 100, (u + 100) / 200, (v + 100) / 200], 1)


def luv_to_rgb(luv: Tensor) -> Tensor:
    """Scaled CIELUV (N, 3, ...) → sRGB clamped to [0, 1] (XYZ clamped to [0, 1.1] first)."""
    lum = luv[:, 0] * 100
    u = luv[:, 1] * 200 - 100
    v = luv[:, 2] * 200 - 100
    up = u / (13 * lum + EPS) + UP_WHITE
    vp = v / (13 * lum + EPS) + VP_WHITE
    y = torch.where(lum <= 8, Y_WHITE * lum * (3 / 29) ** 3, Y_WHITE * ((lum + 16) / 116) ** 3)
    denom = 4 * vp + EPS
    x = y * 9 * up / denom
    z = y * (12 - 3 * up - 20 * vp) / denom
    xyz = torch.stack([x, y, z], 1).clamp(0, 1.1)
    return xyz_to_rgb(xyz).clamp(0, 1)


# ---- ReColorAdv: the colour lattice --------------------------------------------------------
def identity_lattice(n: int, *, shape=LATTICE_SHAPE, device=None, dtype=torch.float32) -> Tensor:
    """(n, 3, R_L, R_u, R_v): each node holds its own scaled-LUV coordinates (the identity map)."""
    axes = [torch.linspace(0, 1, r, device=device, dtype=dtype) for r in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)  # (3, R_L, R_u, R_v)
    return coords.unsqueeze(0).expand(n, -1, -1, -1, -1).contiguous()


def lattice_grid(rgb: Tensor) -> Tensor:
    """Sampling grid (N, 1, H, W, 3) of the pixels' colours for a 5-D ``grid_sample``.

    grid_sample's last dim is (x, y, z) = (W, H, D) of the lattice = (v, u, L), mapped from [0, 1]
    to [-1, 1] (align_corners=True: -1 and 1 are the first and last nodes). Colours outside the
    lattice (scaled u reaches ~1.38, v ~-0.17 for saturated sRGB) are clamped to the border nodes
    by padding_mode='border', as the reference implementation's index clamping does.
    """
    luv = rgb_to_luv(rgb)  # (N, 3, H, W)
    grid = luv.flip(1) * 2 - 1  # (v, u, L)
    return grid.permute(0, 2, 3, 1).unsqueeze(1)


def apply_lattice(lattice: Tensor, grid: Tensor) -> Tensor:
    """Trilinear interpolation of the lattice at each pixel's colour, back to sRGB in [0, 1]."""
    luv = F.grid_sample(lattice, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return luv_to_rgb(luv.squeeze(2))  # (N, 3, H, W)


def chunks(n: int, like: Tensor) -> list[slice]:
    """Image slices for the lattice-sized elementwise work: the whole batch on a GPU (few big
    kernels), ~1 MB pieces on a CPU (cache-resident; measured 1.9× faster for the projection,
    batch 128, 1 thread)."""
    size = n if like.is_cuda else max(1, (1 << 18) // max(1, like[0].numel()))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def project_lattice_(lattice: Tensor, identity: Tensor, bound: float) -> None:
    """In place: clamp nodes to [0, 1], project them into the sRGB gamut (LUV→RGB→LUV), then
    keep each within ±``bound`` per channel of its identity position (the reference order)."""
    for part in chunks(lattice.shape[0], lattice):
        ident = identity[part]
        gamut = rgb_to_luv(luv_to_rgb(lattice[part].clamp(0, 1)))
        lattice[part] = ident + (gamut - ident).clamp(-bound, bound)


def _neighbour_norms(delta: Tensor, *, vector_dim: int, axes: tuple[int, ...]) -> Tensor:
    """Σ over ``axes`` and both neighbours (edge-replicated) of √(‖Δ_p − Δ_q‖² + 1e-10), per image.

    With edge replication the "next" and "previous" neighbour see the same differences (and the
    border sees a zero difference, √1e-10 each), so each axis costs one difference: the value is
    2·Σ √(‖Δ_{i+1} − Δ_i‖² + ε) + 2·√ε · (border entries), equal to the two-sided sum.
    """
    total = delta.new_zeros(delta.shape[0])
    entries = delta[0].numel() // delta.shape[vector_dim]  # vectors per image
    for axis in axes:
        size = delta.shape[axis]
        diff = delta.narrow(axis, 1, size - 1) - delta.narrow(axis, 0, size - 1)
        norms = (diff.pow(2).sum(vector_dim) + SMOOTH_EPS).sqrt()
        border = entries // size  # vectors in one slice across ``axis``
        total = total + 2 * norms.flatten(1).sum(1) + 2 * border * SMOOTH_EPS**0.5
    return total


def color_smoothness(lattice: Tensor, identity: Tensor) -> Tensor:
    """ReColorAdv's smoothness penalty of Δ = lattice − identity over its 3 axes, per image (N,)."""
    return _neighbour_norms(lattice - identity, vector_dim=1, axes=(2, 3, 4))


# ---- StAdv: per-pixel flow ---------------------------------------------------------------------
def identity_grid(n: int, height: int, width: int, *, device=None, dtype=torch.float32) -> Tensor:
    """(n, H, W, 2) identity sampling grid in [-1, 1] (align_corners=False: pixel centres)."""
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device, dtype=dtype)
    return F.affine_grid(theta.expand(n, 2, 3), [n, 1, height, width], align_corners=False)


def apply_flow(images: Tensor, flow: Tensor, identity: Tensor) -> Tensor:
    """Resample each image at identity + flow (bilinear, zero padding outside the image)."""
    return F.grid_sample(images, identity + flow, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


@torch.no_grad()
def project_flow_(flow: Tensor, identity: Tensor, bound: float) -> None:
    """In place: sampling grid clamped to [-1, 1], then each coordinate within ±``bound``."""
    grid = (identity + flow).clamp(-1, 1)
    flow.copy_((grid - identity).clamp(-bound, bound))


def flow_smoothness(flow: Tensor) -> Tensor:
    """StAdv's flow penalty over the 4 neighbours (edge-replicated), per image (N,)."""
    return _neighbour_norms(flow, vector_dim=3, axes=(1, 2))


# ---- additive δ and the objective ------------------------------------------------------------
@torch.no_grad()
def project_delta_(delta: Tensor, base: Tensor, eps: float) -> None:
    """In place: keep base + δ in [0, 1], then |δ| ≤ eps (the reference order; both then hold)."""
    delta.copy_(((base + delta).clamp(0, 1) - base).clamp(-eps, eps))


def cw_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Carlini–Wagner margin on the true label, Z_y − max_{j≠y} Z_j, per image (no κ clamp)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return true - others.amax(1)


def to_color(images: Tensor) -> Tensor:
    """1-channel images are replicated to RGB for the colour transform; 3-channel pass through."""
    return images.expand(-1, COLOR_CHANNELS, -1, -1) if images.shape[1] == 1 else images


def from_color(rgb: Tensor, channels: int) -> Tensor:
    """Back to the images' channel count: grey = mean of R, G, B (exact for a grey output)."""
    return rgb.mean(1, keepdim=True) if channels == 1 else rgb


# ---- the attack: C → S → D, Adam on the CW margin plus smoothness -----------------------------
@dataclass(frozen=True)
class AttackConfig:
    """One batch's attack settings (units: colour in scaled LUV, flow in grid units, eps in [0, 1])."""

    color: bool = True
    flow: bool = True
    delta: bool = True
    color_bound: float = 0.06
    flow_bound: float = 0.05
    eps: float = 8 / 255
    lattice_shape: tuple[int, int, int] = LATTICE_SHAPE
    steps: int = 100
    lr: float = 1e-3
    reg_weight: float = 0.05
    precision: str = "fp32"  # "bf16": autocast the model's forward only (colour math stays fp32)


class Perturbation:
    """The per-image parameters of one batch (lattice, flow, δ), all starting at the identity."""

    def __init__(self, images: Tensor, cfg: AttackConfig):
        n, channels, height, width = images.shape
        kw = {"device": images.device, "dtype": images.dtype}
        self.images, self.cfg, self.channels = images, cfg, channels
        self.lattice = self.flow = self.delta = None
        if cfg.color:
            if channels not in (1, COLOR_CHANNELS):
                raise ValueError(f"the colour transform needs 1 or 3 channels, got {channels}")
            self.lattice_id = identity_lattice(n, shape=cfg.lattice_shape, **kw)
            self.lattice = self.lattice_id.clone().requires_grad_(True)
            self.grid = lattice_grid(to_color(images))  # constant: the clean colours
        if cfg.flow:
            self.grid_id = identity_grid(n, height, width, **kw)
            self.flow = torch.zeros(n, height, width, 2, **kw, requires_grad=True)
        if cfg.delta:
            self.delta = torch.zeros_like(images, requires_grad=True)

    def parameters(self) -> list[Tensor]:
        return [p for p in (self.lattice, self.flow, self.delta) if p is not None]

    def render(self) -> Tensor:
        """Project every parameter into its set, then return the perturbed images (C → S → D)."""
        cfg, x = self.cfg, self.images
        if self.lattice is not None:
            project_lattice_(self.lattice, self.lattice_id, cfg.color_bound)
            x = from_color(apply_lattice(self.lattice, self.grid), self.channels)
        if self.flow is not None:
            project_flow_(self.flow, self.grid_id, cfg.flow_bound)
            x = apply_flow(x, self.flow, self.grid_id)
        if self.delta is not None:  # δ's penalty weight is 0 (reference setting)
            project_delta_(self.delta, x.detach(), cfg.eps)
            x = x + self.delta
        return x

    def _penalties(self) -> list[tuple[Tensor, object]]:
        out = []
        if self.lattice is not None:
            out.append((self.lattice, lambda p, part: color_smoothness(p, self.lattice_id[part])))
        if self.flow is not None:
            out.append((self.flow, lambda p, part: flow_smoothness(p)))
        return out

    def penalty(self) -> Tensor:
        """Colour + flow smoothness per image (N,), differentiable (tests; the loop uses
        ``add_penalty_grads``)."""
        total = self.images.new_zeros(self.images.shape[0])
        for param, fn in self._penalties():
            total = total + fn(param, slice(None))
        return total

    def add_penalty_grads(self, weight: float) -> Tensor:
        """Add weight · ∂penalty/∂param to each ``param.grad``, chunk by chunk (the penalty is a
        sum of per-image terms, so chunks are independent); return the penalty per image."""
        total = self.images.new_zeros(self.images.shape[0])
        for param, fn in self._penalties():
            for part in chunks(param.shape[0], param):
                with torch.enable_grad():
                    piece = param[part].detach().requires_grad_(True)
                    value = fn(piece, part)
                    (grad,) = torch.autograd.grad(value.sum(), piece)
                param.grad[part] += weight * grad
                total[part] += value.detach()
        return total


@dataclass
class AttackResult:
    images: Tensor  # the last iterate, projected, in [0, 1]
    margins: list[float]  # mean CW margin at each step (before its update), then of ``images``
    perturbation: Perturbation


def functional_attack(model, images: Tensor, labels: Tensor, *, cfg: AttackConfig,
                      on_step=None) -> AttackResult:
    """Minimise Σ_i [margin_i + reg_weight · penalty_i] with Adam from the identity.

    Every step projects the parameters, renders C → S → D and takes one Adam step; the last
    iterate is projected and rendered once more (no best-iterate selection). Gradients are taken
    with ``torch.autograd.grad`` for the perturbation only, so the model's parameters are never
    touched even if they require grad.
    """
    pert = Perturbation(images, cfg)
    params = pert.parameters()
    opt = torch.optim.Adam(params, lr=cfg.lr)
    margins: list[float] = []
    def logits(x: Tensor) -> Tensor:
        if cfg.precision != "bf16":
            return model(x)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return model(x).float()

    for _ in range(cfg.steps):
        margin = cw_margin(logits(pert.render()), labels)
        for p, g in zip(params, torch.autograd.grad(margin.sum(), params), strict=True):
            p.grad = g
        pert.add_penalty_grads(cfg.reg_weight)  # objective: Σ_i margin_i + reg_weight · penalty_i
        opt.step()
        margins.append(float(margin.detach().mean()))
        if on_step is not None:
            on_step(margins[-1])
    with torch.no_grad():
        x = pert.render()
        margins.append(float(cw_margin(logits(x), labels).mean()))
    return AttackResult(x.detach().clamp(0, 1), margins, pert)


def craft_poison(model, images: Tensor, labels: Tensor, *, cfg: AttackConfig, batch_size: int,
                 device: str | torch.device = "cpu", on_step=None) -> Tensor:
    """Attack every image in fixed-order batches; return poisoned uint8 (N, H, W, C) on the CPU.

    Export is the project's floor(255·x' + 0.5) with x' in [0, 1]. Nothing is random: the result
    depends only on the images, labels, config and model (the seed enters through the surrogate).
    """
    out = torch.empty_like(images)
    with torch.inference_mode(False), torch.enable_grad():  # callers may be in no_grad
        for start in range(0, images.shape[0], batch_size):
            stop = start + batch_size
            x = images[start:stop].to(device).permute(0, 3, 1, 2).float() / 255
            y = labels[start:stop].to(device)
            adv = functional_attack(model, x, y, cfg=cfg, on_step=on_step).images
            out[start:stop] = export_uint8(adv, channels_first=True)
    return out
