"""REM (plugins/unlearnable/rem.py, rem_ops.py): steps pinned against closed-form gradients on a linear model.

For logits = W·flatten(x) + b the input gradient of the batch-mean cross-entropy is
Wᵀ(softmax − onehot(y)) / B, so each sign step can be computed without autograd.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from poisonbench.api import CraftContext, Split
from poisonbench.plugins.unlearnable import rem_ops
from poisonbench.testing import check_poison
from poisonbench.training.augment import crop_flip as trainer_crop_flip

K, C, H, W = 3, 1, 4, 4
EPS, RHO = 8 / 255, 4 / 255


def linear_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K))
    with torch.no_grad():
        model[1].weight.mul_(20)  # steep enough that the gradient signs vary across pixels
    return model.eval()


def ce_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇_x mean CE for the linear model, in closed form."""
    weight, bias = model[1].weight, model[1].bias
    probs = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
    return ((probs - nn.functional.one_hot(y, K).float()) @ weight / len(y)).view_as(x)


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(6, C, H, W, generator=gen)
    x[0] = 0.0  # pixels at the box edges: the clip's zero gradient is part of the reference
    x[1] = 1.0
    return x, torch.arange(6) % K


def params(**kw):
    base = dict(eps=EPS, rho_a=0.0, noise_steps=1, eot_samples=1, adv_steps=0, crop_padding=0, flip=False,
                noise_alpha=2 / 255, adv_alpha=1 / 255)
    return SimpleNamespace(**{**base, **kw})


def test_pgd_max_step_is_a_hand_computed_ascent_step():
    model, (x, y) = linear_model(), batch()
    gen = torch.Generator().manual_seed(5)
    out = rem_ops.pgd_max(model, x, y, rho=RHO, steps=1, alpha=RHO / 5, gen=gen)
    start = x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1) * RHO
    z = start + RHO / 5 * ce_grad(model, start, y).sign()
    expected = torch.minimum(torch.maximum(z, x - RHO), x + RHO).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-7)
    assert rem_ops.pgd_max(model, x, y, rho=0.0, steps=3, alpha=0.1, gen=gen).equal(x)  # ρ_a = 0: no attack


def test_rem_noise_step_without_attack_is_error_minimising_descent():
    model, (x, y) = linear_model(), batch()
    p = params()
    delta = rem_ops.rem_noise(model, x, y, p=p, gen=torch.Generator().manual_seed(9))
    d0 = (torch.rand(x.shape, generator=torch.Generator().manual_seed(9)) * 2 - 1) * EPS
    inside = ((x + d0) > 0) & ((x + d0) < 1)  # clamp(x + δ) passes the gradient only inside the box
    grad = ce_grad(model, (x + d0).clamp(0, 1), y) * inside
    expected = (d0 - p.noise_alpha * grad.sign()).clamp(-EPS, EPS)
    assert torch.allclose(delta, expected, atol=1e-7)
    ce = nn.functional.cross_entropy
    assert ce(model((x + delta).clamp(0, 1)), y) < ce(model((x + d0).clamp(0, 1)), y)


def test_rem_noise_takes_the_gradient_at_the_adversarial_point():
    """With ρ_a > 0 the δ-gradient is CE's gradient at xd + r* (r* constant), not at xd."""
    eps, rho = 0.4, 0.3  # large radii, so that the adversarial point flips gradient signs
    model, (x, y) = linear_model(), batch()
    p = params(eps=eps, rho_a=rho, adv_steps=1, adv_alpha=rho, noise_alpha=0.1)
    delta = rem_ops.rem_noise(model, x, y, p=p, gen=torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)  # replay the draws: δ start, augmentation, PGD start
    d0 = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    rem_ops.sample_crop_flip(len(y), padding=0, flip=False, gen=gen)
    xd = (x + d0).clamp(0, 1)
    start = xd + (torch.rand(x.shape, generator=gen) * 2 - 1) * rho
    xa = torch.minimum(torch.maximum(start + rho * ce_grad(model, start, y).sign(), xd - rho),
                       xd + rho).clamp(0, 1)
    inside = ((x + d0) > 0) & ((x + d0) < 1)
    expected = (d0 - p.noise_alpha * (ce_grad(model, xa, y) * inside).sign()).clamp(-eps, eps)
    assert torch.allclose(delta, expected, atol=1e-7)
    at_xd = (d0 - p.noise_alpha * (ce_grad(model, xd, y) * inside).sign()).clamp(-eps, eps)
    assert not torch.allclose(delta, at_xd)  # the reference can tell the two apart


def test_crop_flip_matches_the_trainers_augmentation():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 6, 5, 2), generator=gen, dtype=torch.uint8)
    dy, dx, flips = rem_ops.sample_crop_flip(8, padding=2, flip=True, gen=gen)
    ours = rem_ops.crop_flip(images.permute(0, 3, 1, 2).float(), (dy, dx, flips), padding=2)
    theirs = trainer_crop_flip(images, dy=dy, dx=dx, flip=flips, padding=2).permute(0, 3, 1, 2).float()
    assert torch.equal(ours, theirs) and flips.any() and (dy != 2).any()


