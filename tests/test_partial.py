"""Partial poisoning: a seeded stratified share is poisoned, the rest is byte-identical to clean."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from poisonbench.catalog import default_catalog
from poisonbench.cli import main
from poisonbench.crafting import obtain_poison
from poisonbench.crafting.artifacts import read_artifact
from poisonbench.crafting.partial import check_untouched, partial_indices
from poisonbench.data import prepare_data
from poisonbench.errors import ArtifactError, ValidationFailed
from poisonbench.suite import Component, load_suite
from poisonbench.suite.config import DatasetConfig

from .helpers_reliability import tiny_suite


def craft_cli(capsys, tmp_path, out: str, *extra: str) -> dict:
    args = ["--cache-dir", str(tmp_path / "cache"), "craft", *extra, "--dataset", "synthetic",
            "--subset", "120", "--out", str(tmp_path / out), "--json"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    return json.loads(captured.out)


@pytest.fixture(scope="module")
def clean_train():
    catalog = default_catalog()
    data = prepare_data(catalog, DatasetConfig(name="synthetic", train_subset=120),
                        Component("synthetic", {}, {}), data_dir=None)
    return catalog, data


def changed(images: torch.Tensor, clean: torch.Tensor) -> set[int]:
    diff = (images != clean).flatten(1).any(dim=1)
    return set(torch.nonzero(diff).flatten().tolist())


def test_half_r4_differs_from_clean_exactly_in_the_recorded_indices(tmp_path, capsys, clean_train):
    _, data = clean_train
    first = craft_cli(capsys, tmp_path, "a.safetensors", "R4", "--fraction", "0.5", "--no-cache")
    manifest = first["manifest"]
    assert manifest["fraction"] == 0.5 and manifest["poisoned_count"] == 60
    artifact = read_artifact(tmp_path / "a.safetensors")
    assert torch.equal(artifact.labels, data.train.labels)
    indices = manifest["poisoned_indices"]
    assert changed(artifact.images, data.train.images) == set(indices)  # and the rest byte-identical
    per_class = Counter(data.train.labels[indices].tolist())
    assert max(per_class.values()) - min(per_class.values()) <= 1  # stratified
    again = craft_cli(capsys, tmp_path, "b.safetensors", "R4", "--fraction", "0.5", "--no-cache")
    assert again["sha256"] == first["sha256"]
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_class_wise_pattern_is_the_whole_set_poison_on_the_chosen_images(tmp_path, capsys):
    full = craft_cli(capsys, tmp_path, "full.safetensors", "R4")
    half = craft_cli(capsys, tmp_path, "half.safetensors", "R4", "--fraction", "0.5")
    assert "fraction" not in full["manifest"] and full["sha256"] != half["sha256"]
    whole, part = read_artifact(tmp_path / "full.safetensors"), read_artifact(tmp_path / "half.safetensors")
    idx = torch.tensor(half["manifest"]["poisoned_indices"])
    assert torch.equal(part.images[idx], whole.images[idx])  # class patterns from the whole class


def test_sample_wise_poison_is_crafted_on_the_subset_only(clean_train, tmp_path):
    catalog, data = clean_train
    poison = Component("random_noise", {}, {}, fraction=0.25)
    artifact = obtain_poison(catalog=catalog, poison=poison, data=data, seed=3, cache_dir=tmp_path,
                             device="cpu")
    idx = artifact.manifest["poisoned_indices"]
    assert len(idx) == 30 and idx == sorted(idx)
    assert changed(artifact.images, data.train.images) <= set(idx)
    assert idx == partial_indices(data.train.labels, fraction=0.25, seed=3).tolist()
    other = obtain_poison(catalog=catalog, poison=Component("R4", {}, {}, fraction=0.25), data=data,
                          seed=3, cache_dir=tmp_path, device="cpu")
    assert other.manifest["poisoned_indices"] == idx  # same images protected by every poison of a seed


def test_tampered_clean_part_is_refused(clean_train):
    _, data = clean_train
    images = data.train.images.clone()
    images[0, 0, 0, 0] ^= 1
    with pytest.raises(ArtifactError, match="outside the manifest's poisoned_indices"):
        check_untouched(images, data.train.images, {"poisoned_indices": [5, 6]}, source="x")
    check_untouched(images, data.train.images, {"poisoned_indices": [0]}, source="x")


def partial_suite(folder, fraction: str):
    """A suite whose poisons are clean, R4 on half the set and R4 on ``fraction`` of it (line 6)."""
    return tiny_suite(folder, name="partial", poisons=f"[clean, {{name: R4, fraction: 0.5}}, {{name: R4, fraction: {fraction}}}]")


@pytest.mark.parametrize("value", ["0", "1.5", "half", "true", "-0.2", ".nan"])
def test_suite_fraction_must_be_in_zero_one(tmp_path, value):
    with pytest.raises(ValidationFailed) as err:
        load_suite(partial_suite(tmp_path, value), default_catalog())
    lines = str(err.value).splitlines()
    assert any(":6:" in line and "poisons[2]: fraction must be" in line for line in lines), lines
    assert len([line for line in lines if "fraction" in line]) == 1


def test_suite_fraction_reaches_cells_and_labels(tmp_path):
    suite = load_suite(partial_suite(tmp_path, "1"), default_catalog())
    half, whole = suite.poisons[1], suite.poisons[2]
    assert half.fraction == 0.5 and half.label == "R4@50%" and half.to_json()["fraction"] == 0.5
    assert whole.fraction is None and "fraction" not in whole.to_json()  # 1 = the whole set
    ids = {c.poison.label: c.cell_id for c in suite.cells()}
    assert ids["R4@50%"] != ids["R4"]


def test_leaderboard_verify_recrafts_the_partial_artifact():
    from poisonbench.leaderboard.verify import _component

    entry_poison = {"name": "R4", "params": {}, "fraction": 0.5, "family": "regions"}
    assert _component(entry_poison) == {"name": "R4", "params": {}, "fraction": 0.5}
    assert "fraction" not in _component({"name": "R4", "params": {}})
