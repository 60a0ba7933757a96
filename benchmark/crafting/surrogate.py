"""Crafting surrogates: train a victim architecture on the clean training set once, cache its weights.

The recipe (``SurrogateRecipe``) is a victim training protocol (it extends ``TrainConfig``) with the
surrogate's own defaults, taken from the error-maximising poisons' papers: 40 epochs, batch 128, SGD
lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4, lr × 0.1 after epochs 14, 25 and 35,
cross-entropy, random crop (4 px zero padding) and horizontal flip. Training goes through the same
``train_victim`` as every victim (one training loop in the project): device-resident uint8 data,
batched augmentation, bf16 autocast on CUDA. Every field can be overridden, so CPU suites can use tiny
surrogates (a poison's ``surrogate_epochs: 2`` becomes ``epochs: 2`` here).

The authors' surrogate code translated by a continuous ±4 px shift (bilinear ``grid_sample``); the
trainer's crop with 4 px zero padding is the same translation restricted to whole pixels. Crafting
itself still uses the differentiable shift/flip (``poisonbench.api.shift_flip``) where a poison asks.

Normalisation is part of the returned model (``Normalized(net)``), so crafting code feeds images in
[0, 1]. The statistics come from the dataset plugin: ``stats: auto`` uses its declared crafting
statistics (``Dataset.crafting_mean``/``crafting_std``; CIFAR-10 declares the ones the authors'
crafting code used) and otherwise the dataset's own ``mean``/``std``; ``stats: dataset`` always uses
the latter; ``normalize: false`` trains on [0, 1] inputs.

Weights are cached as safetensors under ``<cache>/surrogates/`` keyed by the victim name and version,
the resolved recipe, the statistics, the dataset fingerprint, the image shape and the seed, so
P10…M250 and FC…FCSD of one suite share one surrogate per seed. The harness calls
``make_provider(ctx, data)`` and sets ``ctx.surrogate`` to the result; poisons call
``ctx.surrogate(victim_name, recipe)`` (see ``CraftContext``).

This module imports no torch at import time (plugins read ``SurrogateRecipe`` while listing).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from poisonbench.catalog.params import check_params, params_to_dict
from poisonbench.errors import BadInput, PoisonbenchError
from poisonbench.suite.config import TrainConfig
from poisonbench.training.device import derive_seed, resolved_precision
from poisonbench.util.files import default_cache_dir

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from poisonbench.api import CraftContext, PreparedData

# 2: trained by train_victim (crop/flip, trainer normalisation), statistics from the dataset plugin.
# 3: the crop pads with the normalisation mean colour (crop_fill: mean).
FORMAT_VERSION = 3
PARAM_PREFIX = "surrogate_"
Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class SurrogateRecipe(TrainConfig):
    """How a surrogate is trained: the victim protocol with the surrogate's defaults (see above)."""

    epochs: int = 40
    nesterov: bool = True
    milestones: list[int] = field(default_factory=lambda: [14, 25, 35])  # epochs after which lr *= gamma
    stats: Literal["auto", "dataset"] = "auto"  # auto: the dataset plugin's crafting statistics if declared
    # The authors pad the surrogate's shifted images with zeros in normalised space (the mean
    # colour), not black; victims keep torchvision's black padding.
    crop_fill: Literal["black", "mean"] = "mean"


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


def dataset_statistics(catalog: Any, data: PreparedData) -> tuple[Stats, Stats | None]:
    """((mean, std) of ``data``, the dataset plugin's declared crafting statistics or None)."""
    own = (tuple(float(m) for m in data.mean), tuple(float(s) for s in data.std))
    crafting = None
    if catalog is not None and data.name in catalog.datasets:
        cls = catalog.datasets.lookup(data.name)[0].cls
        if getattr(cls, "crafting_mean", None) and getattr(cls, "crafting_std", None):
            crafting = (tuple(cls.crafting_mean), tuple(cls.crafting_std))
    return own, crafting


def normalization(recipe: SurrogateRecipe, *, own: Stats, crafting: Stats | None,
                  channels: int) -> Stats | None:
    """(mean, std) the surrogate normalises with, or None for [0, 1] inputs (module docstring)."""
    if not recipe.normalize:
        return None
    chosen = crafting if (recipe.stats == "auto" and crafting is not None) else own
    if len(chosen[0]) != channels or len(chosen[1]) != channels:
        return None  # a dataset without per-channel statistics: train on [0, 1] inputs
    return chosen


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

