"""Obtaining a poison artifact: cache lookup, crafting on a miss, checking what a plugin returned.

``obtain_poison`` is the one function the runner (and ``poisonbench craft``) calls. It builds the
poison from the catalog, keys the cache on everything that determines the result, crafts on a
miss with a copy of the clean split (a plugin can neither relabel nor mutate the harness's data),
rejects bad plugin output naming the plugin's provider, writes the artifact atomically, and
returns it read back from disk and checked against the clean set.

A poison with a ``fraction`` (partial poisoning, ``crafting/partial.py``) is crafted on the whole set
(class-wise) or on its seeded subset (sample-wise) and written over the clean images at the chosen
indices only; the fraction joins the cache key and the indices the manifest.

``clean`` goes through the same path as every poison (cached, checked, hashed): one code path, and
its artifact has a sha256 like any other for results and leaderboard entries.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from poisonbench.api import CraftContext, PreparedData, Split
from poisonbench.catalog.params import params_to_dict
from poisonbench.crafting import partial
from poisonbench.crafting.artifacts import (
    Artifact,
    check_artifact,
    measure_linf,
    measure_norms,
    read_artifact,
    summarize_norms,
    write_artifact,
)
from poisonbench.crafting.cache import ArtifactCache, cache_key
from poisonbench.errors import ArtifactError, PluginError

KEY_FORMAT = 1  # bump when the meaning of a cache key changes


def _provider(catalog, name: str) -> tuple[str, str]:
    """(provider name, 'distribution version') of the plugin that registered ``name``."""
    entry, _ = catalog.poisons.lookup(name)
    provider = entry.provider
    return provider, catalog.provider_version(provider)


def make_context(
    *,
    data: PreparedData,
    seed: int,
    device: str,
    cache_dir: Path | None,
    data_dir: Path | None,
    catalog,
    progress,
) -> CraftContext:
    """The CraftContext for ``data``; ``ctx.surrogate`` set when surrogate support is installed."""
    ctx = CraftContext(
        num_classes=data.num_classes,
        seed=seed,
        device=device,
        dataset_name=data.name,
        dataset_fingerprint=data.fingerprint,
        mean=tuple(data.mean),
        std=tuple(data.std),
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        data_dir=Path(data_dir) if data_dir is not None else None,
        catalog=catalog,
        progress=progress,
        full_train=_full_train_loader(catalog, data, data_dir),
    )
    # --- surrogate seam: crafting/surrogate.py (another module) gives trained, cached surrogates.
    if importlib.util.find_spec("poisonbench.crafting.surrogate") is not None:
        surrogate = importlib.import_module("poisonbench.crafting.surrogate")
        ctx.surrogate = surrogate.make_provider(ctx, data)
    return ctx


def _full_train_loader(catalog, data: PreparedData, data_dir: Path | None):
    """``ctx.full_train``: the dataset's whole training split, loaded once on the first call (None
    when it cannot be loaded, e.g. offline without the files)."""
    if catalog is None:
        return None
    cached: list[Split | None] = []

    def full_train() -> Split | None:
        if not cached:
            from types import SimpleNamespace

            from poisonbench.data import load_splits
            from poisonbench.errors import PoisonbenchError

            dataset = SimpleNamespace(name=data.name, params=dict(getattr(data, "params", {}) or {}))
            try:
                cached.append(load_splits(catalog, dataset, data_dir=data_dir, download=False).train)
            except PoisonbenchError:
                cached.append(None)
        return cached[0]

    return full_train


def key_material(
    *, instance, registry_name: str, data: PreparedData, seed: int, ctx: CraftContext
) -> dict[str, Any]:
    """Everything that determines the artifact (its sha256 is the cache key)."""
    cls = type(instance)
    return {
        "format": KEY_FORMAT,
        "poison": registry_name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "version": getattr(cls, "version", 1),
        "params": params_to_dict(instance.params),
        "dataset": {"name": data.name, "fingerprint": data.fingerprint},
        "seed": seed,
        "extras": instance.cache_extras(ctx),
    }


def obtain_poison(
    *,
    catalog,
    poison,
    data: PreparedData,
    seed: int,
    cache_dir: Path | None,
    device: str,
    progress=None,
    data_dir: Path | None = None,
) -> Artifact:
    """The poisoned training set of ``poison`` (a suite ``Component``) on ``data`` for ``seed``.

    Served from the cache under ``cache_dir`` when present (``cache_dir=None`` crafts into a
    temporary folder and caches nothing). Raises ``PluginError`` / ``ArtifactError`` (one line
    naming the plugin or file) for bad plugin output or a corrupt cache entry.
    """
    instance = catalog.poisons.create(poison.name, poison.params)
    provider, dist = _provider(catalog, poison.name)
    ctx = make_context(
        data=data,
        seed=seed,
        device=device,
        cache_dir=cache_dir,
        data_dir=data_dir,
        catalog=catalog,
        progress=progress,
    )
    material = key_material(
        instance=instance, registry_name=poison.name, data=data, seed=seed, ctx=ctx
    )
    fraction = getattr(poison, "fraction", None)  # partial poisoning (crafting/partial.py)
    material.update(partial.key_extras(fraction))
    who = f"poison '{poison.name}' (plugin '{provider}')"

    def create(tmp: Path) -> None:
        indices = None
        if partial.key_extras(fraction):
            images, indices = partial.craft_partial(
                lambda split: craft_checked(instance, split, ctx=ctx, who=who), instance, data.train,
                fraction=fraction, seed=seed)
        else:
            images = craft_checked(instance, data.train, ctx=ctx, who=who)
        linf, _ = measure_linf(images, data.train.images)
        manifest = build_manifest(
            instance,
            registry_name=poison.name,
            data=data,
            seed=seed,
            linf=linf,
            plugin_version=dist,
            key=cache_key(material),
            measured=measured_norms(instance, images, data.train.images),
        )
        if indices is not None:
            manifest.update(fraction=fraction, poisoned_count=len(indices), poisoned_indices=indices)
        write_artifact(tmp, images=images, labels=data.train.labels, manifest=manifest)

    if cache_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="poisonbench-craft-") as tmp_dir:
            path = Path(tmp_dir) / "artifact.safetensors"
            create(path)
            artifact = read_artifact(path)
            artifact.path = None
    else:
        path = ArtifactCache(cache_dir).get_or_create(material, create, kind="poisons")
        try:  # a bad cache entry is named, never silently re-crafted: the user decides
            return _checked(read_artifact(path), instance, data, key=cache_key(material))
        except ArtifactError as err:
            raise ArtifactError(
                f"{err}; remove the cache entry with `poisonbench cache rm "
                f"{cache_key(material)[:12]}` to craft it again"
            ) from None
    return _checked(artifact, instance, data, key=cache_key(material), source=who)


def _checked(artifact: Artifact, instance, data: PreparedData, *, key: str, source: str = ""):
    """``artifact`` after the manifest's cache key and ``check_artifact`` against the clean set."""
    source = str(artifact.path or source)
    if artifact.manifest.get("cache_key") not in (None, key):
        raise ArtifactError(
            f"{source}: manifest belongs to another cache key (file moved or tampered)"
        )
    partial.check_untouched(artifact.images, data.train.images, artifact.manifest, source=source)
    check_artifact(
        artifact,
        data.train,
        budget=instance.budget_for(tuple(data.train.images.shape[1:])),
        threat_model=instance.threat_model,
        source=source,
        fingerprint=data.fingerprint,
    )
    return artifact


