"""Torch ops of UEraser, COIN, PGD adversarial training and orthogonal projection, on tiny tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import derive_seed
from poisonbench.plugins.defenses import robust_ops as ops

SHAPES = [(4, 3, 32, 32), (4, 1, 28, 28), (2, 3, 17, 23), (3, 1, 5, 7)]


def _levels(shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float() / 255


def _tiny_net(channels=3, classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))


# -- UEraser ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_ueraser_keeps_shape_dtype_range_and_differs_per_seed(shape):
    x = _levels(shape)
    a, again, b = (ops.ueraser_augment(x, seed=s) for s in (0, 0, 1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, again)
    assert not torch.equal(a, b) and not torch.equal(a, x)


def test_ueraser_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ops.ueraser_augment(_levels((2, 3, 8, 8)), seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("jpeg", ["random", "q10_after"])
@pytest.mark.parametrize("channels", [1, 3])
def test_ueraser_jpeg_variants_run(jpeg, channels):
    x = _levels((2, channels, 16, 12))
    out = ops.ueraser_augment(x, seed=3, plasma_p=0.8, jpeg=jpeg)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


def test_ueraser_kmax_loss_is_max_over_copies():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x, y = _levels((6, 3, 8, 8)), torch.tensor([0, 1, 2, 3, 0, 1])
    loss, logits = ops.ueraser_loss(model, x, y, seed=7, repeats=5)
    copies = torch.stack([F.cross_entropy(model(ops.ueraser_augment(x, seed=derive_seed(7, "copy", k))), y,
                                          reduction="none") for k in range(5)])
    assert torch.allclose(loss, copies.max(0).values.mean())
    assert float(loss.detach()) >= float(copies.detach().mean()) - 1e-6
    assert logits.shape == (6, 4)
    lite, _ = ops.ueraser_loss(model, x, y, seed=7, repeats=1)
    assert torch.allclose(lite, copies[0].mean())


# -- COIN ---------------------------------------------------------------------------------------

def test_coin_alpha_zero_is_identity_and_constant_stays_constant():
    x = _levels((3, 3, 9, 11))
    assert torch.equal(ops.coin_transform(x, alpha=0.0, seed=1), x)
    flat = torch.full((2, 1, 10, 10), 77 / 255)
    assert torch.equal(ops.coin_transform(flat, alpha=2.0, seed=1), flat)


def test_coin_matches_scipy_map_coordinates_wrap():
    from scipy.ndimage import map_coordinates

    x = _levels((2, 3, 12, 9), seed=4)
    dy, dx = ops.coin_displacements(tuple(x.shape), alpha=2.0, seed=5)
    ours = ops.coin_warp(x, dy, dx)
    for b in range(2):
        rows = np.arange(12)[:, None] + dy[b, 0].numpy().astype(np.float64)
        cols = np.arange(9)[None, :] + dx[b, 0].numpy().astype(np.float64)
        for c in range(3):
            ref = map_coordinates(x[b, c].double().numpy(), [rows, cols], order=1, mode="wrap")
            ref = np.clip(ref, 0, 1) * 255
            diff = np.abs(np.floor(ref + 1e-6) - (ours[b, c].numpy() * 255).round())
            assert diff.max() <= 1 and (diff > 0).mean() < 0.02


def test_coin_strength_grows_with_alpha_and_varies_with_seed():
    x = _levels((4, 1, 28, 28))
    change = [float((ops.coin_transform(x, alpha=a, seed=0) - x).abs().mean()) for a in (0.5, 2.0, 3.2)]
    assert change[0] < change[1] < change[2]
    out = ops.coin_transform(x, alpha=2.0, seed=0)
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= float(out.min()) <= float(out.max()) <= 1
    assert torch.equal(out, ops.coin_transform(x, alpha=2.0, seed=0))
    assert not torch.equal(out, ops.coin_transform(x, alpha=2.0, seed=1))


# -- adversarial training -----------------------------------------------------------------------

@pytest.mark.parametrize("norm,eps,start", [("linf", 8 / 255, "uniform"), ("linf", 8 / 255, "gaussian"),
                                            ("l2", 0.5, "uniform")])
def test_pgd_raises_the_loss_within_the_ball(norm, eps, start):
    model = _tiny_net().eval()
    x, y = _levels((16, 3, 8, 8)), torch.arange(16) % 4
    x_adv = ops.pgd_attack(model, x, y, eps=eps, step=eps / 4, steps=10, norm=norm, random_start=start, seed=0)
    delta = (x_adv - x).flatten(1)
    bound = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert float(bound.max()) <= eps + 1e-5 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        assert float(F.cross_entropy(model(x_adv), y)) > float(F.cross_entropy(model(x), y))
    assert torch.equal(x_adv, ops.pgd_attack(model, x, y, eps=eps, step=eps / 4, steps=10, norm=norm,
                                             random_start=start, seed=0))
    assert all(p.grad is None for p in model.parameters())


def test_adversarial_loss_attacks_in_eval_mode_and_trains_on_x_adv():
    model = _tiny_net().train()
    modes = []

    def forward(z):
        modes.append(model.training)
        return model(z)

    x, y = _levels((8, 3, 8, 8)), torch.arange(8) % 4
    bn = model[1]
    before = bn.running_mean.clone()
    loss, logits = ops.adversarial_loss(model, forward, x, y, eps=8 / 255, step=2 / 255, steps=3, seed=1)
    assert modes == [False, False, False, True] and model.training
    assert bn.num_batches_tracked.item() == 1 and not torch.equal(bn.running_mean, before)
    loss.backward()
    assert logits.shape == (8, 4) and all(p.grad is not None for p in model.parameters())


# -- orthogonal projection ----------------------------------------------------------------------

def _class_wise_poison(n=400, side=8, classes=4, strength=32 / 255, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clean = 0.5 + 0.15 * (torch.rand(n, side, side, 1, generator=gen) * 2 - 1)
    labels = torch.arange(n) % classes
    deltas = strength * torch.sign(torch.randn(classes, side, side, 1, generator=gen))
    images = torch.floor((clean + deltas[labels]).clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return images, labels, deltas.reshape(classes, -1)


def _class_signal(x, labels, deltas):
    """Mean over classes of |(class mean − overall mean) · δ_c/‖δ_c‖|: how much of δ_c the data still carries."""
    centre = x.mean(0)
    units = deltas / deltas.norm(dim=1, keepdim=True)
    return float(torch.stack([((x[labels == c].mean(0) - centre) @ units[c]).abs()
                              for c in range(len(deltas))]).mean())


def test_projection_removes_the_span_exactly():
    w = torch.randn(4, 64)
    q = ops.projection_basis(w)
    x = torch.rand(10, 64)
    assert float((ops.project_out(x, q) @ q).abs().max()) < 1e-5
    assert float((ops.project_out(x, q) @ w.T).abs().max()) < 1e-4


def test_projection_strips_a_linearly_separable_class_wise_poison():
    images, labels, deltas = _class_wise_poison()
    out, stats = ops.orthogonal_projection(images, labels, num_classes=4, epochs=20, lr=0.1, batch_size=32,
                                           milestones=(0.5, 0.75), seed=0)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert stats["linear_train_acc"] > 0.95 and stats["directions"] == 4
    before = _class_signal(images.reshape(len(images), -1).float() / 255, labels, deltas)
    after = _class_signal(out.reshape(len(out), -1).float() / 255, labels, deltas)
    assert before > 0.5 and after < 0.1 * before  # measured: 0.79 -> 0.05
    again, _ = ops.orthogonal_projection(images, labels, num_classes=4, epochs=20, lr=0.1, batch_size=32,
                                         milestones=(0.5, 0.75), seed=0)
    assert torch.equal(out, again)
