"""Tiny data and models for trainer/runner tests: learnable in a few epochs, fast on one CPU thread."""

from __future__ import annotations

import torch
from torch import nn

from poisonbench.api import Split
from poisonbench.suite.config import TrainConfig

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def tiny_splits(n_train: int = 240, n_test: int = 120, *, classes: int = 4, size: int = 12,
                seed: int = 0) -> tuple[Split, Split, Split]:
    """(train, test, val): one random colour blob template per class plus per-image noise."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randint(40, 216, (classes, 1, 1, 3), generator=gen).float()
    templates = templates + 30 * torch.randn(classes, size, size, 3, generator=gen)

    def make(n: int) -> Split:
        labels = torch.arange(n) % classes
        noise = 35 * torch.randn(n, size, size, 3, generator=gen)
        images = (templates[labels] + noise).round().clamp(0, 255).to(torch.uint8)
        return Split(images, labels.long())

    return make(n_train), make(n_test), make(n_test // 2)


class TinyNet(nn.Module):
    """Conv-BN-ReLU, pooled, dropout, linear: dropout makes training depend on the global RNG."""

    def __init__(self, classes: int = 4, channels: int = 3, width: int = 8, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width * 4, classes)

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))


def tiny_model(seed: int = 0, **kwargs) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet(**kwargs)


def tiny_config(**overrides) -> TrainConfig:
    base = dict(epochs=4, batch_size=32, lr=0.05, milestones=[3], eval_batch_size=64)
    base.update(overrides)
    return TrainConfig(**base)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
