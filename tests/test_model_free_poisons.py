"""The model-free poisons LSP, AR, OPS and CUDA, each pinned on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poisonbench.api import CraftContext, Split
from poisonbench.errors import BadInput
from poisonbench.plugins import convolution, linear_separable, one_pixel
from poisonbench.plugins.autoregressive import Autoregressive, AutoregressiveLinf
from poisonbench.plugins.autoregressive import ops as ar_ops


def grey_split(n: int = 40, shape=(32, 32, 3), num_classes: int = 4, seed: int = 0) -> Split:
    """Mid-grey images (100..155) with balanced labels: no perturbation here is clipped."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(100, 156, (n, *shape), generator=gen, dtype=torch.int64).to(torch.uint8)
    return Split(images=images, labels=torch.arange(n) % num_classes)


def ctx(num_classes: int = 4, seed: int = 0) -> CraftContext:
    return CraftContext(num_classes=num_classes, seed=seed)


# -- LSP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, patch", [((32, 32, 3), 8), ((28, 28, 1), 7), ((28, 28, 1), 8)])
def test_lsp_patches_are_constant_and_the_norm_is_the_budget(shape, patch):
    labels = np.arange(30) % 3
    grid = math.ceil(shape[0] / patch)
    z = linear_separable.lsp_features(labels, num_classes=3, features=grid * grid * shape[2],
                                      class_sep=10.0, seed=1)
    eps2 = 6 / 255 * math.sqrt(math.prod(shape))
    delta = linear_separable.expand(z, shape=shape, patch=patch, eps2=eps2)
    norms = np.sqrt((delta.astype(np.float64) ** 2).reshape(30, -1).sum(axis=1))
    assert np.allclose(norms, eps2, rtol=1e-5)
    for gh in range(grid):
        for gw in range(grid):
            cell = delta[:, gh * patch:(gh + 1) * patch, gw * patch:(gw + 1) * patch, :]
            assert np.allclose(cell, cell[:, :1, :1, :], atol=1e-7), (gh, gw)
    # the same distribution per class: δs of one class align, of different classes do not
    unit = delta.reshape(30, -1) / norms[:, None]
    cos = unit @ unit.T
    same = labels[:, None] == labels[None, :]
    assert cos[same & ~np.eye(30, dtype=bool)].mean() > 0.5 > cos[~same].mean()


def test_lsp_export_meets_the_l2_budget_and_defaults():
    poison = linear_separable.LinearSeparable()
    assert poison.budget_for((32, 32, 3)) == pytest.approx(1.3041, abs=1e-4)
    assert poison.budget_for((28, 28, 1)) == pytest.approx(0.6588, abs=1e-4)
    assert linear_separable.patch_side((28, 28, 1), None) == 7
    clean = grey_split()
    out = poison.craft(clean, ctx=ctx())
    l2 = ((out.double() - clean.images.double()) / 255).flatten(1).norm(dim=1)
    eps2, d = 1.3041, 3072
    assert (l2 <= eps2 + 0.5 * math.sqrt(d) / 255).all()
    rounding = math.sqrt(d / 12) / 255  # the export adds ≈ this much in quadrature
    assert float(l2.mean()) == pytest.approx(math.hypot(eps2, rounding), rel=0.01)
    assert torch.equal(out, poison.craft(clean, ctx=ctx()))
    assert not torch.equal(out, poison.craft(clean, ctx=ctx(seed=1)))


# -- AR ---------------------------------------------------------------------------------------


