"""SVHN through torchvision's md5-verifying loader, on tiny .mat files written in the official layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonbench.errors import BadInput
from poisonbench.plugins.datasets.torchvision_sets import SVHN


def write_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The official layout: X uint8 (32, 32, 3, N), y uint8 (N, 1) with digit 0 stored as 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"X": x, "y": y})
    return x, y


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def svhn_dir(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "svhn"
    arrays = {split: write_mat(folder / f"{split}_32x32.mat", n, seed)
              for split, n, seed in (("train", 20, 0), ("test", 10, 1))}
    monkeypatch.setattr(SVHN, "md5", {s: md5(folder / f"{s}_32x32.mat") for s in ("train", "test")})
    return tmp_path / "data", arrays


def test_official_checksums_match_torchvision():
    from torchvision.datasets import SVHN as TorchvisionSVHN

    assert SVHN.md5 == {s: TorchvisionSVHN.split_list[s][2] for s in ("train", "test")}


def test_loads_tiny_mat_files_as_nhwc_with_digit_zero_as_label_zero(catalog, svhn_dir):
    data_dir, arrays = svhn_dir
    splits = catalog.datasets.create("svhn", {}).load(data_dir=data_dir, download=False)
    x, y = arrays["train"]
    assert splits.train.images.shape == (20, 32, 32, 3) and splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.train.images, torch.from_numpy(x.transpose(3, 0, 1, 2).copy()))
    assert splits.train.labels.tolist() == [int(v) % 10 for v in y.ravel()]
    assert splits.test.images.shape == (10, 32, 32, 3) and splits.num_classes == 10
    pixels = splits.train.images.double().div(255).reshape(-1, 3)
    assert splits.mean == pytest.approx(tuple(pixels.mean(0).tolist()), abs=1e-5)


def test_altered_file_is_refused_before_reading(catalog, svhn_dir, monkeypatch):
    data_dir, _ = svhn_dir
    import scipy.io

    def never(*args, **kwargs):
        raise AssertionError("loadmat ran on an unverified file")

    monkeypatch.setattr(scipy.io, "loadmat", never)
    target = data_dir / "svhn" / "train_32x32.mat"
    target.write_bytes(target.read_bytes() + b"tampered")
    with pytest.raises(BadInput, match="md5 mismatch") as info:
        catalog.datasets.create("svhn", {}).load(data_dir=data_dir, download=False)
    assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_offline_without_files_names_the_expected_path(catalog, tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tv_utils, "download_url", offline)
    monkeypatch.setattr("torchvision.datasets.svhn.download_url", offline)
    with pytest.raises(BadInput, match="missing") as info:
        catalog.datasets.create("svhn", {}).load(data_dir=tmp_path, download=True)
    message = str(info.value)
    assert str(tmp_path / "svhn" / "train_32x32.mat") in message and "download failed" in message
    assert "\n" not in message
