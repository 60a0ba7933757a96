"""Tests of the unlearnable-examples poisons SU and CU (plugins/unlearnable/).

Tiny data (100 images of 8×8, 1 or 3 channels) and a tiny victim registered only in the test catalog,
so the tests do not depend on the built-in victims.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonbench.api import CraftContext, Split, Victim, export_uint8
from poisonbench.catalog import Catalog
from poisonbench.errors import RunFailed
from poisonbench.plugins import unlearnable
from poisonbench.plugins.unlearnable import ops

from .plugin_fixtures import catalog_of, registering

K = 4  # classes


class TinyNet(Victim):
    """Conv + BatchNorm + linear head: small, but with a train/eval difference like the real nets."""

    name = "tiny_test_net"

    def build(self, *, num_classes, in_channels, image_size):
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * image_size * image_size, num_classes),
        )


class TinyDropoutNet(TinyNet):
    """TinyNet with dropout: crafting must stay deterministic although training uses the RNG."""

    name = "tiny_dropout_net"

    def build(self, *, num_classes, in_channels, image_size):
        return nn.Sequential(
            nn.Dropout(0.5),
            super().build(num_classes=num_classes, in_channels=in_channels, image_size=image_size),
        )


def unlearnable_catalog() -> Catalog:
    """The unlearnable family and the tiny test victims on a fresh manager."""
    return catalog_of(unlearnable, registering(victims=[TinyNet, TinyDropoutNet]))


@pytest.fixture
def test_catalog() -> Catalog:
    return unlearnable_catalog()


def make_split(*, n=100, channels=1, size=8, easy=False, seed=0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(K, (n,), generator=gen)
    images = torch.randint(0, 256, (n, size, size, channels), generator=gen, dtype=torch.uint8)
    if easy:  # the class is the brightness of the top row: learnable in a round or two
        images[:, 0] = (labels * 60 + 10).to(torch.uint8).view(-1, 1, 1)
    return Split(images, labels)


def make_ctx(catalog, *, seed=0, log=None) -> CraftContext:
    def progress(description, total):
        def advance(n=1, **fields):
            if log is not None:
                log.append(fields)

        return advance

    return CraftContext(num_classes=K, seed=seed, catalog=catalog, progress=progress)


def craft(catalog, name, split, *, seed=0, log=None, **params):
    poison = catalog.poisons.create(name, {"model": "tiny_test_net", **params})
    out = poison.craft(split, ctx=make_ctx(catalog, seed=seed, log=log))
    return poison, out


def test_registered_with_family_kind_and_applied(test_catalog):
    su, cu = test_catalog.poisons.lookup("SU")[0], test_catalog.poisons.lookup("CU")[0]
    assert su.describe()["applied"] == "sample" and cu.describe()["applied"] == "class"
    for entry in (su, cu):
        assert entry.describe()["family"] == "unlearnable" and entry.describe()["kind"] == "min"
    assert test_catalog.poisons.create("SU").params.attack_steps == 20
    assert test_catalog.poisons.create("CU").params.attack_steps == 1


@pytest.mark.parametrize("name", ["SU", "CU"])
def test_perturbation_within_eps_and_shape(test_catalog, name):
    split = make_split(channels=3)
    before = split.images.clone()
    poison, out = craft(test_catalog, name, split, max_rounds=3, stop_acc=0.0)
    assert out.dtype == torch.uint8 and out.shape == split.images.shape
    assert torch.equal(split.images, before)  # clean input untouched
    diff = (out.int() - split.images.int()).abs()
    assert diff.max() <= 8 and diff.max() > 0  # 8/255 budget, and the noise moved something
    assert (
        poison.manifest_extras()["crafting_rounds"] == 1
    )  # stop_acc 0 stops after the first round


def test_cu_one_perturbation_per_class(test_catalog):
    split = make_split(n=120)
    split.images.clamp_(20, 235)  # far from 0 and 255, so clamping to the range never bites
    _, out = craft(test_catalog, "CU", split, max_rounds=2, stop_acc=0.0, eps=16 / 255)
    diff = out.int() - split.images.int()
    for c in range(K):
        members = diff[split.labels == c]
        assert members.abs().max() > 0
        assert (members == members[0]).all(), f"class {c} has more than one perturbation"
    assert not (diff[split.labels == 0][0] == diff[split.labels == 1][0]).all()


def test_su_perturbations_differ_within_a_class(test_catalog):
    split = make_split()
    _, out = craft(test_catalog, "SU", split, max_rounds=1, stop_acc=0.0)
    diff = (out.int() - split.images.int())[split.labels == 0]
    assert not (diff == diff[0]).all()


@pytest.mark.parametrize("name", ["SU", "CU"])
def test_stop_condition_ends_loop(test_catalog, name):
    log: list[dict] = []
    poison, _ = craft(test_catalog, name, make_split(easy=True), log=log, max_rounds=50)
    accs = [fields["acc"] for fields in log]
    assert [fields["round"] for fields in log] == list(range(1, len(log) + 1))
    assert len(log) < 50 and accs[-1] > 0.99 and all(a <= 0.99 for a in accs[:-1])
    assert poison.manifest_extras()["crafting_rounds"] == len(log)


@pytest.mark.parametrize("name", ["SU", "CU"])
def test_max_rounds_guard_fails_loudly(test_catalog, name):
    log: list[dict] = []
    split = make_split(n=200, seed=3)  # random labels, tiny budget: cannot reach 99% in 2 rounds
    with pytest.raises(
        RunFailed, match=rf"{name} did not reach 99% .* after 2 rounds .*; raise max_rounds"
    ):
        craft(test_catalog, name, split, log=log, max_rounds=2, eps=1 / 255, train_steps=1)
    assert len(log) == 2


@pytest.mark.parametrize("name", ["SU", "CU"])
def test_same_seed_same_bytes(test_catalog, name):
    split = make_split(channels=3, size=6)
    _, a = craft(test_catalog, name, split, seed=1, max_rounds=2, stop_acc=0.0, batch_size=32)
    _, b = craft(test_catalog, name, split, seed=1, max_rounds=2, stop_acc=0.0, batch_size=32)
    _, c = craft(test_catalog, name, split, seed=2, max_rounds=2, stop_acc=0.0, batch_size=32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_global_rng_untouched_and_dropout_deterministic(test_catalog):
    kw = {"model": "tiny_dropout_net", "max_rounds": 2, "stop_acc": 0.0, "batch_size": 32}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _, a = craft(test_catalog, "SU", make_split(), **kw)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(7)  # a different global state must not matter
    _, b = craft(test_catalog, "SU", make_split(), **kw)
    assert torch.equal(a, b)


def test_min_min_lowers_loss_and_respects_eps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, K)).eval()
    x, y = torch.rand(16, 3, 2, 2), torch.randint(K, (16,))
    delta = ops.min_min(model, x, y, torch.zeros_like(x), steps=10, alpha=0.01, eps=0.05)
    loss = nn.functional.cross_entropy
    assert delta.abs().max() <= 0.05 + 1e-7
    assert loss(model((x + delta).clamp(0, 1)), y) < loss(model(x), y)


def test_export_rounds_half_up():
    images = torch.tensor([0, 0, 255, 128], dtype=torch.uint8).view(1, 1, 4, 1)  # NHWC
    delta = torch.tensor([0.5 / 255, 0.49 / 255, 0.1, 0.0]).view(1, 1, 1, 4)  # NCHW, as crafted
    assert export_uint8(images, delta, channels_first=True).flatten().tolist() == [1, 0, 255, 128]


def test_stratified_subset_per_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    idx = ops.stratified_subset(labels, fraction=0.2, gen=torch.Generator().manual_seed(0))
    assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 1, 1]


def test_unknown_model_reported_by_check_references(test_catalog):
    poison = test_catalog.poisons.create("SU", {"model": "tiny_test_nte"})
    problems = poison.check_references(test_catalog)
    assert problems and problems[0][0] == "model" and "tiny_test_net" in problems[0][1]
    assert (
        test_catalog.poisons.create("CU", {"model": "tiny_test_net"}).check_references(test_catalog)
        == []
    )


@pytest.mark.parametrize(
    "bad", [{"eps": 0}, {"max_rounds": 0}, {"subset_fraction": 1.5}, {"stop_acc": 1.0}]
)
def test_bad_params_rejected(test_catalog, bad):
    _, problems = test_catalog.poisons.check("CU", bad)
    assert problems


def test_on_max_rounds_keep_exports_unconverged_noise(test_catalog):
    split = make_split(n=200, seed=3)
    kw = {"max_rounds": 1, "eps": 1 / 255, "train_steps": 1, "on_max_rounds": "keep"}
    poison, out = craft(test_catalog, "SU", split, **kw)
    assert poison.manifest_extras()["converged"] is False
    assert (out.int() - split.images.int()).abs().max() <= 1
