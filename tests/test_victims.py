"""Victim plugins: every architecture builds for CIFAR- and Fashion-MNIST-shaped inputs; small_cnn learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonbench.errors import BadInput

PAPER_NETS = ["resnet18", "resnet50", "vgg19", "mobilenet", "googlenet"]
ALL = PAPER_NETS + ["small_cnn", "timm:resnet18", "torchvision:resnet18"]


def forward(catalog, name, channels, size, num_classes=7, params=None):
    torch.manual_seed(0)
    model = catalog.victims.create(name, params).build(num_classes=num_classes, in_channels=channels,
                                                       image_size=size)
    model.eval()
    with torch.inference_mode():
        return model, model(torch.randn(2, channels, size, size))


# Every victim at CIFAR shape; the cheaper ones also at Fashion-MNIST shape (1 channel, 28×28:
# VGG's ceil-mode pools and the first-conv swaps are what that checks). No backward: keeps it fast.
CASES = [(name, 3, 32) for name in ALL] + [(name, 1, 28) for name in ALL if name not in ("resnet50", "googlenet")]


@pytest.mark.parametrize("name,channels,size", CASES)
def test_victim_builds_and_forwards(catalog, name, channels, size):
    _, out = forward(catalog, name, channels, size)
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_cifar_resnet_stem(catalog, name):
    model = catalog.victims.create(name).build(num_classes=10, in_channels=3, image_size=32)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_small_cnn_trains_and_backprops(catalog):
    model = catalog.victims.create("small_cnn", {"width": 4}).build(num_classes=3, in_channels=1, image_size=9)
    loss = model(torch.randn(4, 1, 9, 9)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_cnn_learns_synthetic_in_one_epoch(catalog):
    data = catalog.datasets.create("synthetic", {"n_train": 600, "n_test": 200, "image_size": 16}).load(data_dir=None)
    torch.manual_seed(0)
    model = catalog.victims.create("small_cnn").build(num_classes=10, in_channels=3, image_size=16)
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)

    def prep(split):
        return (split.images.permute(0, 3, 1, 2).float() / 255 - mean) / std, split.labels

    x, y = prep(data.train)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(0, len(x), 32):
        loss = nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = prep(data.test)
    with torch.inference_mode():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.9


def test_torchvision_prefix_swaps_first_conv(catalog):
    model, _ = forward(catalog, "torchvision:resnet18", 1, 32)
    assert model.conv1.in_channels == 1


@pytest.mark.parametrize("name", ["timm:no_such_net", "torchvision:no_such_net"])
def test_unknown_arch_is_bad_input(catalog, name):
    with pytest.raises(BadInput, match="no_such_net"):
        catalog.victims.create(name).build(num_classes=10, in_channels=3, image_size=32)


def test_small_cnn_width_must_be_positive(catalog):
    with pytest.raises(BadInput, match="width"):
        catalog.victims.create("small_cnn", {"width": 0}).build(num_classes=10, in_channels=3, image_size=32)