def test_levels_round_half_up():
    assert rem_ops.levels(torch.tensor([0.5 / 255, -0.5 / 255, 7.6 / 255, -8 / 255])).tolist() == [1, 0, 8, -8]


def make_ctx(catalog, tmp_path=None, seed=0):
    return CraftContext(num_classes=K, seed=seed, catalog=catalog, cache_dir=tmp_path, dataset_fingerprint="t")


def tiny_split(n=24):
    gen = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 8, 8, 1), generator=gen, dtype=torch.uint8), torch.arange(n) % K)


SMALL = {"model": "small_cnn", "train_steps": 4, "round_steps": 2, "batch_size": 8, "noise_steps": 2,
         "eot_samples": 1, "adv_steps": 1}


def test_noise_is_integer_within_budget_and_state_cleared(catalog, tmp_path):
    poison = catalog.poisons.create("rem", SMALL)
    split = tiny_split()
    out = poison.craft(split, ctx=make_ctx(catalog, tmp_path))
    diff = out.int() - split.images.int()
    assert diff.abs().max() <= 8 and (diff != 0).float().mean() > 0.3
    assert poison.manifest_extras()["crafting_steps"] == 4
    assert not list((tmp_path / "craft-state").glob("*/state.safetensors"))
    again = catalog.poisons.create("rem", {**SMALL, "round_steps": 1}).craft(split, ctx=make_ctx(catalog))
    assert torch.equal(out, again)  # round_steps only sets how often state is saved; no cache: no state


def test_presets_and_params(catalog):
    rem, cpu = catalog.poisons.create("REM").params, catalog.poisons.create("REM-cpu").params
    assert (rem.eps, rem.rho_a, rem.noise_steps, rem.eot_samples, rem.adv_steps) == (EPS, RHO, 10, 5, 10)
    assert rem.noise_alpha == pytest.approx(1.6 / 255) and rem.adv_alpha == pytest.approx(0.8 / 255)
    assert (rem.train_steps, rem.batch_size, rem.lr_decay_steps, rem.model) == (5000, 128, 2000, "resnet18")
    assert cpu.model == "small_cnn" and cpu.train_steps < rem.train_steps
    assert catalog.poisons.create("REM").paper.venue == "ICLR"
    for bad in ({"rho_a": EPS}, {"eot_samples": 0}, {"noise_step_size": 0.0}):
        assert catalog.poisons.check("rem", bad)[1]


@pytest.mark.parametrize("name", ["REM", "REM-cpu"])
def test_contract(name, catalog):
    check_poison(name, catalog=catalog)


def test_train_step_is_sgd_on_the_noised_batch_by_hand(catalog):
    """ρ_a = 0, no augmentation: one step stores δ's grey levels, then one SGD step on clamp(x + noise)."""
    n = 6
    gen = torch.Generator().manual_seed(2)
    split = Split(torch.randint(0, 256, (n, H, W, C), generator=gen, dtype=torch.uint8), torch.arange(n) % K)
    p = catalog.poisons.create("rem", {"rho_a": 0.0, "adv_steps": 0, "crop_padding": 0, "flip": False,
                                       "noise_steps": 1, "eot_samples": 1, "batch_size": n, "lr": 0.5,
                                       "weight_decay": 0.0, "model": "small_cnn"}).params
    crafter = rem_ops.RemCrafter(split, ctx=make_ctx(catalog), p=p)
    crafter.model = linear_model()
    crafter.opt = torch.optim.SGD(crafter.model.parameters(), lr=p.lr, momentum=p.momentum)
    w0, b0 = crafter.model[1].weight.detach().clone(), crafter.model[1].bias.detach().clone()
    idx = crafter.batch_indices(0)
    crafter.train_step(0)
    x, y = split.images[idx].permute(0, 3, 1, 2).float() / 255, split.labels[idx]
    gen = torch.Generator().manual_seed(rem_ops.derive_seed(0, "rem-step", 0))
    d0 = (torch.rand(x.shape, generator=gen) * 2 - 1) * p.eps  # replay rem_noise's draws
    inside = ((x + d0) > 0) & ((x + d0) < 1)
    with torch.no_grad():
        ref = linear_model()
        delta = (d0 - p.noise_alpha * (ce_grad(ref, (x + d0).clamp(0, 1), y) * inside).sign()).clamp(-p.eps, p.eps)
        noise = torch.floor(delta * 255 + 0.5)
        xn = (x + noise / 255).clamp(0, 1).flatten(1)
        err = (torch.softmax(xn @ w0.T + b0, 1) - nn.functional.one_hot(y, K).float()) / n
    assert torch.equal(crafter.noise[idx].float(), noise)
    assert torch.allclose(crafter.model[1].weight, w0 - p.lr * err.T @ xn, atol=1e-6)
    assert torch.allclose(crafter.model[1].bias, b0 - p.lr * err.sum(0), atol=1e-6)
