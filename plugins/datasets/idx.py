"""IDX files (the MNIST / Fashion-MNIST format) and the generator of the embedded demo subset.

IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header — two zero bytes, a type byte (0x08 =
unsigned byte), a dimension count — then one big-endian uint32 per dimension and the raw data.
Files may be gzipped (``.gz``) or not. No pickle anywhere.

Regenerate the embedded demo data (plugins/datasets/data/, see PROVENANCE.md there) with::

    python -m poisonbench.plugins.datasets.idx make-demo --source /usr/share/datasets/fashion-mnist --out plugins/datasets/data
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from poisonbench.api import atomic_write_bytes
from poisonbench.errors import BadInput

UBYTE = 0x08
# Fashion-MNIST file stems, as published and as torchvision / Debian store them.
STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
DEMO_PREFIX = "fashion-mnist-demo-"
DEMO_SIZES = {"train": 10_000, "test": 2_000}
DEMO_SEED = 0


def find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists (plain first), else None."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def complete(folder: Path, prefix: str = "") -> bool:
    """True when all four Fashion-MNIST files are in ``folder``."""
    return all(find_file(folder, prefix + stem) is not None for stem in STEMS.values())


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an IDX file (uint8 only); BadInput naming the file when malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise BadInput(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise BadInput(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != UBYTE:
        raise BadInput(f"{path}: IDX type 0x{raw[2]:02x} is not supported (expected 0x08, unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadInput(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise BadInput(f"{path}: IDX header says {shape} ({expected} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzipped when the name ends in .gz), atomically."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if path.suffix == ".gz":
        # mtime=0 keeps the bytes reproducible (gzip stores a timestamp otherwise).
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    atomic_write_bytes(path, payload)


def read_split(folder: Path, split: str, prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(images N×H×W uint8, labels N uint8) of one split; BadInput when counts disagree."""
    images_path = find_file(folder, prefix + STEMS[(split, "images")])
    labels_path = find_file(folder, prefix + STEMS[(split, "labels")])
    if images_path is None or labels_path is None:
        raise BadInput(f"missing {split} IDX files in {folder}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise BadInput(f"{images_path}: images {images.shape} do not match labels {labels.shape} in {labels_path}")
    return images, labels


def download_fashion(root: Path) -> str:
    """Fetch the official md5-checked idx.gz files into ``root/FashionMNIST/raw``; a one-line note."""
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        return "downloaded"
    except Exception as err:  # offline: one line, never a traceback
        return f"download failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def make_demo(source: Path, out: Path) -> dict:
    """Write the stratified seeded demo subset of the Fashion-MNIST files in ``source`` to ``out``."""
    import torch

    from poisonbench.api import stratified_indices

    out.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, list[int]] = {}
    for split, size in DEMO_SIZES.items():
        images, labels = read_split(source, split)
        idx = stratified_indices(torch.from_numpy(labels.astype(np.int64)), size, seed=DEMO_SEED).numpy()
        chosen[split] = idx.tolist()
        write_idx(out / (DEMO_PREFIX + STEMS[(split, "images")] + ".gz"), images[idx])
        write_idx(out / (DEMO_PREFIX + STEMS[(split, "labels")] + ".gz"), labels[idx])
    index_file = out / (DEMO_PREFIX + "source-indices.json.gz")
    index_file.write_bytes(gzip.compress(json.dumps(chosen).encode(), compresslevel=9, mtime=0))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob(DEMO_PREFIX + "*"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m poisonbench.plugins.datasets.idx")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("make-demo", help="write the embedded Fashion-MNIST demo subset")
    demo.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    demo.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args(argv)
    for name, digest in make_demo(args.source, args.out).items():
        print(f"{digest}  {name}")


if __name__ == "__main__":
    main()
