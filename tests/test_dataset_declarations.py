"""Dataset plugins declare their facts on the class; dry runs estimate costs from them without files."""

from __future__ import annotations

import json

import pytest

from poisonbench.catalog import default_catalog
from poisonbench.cli import main
from poisonbench.data import declared_train_size, prepare_data
from poisonbench.suite import Component
from poisonbench.suite.config import DatasetConfig


@pytest.fixture(scope="module")
def catalog():
    return default_catalog()


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion_mnist", "fashion_mnist_demo", "svhn"])
def test_fixed_datasets_declare_sizes_and_shapes(catalog, name):
    cls = catalog.datasets.lookup(name)[0].cls
    assert cls.train_size and cls.test_size and cls.image_shape and cls.num_classes


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion_mnist", "fashion_mnist_demo"])
def test_statistics_are_declared_one_per_channel(catalog, name):
    cls = catalog.datasets.lookup(name)[0].cls
    channels = cls.image_shape[2]
    assert len(cls.mean) == len(cls.std) == channels and all(s > 0 for s in cls.std)


@pytest.mark.parametrize(("name", "params"), [("fashion_mnist_demo", {}), ("synthetic", {"n_train": 90})])
def test_declared_sizes_match_what_loading_gives(catalog, name, params):
    config = DatasetConfig(name=name, val_split=10, train_subset=None)
    component = Component(name, params, params)
    data = prepare_data(catalog, config, component, data_dir=None)
    assert declared_train_size(catalog, config, component) == len(data.train)
    splits = catalog.datasets.create(name, params).load(data_dir=None)
    cls = catalog.datasets.lookup(name)[0].cls
    if cls.mean is not None:
        assert tuple(splits.mean) == tuple(cls.mean) and tuple(splits.std) == tuple(cls.std)


def test_subset_and_val_split_shape_the_estimate(catalog):
    component = Component("cifar10", {}, {})
    assert declared_train_size(catalog, DatasetConfig(name="cifar10"), component) == 50_000
    assert declared_train_size(catalog, DatasetConfig(name="cifar10", val_split=5000), component) == 45_000
    assert declared_train_size(catalog, DatasetConfig(name="cifar10", train_subset=1000), component) == 1000


def test_paper_dry_run_estimates_without_the_dataset_files(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    suite = Path(__file__).resolve().parents[1] / "suites" / "paper.yaml"
    monkeypatch.setenv("POISONBENCH_DATA_DIR", str(tmp_path / "no-data"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache-dir", str(tmp_path / "cache"), "run", str(suite), "--dry-run", "--json",
              "--out", str(tmp_path / "run")])
    assert exit_info.value.code in (0, None)
    plan = json.loads(capsys.readouterr().out)
    assert plan["image_passes"] and plan["image_passes"] > 0
    assert all(t["train_images"] for t in plan["trainings"])
    assert not (tmp_path / "no-data").exists()  # nothing was downloaded or read
