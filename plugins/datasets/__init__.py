"""Built-in datasets: CIFAR-10/100, Fashion-MNIST, the embedded Fashion-MNIST demo subset, synthetic.

Every dataset loads full train/test splits as uint8 (N, H, W, C) tensors with int64 labels.
Files live under the data directory: ``--data-dir``, else ``$POISONBENCH_DATA_DIR``, else
``<user cache dir>/data`` (``~/.cache/poisonbench/data`` on Linux), each dataset in its usual layout (torchvision's ``cifar-10-batches-py/``,
``cifar-10-batches-bin/``, ``cifar-100-python/``; Fashion-MNIST idx files in ``fashion-mnist/`` or
torchvision's ``FashionMNIST/raw/``, or Debian's ``/usr/share/datasets/fashion-mnist``).

CIFAR's official python files are pickles: each is md5-checked against the official list before a
byte of it is unpickled, and then read with a restricted unpickler (cifar_files.py beside this file).
Normalisation statistics are declared on each class (readable without the files): CIFAR-10 uses the
paper's evaluation constants for victims and, for crafting surrogates, the constants the authors'
crafting code used (``crafting_mean``/``crafting_std``); CIFAR-100 and Fashion-MNIST their usual values.
Split sizes are declared too, so ``run --dry-run`` can estimate costs before a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from poisonbench.api import Dataset, DatasetSplits, Split, default_data_dir
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)


def _split(images, labels) -> Split:
    """uint8 NHWC tensor + int64 labels from numpy arrays (N,H,W) or (N,H,W,C)."""
    import numpy as np
    import torch

    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()))


@dataclass(frozen=True)
class CifarParams:
    format: Literal["auto", "python", "binary"] = "auto"  # auto: python files, else binary, else download


class Cifar10(Dataset):
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test, 32×32×3, 10 classes."""

    name = "cifar10"
    Params = CifarParams
    image_shape = (32, 32, 3)
    num_classes = 10
    variant: ClassVar[str] = "cifar10"
    # md5 of each official python file (equal to torchvision's CIFAR10.train_list/test_list/meta;
    # tests/test_datasets.py asserts that). Tests monkeypatch this to checksums of tiny files.
    md5: ClassVar[dict[str, str]] = {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    }
    train_size, test_size = 50_000, 10_000
    mean = (0.4914, 0.4822, 0.4465)  # the paper's evaluation code
    std = (0.2023, 0.1994, 0.2010)
    crafting_mean = (0.4915, 0.4823, 0.4468)  # the error-maximising poisons' crafting code (true std)
    crafting_std = (0.2470, 0.2435, 0.2616)

    def locations(self, data_dir):
        from poisonbench.plugins.datasets import cifar_files as _cifar_files

        return _cifar_files.folders(self.variant, default_data_dir(data_dir))

    def load(self, *, data_dir=None, download=True) -> DatasetSplits:
        from poisonbench.plugins.datasets import cifar_files as _cifar_files

        root = default_data_dir(data_dir)
        (train_x, train_y), (test_x, test_y), names = _cifar_files.load(
            self.variant, root, fmt=self.params.format, md5=self.md5, download=download,
            num_classes=self.num_classes)
        return DatasetSplits(_split(train_x, train_y), _split(test_x, test_y), self.num_classes,
                             names, self.mean, self.std)


class Cifar100(Cifar10):
    """CIFAR-100 (Krizhevsky 2009), fine labels: 50,000 train / 10,000 test, 32×32×3, 100 classes."""

    name = "cifar100"
    num_classes = 100
    variant = "cifar100"
    md5 = {  # torchvision's CIFAR100.train_list/test_list/meta
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    }
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    crafting_mean = crafting_std = None  # not CIFAR-10's: surrogates use mean/std above


class FashionMNIST(Dataset):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test, 28×28×1, 10 classes."""

    name = "fashion_mnist"
    image_shape = (28, 28, 1)
    num_classes = 10
    train_size, test_size = 60_000, 10_000
    mean, std = FASHION_MEAN, FASHION_STD
    system_dirs: ClassVar[list[Path]] = [Path("/usr/share/datasets/fashion-mnist")]  # Debian package

    def locations(self, data_dir):
        root = default_data_dir(data_dir)
        return [root / "fashion-mnist", root / "FashionMNIST" / "raw", *self.system_dirs]

    def load(self, *, data_dir=None, download=True) -> DatasetSplits:
        from poisonbench.plugins.datasets import idx as _idx

        places = self.locations(data_dir)
        folder = next((p for p in places if _idx.complete(p)), None)
        note = "download disabled"
        if folder is None and download:
            note = _idx.download_fashion(default_data_dir(data_dir))
            folder = next((p for p in places if _idx.complete(p)), None)
        if folder is None:
            raise BadInput(f"Fashion-MNIST not found in {', '.join(str(p) for p in places)} "
                           f"(expected train-images-idx3-ubyte[.gz] and the 3 other idx files; {note})")
        return self._splits(folder, "")

    @staticmethod
    def _splits(folder: Path, prefix: str) -> DatasetSplits:
        from poisonbench.plugins.datasets import idx as _idx

        train = _split(*_idx.read_split(folder, "train", prefix))
        test = _split(*_idx.read_split(folder, "test", prefix))
        return DatasetSplits(train, test, 10, list(FASHION_CLASSES), FASHION_MEAN, FASHION_STD)


class FashionMNISTDemo(FashionMNIST):
    """Embedded demo data: a stratified seeded 10,000/2,000 subset of Fashion-MNIST (plugins/datasets/data/)."""

    name = "fashion_mnist_demo"
    train_size, test_size = 10_000, 2_000
    folder: ClassVar[Path] = Path(__file__).parent / "data"

    def locations(self, data_dir):
        return [self.folder]

    def load(self, *, data_dir=None, download=True) -> DatasetSplits:
        from poisonbench.plugins.datasets import idx as _idx

        if not _idx.complete(self.folder, _idx.DEMO_PREFIX):
            raise BadInput(f"embedded demo data missing from {self.folder} (reinstall poisonbench)")
        return self._splits(self.folder, _idx.DEMO_PREFIX)


@dataclass(frozen=True)
class SyntheticParams:
    n_train: int = 1000  # images
    n_test: int = 200
    num_classes: int = 10
    image_size: int = 32  # pixels (square)
    channels: int = 3
    seed: int = 0
    noise: float = 40.0  # std of per-pixel Gaussian noise, in uint8 levels


class Synthetic(Dataset):
    """Generated data for tests: one smooth random template per class plus per-image noise."""

    name = "synthetic"
    Params = SyntheticParams

    def split_sizes(self) -> tuple[int | None, int | None]:
        return self.params.n_train, self.params.n_test

    def load(self, *, data_dir=None, download=True) -> DatasetSplits:
        from poisonbench.plugins.datasets.synthetic_data import generate

        return generate(self.params)


@hookimpl
def poisonbench_register_datasets(register):
    register(Cifar10)
    register(Cifar100)
    register(FashionMNIST)
    register(FashionMNISTDemo)
    register(Synthetic)
