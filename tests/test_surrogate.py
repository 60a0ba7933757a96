"""Surrogate training and caching (benchmark/crafting/surrogate.py) with a tiny registered victim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonbench.api import CraftContext, PreparedData, Victim
from poisonbench.catalog import Catalog
from poisonbench.crafting import surrogate as sur
from poisonbench.errors import BadInput
from poisonbench.testing import tiny_split

from .plugin_fixtures import catalog_of, registering

TINY = {"epochs": 4, "batch_size": 16, "milestones": [3]}


class TinyVictim(Victim):
    """Conv + BatchNorm + linear: small enough to train in a blink, with BN state to save."""

    name = "tiny"

    def build(self, *, num_classes, in_channels, image_size):
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


@pytest.fixture
def tiny_catalog() -> Catalog:
    from poisonbench.plugins import adversarial, baselines, defenses

    return catalog_of(registering(victims=[TinyVictim]), adversarial, baselines, defenses)


def prepared(shape=(8, 8, 3), n=64, name="synthetic") -> PreparedData:
    train, test = tiny_split(shape, n=n, seed=0), tiny_split(shape, n=32, seed=1)
    c = shape[2]
    return PreparedData(name=name, train=train, test=test, val=None, num_classes=4,
                        class_names=list("abcd"), mean=(0.5,) * c, std=(0.25,) * c,
                        fingerprint=f"fp-{name}-{shape}-{n}")


def context(catalog, tmp_path, seed=0, progress=None) -> CraftContext:
    return CraftContext(num_classes=4, seed=seed, catalog=catalog, cache_dir=tmp_path / "cache",
                        progress=progress)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_recipe_resolution_and_errors():
    assert sur.resolve_recipe(None) == sur.SurrogateRecipe()
    recipe = sur.SurrogateRecipe()
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.nesterov, recipe.milestones) == (
        40, 128, 0.1, True, [14, 25, 35])
    assert sur.resolve_recipe({"epochs": 2}).epochs == 2
    with pytest.raises(BadInput, match="epoch"):
        sur.resolve_recipe({"epoch": 2})
    with pytest.raises(BadInput, match="positive"):
        sur.resolve_recipe({"epochs": 0})


def test_normalization_choices():
    own, crafting = ((0.1,) * 3, (0.2,) * 3), ((0.4,) * 3, (0.3,) * 3)
    auto = sur.SurrogateRecipe()
    assert sur.normalization(auto, own=own, crafting=crafting, channels=3) == crafting
    assert sur.normalization(auto, own=own, crafting=None, channels=3) == own
    forced = sur.SurrogateRecipe(stats="dataset")
    assert sur.normalization(forced, own=own, crafting=crafting, channels=3) == own
    off = sur.SurrogateRecipe(normalize=False)
    assert sur.normalization(off, own=own, crafting=crafting, channels=3) is None
    assert sur.normalization(auto, own=own, crafting=None, channels=1) is None  # no per-channel stats
    with pytest.raises(BadInput, match="stats"):
        sur.resolve_recipe({"stats": "cifar_crafting"})


def test_recipe_is_the_victim_protocol_and_params_mirror_it():
    from poisonbench.api import SurrogateParams
    from poisonbench.suite.config import TrainConfig

    assert isinstance(sur.SurrogateRecipe(), TrainConfig)  # one SGD recipe type, one training loop
    mirrored = sur.resolve_recipe(sur.recipe_from_params(SurrogateParams()))
    assert mirrored == sur.SurrogateRecipe()


class _StatsDataset:
    """A CIFAR-like dataset plugin whose statistics the surrogate must use (registered in-test)."""

    @staticmethod
    def make(name: str, mean, std, crafting=None):
        from poisonbench.api import Dataset, DatasetSplits

        class Stats(Dataset):
            image_shape, num_classes = (8, 8, 3), 4

            def load(self, *, data_dir=None, download=True):
                train, test = tiny_split((8, 8, 3), n=64, seed=0), tiny_split((8, 8, 3), n=32, seed=1)
                return DatasetSplits(train, test, 4, list("abcd"), self.mean, self.std)

        Stats.name, Stats.mean, Stats.std = name, mean, std
        if crafting is not None:
            Stats.crafting_mean, Stats.crafting_std = crafting
        return Stats

    @staticmethod
    def catalog(dataset_cls) -> Catalog:
        """A fresh catalog with the tiny victim and ``dataset_cls`` registered."""
        return catalog_of(registering(victims=[TinyVictim], datasets=[dataset_cls]))


@pytest.mark.parametrize("name", ["cifar100", "my_cifar100"])
def test_a_cifar100_like_datasets_own_statistics_reach_the_surrogate(name, tmp_path):
    from poisonbench.data import prepare_data
    from poisonbench.suite import Component
    from poisonbench.suite.config import DatasetConfig

    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    catalog = _StatsDataset.catalog(_StatsDataset.make(name, mean, std))
    data = prepare_data(catalog, DatasetConfig(name=name), Component(name, {}, {}), data_dir=None)
    ctx = context(catalog, tmp_path)
    material = sur.key_material(ctx, data, "tiny", sur.resolve_recipe(TINY))
    assert material["normalization"] == {"mean": list(mean), "std": list(std)}
    model = sur.make_provider(ctx, data)("tiny", {**TINY, "epochs": 1})
    assert torch.allclose(model.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(model.std.flatten(), torch.tensor(std))


def test_declared_crafting_statistics_win_under_auto(tmp_path):
    crafting = ((0.4915, 0.4823, 0.4468), (0.2470, 0.2435, 0.2616))
    cls = _StatsDataset.make("cifar10_like", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), crafting)
    own, declared = sur.dataset_statistics(_StatsDataset.catalog(cls), prepared(name="cifar10_like"))
    assert declared == crafting and own == ((0.5,) * 3, (0.25,) * 3)


def test_builtin_cifar_statistics_are_declared_per_dataset():
    from poisonbench.plugins.datasets import Cifar10, Cifar100

    assert Cifar10.crafting_mean is not None and Cifar100.crafting_mean is None  # not inherited
    assert Cifar100.mean != Cifar10.mean and (Cifar100.train_size, Cifar100.test_size) == (50_000, 10_000)


def test_normalized_wrapper_feeds_standardised_images():
    net = nn.Identity()
    model = sur.normalized(net, ((0.5, 0.25), (0.5, 2.0)), channels=2)
    x = torch.rand(3, 2, 4, 4)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0], dim=1)
    assert torch.allclose(model(x), expected)
    assert torch.equal(sur.normalized(net, None, channels=2)(x), x)


def test_provider_trains_caches_and_freezes(tiny_catalog, tmp_path):
    data = prepared()
    bars = []

    def progress(description, total):
        bars.append({"description": description, "total": total, "fields": []})
        return lambda n=1, **fields: bars[-1]["fields"].append(fields)

    provider = sur.make_provider(context(tiny_catalog, tmp_path, progress=progress), data)
    model = provider("tiny", TINY)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert provider("tiny", TINY) is model  # served from memory
    files = list((tmp_path / "cache" / "surrogates").glob("*.safetensors"))
    assert len(files) == 1
    assert bars and bars[0]["description"] == "surrogate tiny" and bars[0]["total"] == 4 * 4
    assert any("loss" in f for f in bars[0]["fields"])
    # A new process (fresh provider) loads the same weights instead of training again.
    again = sur.make_provider(context(tiny_catalog, tmp_path, progress=progress), data)("tiny", TINY)
    assert len(bars) == 1
    for key, value in weights(model).items():
        assert torch.equal(value, again.state_dict()[key]), key
    # The recipe, the seed and the dataset are part of the key.
    provider("tiny", {**TINY, "epochs": 2})
    sur.make_provider(context(tiny_catalog, tmp_path, seed=1), data)("tiny", TINY)
    sur.make_provider(context(tiny_catalog, tmp_path), prepared(n=48))("tiny", TINY)
    assert len(list((tmp_path / "cache" / "surrogates").glob("*.safetensors"))) == 4


def test_training_is_deterministic_and_learns(tiny_catalog, tmp_path):
    data = prepared(shape=(8, 8, 1))
    # zero-padded crops of 8×8 images blur the brightness cue: flip only, two more epochs
    recipe = {**TINY, "augment": ["flip"], "epochs": 6, "milestones": [5]}
    one = sur.make_provider(context(tiny_catalog, tmp_path / "a"), data)("tiny", recipe)
    two = sur.make_provider(context(tiny_catalog, tmp_path / "b"), data)("tiny", recipe)
    other = sur.make_provider(context(tiny_catalog, tmp_path / "c", seed=9), data)("tiny", recipe)
    for key, value in weights(one).items():
        assert torch.equal(value, two.state_dict()[key]), key
    assert not torch.equal(one.net[0].weight, other.net[0].weight)
    x = data.test.images.permute(0, 3, 1, 2).float() / 255
    accuracy = (one(x).argmax(1) == data.test.labels).float().mean()
    assert accuracy > 0.5  # 4 classes told apart by brightness: chance is 0.25


def test_harness_crafts_a_pgd_poison_with_a_cached_surrogate(tiny_catalog, tmp_path):
    from poisonbench.crafting import obtain_poison
    from poisonbench.suite import Component

    data = prepared()
    params = {"surrogate": "tiny", "steps": 3, "restarts": 2, "step_size": 2 / 255, "batch_size": 32,
              **{f"surrogate_{k}": v for k, v in TINY.items()}}
    component = Component("P10", params, params)
    artifact = obtain_poison(catalog=tiny_catalog, poison=component, data=data, seed=0,
                             cache_dir=tmp_path / "cache", device="cpu")
    diff = (artifact.images.int() - data.train.images.int()).abs()
    assert 0 < diff.max() <= 8
    assert len(list((tmp_path / "cache" / "surrogates").glob("*.safetensors"))) == 1
    assert artifact.manifest["params"]["surrogate_epochs"] == 4
