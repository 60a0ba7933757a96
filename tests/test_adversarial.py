"""Targeted PGD / MI-FGSM poisons (plugins/adversarial/) on tiny data with a fixed tiny surrogate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import (
    CraftContext,
    Split,
    SurrogateRecipe,
    recipe_from_params,
    sample_shift_flip,
    shift_flip,
    to_float,
)
from poisonbench.plugins.adversarial import MifgsmParams, PgdParams, ops
from poisonbench.testing import check_poison

EPS = 8 / 255
K = 4


def tiny_model(channels: int = 3) -> nn.Module:
    """A fixed random conv net, weights scaled ×8 so that 8/255 visibly moves its loss."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                              nn.Flatten(), nn.Linear(64, K))
    with torch.no_grad():
        for layer in (model[0], model[4]):
            layer.weight.mul_(8)
    return model.eval().requires_grad_(False)


def tiny_data(n: int = 64, shape=(8, 8, 3), seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
    images[:4] = 0  # pixels at the box edges exercise the [0, 1] projection
    images[4:8] = 255
    return Split(images=images, labels=torch.arange(n, dtype=torch.int64) % K)


@pytest.fixture
def model():
    return tiny_model()


def craft(catalog, name: str, params: dict, data: Split, model: nn.Module, seed: int = 0) -> torch.Tensor:
    asked = []

    def surrogate(victim, recipe=None):
        asked.append((victim, recipe))
        return model

    ctx = CraftContext(num_classes=K, seed=seed, catalog=catalog, surrogate=surrogate)
    out = catalog.poisons.create(name, params).craft(data, ctx=ctx)
    assert asked and asked[0][0] == catalog.poisons.create(name, params).params.surrogate
    return out


def target_loss(model, images: torch.Tensor, labels: torch.Tensor) -> float:
    x = to_float(images, "cpu")
    return float(F.cross_entropy(model(x), ops.next_class_targets(labels, K)))


def test_presets_listed_with_paper_defaults(catalog):
    for name, family, steps in [("P10", "pgd", 10), ("P100", "pgd", 100), ("P250", "pgd", 250),
                                ("M10", "mifgsm", 10), ("M100", "mifgsm", 100), ("M250", "mifgsm", 250)]:
        poison = catalog.poisons.create(name)
        assert (poison.family, poison.kind, poison.applied) == (family, "max", "sample")
        assert poison.params.steps == steps
    assert catalog.poisons.create("P10").params.surrogate == "resnet50"
    assert catalog.poisons.create("P250").params.surrogate == "resnet18"
    p, m = catalog.poisons.create("P250").params, catalog.poisons.create("M250").params
    assert (p.restarts, p.augment, p.init, p.batch_size) == (8, True, "normal", 512)
    assert p.step_size == pytest.approx(0.4 / 255)
    assert (m.augment, m.init, m.momentum, m.momentum_in_update) == (False, "zero", 1.0, True)
    assert catalog.poisons.create("M250").attack_config().step_size == pytest.approx(EPS / 250)
    assert catalog.poisons.create("M250").attack_config().effective_restarts == 1


@pytest.mark.parametrize("cls", [PgdParams, MifgsmParams])
def test_surrogate_params_mirror_the_recipe(cls):
    assert SurrogateRecipe(**recipe_from_params(cls())) == SurrogateRecipe()


@pytest.mark.parametrize("name", ["P10", "M10"])
def test_contract(name, catalog):
    check_poison(name, catalog=catalog)


@pytest.mark.parametrize("name,params", [("pgd", {"steps": 6, "restarts": 2, "step_size": 2 / 255}),
                                         ("mifgsm", {"steps": 6})])
def test_budget_after_export_and_loss_decreases(catalog, model, name, params):
    data = tiny_data()
    out = craft(catalog, name, {**params, "batch_size": 24}, data, model)
    assert out.dtype == torch.uint8 and out.shape == data.images.shape
    assert (out.int() - data.images.int()).abs().max() <= 8
    assert target_loss(model, out, data.labels) < target_loss(model, data.images, data.labels) - 0.05


def test_targeted_loss_decreases_over_steps(model):
    data = tiny_data()
    x = to_float(data.images, "cpu")
    targets = ops.next_class_targets(data.labels, K)
    cfg = ops.AttackConfig(eps=EPS, steps=12, step_size=1 / 255, init="zero")
    seen = []
    ops.attack_batch(model, x, targets, cfg=cfg, delta=torch.zeros_like(x),
                     on_step=lambda t, losses: seen.append(float(losses.mean())))
    assert len(seen) == 12
    assert seen[-1] < seen[0] - 0.05
    assert sum(b <= a + 1e-6 for a, b in zip(seen, seen[1:], strict=False)) >= 9  # mostly monotone


def test_one_pgd_step_is_a_hand_computed_signed_gradient_step(catalog, model):
    data = tiny_data()
    alpha = 2 / 255
    out = craft(catalog, "pgd", {"steps": 1, "restarts": 3, "init": "zero", "augment": False,
                                 "step_size": alpha, "batch_size": 64}, data, model)
    x = to_float(data.images, "cpu").requires_grad_(True)
    loss = F.cross_entropy(model(x), (data.labels + 1) % K)
    (grad,) = torch.autograd.grad(loss, x)
    delta = (-alpha * grad.sign()).clamp(-EPS, EPS)
    expected = (x.detach() + delta).clamp(0, 1)
    expected = torch.floor(expected * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(out, expected)
    assert (out != data.images).float().mean() > 0.5  # the step did something


def test_mifgsm_momentum_matters_unless_not_used_in_the_update(catalog, model):
    data = tiny_data()
    base = {"steps": 6, "batch_size": 64}
    with_mu = craft(catalog, "mifgsm", {**base, "momentum": 1.0}, data, model)
    without_mu = craft(catalog, "mifgsm", {**base, "momentum": 0.0}, data, model)
    assert not torch.equal(with_mu, without_mu)
    code_mu = craft(catalog, "mifgsm", {**base, "momentum": 1.0, "momentum_in_update": False}, data, model)
    code_no = craft(catalog, "mifgsm", {**base, "momentum": 0.0, "momentum_in_update": False}, data, model)
    assert torch.equal(code_mu, code_no)
    pgd_same = craft(catalog, "pgd", {**base, "init": "zero", "augment": False, "step_size": EPS / 6,
                                      "restarts": 1}, data, model)
    assert torch.equal(code_mu, pgd_same)  # the authors' code is zero-init PGD with step eps/T


def test_restarts_keep_the_lowest_loss_one(model):
    data = tiny_data()
    targets = ops.next_class_targets(data.labels, K)
    cfg = ops.AttackConfig(eps=EPS, steps=2, step_size=0.5 / 255, restarts=4, augment=True, batch_size=20)
    runs = [ops.attack_set(model, data.images, targets, cfg=cfg, seed=3, restart=r,
                           device=torch.device("cpu")) for r in range(4)]
    scores = [score for _, score in runs]
    assert len(set(scores)) == 4  # restarts differ, so the choice is meaningful
    best, got_scores = ops.craft_perturbation(model, data.images, targets, cfg=cfg, seed=3)
    assert got_scores == scores
    assert torch.equal(best, runs[scores.index(min(scores))][0])
    assert not torch.equal(best, runs[scores.index(max(scores))][0])


def test_deterministic_given_seed(catalog, model):
    data = tiny_data(shape=(8, 8, 1))
    params = {"steps": 2, "restarts": 2, "batch_size": 16}
    one = craft(catalog, "pgd", params, data, tiny_model(1), seed=5)
    two = craft(catalog, "pgd", params, data, tiny_model(1), seed=5)
    other = craft(catalog, "pgd", params, data, tiny_model(1), seed=6)
    assert torch.equal(one, two) and not torch.equal(one, other)


def test_targets_and_untargeted():
    labels = torch.tensor([0, 1, 2, 3, 3])
    assert ops.next_class_targets(labels, K).tolist() == [1, 2, 3, 0, 0]
    rand = ops.random_targets(labels, K, seed=1)
    assert (rand != labels).all() and torch.equal(rand, ops.random_targets(labels, K, seed=1))


def test_untargeted_raises_true_label_loss(catalog, model):
    data = tiny_data()
    out = craft(catalog, "pgd", {"steps": 4, "restarts": 1, "step_size": 2 / 255, "target": "untargeted"},
                data, model)
    ce = lambda imgs: float(F.cross_entropy(model(to_float(imgs, "cpu")), data.labels))  # noqa: E731
    assert ce(out) > ce(data.images) + 0.05


def test_shift_flip_conventions():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    ident = torch.eye(2, 3).expand(2, 2, 3).clone()
    assert torch.allclose(shift_flip(x, ident), x, atol=1e-5)
    flip = ident.clone()
    flip[:, 0, 0] = -1
    assert torch.allclose(shift_flip(x, flip), x.flip(-1), atol=1e-5)
    shift = ident.clone()
    shift[:, 0, 2] = 2.0 / 5  # one pixel in x: output column j samples input column j + 1
    expected = torch.zeros_like(x)
    expected[..., :-1] = x[..., 1:]
    assert torch.allclose(shift_flip(x, shift), expected, atol=1e-4)
    thetas = sample_shift_flip(3, 50, height=4, width=5, gen=torch.Generator().manual_seed(0))
    assert thetas.shape == (3, 50, 2, 3)
    assert (thetas[..., 0, 2].abs() <= 4 * 2 / 5 + 1e-6).all()
    flips = (thetas[..., 0, 0] < 0).float().mean()
    assert 0.3 < flips < 0.7


def test_augmented_attack_gradients_flow(model):
    data = tiny_data(n=16)
    x = to_float(data.images, "cpu")
    cfg = ops.AttackConfig(eps=EPS, steps=1, step_size=1 / 255, init="zero", augment=True)
    thetas = sample_shift_flip(1, 16, height=8, width=8, gen=torch.Generator().manual_seed(0))
    delta, _ = ops.attack_batch(model, x, data.labels, cfg=cfg, delta=torch.zeros_like(x), thetas=thetas)
    assert delta.abs().amax() > 0


def test_unknown_surrogate_is_reported(catalog):
    poison = catalog.poisons.create("P10", {"surrogate": "resnet81"})
    problems = poison.check_references(catalog)
    assert problems and problems[0][0] == "surrogate" and "resnet18" in problems[0][1]
    assert catalog.poisons.create("P10").check_references(catalog) == []


def test_bad_params_rejected(catalog):
    for params in ({"eps": 0.0}, {"steps": 0}, {"restarts": 0}, {"step_size": -1.0}):
        _, problems = catalog.poisons.check("pgd", params)
        assert problems, params


def test_cache_extras_include_recipe(catalog):
    extras = catalog.poisons.create("P250", {"surrogate_epochs": 3}).cache_extras(CraftContext(num_classes=K, seed=0))
    assert extras["surrogate"]["victim"] == "resnet18"
    assert extras["surrogate"]["recipe"]["epochs"] == 3
    assert extras["surrogate"]["recipe"]["precision"] == "fp32"
    assert extras["crafting_precision"] == "fp32"


def test_missing_surrogate_provider_is_a_user_error(catalog):
    from poisonbench.errors import PoisonbenchError

    with pytest.raises(PoisonbenchError, match="surrogate"):
        catalog.poisons.create("P10").craft(tiny_data(n=4), ctx=CraftContext(num_classes=K, seed=0))


def test_validate_reports_unknown_surrogate_with_location(catalog, tmp_path):
    from poisonbench.errors import ValidationFailed
    from poisonbench.suite import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text("suite: s\ndataset: synthetic\nvictims: [small_cnn]\n"
                     "poisons:\n  - {name: P10, params: {surrogate: resnet81}}\n")
    with pytest.raises(ValidationFailed) as err:
        load_suite(suite, catalog)
    assert "s.yaml:5:" in str(err.value) and "unknown victim 'resnet81'" in str(err.value)
