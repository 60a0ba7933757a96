"""Loading a suite's dataset and applying its subset/validation choices: the data every cell sees.

Order of operations in ``prepare_data`` (all draws stratified and seeded by ``subset_seed`` alone, so
every cell, poison and machine sees the same images):

1. ``val_split``: that many images are held out of the **training** set as a clean validation split
   for the defender (``early_stopping`` with ``select: val``). The poisoner never sees them and the
   victim never trains on them; the test split is untouched, so test accuracy stays comparable with
   runs that have no validation split. (Holding val out of the test set instead would change the
   number the benchmark ranks by.)
2. ``train_subset``: a stratified subset of the remaining training images.
3. ``test_subset``: a stratified subset of the test split.

``fingerprint`` is a sha256 over the dataset name and the prepared splits' shapes, bytes and labels;
poison artifacts and cells are keyed by it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from poisonbench.api import DatasetSplits, PreparedData, Split
from poisonbench.errors import BadInput, PluginError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import torch

    from poisonbench.catalog import Catalog
    from poisonbench.suite.config import DatasetConfig


def _seed_for(seed: int, purpose: str) -> int:
    """An independent 63-bit seed per draw (val / train_subset / test_subset) from one user seed."""
    from poisonbench.training.device import derive_seed

    return derive_seed(seed, purpose)


def stratified_indices(labels: torch.Tensor, n: int, *, seed: int) -> torch.Tensor:
    """Sorted int64 indices of ``n`` items with per-class counts as equal as possible.

    Every class gets ``n // K`` (K = classes present) unless it has fewer items, in which case the
    shortfall is spread over the others; the last ``< K`` items go to randomly chosen classes.
    Which items of a class are taken is a seeded permutation. Deterministic given (labels, n, seed).
    """
    import torch

    labels = torch.as_tensor(labels).long()
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot take {n} of {len(labels)} items")
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    counts = counts.tolist()
    quota = [0] * len(classes)
    remaining = n
    active = [k for k in range(len(classes)) if counts[k] > 0]
    while active and remaining >= len(active):
        share = remaining // len(active)
        for k in active:
            give = min(share, counts[k] - quota[k])
            quota[k] += give
            remaining -= give
        active = [k for k in active if quota[k] < counts[k]]
    if remaining:
        order = torch.randperm(len(active), generator=gen).tolist()
        for j in order[:remaining]:
            quota[active[j]] += 1
    picked = []
    for k, cls in enumerate(classes.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        perm = torch.randperm(len(members), generator=gen)
        picked.append(members[perm[: quota[k]]])
    if not picked:
        return torch.zeros(0, dtype=torch.long)
    return torch.sort(torch.cat(picked)).values


def _take(split: Split, idx: torch.Tensor) -> Split:
    return Split(images=split.images[idx].contiguous(), labels=split.labels[idx].contiguous())


def _check_split(split: Any, which: str, name: str) -> None:
    import torch

    if not isinstance(split, Split):
        raise PluginError(f"dataset '{name}': {which} is {type(split).__name__}, not a Split")
    images, labels = split.images, split.labels
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4):
        raise PluginError(f"dataset '{name}': {which} images must be a uint8 (N, H, W, C) tensor")
    if not (isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.ndim == 1):
        raise PluginError(f"dataset '{name}': {which} labels must be an int64 (N,) tensor")
    if len(images) != len(labels):
        raise PluginError(f"dataset '{name}': {which} has {len(images)} images but {len(labels)} labels")


def load_splits(catalog: Catalog, component: Any, *, data_dir: Path | None, download: bool = True) -> DatasetSplits:
    """Create the dataset plugin named by ``component`` (with its params) and load its full splits."""
    dataset = catalog.datasets.create(component.name, getattr(component, "params", None) or {})
    splits = dataset.load(data_dir=data_dir, download=download)
    if not isinstance(splits, DatasetSplits):
        raise PluginError(f"dataset '{component.name}': load() returned {type(splits).__name__}, not DatasetSplits")
    _check_split(splits.train, "train", component.name)
    _check_split(splits.test, "test", component.name)
    if splits.train.images.shape[1:] != splits.test.images.shape[1:]:
        raise PluginError(f"dataset '{component.name}': train and test image shapes differ")
    channels = splits.train.images.shape[3]
    if len(splits.mean) != channels or len(splits.std) != channels:
        raise PluginError(f"dataset '{component.name}': mean/std need one value per channel ({channels})")
    return splits


def fingerprint(name: str, splits: dict[str, Split | None]) -> str:
    """sha256 hex over ``name`` and each split's shape, image bytes and label bytes (in key order)."""
    h = hashlib.sha256(name.encode())
    for key in sorted(splits):
        split = splits[key]
        if split is None:
            continue
        h.update(f"|{key}:{tuple(split.images.shape)}:{len(split)}|".encode())
        h.update(memoryview(split.images.contiguous().numpy()).cast("B"))
        h.update(memoryview(split.labels.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def declared_train_size(catalog: Catalog, config: DatasetConfig, component: Any) -> int | None:
    """Training images a prepared dataset will have, from the plugin's declared split sizes alone.

    The declared full train split, less ``val_split``, capped by ``train_subset``; None when the
    plugin declares no size (then only loading tells). No file is read: ``run --dry-run`` uses this
    to estimate costs before a download.
    """
    dataset = catalog.datasets.create(component.name, getattr(component, "params", None) or {})
    full, _ = dataset.split_sizes()
    if full is None:
        return None
    n = max(0, int(full) - int(config.val_split))
    return n if config.train_subset is None else min(n, int(config.train_subset))


def prepare_data(
    catalog: Catalog,
    config: DatasetConfig,
    component: Any,
    *,
    data_dir: Path | None,
    download: bool = True,
) -> PreparedData:
    """Load the dataset, hold out ``val_split``, take ``train_subset``/``test_subset``, fingerprint."""
    import torch

    splits = load_splits(catalog, component, data_dir=data_dir, download=download)
    train, test, val = splits.train, splits.test, None
    n_train = len(train)
    if config.val_split and config.val_split >= n_train:
        raise BadInput(f"dataset.val_split: {config.val_split} leaves no training images ({n_train} exist)")
    if config.val_split:
        val_idx = stratified_indices(train.labels, config.val_split, seed=_seed_for(config.subset_seed, "val"))
        keep = torch.ones(n_train, dtype=torch.bool)
        keep[val_idx] = False
        val, train = _take(train, val_idx), _take(train, torch.nonzero(keep).flatten())
    if config.train_subset is not None:
        if config.train_subset > len(train):
            extra = f" after holding out val_split={config.val_split}" if config.val_split else ""
            raise BadInput(f"dataset.train_subset: {config.train_subset} exceeds the {len(train)} training images{extra}")
        idx = stratified_indices(train.labels, config.train_subset, seed=_seed_for(config.subset_seed, "train"))
        train = _take(train, idx)
    if config.test_subset is not None:
        if config.test_subset > len(test):
            raise BadInput(f"dataset.test_subset: {config.test_subset} exceeds the {len(test)} test images")
        test = _take(test, stratified_indices(test.labels, config.test_subset, seed=_seed_for(config.subset_seed, "test")))
    name = component.name
    return PreparedData(
        name=name,
        train=train,
        test=test,
        val=val,
        num_classes=splits.num_classes,
        class_names=list(splits.class_names),
        mean=tuple(splits.mean),
        std=tuple(splits.std),
        fingerprint=fingerprint(name, {"train": train, "test": test, "val": val}),
        params=dict(getattr(component, "params", None) or {}),
    )