def train_surrogate(net: nn.Module, data: PreparedData, *, recipe: SurrogateRecipe, stats: Stats | None,
                    seed: int, device: str = "cpu", progress: Callable[..., Any] | None = None,
                    checkpoint_path: Path | None = None) -> nn.Module:
    """Train ``net`` with ``train_victim`` under ``recipe``; return it wrapped in its normalisation, frozen.

    The global RNG is left as it was (the trainer seeds it for dropout & co.). ``checkpoint_path``:
    the trainer's per-epoch checkpoint, resumed from when present (surrogate_pool uses it).
    """
    import torch

    from poisonbench.training.trainer import train_victim

    channels = data.train.image_shape[2]
    config = dataclasses.replace(recipe, normalize=stats is not None)
    mean, std = stats if stats is not None else ((0.0,) * channels, (1.0,) * channels)
    with torch.random.fork_rng(devices=[]):
        train_victim(model=net, train=data.train, test=data.test, val=None, config=config, mean=mean,
                     std=std, seed=seed, device=device, progress=progress, checkpoint_path=checkpoint_path)
    net = net.to(memory_format=torch.contiguous_format)
    return freeze(normalized(net, stats, channels=channels).to(device))


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
    from poisonbench.crafting.cache import ArtifactCache, cache_key

    memo: dict[str, nn.Module] = {}
    cache_root = default_cache_dir(ctx.cache_dir)

    def provider(victim_name: str, recipe: Mapping[str, Any] | SurrogateRecipe | None = None, *,
                 checkpoints: list[int] | None = None) -> nn.Module | list[nn.Module]:
        resolved = resolve_recipe(recipe)
        if checkpoints is not None:  # an ensemble of one training's epochs (SEP): surrogate_pool.py
            from poisonbench.crafting.surrogate_pool import checkpoint_models

            return checkpoint_models(ctx, data, victim_name, resolved, checkpoints, cache_root=cache_root)
        material = key_material(ctx, data, victim_name, resolved)
        key = cache_key(material)
        if key not in memo:
            def create(tmp: Path) -> None:
                label = f"surrogate {victim_name}"
                model = train_surrogate(build_net(ctx, data, victim_name), data, recipe=resolved,
                                        stats=_stats(material), seed=derive_seed(ctx.seed, "surrogate"),
                                        device=ctx.device,
                                        progress=lambda _description, total: ctx.advance_bar(label, total))
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
    own, crafting = dataset_statistics(ctx.catalog, data)
    stats = normalization(recipe, own=own, crafting=crafting, channels=channels)
    victim = _victim(ctx, victim_name)
    protocol = {k: v for k, v in params_to_dict(recipe).items() if k not in ("device", "compile", "eval_batch_size")}
    return {
        "kind": "surrogate", "format": FORMAT_VERSION, "victim": victim_name,
        "victim_version": getattr(victim, "version", 1), "victim_params": params_to_dict(victim.params),
        "recipe": {**protocol, "precision": resolved_precision(recipe.precision, ctx.device)},
        "normalization": None if stats is None else {"mean": list(stats[0]), "std": list(stats[1])},
        "dataset": {"name": data.name, "fingerprint": data.fingerprint},
        "image_shape": [height, width, channels], "num_classes": data.num_classes, "seed": ctx.seed,
    }


def _stats(material: dict[str, Any]) -> Stats | None:
    stats = material["normalization"]
    return None if stats is None else (tuple(stats["mean"]), tuple(stats["std"]))


def build_net(ctx: CraftContext, data: PreparedData, victim_name: str) -> nn.Module:
    """A freshly initialised (seeded) architecture on the CPU; the global RNG is left as it was."""
    import torch

    height, _, channels = data.train.image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(ctx.seed, "surrogate-init", victim_name))
        return _victim(ctx, victim_name).build(num_classes=data.num_classes, in_channels=channels,
                                               image_size=height)


def build_surrogate(ctx: CraftContext, data: PreparedData, victim_name: str,
                    material: dict[str, Any]) -> nn.Module:
    """``build_net`` wrapped with the normalisation recorded in ``material`` (for loading weights)."""
    return normalized(build_net(ctx, data, victim_name), _stats(material), channels=data.train.image_shape[2])


def _victim(ctx: CraftContext, victim_name: str):
    if ctx.catalog is None:
        raise PoisonbenchError("surrogate: the crafting context has no catalog to build victims from")
    return ctx.catalog.victims.create(victim_name)
