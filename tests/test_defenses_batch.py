"""Batch defenses on tiny tensors: each changes what it must and nothing else, seeded per batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poisonbench.api import BatchContext, MixedTarget, mixed_cross_entropy, soft_correct
from poisonbench.plugins.defenses.augmentation import Cutmix, Cutout, GaussianNoise, Mixup


def _batch(b=64, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, h, w), generator=g).float() / 255
    return x, torch.randint(0, 10, (b,), generator=g)


def _ctx(seed=0, step=0):
    return BatchContext(seed=seed, epoch=0, step=step, epochs=1, device="cpu", num_classes=10)


def test_gaussian_noise_std_quantisation_and_grey_fraction():
    x, y = _batch(256)
    x = 0.25 + 0.5 * x  # away from the clamps
    out, target = GaussianNoise().batch(x, y, ctx=_ctx())
    assert target is y and out.shape == x.shape
    assert torch.equal(out, torch.floor(out * 255) / 255)  # ECLIPSE's truncation to 1/255 levels
    assert abs(float((out - x).std()) - 0.05) < 0.003
    grey = GaussianNoise(GaussianNoise.Params(std=0.0, gray_p=0.4, quantize="none"))
    out = grey.batch(x, y, ctx=_ctx())[0]
    is_grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 0.3 < float(is_grey.float().mean()) < 0.5
    one = _batch(8, c=1)[0]  # 1 channel: the grey step is skipped
    assert grey.batch(one, y[:8], ctx=_ctx())[0].shape == one.shape


def test_batch_draws_depend_only_on_the_batch_seed():
    x, y = _batch(16)
    noise = GaussianNoise()
    a, b = noise.batch(x, y, ctx=_ctx(1))[0], noise.batch(x, y, ctx=_ctx(1))[0]
    assert torch.equal(a, b) and not torch.equal(a, noise.batch(x, y, ctx=_ctx(2))[0])


@pytest.mark.parametrize("h,length", [(32, 16), (28, 14)])
def test_cutout_zeroes_one_clipped_box_per_image_and_nothing_else(h, length):
    x, y = _batch(128, h=h, w=h)
    x = x.clamp(min=1 / 255)  # no zero pixels before, so zeros mark the box
    cutout = Cutout()
    assert cutout.length_for(h) == length
    out, target = cutout.batch(x, y, ctx=_ctx())
    assert target is y
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(out[~zero], x[~zero])  # same box, rest kept
    area = zero[:, 0].flatten(1).sum(1)
    assert int(area.max()) <= length * length and int(area.min()) >= (length // 2) ** 2
    assert 0.4 * length ** 2 < float(area.float().mean()) < length ** 2  # borders clip some boxes
    assert Cutout(Cutout.Params(length=40)).check_data(image_shape=(28, 28, 1))
    assert not Cutout().check_data(image_shape=(28, 28, 1))


def _soft_labels(target: MixedTarget, classes=10):
    lam = target.lam[:, None]
    return (1 - lam) * F.one_hot(target.y_a, classes) + lam * F.one_hot(target.y_b, classes)


@pytest.mark.parametrize("cls,params", [(Mixup, {}), (Cutmix, {}), (Cutmix, {"prob": 0.5, "per_sample": False}),
                                        (Mixup, {"alpha": 0.4, "per_sample": False})])
def test_mixing_labels_sum_to_one_and_lambda_is_what_was_mixed(cls, params):
    x, y = _batch(64)
    defense = cls(cls.Params(**params))
    assert defense.defines_loss
    out, target = defense.batch(x, y, ctx=_ctx(3))
    assert isinstance(target, MixedTarget) and torch.equal(target.y_a, y)
    assert bool(((target.lam >= 0) & (target.lam <= 1)).all())
    assert torch.allclose(_soft_labels(target).sum(1), torch.ones(64))
    if cls is Cutmix:  # λ = fraction of pixels taken from the partner (random pixels rarely coincide)
        changed = (out != x).any(1).flatten(1).float().mean(1)
        assert torch.allclose(changed, target.lam, atol=0.01)
    else:  # x'_i = (1-λ_i) x_i + λ_i x_j for a partner j whose label is y_b[i]
        lam = target.lam[:, None, None, None, None]
        candidates = (1 - lam) * x[:, None] + lam * x[None, :]  # (i, j, C, H, W)
        error = (candidates - out[:, None]).abs().flatten(2).amax(2)
        partner = error.argmin(1)
        assert float(error.min(1).values.max()) < 1e-5 and torch.equal(y[partner], target.y_b)
        if params.get("per_sample", True):
            assert 0.3 < float(target.lam.mean()) < 0.7 and len(torch.unique(target.lam)) > 32


def test_mixed_loss_is_ce_when_lambda_is_zero_and_soft_accuracy_weights_labels():
    x, y = _batch(32)
    out, target = Mixup(Mixup.Params(prob=0.0)).batch(x, y, ctx=_ctx())
    assert torch.equal(out, x) and float(target.lam.abs().sum()) == 0
    logits = torch.randn(32, 10)
    assert torch.allclose(mixed_cross_entropy(logits, target), F.cross_entropy(logits, y))
    half = MixedTarget(y, (y + 1) % 10, torch.full((32,), 0.5))
    hits = (logits.argmax(1) == y).float().sum() * 0.5 + (logits.argmax(1) == (y + 1) % 10).float().sum() * 0.5
    assert torch.allclose(soft_correct(logits, half), hits)


def test_cutmix_with_identity_permutation_leaves_loss_at_ce():
    x, y = _batch(1)  # one image: its partner is itself
    out, target = Cutmix().batch(x, y, ctx=_ctx())
    assert torch.equal(out, x)
    logits = torch.randn(1, 10)
    assert torch.allclose(mixed_cross_entropy(logits, target), F.cross_entropy(logits, y))
