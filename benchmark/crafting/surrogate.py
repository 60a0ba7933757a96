"""Crafting surrogates: train a victim architecture on the clean training set once, cache its weights.

Spec (../shared/spec/poisons.md, "Surrogate"): 40 epochs, batch 128, SGD lr 0.1, momentum 0.9,
Nesterov, weight decay 5e-4, MultiStepLR at epochs 14, 25, 35 (γ 0.1), cross-entropy, differentiable
shift/flip augmentation (±4 px continuous translation, horizontal flip p = 0.5, one bilinear
``grid_sample`` with zero padding). Every field of ``SurrogateRecipe`` can be overridden, so CPU
suites can use tiny surrogates (a poison's ``surrogate_epochs: 2`` becomes ``epochs: 2`` here).

Normalisation is part of the returned model (``Normalized(net)``), so crafting code feeds images in
[0, 1]. ``normalize: auto`` uses the authors' crafting statistics for CIFAR-10 (mean (0.4915, 0.4823,
0.4468), std (0.2470, 0.2435, 0.2616)) and the dataset's own mean/std for every other dataset
(``dataset`` forces the latter, ``cifar_crafting`` the former, ``none`` disables it).

Weights are cached as safetensors under ``<cache>/surrogates/`` keyed by the victim name and version,
the resolved recipe, the dataset fingerprint, the image shape and the seed, so P10…M250 and FC…FCSD
of one suite share one surrogate per seed. The harness calls ``make_provider(ctx, data)`` and sets
``ctx.surrogate`` to the result; poisons call ``ctx.surrogate(victim_name, recipe)``.

This module imports no torch at import time (plugins read ``SurrogateRecipe`` while listing).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from poisonbench.catalog.params import check_params, params_to_dict
from poisonbench.errors import BadInput, PoisonbenchError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from poisonbench.api import CraftContext, PreparedData, Split

FORMAT_VERSION = 1  # bump when the training loop changes what a recipe produces
CIFAR_CRAFTING_MEAN = (0.4915, 0.4823, 0.4468)
CIFAR_CRAFTING_STD = (0.2470, 0.2435, 0.2616)
PARAM_PREFIX = "surrogate_"


@dataclass(frozen=True)
class SurrogateRecipe:
    """How a surrogate is trained (defaults: the spec's 40-epoch Nesterov recipe)."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5.0e-4
    milestones: list[int] = field(default_factory=lambda: [14, 25, 35])  # epochs after which lr *= gamma
    gamma: float = 0.1
    augment: bool = True  # differentiable shift/flip during training
    max_shift: float = 4.0  # pixels of random translation in x and y
    normalize: Literal["auto", "dataset", "cifar_crafting", "none"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, else fp32

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ValueError("surrogate epochs and batch_size must be positive")
        if self.lr <= 0:
            raise ValueError(f"surrogate lr must be positive, got {self.lr}")


def recipe_from_params(params: Any, prefix: str = PARAM_PREFIX) -> dict[str, Any]:
    """The recipe fields a poison's params override: ``surrogate_epochs`` → ``epochs``, …"""
    names = {f.name for f in dataclasses.fields(SurrogateRecipe)}
    out = {}
    for f in dataclasses.fields(params):
        if f.name.startswith(prefix) and f.name[len(prefix):] in names:
            value = getattr(params, f.name)
            out[f.name[len(prefix):]] = list(value) if isinstance(value, tuple) else value
    return out


def resolve_recipe(raw: Mapping[str, Any] | SurrogateRecipe | None) -> SurrogateRecipe:
    """A checked recipe from a partial mapping (``BadInput`` naming the bad field)."""
    if isinstance(raw, SurrogateRecipe):
        return raw
    recipe, problems = check_params(SurrogateRecipe, dict(raw or {}))
    if problems:
        raise BadInput("surrogate recipe: " + "; ".join(m for _, m in problems))
    return recipe


def normalization(recipe: SurrogateRecipe, *, dataset_name: str, mean: tuple[float, ...],
                  std: tuple[float, ...], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) the surrogate normalises with, or None (see the module docstring)."""
    choice = recipe.normalize
    if choice == "none":
        return None
    cifar_like = dataset_name.startswith("cifar10") and channels == 3
    if choice == "cifar_crafting" or (choice == "auto" and cifar_like):
        if channels != 3:
            raise BadInput(f"surrogate normalize 'cifar_crafting' needs 3 channels, the data has {channels}")
        return CIFAR_CRAFTING_MEAN, CIFAR_CRAFTING_STD
    if len(mean) != channels or len(std) != channels:
        return None  # a dataset without per-channel statistics: train on [0, 1] inputs
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def resolved_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return precision


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across runs, platforms and loop orders)."""
    digest = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# -- differentiable augmentation ----------------------------------------------------------------

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


def shift_flip(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-image affine ``theta`` (n, 2, 3) to ``x`` (n, C, H, W): bilinear, zero padding."""
    import torch.nn.functional as F

    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# -- the model wrapper ---------------------------------------------------------------------------

@functools.cache
def _normalized_class() -> type:
    from torch import nn

    class Normalized(nn.Module):
        """``net((x − mean) / std)`` for x in [0, 1]; mean/std are buffers saved with the weights."""

        def __init__(self, net: nn.Module, mean, std):
            super().__init__()
            import torch

            self.net = net
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    return Normalized


def normalized(net: nn.Module, stats: tuple[tuple[float, ...], tuple[float, ...]] | None, *,
               channels: int) -> nn.Module:
    """Wrap ``net`` so it takes [0, 1] images; identity statistics when ``stats`` is None."""
    if stats is None:
        stats = ((0.0,) * channels, (1.0,) * channels)
    return _normalized_class()(net, stats[0], stats[1])


# -- training ------------------------------------------------------------------------------------

def train_surrogate(model: nn.Module, train: Split, *, recipe: SurrogateRecipe, seed: int,
                    device: str = "cpu", advance: Callable[..., None] | None = None) -> nn.Module:
    """Train ``model`` (a ``normalized`` wrapper) on ``train`` with ``recipe``; returns it frozen."""
    import torch
    import torch.nn.functional as F

    device_t = torch.device(device)
    model = model.to(device_t)
    images = train.images.to(device_t)  # uint8 NHWC, converted per batch
    labels = train.labels.to(device_t)
    n, height, width = images.shape[0], images.shape[1], images.shape[2]
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(recipe.milestones), gamma=recipe.gamma)
    bf16 = resolved_precision(recipe.precision, device) == "bf16"
    model.train()
    for epoch in range(recipe.epochs):
        gen = torch.Generator().manual_seed(derive_seed(seed, "surrogate-epoch", epoch))
        order = torch.randperm(n, generator=gen).to(device_t)
        thetas = None
        if recipe.augment:
            thetas = sample_shift_flip(1, n, height=height, width=width, max_shift=recipe.max_shift,
                                       gen=gen)[0].to(device_t)
        total, count = torch.zeros((), device=device_t), 0
        for start in range(0, n, recipe.batch_size):
            idx = order[start:start + recipe.batch_size]
            x = images[idx].permute(0, 3, 1, 2).float().div_(255.0)
            if thetas is not None:
                x = shift_flip(x, thetas[idx])
            with torch.autocast(device_type=device_t.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
            count += idx.numel()
            if advance is not None:  # epoch and mean loss ride on the epoch's last batch (one sync)
                fields = {"epoch": f"{epoch + 1}/{recipe.epochs}",
                          "loss": round(float(total) / count, 4)} if count == n else {}
                advance(1, **fields)
        sched.step()
    return freeze(model)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients (crafting differentiates w.r.t. the input only)."""
    model.eval()
    model.requires_grad_(False)
    return model


def _save(model: nn.Module, path: Path, material: dict[str, Any]) -> None:
    import json

    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"surrogate": json.dumps(material, sort_keys=True)})


def _load(model: nn.Module, path: Path, device: str) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise PoisonbenchError(f"surrogate cache entry {path} is unreadable ({err}); "
                               f"delete it and run again") from err
    return model.to(device)


# -- the provider the harness installs on CraftContext -------------------------------------------

def make_provider(ctx: CraftContext, data: PreparedData) -> Callable[..., nn.Module]:
    """``provider(victim_name, recipe=None) -> nn.Module``: a trained, frozen surrogate on ctx.device.

    Trains on ``data.train`` the first time a (victim, recipe, dataset, seed) is asked for, then
    serves it from the cache (and from memory within this process).
    """
    from poisonbench.crafting.cache import ArtifactCache

    memo: dict[str, nn.Module] = {}
    cache_root = Path(ctx.cache_dir) if ctx.cache_dir is not None else _default_cache_dir()

    def provider(victim_name: str, recipe: Mapping[str, Any] | SurrogateRecipe | None = None) -> nn.Module:
        from poisonbench.crafting.cache import cache_key

        resolved = resolve_recipe(recipe)
        material = key_material(ctx, data, victim_name, resolved)
        key = cache_key(material)
        if key not in memo:
            def create(tmp: Path) -> None:
                model = build_surrogate(ctx, data, victim_name, material)
                advance = ctx.advance_bar(f"surrogate {victim_name}", resolved.epochs * _batches(data, resolved))
                train_surrogate(model, data.train, recipe=resolved, seed=ctx.seed, device=ctx.device,
                                advance=advance)
                _save(model, tmp, material)

            path = ArtifactCache(cache_root).get_or_create(material, create, kind="surrogates")
            model = _load(build_surrogate(ctx, data, victim_name, material), path, ctx.device)
            memo[key] = freeze(model)
        return memo[key]

    return provider


def key_material(ctx: CraftContext, data: PreparedData, victim_name: str,
                 recipe: SurrogateRecipe) -> dict[str, Any]:
    """Everything that determines a surrogate's weights (its cache key)."""
    height, width, channels = data.train.image_shape
    stats = normalization(recipe, dataset_name=data.name, mean=data.mean, std=data.std, channels=channels)
    victim = _victim(ctx, victim_name)
    return {
        "kind": "surrogate", "format": FORMAT_VERSION, "victim": victim_name,
        "victim_version": getattr(victim, "version", 1), "victim_params": params_to_dict(victim.params),
        "recipe": {**params_to_dict(recipe), "precision": resolved_precision(recipe.precision, ctx.device)},
        "normalization": None if stats is None else {"mean": list(stats[0]), "std": list(stats[1])},
        "dataset": {"name": data.name, "fingerprint": data.fingerprint},
        "image_shape": [height, width, channels], "num_classes": data.num_classes, "seed": ctx.seed,
    }


def build_surrogate(ctx: CraftContext, data: PreparedData, victim_name: str,
                    material: dict[str, Any]) -> nn.Module:
    """A freshly initialised (seeded) architecture wrapped with its normalisation, on the CPU."""
    import torch

    height, _, channels = data.train.image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(ctx.seed, "surrogate-init", victim_name))
        net = _victim(ctx, victim_name).build(num_classes=data.num_classes, in_channels=channels,
                                              image_size=height)
    stats = material["normalization"]
    return normalized(net, None if stats is None else (tuple(stats["mean"]), tuple(stats["std"])),
                      channels=channels)


def _victim(ctx: CraftContext, victim_name: str):
    if ctx.catalog is None:
        raise PoisonbenchError("surrogate: the crafting context has no catalog to build victims from")
    return ctx.catalog.victims.create(victim_name)


def _batches(data: PreparedData, recipe: SurrogateRecipe) -> int:
    return -(-len(data.train) // recipe.batch_size)


def _default_cache_dir() -> Path:
    return Path(os.environ.get("POISONBENCH_CACHE_DIR") or Path.home() / ".cache" / "poisonbench")
