"""The ueraser, coin, adversarial_training and orthogonal_projection defense plugins: presets, params, hooks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import BatchContext, Defense, DefenseContext, Split
from poisonbench.catalog import default_catalog
from poisonbench.catalog.params import check_params
from poisonbench.catalog.registry import Registry
from poisonbench.errors import Interrupted
from poisonbench.plugins.defenses import adversarial_training, coin, orthogonal_projection, ueraser
from poisonbench.training.defended import Chain
from poisonbench.training.trainer import train_victim
from tests.helpers_training import MEAN, STD, state_equal, tiny_config, tiny_model, tiny_splits

MODULES = (ueraser, coin, adversarial_training, orthogonal_projection)


@pytest.fixture
def registry():
    reg = Registry("defense", Defense)
    for module in MODULES:
        module.poisonbench_register_defenses(
            register=lambda cls, name=None, **kw: reg.add(cls, name, provider="test", **kw))
    return reg


def _net(channels=1, classes=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))


def _ctx(model=None, seed=0, epoch=0):
    return BatchContext(seed=seed, epoch=epoch, step=0, epochs=3, device="cpu", num_classes=4, model=model)


def _batch(shape=(8, 1, 28, 28)):
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, shape, generator=gen).float() / 255, torch.arange(shape[0]) % 4


def test_names_stages_and_papers(registry):
    assert set(registry.names()) == {"ueraser", "ueraser_lite", "ueraser_max", "ueraser_jpeg", "coin",
                                     "adversarial_training", "at8", "at4", "at2", "orthogonal_projection"}
    stages = {n: registry.create(n).stage for n in ("ueraser", "coin", "at8", "orthogonal_projection")}
    assert stages == {"ueraser": "batch", "coin": "batch", "at8": "training", "orthogonal_projection": "preprocess"}
    for name in registry.names():
        paper = registry.create(name).paper
        assert paper.title and paper.venue and paper.year >= 2018 and paper.url.startswith("https://arxiv.org/abs/")
    assert registry.create("ueraser").defines_loss and registry.create("at2").defines_loss
    assert not registry.create("coin").defines_loss


def test_presets(registry):
    radii = [(registry.create(n).params.eps * 255, registry.create(n).params.step_size * 255)
             for n in ("at8", "at4", "at2")]
    assert radii == [pytest.approx((8, 2)), pytest.approx((4, 1)), pytest.approx((2, 0.5))]
    assert registry.create("adversarial_training").params.step_size == pytest.approx(2 / 255)
    lite, std, top = (registry.create(n) for n in ("ueraser_lite", "ueraser", "ueraser_max"))
    assert [lite.copies(0), std.copies(49), std.copies(50), top.copies(10_000)] == [1, 5, 1, 5]


@pytest.mark.parametrize("cls,raw,needle", [
    (adversarial_training.AdversarialTrainingParams, {"eps": -0.1}, "eps must be > 0"),
    (adversarial_training.AdversarialTrainingParams, {"eps": 8}, "(0, 1] for norm linf"),
    (adversarial_training.AdversarialTrainingParams, {"steps": 0}, "steps must be in"),
    (adversarial_training.AdversarialTrainingParams, {"norm": "l3"}, "param 'norm'"),
    (adversarial_training.AdversarialTrainingParams, {"step": 0}, "step must be > 0"),
    (ueraser.UEraserParams, {"adversarial_epochs": "most"}, "param 'adversarial_epochs'"),
    (ueraser.UEraserParams, {"adversarial_epochs": -1}, "adversarial_epochs must be"),
    (ueraser.UEraserParams, {"repeats": 0}, "repeats must be"),
    (ueraser.UEraserParams, {"plasma_p": 1.5}, "plasma_p must be"),
    (ueraser.UEraserParams, {"jpeg": True}, "param 'jpeg'"),
    (coin.CoinParams, {"alpha": -1}, "alpha must be"),
    (orthogonal_projection.OrthogonalProjectionParams, {"milestones": [0.75, 0.5]}, "ascending"),
    (orthogonal_projection.OrthogonalProjectionParams, {"batch_size": 0}, "batch_size must be"),
])
def test_bad_params_give_one_line(cls, raw, needle):
    params, problems = check_params(cls, raw)
    assert params is None and len(problems) == 1
    message = problems[0][1]
    assert needle in message and "\n" not in message


def test_data_checks_coin_offsets_ueraser_jpeg_channels_and_identity(registry):
    assert registry.create("coin", {"alpha": 30.0}).check_data(image_shape=(28, 28, 1))
    assert registry.create("coin").check_data(image_shape=(28, 28, 1)) == []
    assert registry.create("coin", {"alpha": 0.0}).identity_on(image_shape=(28, 28, 1))
    assert registry.create("coin").identity_on(image_shape=(28, 28, 1)) is None
    assert registry.create("ueraser_jpeg").check_data(image_shape=(8, 8, 4))
    assert registry.create("ueraser_jpeg").check_data(image_shape=(8, 8, 1)) == []


def test_coin_batch_keeps_target_and_follows_the_seed(registry):
    defense = registry.create("coin")
    x, y = _batch()
    out, target = defense.batch(x, y, ctx=_ctx(seed=3))
    again, _ = defense.batch(x, y, ctx=_ctx(seed=3))
    other, _ = defense.batch(x, y, ctx=_ctx(seed=4))
    assert target is y and out.shape == x.shape and torch.equal(out, again) and not torch.equal(out, other)


@pytest.mark.parametrize("name", ["at8", "at2"])
def test_adversarial_training_loss_exceeds_the_clean_loss(registry, name):
    model = _net().train()
    twin = copy.deepcopy(model)
    x, y = _batch()
    loss, logits = registry.create(name).loss(model, x, y, ctx=_ctx(model))
    assert model.training and logits.shape == (8, 4)
    assert float(loss.detach()) > float(F.cross_entropy(twin(x), y).detach())  # same train-mode forward, clean x


def test_ueraser_loss_runs_on_one_channel_and_counts_copies(registry):
    model = _net().train()
    calls = []

    def f(z):
        calls.append(z.shape)
        return model(z)

    x, y = _batch()
    loss, logits = registry.create("ueraser").loss(f, x, y, ctx=_ctx(model, epoch=0))
    assert len(calls) == 5 and torch.isfinite(loss) and logits.shape == (8, 4)
    calls.clear()
    registry.create("ueraser").loss(f, x, y, ctx=_ctx(model, epoch=50))
    assert len(calls) == 1


def test_orthogonal_projection_preprocess_keeps_shape_and_is_deterministic(registry):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 28, 28, 1), generator=gen, dtype=torch.uint8)
    labels = torch.arange(64) % 4
    defense = registry.create("orthogonal_projection", {"epochs": 2, "batch_size": 16})
    ctx = DefenseContext(seed=0, num_classes=4, image_shape=(28, 28, 1))
    out = defense.preprocess(Split(images, labels), ctx=ctx)
    assert out.dtype == torch.uint8 and out.shape == images.shape and not torch.equal(out, images)
    assert torch.equal(out, defense.preprocess(Split(images, labels), ctx=ctx))


@pytest.mark.slow
def test_each_defense_runs_in_a_suite_cell_on_one_channel_images(tmp_path, capsys, one_thread):
    import json
    import textwrap

    from poisonbench.cli import main
    from poisonbench.results import read_records

    suite = tmp_path / "tiny.yaml"
    suite.write_text(textwrap.dedent("""\
        suite: tiny_robust
        dataset:
          name: synthetic
          params: {n_train: 64, n_test: 32, num_classes: 4, image_size: 8, channels: 1}
        victims: [{name: small_cnn, params: {width: 4}}]
        poisons: [clean]
        defenses: [coin, {name: ueraser_max, params: {repeats: 2}}, {name: at2, params: {steps: 2}},
                   {name: orthogonal_projection, params: {epochs: 2}}]
        seeds: [0]
        train: {epochs: 1, batch_size: 32, lr: 0.05, milestones: [1], eval_batch_size: 64}
        """))
    with pytest.raises(SystemExit) as exc:
        main(["run", str(suite), "--out", str(tmp_path / "run"), "--json"])
    assert exc.value.code == 0, capsys.readouterr().err
    records = read_records(tmp_path / "run")
    assert sorted(r["defense"]["name"] for r in records) == ["at2", "coin", "orthogonal_projection", "ueraser_max"]
    assert len({r["train_group"] for r in records}) == 4 and not any(r["diverged"] for r in records)
    assert all(0 <= r["metrics"]["peak_test_acc"] <= 1 for r in records), json.dumps(records[0]["metrics"])


@pytest.mark.parametrize("chain", [["coin", "ueraser_lite"], ["at2"]])
def test_training_under_the_defenses_resumes_bit_identically(tmp_path, one_thread, chain):
    """Two epochs straight == interrupted in epoch 2, then resumed from the epoch-1 checkpoint."""
    train, test, _ = tiny_splits(n_train=64, n_test=32, size=8)
    members = [{"name": name, "params": {"steps": 2} if name == "at2" else {}} for name in chain]

    def run(checkpoint, model, should_stop=None):
        built = Chain.build(default_catalog(), members, num_classes=4)
        return train_victim(model=model, train=train, test=test, val=None, config=tiny_config(epochs=2),
                            mean=MEAN, std=STD, seed=0, device="cpu", checkpoint_path=checkpoint, chain=built,
                            should_stop=should_stop)

    straight_model = tiny_model()
    straight = run(tmp_path / "a.ckpt", straight_model)
    polls = iter(range(100))
    with pytest.raises(Interrupted):  # killed in the middle of epoch 2 (2 batches per epoch)
        run(tmp_path / "b.ckpt", tiny_model(), should_stop=lambda: next(polls) >= 2)
    torch.manual_seed(123)  # a restarted process has a different global RNG state
    resumed_model = tiny_model()
    resumed = run(tmp_path / "b.ckpt", resumed_model)
    assert resumed["train_loss"] == straight["train_loss"] and resumed["test_acc"] == straight["test_acc"]
    assert state_equal(straight_model, resumed_model)
