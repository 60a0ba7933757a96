"""Safe readers for the foreign poison formats: torch tensors, PNG folders and numpy files, no pickle.

Each reader refuses what could run code or is not plain image data, with one line naming the file:
``torch.load(weights_only=True)`` only, and only a plain dense float 4-D tensor is accepted;
``np.load(allow_pickle=False)`` and headers checked before loading (object arrays need pickle);
PNG folders must hold ``<index>.png`` files without gaps, each a PNG of the clean images' mode and
size. ``formats.py`` turns what these return into a poisoned training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from poisonbench.errors import ArtifactError, BadInput

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_KEYS = ("images", "x", "data", "arr_0")  # .npz member names tried for the images
LABEL_KEYS = ("labels", "y", "targets")  # .npz member names tried for the labels


def load_tensor(path: Path, *, mmap: bool = False) -> torch.Tensor:
    """The one plain dense float 4-D tensor a ``torch.save`` file holds, or ``ArtifactError``.

    ``torch.load(weights_only=True)`` refuses pickled code (a payload never runs); a dict, list,
    tensor subclass, integer or sparse tensor is refused here. ``mmap`` maps instead of reading.
    """
    import torch

    try:
        try:
            value = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):
                raise
            value = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError, ...: all one line
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln),
                      lines[0] if lines else type(err).__name__)
        raise ArtifactError(f"{path}: refused as a perturbation file; torch.load(weights_only=True) "
                            f"rejected it ({reason[:200]})") from None
    if type(value) is not torch.Tensor:
        raise ArtifactError(f"{path}: expected one plain float tensor [N or K, C, H, W], found "
                            f"{type(value).__name__}")
    if value.layout != torch.strided or value.is_quantized or not value.is_floating_point():
        raise ArtifactError(f"{path}: expected a dense float tensor, found {value.dtype} {value.layout}")
    if value.dim() != 4:
        raise ArtifactError(f"{path}: perturbation has shape {tuple(value.shape)}, expected [N or K, C, H, W]")
    return value.detach()


def read_perturbation(path: Path, *, shape: tuple[int, ...], num_classes: int) -> torch.Tensor:
    """``load_tensor`` plus the checks against the clean set's (N, H, W, C) ``shape``."""
    import torch

    value = load_tensor(path)
    _, height, width, channels = shape
    if tuple(value.shape[1:]) != (channels, height, width):
        raise ArtifactError(f"{path}: perturbation shape {tuple(value.shape)}, expected "
                            f"[N or {num_classes}, {channels}, {height}, {width}]")
    if not bool(torch.isfinite(value).all()):
        raise ArtifactError(f"{path}: perturbation holds NaN or infinite values")
    return value


def png_index(folder: Path, *, n: int) -> dict[int, Path]:
    """``{i: folder/<i>.png}`` for i = 0..max(n, largest index + 1) − 1; a gap is an error."""
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder of PNG images")
    index: dict[int, Path] = {}
    for item in folder.iterdir():
        if item.name.startswith(".") or item.suffix.lower() != ".png":
            continue
        if not item.stem.isdigit():
            raise ArtifactError(f"{item}: PNG folders hold files named <index>.png, found '{item.name}'")
        i = int(item.stem)
        if i in index:
            raise ArtifactError(f"{folder}: two files for index {i} ('{index[i].name}', '{item.name}')")
        index[i] = item
    if not index:
        raise ArtifactError(f"{folder}: no <index>.png files")
    expected = max(n, max(index) + 1)
    missing = next((i for i in range(expected) if i not in index), None)
    if missing is not None:
        raise ArtifactError(f"{folder}: no image for index {missing} (expected {folder / f'{missing}.png'})")
    return index


def read_png_folder(index: dict[int, Path], *, rows, n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 (n, H, W, C) from ``index``'s PNGs: image j is file ``rows[j]`` (j when ``rows`` is None)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    mode = {1: "L", 3: "RGB"}.get(channels)
    out = np.empty((n, height, width, channels), dtype=np.uint8)
    for j in range(n):
        item = index[j if rows is None else int(rows[j])]
        try:
            with Image.open(item) as img:
                img.load()
                if img.format != "PNG" or img.mode != mode or img.size != (width, height):
                    raise ArtifactError(f"{item}: {img.format} {img.mode} {img.size[0]}×{img.size[1]}, "
                                        f"expected PNG {mode} {width}×{height}")
                out[j] = np.asarray(img, dtype=np.uint8).reshape(height, width, channels)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ArtifactError(f"{item}: cannot read image ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    return torch.from_numpy(out)


def numpy_headers(path: Path) -> dict[str, tuple]:
    """``{name: (shape, dtype)}`` of a ``.npy`` (name '') or each ``.npz`` member, from headers only."""
    import zipfile

    import numpy as np

    def header(stream) -> tuple:
        version = np.lib.format.read_magic(stream)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise ArtifactError(f"{path}: unsupported .npy format version {version}")
        shape, _, dtype = read[version](stream)
        if dtype.hasobject:
            raise ArtifactError(f"{path}: refused (Object arrays need pickle); only plain uint8 arrays are read")
        return shape, dtype

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return {name[:-4]: header(archive.open(name)) for name in archive.namelist()
                        if name.endswith(".npy")}
        with open(path, "rb") as stream:
            return {"": header(stream)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ArtifactError(f"{path}: not a readable .npy/.npz file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def read_numpy(path: Path, *, shape: tuple[int, int, int]):
    """``(images uint8 (M, H, W, C) ndarray, labels or None)`` from ``.npy``/``.npz``, no pickle."""
    import zipfile

    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                key = keys[0] if len(keys) == 1 else next((k for k in IMAGE_KEYS if k in keys), None)
                if key is None:
                    raise ArtifactError(f"{path}: no image array among {keys} (name it one of {', '.join(IMAGE_KEYS)})")
                label_key = next((k for k in LABEL_KEYS if k in keys and k != key), None)
                array, labels = loaded[key], loaded[label_key] if label_key else None
        else:
            array, labels = loaded, None
    except ValueError as err:  # object arrays: "Object arrays cannot be loaded when allow_pickle=False"
        why = str(err).splitlines()[0]
        if "pickled" in why:  # numpy suggests loading it with pickle: advice we must never give
            why = "the file is a pickle, which is never loaded"
        raise ArtifactError(f"{path}: refused ({why}); only plain uint8 arrays are read") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ArtifactError(f"{path}: cannot read numpy file ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if array.dtype != np.uint8:
        raise ArtifactError(f"{path}: images are {array.dtype}, expected uint8 (N, H, W, C)")
    height, width, channels = shape
    if array.ndim == 3 and channels == 1:
        array = array[..., None]
    elif array.ndim == 4 and tuple(array.shape[1:]) == (channels, height, width) != tuple(shape):
        array = array.transpose(0, 2, 3, 1)  # NCHW as saved by some tools
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(shape):
        raise ArtifactError(f"{path}: image array shape {tuple(array.shape)}, expected (N, {height}, {width}, {channels})")
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise ArtifactError(f"{path}: labels must be a 1-D integer array, found {labels.dtype} {labels.shape}")
    return np.ascontiguousarray(array), labels
