"""benchmark/data.py: stratified seeded subsets, the validation hold-out, fingerprints, input checks."""

from __future__ import annotations

import pytest
import torch

from poisonbench.api import Dataset, DatasetSplits, Split
from poisonbench.catalog import Catalog
from poisonbench.data import fingerprint, load_splits, prepare_data, stratified_indices
from poisonbench.errors import BadInput, PluginError
from poisonbench.suite import Component
from poisonbench.suite.config import DatasetConfig

from .plugin_fixtures import catalog_of, registering


def numbered(n: int, labels: torch.Tensor) -> Split:
    """Images whose first two pixels spell their index, so subsets can be traced back."""
    images = torch.zeros(n, 4, 4, 1, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 1, 0] = torch.arange(n) % 256
    return Split(images, labels.long())


def ids(split: Split) -> set[int]:
    return set((split.images[:, 0, 0, 0].long() * 256 + split.images[:, 0, 1, 0].long()).tolist())


class Numbered(Dataset):
    """Unbalanced 3-class data: 300 train (class sizes 150/100/50), 90 test."""

    name = "numbered"

    def load(self, *, data_dir=None, download=True):
        train_labels = torch.cat([torch.zeros(150), torch.ones(100), torch.full((50,), 2)])
        train_labels = train_labels[torch.randperm(300, generator=torch.Generator().manual_seed(1))]
        test_labels = torch.arange(90) % 3
        return DatasetSplits(numbered(300, train_labels), numbered(90, test_labels), 3, ["a", "b", "c"],
                             (0.5,), (0.25,))


class Broken(Dataset):
    name = "broken"

    def load(self, *, data_dir=None, download=True):
        split = Split(torch.zeros(2, 4, 4, 1), torch.zeros(2, dtype=torch.long))  # float, not uint8
        return DatasetSplits(split, split, 2, ["a", "b"], (0.5,), (0.25,))


@pytest.fixture
def cat() -> Catalog:
    return catalog_of(registering(datasets=[Numbered, Broken]))


def prep(cat, **fields):
    return prepare_data(cat, DatasetConfig(name="numbered", **fields), Component("numbered", {}, {}), data_dir=None)


@pytest.mark.parametrize("n", [0, 1, 7, 30, 149, 200, 300])
def test_stratified_indices_sizes_and_balance(n):
    labels = torch.cat([torch.zeros(150), torch.ones(100), torch.full((50,), 2)]).long()
    idx = stratified_indices(labels, n, seed=5)
    assert len(idx) == n and len(set(idx.tolist())) == n and torch.equal(idx, idx.sort().values)
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    available = [150, 100, 50]
    # As equal as possible: a class short of the largest count by more than one is exhausted.
    top = max(counts)
    assert all(c >= top - 1 or c == a for c, a in zip(counts, available, strict=True))
    assert torch.equal(idx, stratified_indices(labels, n, seed=5))


def test_stratified_indices_seed_changes_choice():
    labels = torch.arange(100) % 4
    assert not torch.equal(stratified_indices(labels, 20, seed=0), stratified_indices(labels, 20, seed=1))


def test_val_is_held_out_of_train_and_disjoint(cat):
    data = prep(cat, val_split=30, train_subset=120, test_subset=45)
    assert len(data.val) == 30 and len(data.train) == 120 and len(data.test) == 45
    assert ids(data.val).isdisjoint(ids(data.train))
    assert torch.bincount(data.val.labels).tolist() == [10, 10, 10]
    assert torch.bincount(data.train.labels).tolist() == [40, 40, 40]
    assert torch.bincount(data.test.labels).tolist() == [15, 15, 15]


def test_without_val_or_subsets_everything_is_kept(cat):
    data = prep(cat)
    assert data.val is None and len(data.train) == 300 and len(data.test) == 90
    assert data.mean == (0.5,) and data.class_names == ["a", "b", "c"]


def test_fingerprint_stable_and_sensitive(cat):
    a, b = prep(cat, train_subset=60), prep(cat, train_subset=60)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert prep(cat, train_subset=60, subset_seed=1).fingerprint != a.fingerprint
    assert prep(cat, train_subset=60, val_split=3).fingerprint != a.fingerprint
    assert fingerprint("other", {"train": a.train, "test": a.test}) != fingerprint("numbered", {"train": a.train, "test": a.test})
    flipped = Split(a.train.images.clone(), a.train.labels.clone())
    flipped.images[0, 3, 3, 0] ^= 1
    assert fingerprint("numbered", {"train": flipped, "test": a.test, "val": None}) != a.fingerprint


@pytest.mark.parametrize("fields,key", [
    ({"train_subset": 301}, "dataset.train_subset"),
    ({"train_subset": 280, "val_split": 30}, "dataset.train_subset"),
    ({"test_subset": 91}, "dataset.test_subset"),
    ({"val_split": 300}, "dataset.val_split"),
])
def test_oversized_requests_name_the_field(cat, fields, key):
    with pytest.raises(BadInput, match=key):
        prep(cat, **fields)


def test_plugin_returning_bad_data_is_rejected(cat):
    with pytest.raises(PluginError, match="broken.*uint8"):
        load_splits(cat, Component("broken", {}, {}), data_dir=None)


def test_load_splits_passes_params(catalog):
    comp = Component("synthetic", {"n_train": 30, "n_test": 10, "image_size": 8, "channels": 1}, {})
    splits = load_splits(catalog, comp, data_dir=None)
    assert splits.train.images.shape == (30, 8, 8, 1) and len(splits.test) == 10
