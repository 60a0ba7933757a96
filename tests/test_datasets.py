"""Dataset plugins: CIFAR files (safe pickle path + binary), Fashion-MNIST idx, the demo subset, synthetic."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from poisonbench.errors import BadInput
from poisonbench.plugins.datasets import (
    Cifar10,
    Cifar100,
    FashionMNIST,
    FashionMNISTDemo,
    Synthetic,
)
from poisonbench.plugins.datasets import cifar_files as _cifar_files
from poisonbench.plugins.datasets import idx as _idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def tiny_cifar_arrays(n: int, seed: int, classes: int = 10):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, classes, n).tolist()


def write_pickle(path: Path, obj) -> str:
    raw = pickle.dumps(obj, protocol=2)  # the official files are protocol-2 pickles
    path.write_bytes(raw)
    return hashlib.md5(raw).hexdigest()


def write_cifar10_python(root: Path, n: int = 4) -> tuple[dict, np.ndarray, np.ndarray]:
    """Tiny files in torchvision's cifar-10-batches-py layout; returns (md5 table, train x, train y)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    md5, xs, ys = {}, [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = tiny_cifar_arrays(n, i)
        md5[name] = write_pickle(folder / name, {"batch_label": name, "labels": labels, "data": data})
        if name != "test_batch":
            xs.append(data)
            ys.extend(labels)
    md5["batches.meta"] = write_pickle(folder / "batches.meta", {"label_names": _cifar_files.CIFAR10_NAMES})
    return md5, np.concatenate(xs), np.asarray(ys)


