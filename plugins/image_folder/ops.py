"""Class-folder image trees: scan, check, decode once with PIL, cache as uint8 safetensors.

The heavy half of ``plugins/image_folder/__init__.py`` (imports numpy, PIL, torch), imported only when a
dataset is loaded. Layout (torchvision's ImageFolder convention)::

    ROOT/train/<class>/<any name>.{png,jpg,jpeg,bmp,webp}
    ROOT/test/<class>/...

Rules (documented for users in the plugin's docstring):
  * classes are the sorted sub-folder names of ``train/``; ``test/`` must have exactly the same ones;
    hidden entries (``.name``) are skipped, files with other suffixes are ignored;
  * images whose size is not ``image_size``² are resized so the shorter side is ``image_size``
    (bilinear, antialiased by PIL when shrinking) and centre-cropped to a square — torchvision's
    ``Resize(s)`` + ``CenterCrop(s)``; EXIF orientation is ignored, as torchvision does;
  * channels: if every image is grayscale (PIL modes 1, L, LA, I, I;16, F) the dataset has 1
    channel; if any image is colour, all are RGB (grayscale replicated, as PIL's L→RGB does);
    alpha is dropped, not composited;
  * mean/std per channel come from the train split (images scaled to [0, 1], population std).
The decoded tensors are cached under ``<cache>/datasets/`` keyed by a sha256 over every file's
relative path, class and bytes plus ``image_size``, this module's ``DECODER_VERSION`` and PIL's
version, so editing, adding or renaming one image re-decodes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from poisonbench.api import atomic_path, export_uint8
from poisonbench.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "test")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
DECODER_VERSION = 1  # bump when decoding/resizing changes (invalidates cached tensors)
STATS_CHUNK = 4096  # images per step when computing mean/std (bounded float64 memory)


@dataclass
class Tree:
    """A scanned tree: sorted class names and per split a sorted list of (file, class index)."""

    root: Path
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def scan_tree(root: Path) -> Tree:
    """List ``root/{train,test}/<class>/*`` and check the layout; every problem is a ``BadInput``."""
    if not root.is_dir():
        raise BadInput(f"image_folder: root '{root}' is not a folder (expected {root}/train/<class>/ "
                       f"and {root}/test/<class>/)")
    per_split: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise BadInput(f"image_folder: missing split folder '{folder}' (expected {root}/train/<class>/ "
                           f"and {root}/test/<class>/)")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
        if not classes:
            raise BadInput(f"image_folder: '{folder}' has no class folders")
        per_split[split] = {}
        for name in classes:
            images = sorted(p for p in (folder / name).iterdir()
                            if _visible(p) and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise BadInput(f"image_folder: class folder '{folder / name}' has no images "
                               f"({', '.join(IMAGE_SUFFIXES)})")
            per_split[split][name] = images
    train_classes, test_classes = list(per_split["train"]), list(per_split["test"])
    for name in train_classes:
        if name not in per_split["test"]:
            raise BadInput(f"image_folder: class '{name}' is in '{root / 'train'}' but not in "
                           f"'{root / 'test'}' (both splits need the same class folders)")
    for name in test_classes:
        if name not in per_split["train"]:
            raise BadInput(f"image_folder: class '{name}' is in '{root / 'test'}' but not in "
                           f"'{root / 'train'}' (both splits need the same class folders)")
    files = {split: [(path, index) for index, name in enumerate(train_classes)
                     for path in per_split[split][name]] for split in SPLITS}
    return Tree(root, train_classes, files)


def tree_fingerprint(tree: Tree, *, image_size: int) -> str:
    """sha256 over the decode settings and every file's relative path, class and bytes."""
    from PIL import __version__ as pil_version

    digest = hashlib.sha256()
    digest.update(json.dumps({"decoder": DECODER_VERSION, "pil": pil_version, "image_size": image_size,
                              "classes": tree.classes}).encode())
    for split in SPLITS:
        for path, label in tree.files[split]:
            rel = path.relative_to(tree.root).as_posix()
            digest.update(f"\0{rel}\0{label}\0".encode())
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError as err:
                raise BadInput(f"image_folder: cannot read '{path}': {err.strerror or err}") from None
    return digest.hexdigest()


def decode_image(path: Path, *, image_size: int) -> np.ndarray:
    """One image as uint8 (S, S, 1) if grayscale else (S, S, 3); ``BadInput`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            array = _to_array(_resize_crop(_normalise_mode(img), image_size))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).split("\n")[0] or type(err).__name__
        raise BadInput(f"image_folder: cannot read image '{path}': {reason}") from None
    return array


def _normalise_mode(img):
    """8-bit L for grayscale modes (16-bit and float scaled to 0..255), RGB for everything else."""
    from PIL import Image

    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("1", "LA"):
        return img.convert("L")
    if img.mode in GRAY_MODES:  # I, I;16*, F: rescale by the mode's range instead of clipping at 255
        array = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = 1.0 if array.max() <= 1.0 else 255.0  # float images in [0, 1] or [0, 255]
        else:
            top = 255.0 if img.mode == "I" and array.max() <= 255 else 65535.0
        scaled = export_uint8(torch.from_numpy(array / top)).numpy()  # floor(255·x + 0.5), float64
        return Image.fromarray(scaled)  # 2-D uint8 is mode L
    return img.convert("RGB")  # P, RGBA, CMYK, YCbCr, ...: alpha dropped, palette expanded


def _resize_crop(img, size: int):
    """torchvision's Resize(size) (shorter side, bilinear) then CenterCrop(size)."""
    from PIL import Image

    width, height = img.size
    if (width, height) == (size, size):
        return img
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)  # torchvision truncates the longer side
    new_size = (size, new_long) if width <= height else (new_long, size)
    if new_size != (width, height):
        img = img.resize(new_size, Image.Resampling.BILINEAR)
    width, height = img.size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _to_array(img) -> np.ndarray:
    array = np.asarray(img, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def decode_split(files: list[tuple[Path, int]], *, image_size: int, progress=None) -> list[np.ndarray]:
    arrays = []
    for path, _ in files:
        arrays.append(decode_image(path, image_size=image_size))
        if progress is not None:
            progress(1)
    return arrays


def stack(arrays: list[np.ndarray], *, channels: int) -> torch.Tensor:
    """Stack decoded images as uint8 (N, S, S, channels), replicating grayscale when RGB."""
    out = np.empty((len(arrays), *arrays[0].shape[:2], channels), dtype=np.uint8)
    for i, array in enumerate(arrays):
        out[i] = array  # (S, S, 1) broadcasts into 3 channels: PIL's L→RGB replication
    return torch.from_numpy(out)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 NHWC images scaled to [0, 1] (float64 sums)."""
    channels = int(images.shape[-1])
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], STATS_CHUNK):
        chunk = images[start:start + STATS_CHUNK].reshape(-1, channels).to(torch.float64) / 255.0
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
    count = images.numel() // channels
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def load_tree(root: Path, *, image_size: int, cache_dir: Path | None) -> dict:
    """``{"train": (images, labels), "test": (...), "classes": [...], "fingerprint": str}``.

    Decodes every image once; later loads of the same tree (same bytes) read the safetensors cache.
    """
    tree = scan_tree(root)
    fingerprint = tree_fingerprint(tree, image_size=image_size)
    cache_file = cache_dir / "datasets" / f"image_folder-{fingerprint[:24]}.safetensors" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        cached = _read_cache(cache_file, fingerprint)
        if cached is not None:
            return cached
    decoded = {split: decode_split(tree.files[split], image_size=image_size) for split in SPLITS}
    gray = all(a.shape[2] == 1 for split in SPLITS for a in decoded[split])
    channels = 1 if gray else 3
    result: dict = {"classes": tree.classes, "fingerprint": fingerprint}
    for split in SPLITS:
        labels = torch.tensor([label for _, label in tree.files[split]], dtype=torch.int64)
        result[split] = (stack(decoded[split], channels=channels), labels)
    if cache_file is not None:
        _write_cache(cache_file, result)
    return result


def _read_cache(path: Path, fingerprint: str) -> dict | None:
    """The cached tensors, or None when the file is unreadable or for another tree (re-decode)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("fingerprint") != fingerprint:
                return None
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        result = {"classes": json.loads(meta["classes"]), "fingerprint": fingerprint}
        for split in SPLITS:
            result[split] = (tensors[f"{split}_images"], tensors[f"{split}_labels"])
        return result
    except Exception:  # a damaged cache file is rebuilt, never trusted
        return None


def _write_cache(path: Path, result: dict) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for split in SPLITS:
        images, labels = result[split]
        tensors[f"{split}_images"], tensors[f"{split}_labels"] = images.contiguous(), labels.contiguous()
    meta = {"fingerprint": result["fingerprint"], "classes": json.dumps(result["classes"])}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
