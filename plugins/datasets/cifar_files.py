"""Reading CIFAR-10/100 files safely: md5-verified python pickles (restricted unpickler) or the binary format.

The official ``cifar-10-batches-py`` / ``cifar-100-python`` files are Python pickles; unpickling an
untrusted pickle runs arbitrary code. So each file's bytes are read once, their md5 is
compared with the official checksum, and only then are those same bytes unpickled — by
``RestrictedUnpickler``, which resolves nothing but numpy's array reconstruction. A file with the
wrong checksum is refused unread. The binary format (``cifar-10-batches-bin``: per record one label
byte, then 1024 red, 1024 green, 1024 blue bytes) needs no pickle at all.
Downloads use torchvision's md5-checked ``download_and_extract_archive``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np

from poisonbench.errors import BadInput

SPECS = {
    "cifar10": {
        "title": "CIFAR-10", "python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin",
        "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
        "meta": "batches.meta", "names_key": "label_names", "labels_key": "labels",
        "expected": "data_batch_1..5 and test_batch",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "tgz_md5": "c58f30108f718f92721af3b95e74349a",
    },
    "cifar100": {
        "title": "CIFAR-100", "python": "cifar-100-python", "binary": None,
        "train": ["train"], "test": ["test"],
        "meta": "meta", "names_key": "fine_label_names", "labels_key": "fine_labels",
        "expected": "train, test and meta",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "tgz_md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
}
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BINARY_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
BINARY_TEST = ["test_batch.bin"]
RECORD = 1 + 32 * 32 * 3  # bytes per binary record


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only what CIFAR pickles contain: numpy arrays and dtypes (and latin-1 bytes)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode  # how Python 3 protocol-2 pickles spell bytes
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to text → bytes with latin-1 (no other codec is reachable)."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def folders(variant: str, root: Path) -> list[Path]:
    spec = SPECS[variant]
    return [root / spec[key] for key in ("python", "binary") if spec[key]]


def read_verified(path: Path, md5: str | None) -> dict:
    """Check ``path``'s md5 against ``md5``, then unpickle those bytes with the restricted unpickler."""
    if md5 is None:
        raise BadInput(f"{path}: no official checksum known for this file; refusing to unpickle it")
    raw = path.read_bytes()
    actual = hashlib.md5(raw).hexdigest()
    if actual != md5:
        raise BadInput(f"{path} has md5 {actual}, expected the official {md5}; refusing to unpickle it "
                       "(delete it and download again)")
    try:
        obj = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as err:
        raise BadInput(f"{path}: cannot read CIFAR batch: {err}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path}: expected a dict of arrays, got {type(obj).__name__}")
    return obj


def _python_split(folder: Path, files: list[str], spec: dict, md5: dict) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        batch = read_verified(folder / name, md5.get(name))
        data, batch_labels = np.asarray(batch.get("data")), batch.get(spec["labels_key"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD - 1 or batch_labels is None \
                or len(batch_labels) != len(data):
            raise BadInput(f"{folder / name}: not a CIFAR batch (data {data.shape}, {data.dtype})")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _binary_split(folder: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD:
            raise BadInput(f"{folder / name}: size {raw.size} is not a multiple of {RECORD}-byte records")
        records = raw.reshape(-1, RECORD)
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def _present(folder: Path, files: list[str]) -> bool:
    return all((folder / f).is_file() for f in files)


def _download(spec: dict, root: Path) -> str:
    try:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(spec["url"], str(root), md5=spec["tgz_md5"])
        return "downloaded"
    except Exception as err:  # offline: report in one line
        text = str(err).splitlines()[0] if str(err) else ""
        return f"download failed: {type(err).__name__}: {text}"


def load(variant: str, root: Path, *, fmt: str, md5: dict, download: bool, num_classes: int):
    """((train_x, train_y), (test_x, test_y), class_names) with images uint8 N×32×32×3."""
    spec = SPECS[variant]
    py_dir = root / spec["python"]
    py_files = spec["train"] + spec["test"] + [spec["meta"]]
    bin_dir = root / spec["binary"] if spec["binary"] else None
    if fmt == "binary" and bin_dir is None:
        raise BadInput(f"{spec['title']} has no binary format; use format: python")
    use_binary = fmt == "binary" or (fmt == "auto" and not _present(py_dir, py_files)
                                     and bin_dir is not None and _present(bin_dir, BINARY_TRAIN + BINARY_TEST))
    if use_binary:
        if not _present(bin_dir, BINARY_TRAIN + BINARY_TEST):
            raise BadInput(f"{spec['title']} not found at {bin_dir} (expected data_batch_1..5.bin and test_batch.bin)")
        names_file = bin_dir / "batches.meta.txt"
        names = [n for n in names_file.read_text().split() if n] if names_file.is_file() else CIFAR10_NAMES
        train, test = _binary_split(bin_dir, BINARY_TRAIN), _binary_split(bin_dir, BINARY_TEST)
        _check_labels(bin_dir, train[1], test[1], num_classes)
        return train, test, names
    if not _present(py_dir, py_files):
        note = _download(spec, root) if download else "download disabled"
        if not _present(py_dir, py_files):
            alt = f" or {bin_dir} (binary format)" if bin_dir else ""
            raise BadInput(f"{spec['title']} not found at {py_dir}{alt} (expected {spec['expected']}; {note})")
    meta = read_verified(py_dir / spec["meta"], md5.get(spec["meta"]))
    names = [str(n) for n in meta.get(spec["names_key"], [])]
    train = _python_split(py_dir, spec["train"], spec, md5)
    test = _python_split(py_dir, spec["test"], spec, md5)
    _check_labels(py_dir, train[1], test[1], num_classes)
    return train, test, names


def _check_labels(folder: Path, train_y: np.ndarray, test_y: np.ndarray, num_classes: int) -> None:
    for labels in (train_y, test_y):
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise BadInput(f"{folder}: labels outside 0..{num_classes - 1}")