def to_nhwc(flat: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def test_checksum_table_matches_torchvision():
    from torchvision.datasets import CIFAR10, CIFAR100

    for cls, tv in ((Cifar10, CIFAR10), (Cifar100, CIFAR100)):
        official = dict(tv.train_list + tv.test_list)
        official[tv.meta["filename"]] = tv.meta["md5"]
        assert cls.md5 == official


def test_cifar10_python_round_trip(tmp_path, monkeypatch):
    md5, train_x, train_y = write_cifar10_python(tmp_path)
    monkeypatch.setattr(Cifar10, "md5", md5)
    splits = Cifar10().load(data_dir=tmp_path, download=False)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    assert splits.train.images.shape == (20, 32, 32, 3) and splits.test.images.shape == (4, 32, 32, 3)
    assert np.array_equal(splits.train.images.numpy(), to_nhwc(train_x))
    assert splits.train.labels.tolist() == train_y.tolist()
    assert splits.class_names == _cifar_files.CIFAR10_NAMES and len(splits.mean) == 3


def test_cifar10_missing_names_path_and_does_not_download(tmp_path):
    with pytest.raises(BadInput) as err:
        Cifar10().load(data_dir=tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "download disabled" in message
    assert "\n" not in message


class Sentinel:
    """Unpickling this creates ``path`` — evidence that a payload ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_wrong_checksum_is_refused_without_unpickling(tmp_path, monkeypatch):
    md5, _, _ = write_cifar10_python(tmp_path)
    sentinel = tmp_path / "payload-ran"
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_3", Sentinel(sentinel))
    monkeypatch.setattr(Cifar10, "md5", md5)  # still the checksum of the genuine tiny batch
    with pytest.raises(BadInput, match="data_batch_3 has md5 .* refusing to unpickle"):
        Cifar10().load(data_dir=tmp_path, download=False)
    assert not sentinel.exists()


def test_restricted_unpickler_refuses_foreign_globals_even_with_matching_checksum(tmp_path, monkeypatch):
    md5, _, _ = write_cifar10_python(tmp_path)
    sentinel = tmp_path / "payload-ran"
    md5["data_batch_1"] = write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", Sentinel(sentinel))
    monkeypatch.setattr(Cifar10, "md5", md5)
    with pytest.raises(BadInput, match="refusing to load global"):
        Cifar10().load(data_dir=tmp_path, download=False)
    assert not sentinel.exists()


def write_cifar10_binary(root: Path, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate(_cifar_files.BINARY_TRAIN + _cifar_files.BINARY_TEST):
        data, labels = tiny_cifar_arrays(n, 100 + i)
        records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], data], axis=1)
        (folder / name).write_bytes(records.tobytes())
        if name in _cifar_files.BINARY_TRAIN:
            xs.append(data)
            ys.extend(labels)
    return np.concatenate(xs), np.asarray(ys)


@pytest.mark.parametrize("fmt", ["auto", "binary"])
def test_cifar10_binary_round_trip(tmp_path, fmt):
    train_x, train_y = write_cifar10_binary(tmp_path)
    splits = Cifar10(Cifar10.Params(format=fmt)).load(data_dir=tmp_path, download=False)
    assert np.array_equal(splits.train.images.numpy(), to_nhwc(train_x))
    assert splits.train.labels.tolist() == train_y.tolist() and len(splits.test) == 3


def test_cifar10_binary_truncated_file_names_it(tmp_path):
    write_cifar10_binary(tmp_path)
    bad = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(BadInput, match="data_batch_2.bin"):
        Cifar10().load(data_dir=tmp_path, download=False)


def test_cifar100_fine_labels(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data, fine = tiny_cifar_arrays(5, 7, classes=100)
    md5 = {
        "train": write_pickle(folder / "train", {"data": data, "fine_labels": fine, "coarse_labels": [0] * 5}),
        "test": write_pickle(folder / "test", {"data": data[:2], "fine_labels": fine[:2], "coarse_labels": [0, 0]}),
        "meta": write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]}),
    }
    monkeypatch.setattr(Cifar100, "md5", md5)
    splits = Cifar100().load(data_dir=tmp_path, download=False)
    assert splits.train.labels.tolist() == fine and splits.num_classes == 100 and len(splits.class_names) == 100


def write_fashion(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    for split, n, images in (("train", n_train, train), ("test", n_test, train[:n_test])):
        _idx.write_idx(folder / (_idx.STEMS[(split, "images")] + suffix), images)
        _idx.write_idx(folder / (_idx.STEMS[(split, "labels")] + suffix), np.arange(n, dtype=np.uint8) % 10)
    return train


@pytest.mark.parametrize("layout,gz", [("fashion-mnist", True), ("FashionMNIST/raw", False)])
def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch, layout, gz):
    monkeypatch.setattr(FashionMNIST, "system_dirs", [])
    train = write_fashion(tmp_path / layout, gz=gz)
    splits = FashionMNIST().load(data_dir=tmp_path, download=False)
    assert splits.train.images.shape == (6, 28, 28, 1) and splits.test.images.shape == (4, 28, 28, 1)
    assert np.array_equal(splits.train.images[..., 0].numpy(), train)
    assert splits.train.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_fashion_mnist_missing_lists_places(tmp_path, monkeypatch):
    monkeypatch.setattr(FashionMNIST, "system_dirs", [tmp_path / "system"])
    with pytest.raises(BadInput) as err:
        FashionMNIST().load(data_dir=tmp_path, download=False)
    message = str(err.value)
    for place in ("fashion-mnist", "FashionMNIST/raw", "system"):
        assert str(tmp_path / place) in message
    assert "\n" not in message


def test_malformed_idx_names_file(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x02"))
    with pytest.raises(BadInput, match="x.gz"):
        _idx.read_idx(bad)


@pytest.mark.skipif(not _idx.complete(DEBIAN), reason="Debian dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_shapes(monkeypatch, tmp_path):
    splits = FashionMNIST().load(data_dir=tmp_path, download=False)
    assert splits.train.images.shape == (60000, 28, 28, 1) and splits.test.images.shape == (10000, 28, 28, 1)
    assert splits.train.labels.bincount().tolist() == [6000] * 10


def test_demo_is_stratified_10k_2k():
    splits = FashionMNISTDemo().load(data_dir=None, download=False)
    assert splits.train.images.shape == (10000, 28, 28, 1) and splits.test.images.shape == (2000, 28, 28, 1)
    assert splits.train.labels.bincount().tolist() == [1000] * 10
    assert splits.test.labels.bincount().tolist() == [200] * 10


@pytest.mark.skipif(not _idx.complete(DEBIAN), reason="Debian dataset-fashion-mnist not installed")
def test_demo_matches_its_provenance_indices():
    demo = FashionMNISTDemo.folder
    chosen = json.loads(gzip.decompress((demo / (_idx.DEMO_PREFIX + "source-indices.json.gz")).read_bytes()))
    for split in ("train", "test"):
        images, labels = _idx.read_split(DEBIAN, split)
        sub_images, sub_labels = _idx.read_split(demo, split, _idx.DEMO_PREFIX)
        assert np.array_equal(images[chosen[split]], sub_images)
        assert np.array_equal(labels[chosen[split]], sub_labels)


def test_synthetic_is_deterministic_and_seeded():
    params = Synthetic.Params(n_train=40, n_test=20, num_classes=4, image_size=12, channels=1, seed=3)
    a, b = Synthetic(params).load(data_dir=None), Synthetic(params).load(data_dir=None)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.shape == (40, 12, 12, 1) and a.num_classes == 4
    other = Synthetic(Synthetic.Params(n_train=40, n_test=20, num_classes=4, image_size=12, channels=1, seed=4))
    assert not torch.equal(a.train.images, other.load(data_dir=None).train.images)


def test_every_dataset_registered(catalog):
    assert {"cifar10", "cifar100", "fashion_mnist", "fashion_mnist_demo", "synthetic"} <= set(catalog.datasets.names())


def test_failed_download_is_one_line_naming_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(_cifar_files, "_download", lambda spec, root: "download failed: URLError: offline")
    with pytest.raises(BadInput) as err:
        Cifar10().load(data_dir=tmp_path, download=True)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message and "download failed: URLError" in message


def test_cifar_labels_out_of_range_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10_binary(tmp_path)
    records = np.frombuffer((folder / "test_batch.bin").read_bytes(), dtype=np.uint8).copy()
    records[0] = 10  # first record's label byte
    (folder / "test_batch.bin").write_bytes(records.tobytes())
    with pytest.raises(BadInput, match="labels outside 0..9"):
        Cifar10().load(data_dir=tmp_path, download=False)


def test_no_unrestricted_unpickling_in_package_code():
    root = Path(__file__).resolve().parents[1]
    offenders = [str(p) for folder in ("benchmark", "plugins") for p in (root / folder).rglob("*.py")
                 if "pickle.load" in p.read_text() or "pickle.Unpickler(" in p.read_text()]
    assert offenders == []