def recurrence_residual(delta: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """|s[r, t] − Σ b·window| per channel for every (r, t) ≥ 2 of one field (C, H, W)."""
    windows = delta.unfold(1, 3, 1).unfold(2, 3, 1)  # (C, H−2, W−2, 3, 3)
    predicted = (windows * coeffs.unsqueeze(1).unsqueeze(1)).sum(dim=(-1, -2))  # centre weight is 0
    return (delta[:, 2:, 2:] - predicted).abs()


def test_ar_realisations_follow_their_class_recurrence_away_from_the_border():
    coeffs = ar_ops.cifar10_coefficients()
    assert torch.allclose(coeffs.sum(dim=(2, 3)), torch.ones(10, 3), atol=3e-4)
    labels = torch.tensor([0, 3, 9, 3])
    gen = torch.Generator().manual_seed(0)
    delta = ar_ops.scale_l2(ar_ops.generate(coeffs, labels, size=(32, 32), crop=4, gen=gen), 1.0)
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    for field, k in zip(delta, labels.tolist(), strict=True):
        scale = float(field.abs().max())
        assert float(recurrence_residual(field, coeffs[k]).max()) < 1e-4 * scale
        wrong = coeffs[(k + 1) % 10]
        assert float(recurrence_residual(field, wrong).max()) > 0.05 * scale
    # the matched filter of the own class answers 0, every other class's answers more
    filters = ar_ops.matched_filters(coeffs)
    for field, k in zip(delta, labels.tolist(), strict=True):
        r = ar_ops.response(filters, field)
        assert float(r[k]) < 1e-3 and int(r.argmin()) == k and float(r.sort().values[1]) > 0.1


@pytest.mark.parametrize("labels", [[1, 0, 1], list(range(19, -1, -1))])  # per-class and per-image solves
def test_ar_generator_equals_the_raster_loop(labels):
    coeffs = torch.cat([ar_ops.cifar10_coefficients()] * 2)[[2, 7] if len(labels) == 3 else slice(None)]
    labels = torch.tensor(labels)
    fast = ar_ops.generate(coeffs, labels, size=(5, 6), crop=3, gen=torch.Generator().manual_seed(4))
    field = torch.randn(len(labels), 3, 8, 9, generator=torch.Generator().manual_seed(4)).double()
    for i, k in enumerate(labels.tolist()):
        for r in range(6):
            for t in range(7):
                window = field[i, :, r:r + 3, t:t + 3]
                field[i, :, r + 2, t + 2] = (coeffs[k].double() * window).sum(dim=(1, 2))
    assert torch.allclose(fast.double(), field[:, :, 3:, 3:], rtol=1e-5, atol=1e-5)


def test_ar_finder_gives_fixed_processes_for_one_channel():
    a = ar_ops.find_coefficients(10, 1, required_response=10 / 3, max_candidates=20_000, seed=0)
    b = ar_ops.find_coefficients.__wrapped__(10, 1, required_response=10 / 3, max_candidates=20_000, seed=0)
    assert a.shape == (10, 1, 3, 3) and torch.equal(a, b)
    assert torch.allclose(a.sum(dim=(2, 3)), torch.ones(10, 1), atol=1e-5)
    assert (a[:, :, 2, 2] == 0).all() and float(a.abs().max()) <= 10
    gen = torch.Generator().manual_seed(3)
    delta = ar_ops.scale_l2(ar_ops.generate(a, torch.arange(10), size=(28, 28), crop=4, gen=gen), 0.5)
    for k in range(10):
        assert float(recurrence_residual(delta[k], a[k]).max()) < 1e-4 * float(delta[k].abs().max())
    with pytest.raises(Exception, match="found only"):
        ar_ops.find_coefficients.__wrapped__(10, 1, required_response=1e9, max_candidates=70, seed=0)


def test_ar_craft_adds_the_scaled_realisation():
    clean = grey_split(n=12)
    poison = Autoregressive()
    out = poison.craft(clean, ctx=ctx(seed=5))
    gen = torch.Generator().manual_seed(5)
    raw = ar_ops.generate(ar_ops.cifar10_coefficients(), clean.labels, size=(32, 32), crop=4, gen=gen)
    delta = ar_ops.scale_l2(raw, 1.0).permute(0, 2, 3, 1)
    got = (out.float() - clean.images.float()) / 255
    assert float((got - delta).abs().max()) <= 0.5 / 255 + 1e-6
    assert poison.budget_for((28, 28, 1)) == pytest.approx(math.sqrt(784 / 3072))
    linf = AutoregressiveLinf().craft(clean, ctx=ctx(seed=5))
    assert int((linf.int() - clean.images.int()).abs().max()) == 8


# -- OPS --------------------------------------------------------------------------------------


def test_ops_score_is_mean_over_std_of_the_distance_to_the_colour():
    split = grey_split(n=9, shape=(3, 4, 3), num_classes=1)
    split.images[:, 0, 0, :] = 0  # every image black there: D to white has std 0 → +inf
    counts, s1, s2 = one_pixel.class_sums(split.images, split.labels, 1)
    score = one_pixel.scores(int(counts[0]), s1[0], s2[0])
    x = split.images.double() / 255
    bits = one_pixel.colours(3)
    for p in range(1, 12):
        h, w = divmod(p, 4)
        for v in range(8):
            d = (bits[v].double() - x[:, h, w, :]).abs()
            assert float(score[p, v]) == pytest.approx(float(d.mean() / d.std(unbiased=False)), rel=1e-9)
    assert score[0, 7] == math.inf and score[0, 0] == 0  # white vs black-only: inf; black: mean 0


def test_ops_changes_one_pixel_per_image_to_its_class_colour():
    clean = grey_split(n=60, shape=(8, 8, 3), num_classes=6)
    poison = one_pixel.OnePixelShortcut()
    out = poison.craft(clean, ctx=ctx(num_classes=6))
    changed = (out != clean.images).any(dim=3)  # (N, H, W)
    assert (changed.flatten(1).sum(dim=1) == 1).all()
    pairs = set()
    for pick in poison.picks:
        h, w = pick["pixel"]
        members = clean.labels == pick["class"]
        assert changed[members, h, w].all()
        assert (out[members, h, w, :] == torch.tensor(pick["colour"], dtype=torch.uint8)).all()
        assert set(pick["colour"]) <= {0, 255}
        pairs.add((h, w, tuple(pick["colour"])))
    assert len(pairs) == 6  # no two classes share a (pixel, colour)
    assert poison.budget() == 1 and torch.equal(out, poison.craft(clean, ctx=ctx(num_classes=6)))


def test_ops_taken_pairs_are_skipped_and_ties_go_to_the_smallest_index():
    score = torch.zeros(3, 4, 2, dtype=torch.float64)
    score[:, 2, 1] = 5.0  # every class prefers (2, 1)
    picks = one_pixel.choose(score, sparsity=1, dedup="pair")
    assert [p[0][:2] for p in picks] == [(2, 1), (0, 0), (0, 1)]
    wide = torch.zeros(3, 6, 2, dtype=torch.float64)
    wide[:, 2, 1] = 5.0
    picks = one_pixel.choose(wide, sparsity=2, dedup="position")  # a class never reuses a position
    assert [[q[:2] for q in p] for p in picks] == [[(2, 1), (0, 0)], [(1, 0), (3, 0)], [(4, 0), (5, 0)]]
    with pytest.raises(BadInput, match="class 2"):
        one_pixel.choose(score, sparsity=2, dedup="position")


# -- CUDA -------------------------------------------------------------------------------------


def test_cuda_filters_are_fixed_per_class_and_applied_per_channel():
    params = convolution.CUDAParams()
    filters = convolution.class_filters(num_classes=4, channels=3, params=params, seed=7)
    assert torch.equal(filters, convolution.class_filters(num_classes=4, channels=3, params=params, seed=7))
    other = convolution.class_filters(num_classes=4, channels=3, params=params, seed=8)
    assert not torch.isclose(filters, other).flatten(1).all(dim=1).any()  # every filter changes
    assert torch.allclose(filters.sum(dim=(2, 3)), torch.ones(4, 3))
    assert not torch.equal(filters[:, 0], filters[:, 1])  # independent per channel
    clean = grey_split(n=8, num_classes=4)
    out = convolution.ConvolutionFilter().craft(clean, ctx=ctx(seed=7))
    x = clean.images.permute(0, 3, 1, 2).double() / 255
    for i in range(8):
        k = int(clean.labels[i])
        for c in range(3):  # channel c of the output depends on channel c of the input only
            ref = F.conv2d(x[i, c][None, None], filters[k, c][None, None].double(), padding=1)[0, 0]
            got = out[i, :, :, c].double() / 255
            assert float((got - ref.clamp(0, 1)).abs().max()) <= 0.5 / 255 + 1e-6
    shared = convolution.class_filters(num_classes=2, channels=3, params=convolution.CUDAParams(per_channel=False), seed=0)
    assert torch.equal(shared[:, 0], shared[:, 2])


def test_cuda_is_unbounded_and_keeps_brightness():
    poison = convolution.ConvolutionFilter()
    assert poison.threat_model == "filter" and poison.budget() is None
    clean = grey_split(n=16)
    out = poison.craft(clean, ctx=ctx())
    inner = (out.float() - clean.images.float())[:, 1:-1, 1:-1, :]  # the zero-padded border darkens
    assert abs(float(inner.mean())) < 0.02 * 255


# -- suites -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["modern", "cpu", "demo", "fmnist_model_free"])
def test_suites_carry_the_four_model_free_poisons(suite, catalog):
    from pathlib import Path

    from poisonbench.suite import load_suite

    loaded = load_suite(Path(__file__).resolve().parents[1] / "suites" / f"{suite}.yaml", catalog)
    assert {"LSP", "AR", "OPS", "CUDA"} <= {p.name for p in loaded.poisons}
    if suite == "modern":
        assert loaded.dataset_component.name == "cifar10" and [v.name for v in loaded.victims] == ["resnet18"]
        assert loaded.train.epochs == 100 and list(loaded.train.milestones) == [50]