def craft_checked(instance, clean: Split, *, ctx: CraftContext, who: str):
    """Run ``instance.craft`` on a copy of ``clean``; reject anything but a valid uint8 result."""
    import torch

    given = Split(images=clean.images.clone(), labels=clean.labels.clone())
    out = instance.craft(given, ctx=ctx)
    if not torch.equal(given.images, clean.images) or not torch.equal(given.labels, clean.labels):
        raise PluginError(
            f"{who} modified the clean images or labels it was given "
            "(craft must not mutate its input)"
        )
    if not isinstance(out, torch.Tensor):
        raise PluginError(f"{who} returned {type(out).__name__}, expected a uint8 tensor")
    if out.is_floating_point() and bool(torch.isnan(out).any()):
        raise PluginError(f"{who} returned NaN values (and a {out.dtype} tensor; expected uint8)")
    if out.dtype != torch.uint8:
        raise PluginError(
            f"{who} returned a {out.dtype} tensor, expected uint8 (export with floor(255·x + 0.5))"
        )
    if tuple(out.shape) != tuple(clean.images.shape):
        raise PluginError(
            f"{who} returned shape {tuple(out.shape)}, expected {tuple(clean.images.shape)}"
        )
    out = out.detach().cpu().contiguous()
    probe = Artifact(out, clean.labels, {}, "", None)
    check_artifact(
        probe,
        clean,
        budget=instance.budget_for(tuple(clean.images.shape[1:])),
        threat_model=instance.threat_model,
        source=who,
    )
    return out


def build_manifest(
    instance,
    *,
    registry_name: str,
    data: PreparedData,
    seed: int,
    linf: float,
    plugin_version: str,
    key: str,
    measured: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The artifact's manifest (the fields of docs/formats.md plus versions and the cache key).

    ``measured`` (``measured_norms``) is the perturbation's measured size, recorded as ``norm`` for
    the L2, L0 and filter threat models (L∞ poisons have ``linf`` alone, as before).
    """
    import torch

    from poisonbench import __version__

    cls = type(instance)
    manifest = {
        "poison": registry_name,
        "family": cls.family or cls.name,
        "kind": instance.kind,  # instance attributes: an imported file decides class/sample-wise itself
        "applied": instance.applied,
        "threat_model": cls.threat_model,
        "version": getattr(cls, "version", 1),
        "params": params_to_dict(instance.params),
        "seed": seed,
        "dataset": {"name": data.name, "fingerprint": data.fingerprint},
        "linf": linf,
        "budget": instance.budget_for(tuple(data.train.images.shape[1:])),
        "versions": {
            "poisonbench": __version__,
            "torch": torch.__version__,
            "plugin": plugin_version,
        },
        # No creation time: the same poison crafted twice gives a byte-identical file (and sha256),
        # which leaderboard evidence relies on. The cache's file times say when it was made.
        "cache_key": key,
    }
    if measured is not None:
        manifest["norm"] = measured
    extras = instance.manifest_extras()
    clash = sorted(set(extras) & set(manifest))
    if clash:
        raise PluginError(
            f"poison '{registry_name}': manifest_extras() may not override {', '.join(clash)}"
        )
    manifest.update(extras)
    return manifest


def measured_norms(instance, images, clean_images) -> dict[str, Any] | None:
    """The measured perturbation for the manifest (``summarize_norms``); None for L∞ and functional."""
    if instance.threat_model not in ("l2", "l0", "filter"):
        return None
    shape = tuple(clean_images.shape[1:])
    return summarize_norms(measure_norms(images, clean_images), threat_model=instance.threat_model,
                           budget=instance.budget_for(shape), shape=shape)
