"""The declared plugin API: base classes, the data they exchange, and every core helper a plugin may use.

A plugin (built-in or third-party) imports only ``poisonbench.api``, ``poisonbench.hookspecs``,
``poisonbench.testing`` and ``poisonbench.errors``; a guard test holds the built-ins to that. What is
here besides the base classes (``__all__`` lists everything):

* surrogates — ``CraftContext.surrogate``, ``SurrogateParams``/``UsesSurrogate``, ``SurrogateRecipe``;
* device and precision — ``resolve_device``, ``resolved_precision``, ``autocast_dtype``, ``autocast``;
* seeds — ``derive_seed(seed, *labels)``, the project's one seed derivation;
* tensors — ``export_uint8`` (the one uint8 export), ``to_float``, ``batches``/``num_batches``,
  ``shift_flip``/``sample_shift_flip`` (differentiable augmentation), ``stratified_indices``;
* progress — ``CraftContext.advance_bar``; files — ``atomic_write_bytes``/``_text``/``_json``,
  ``safe_name``, ``default_cache_dir``/``default_data_dir``, ``confine``, ``active_paths``/``UserPaths``;
* artifacts and the catalog — ``read_artifact``, ``ROUNDING_TOLERANCE``, ``default_catalog``;
* registration and params — ``register_presets(register, cls, presets)``, a family and its named
  presets; ``check_ranges(params, ...)``, the usual range checks of a Params ``__post_init__``.

Import-light on purpose: nothing here imports torch, so ``poisonbench list`` stays instant. The
helpers are resolved lazily on first attribute access (module ``__getattr__``). Plugin modules follow
the same rule (timm/torchvision style): heavy imports happen inside methods, or in a family's
``ops.py`` imported from those methods.

The base classes live in ``plugin_base.py`` (poisons, victims, datasets and their data) and
``defense_base.py`` (defenses); this module is the one place a plugin imports them from.

Data conventions: images are uint8 tensors ``(N, H, W, C)``, labels int64 ``(N,)``.
A poison returns the whole poisoned training set as uint8 of the same shape; labels never change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from poisonbench.defense_base import (
    STAGES,
    BatchContext,
    Defense,
    DefenseContext,
    DefenseStage,
    MixedTarget,
    mixed_cross_entropy,  # the default loss of a defense (cross-entropy, mixed targets too)
    soft_correct,  # train accuracy of a batch with mixed targets
)
from poisonbench.plugin_base import (
    CraftContext,
    Dataset,
    DatasetSplits,
    NoParams,
    Paper,
    Plugin,
    Poison,
    PreparedData,
    Split,
    Victim,
)


def register_presets(register: Callable[..., Any], cls: type,
                     presets: Mapping[str, tuple[Mapping[str, Any], str]]) -> None:
    """Register ``cls`` under its own name, then each preset ``name: (params, description)`` of it.

    For a catalog hook's body: ``register_presets(register, Regions, {"R4": ({"regions": 4}, "…")})``
    is ``register(Regions)`` plus ``register(Regions, "R4", params={"regions": 4}, description="…")``.
    Params are copied, so one mapping may serve several presets.
    """
    register(cls)
    for name, (params, description) in presets.items():
        register(cls, name, params=dict(params), description=description)


_RANGES = {  # check_ranges keyword: (test a value passes, what the message says it must be)
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),  # e.g. eps as a fraction of the pixel range
    "at_least_one": (lambda v: v >= 1, ">= 1"),  # counts: steps, rounds, batch sizes
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "positive": (lambda v: v > 0, "> 0"),
}


def check_ranges(params: Any, *, fraction: tuple[str, ...] = (), at_least_one: tuple[str, ...] = (),
                 non_negative: tuple[str, ...] = (), positive: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError("<field> must be <range>, got <value>")`` for the first field out of range.

    For a Params dataclass's ``__post_init__``: ``check_ranges(self, fraction=("eps",),
    at_least_one=("steps", "batch_size"))``. Each keyword names fields of ``params``: ``fraction``
    in (0, 1], ``at_least_one`` ≥ 1, ``non_negative`` ≥ 0, ``positive`` > 0. A None value passes
    (null = a default; the type check already rejects None where a field does not allow it); NaN
    fails every range. Checks that involve several fields stay in the dataclass.
    """
    for kind, names in (("fraction", fraction), ("at_least_one", at_least_one),
                        ("non_negative", non_negative), ("positive", positive)):
        passes, must = _RANGES[kind]
        for name in names:
            value = getattr(params, name)
            if value is not None and not passes(value):
                raise ValueError(f"{name} must be {must}, got {value}")


# -- core helpers re-exported for plugins, resolved on first access (no torch at import) ---------

_LAZY = {
    # surrogates
    "SurrogateParams": "poisonbench.crafting.surrogate_params",
    "UsesSurrogate": "poisonbench.crafting.surrogate_params",
    "SurrogateRecipe": "poisonbench.crafting.surrogate",
    "recipe_from_params": "poisonbench.crafting.surrogate",
    # device, precision, seeds
    "resolve_device": "poisonbench.training.device",
    "resolved_precision": "poisonbench.training.device",
    "autocast_dtype": "poisonbench.training.device",
    "autocast": "poisonbench.training.device",
    "derive_seed": "poisonbench.training.device",
    # tensors: the uint8 export, batching, differentiable augmentation, stratified subsets
    "export_uint8": "poisonbench.util.tensors",
    "quantize": "poisonbench.util.tensors",
    "to_float": "poisonbench.util.tensors",
    "batches": "poisonbench.util.tensors",
    "num_batches": "poisonbench.util.tensors",
    "shift_flip": "poisonbench.util.tensors",
    "sample_shift_flip": "poisonbench.util.tensors",
    "stratified_indices": "poisonbench.data",
    # files and paths
    "atomic_path": "poisonbench.util.files",
    "atomic_write_bytes": "poisonbench.util.files",
    "atomic_write_text": "poisonbench.util.files",
    "atomic_write_json": "poisonbench.util.files",
    "safe_name": "poisonbench.util.files",
    "default_cache_dir": "poisonbench.util.files",
    "default_data_dir": "poisonbench.util.files",
    "confine": "poisonbench.util.paths",
    # the path policy in force (suite folder, --data-dir, --allow-path): resolve user-named paths
    "active_paths": "poisonbench.util.paths",
    "UserPaths": "poisonbench.util.paths",
    # artifacts and the catalog
    "read_artifact": "poisonbench.crafting.artifacts",
    "ROUNDING_TOLERANCE": "poisonbench.crafting.artifacts",
    "default_catalog": "poisonbench.catalog",
    # resumable crafting (REM rounds, SEP ensembles): atomic safetensors+JSON state in the cache dir
    "CraftState": "poisonbench.crafting.resume",
    "craft_state": "poisonbench.crafting.resume",
    "data_digest": "poisonbench.crafting.resume",
}

__all__ = ["NoParams", "Split", "DatasetSplits", "PreparedData", "Paper", "Plugin", "CraftContext", "Poison",
           "Defense", "DefenseContext", "BatchContext", "MixedTarget", "STAGES", "DefenseStage", "Victim",
           "Dataset", "mixed_cross_entropy", "soft_correct", "register_presets", "check_ranges", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'poisonbench.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
