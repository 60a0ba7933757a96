"""The trainer is not broken: small_cnn on 4,000 Fashion-MNIST images reaches > 80% clean test accuracy.

Needs the idx files of Debian's dataset-fashion-mnist package (CI installs it); skipped otherwise.
About 10-15 s on one CPU thread (5 epochs of 4,000 images, batch 32, flip augmentation).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poisonbench.data import prepare_data
from poisonbench.suite import Component
from poisonbench.suite.config import DatasetConfig, TrainConfig
from poisonbench.training.trainer import evaluate, train_victim

FMNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").exists(),
                                reason=f"Fashion-MNIST idx files not in {FMNIST} "
                                       "(apt-get install dataset-fashion-mnist)")


def test_small_cnn_learns_fashion_mnist(catalog, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # robust on a busy 2-core CI machine
    try:
        data = prepare_data(catalog, DatasetConfig(name="fashion_mnist", train_subset=4000, test_subset=1000),
                            Component("fashion_mnist", {}, {}), data_dir=tmp_path, download=False)
        assert data.train.image_shape == (28, 28, 1)
        torch.manual_seed(0)
        model = catalog.victims.create("small_cnn", {}).build(num_classes=10, in_channels=1, image_size=28)
        config = TrainConfig(epochs=5, batch_size=32, lr=0.05, milestones=[4], augment=["flip"])
        history = train_victim(model=model, train=data.train, test=data.test, val=None, config=config,
                               mean=data.mean, std=data.std, seed=0, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert max(history["test_acc"]) > 0.80, history["test_acc"]
    assert history["train_loss"][-1] < history["train_loss"][0]
    final = evaluate(model, data.test, mean=data.mean, std=data.std, device="cpu")
    assert final == pytest.approx(history["test_acc"][-1])
