"""Reading poisons made elsewhere: the formats other papers' code saves, and which paths may be read.

Formats (``detect_format`` picks one from the path when ``format: auto``):

``safetensors``   a poisonbench artifact (``benchmark/artifacts.py``; never unpickled).
``png``           a folder of per-index PNGs ``data/<i>.png`` (or ``<i>.png``) aligned with the clean
                  training set by index — what the adversarial-poisons code exports.
``perturbation``  one float tensor ``[N, C, H, W]`` (sample-wise) or ``[K, C, H, W]`` (class-wise) of
                  additive noise in [−ε, ε] on the [0, 1] scale — what the unlearnable-examples code
                  saves with ``torch.save``. Read with ``torch.load(weights_only=True)`` only, and the
                  result must be a plain strided float ``torch.Tensor``; anything else is refused.
                  Applied with the standard export ``floor(255·clamp(x/255 + δ, 0, 1) + 0.5)`` in float64.
``numpy``         ``.npy`` / ``.npz`` of uint8 images ``(N, H, W, C)`` (``(N, H, W)`` for one channel),
                  read with ``np.load(allow_pickle=False)``; an ``.npz`` may carry labels
                  (``labels``/``y``/``targets``), which must equal the clean labels.

``preflight`` runs the cheap checks (format, no pickle/object data, PNG index gaps, a perturbation's
values against the declared ε) at suite validation, before any work; ``import_poison`` does the rest
when the poison is crafted. A source with more images than the prepared training set (a file for the full training set used with
``train_subset``/``val_split``) is aligned by matching the clean images byte for byte (``align_rows``).

Paths named in a suite go through ``UserPaths``: relative paths are tried against the suite's folder,
then ``--data-dir``; the result must lie under one of those or an ``--allow-path`` (symlinks resolved).
The harness makes the policy known either as ``CraftContext.extra["user_paths"]`` (JSON, survives
process boundaries) or with ``with allowed_paths(UserPaths.for_suite(...)):`` around the run.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonbench.errors import ArtifactError, BadInput
from poisonbench.util.paths import confine

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from poisonbench.api import Split

FORMATS = ("safetensors", "png", "perturbation", "numpy")
PERTURBATION_SUFFIXES = (".pt", ".pth", ".tar", ".bin")
IMAGE_KEYS = ("images", "x", "data", "arr_0")
LABEL_KEYS = ("labels", "y", "targets")
APPLY_CHUNK = 2048  # images per float64 step when applying a perturbation


# -- which paths a suite may read -------------------------------------------------------------

@dataclass(frozen=True)
class UserPaths:
    """Where relative user paths resolve (``bases``, in order) and where any path must lie (``roots``)."""

    bases: tuple[Path, ...]
    roots: tuple[Path, ...]

    @classmethod
    def for_suite(cls, suite_path: str | Path, *, data_dir: Path | None = None,
                  allow: tuple[Path, ...] | list[Path] = ()) -> UserPaths:
        """The policy of a suite file: its folder, then ``data_dir``; plus explicit ``allow`` roots."""
        bases = (Path(suite_path).resolve().parent,) + ((Path(data_dir).resolve(),) if data_dir else ())
        return cls(bases, bases + tuple(Path(p).resolve() for p in allow))

    @classmethod
    def default(cls, data_dir: Path | None = None) -> UserPaths:
        """No suite known (library use, ``poisonbench import``): the working folder and the data dir."""
        env = os.environ.get("POISONBENCH_DATA_DIR")
        data = Path(data_dir) if data_dir else (Path(env) if env else None)
        bases = (Path.cwd().resolve(),) + ((data.expanduser().resolve(),) if data else ())
        return cls(bases, bases)

    def to_json(self) -> dict[str, list[str]]:
        return {"bases": [str(p) for p in self.bases], "roots": [str(p) for p in self.roots]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserPaths:
        return cls(tuple(Path(p) for p in data["bases"]), tuple(Path(p) for p in data["roots"]))

    def resolve(self, raw: str | Path, *, what: str) -> Path:
        """The existing path ``raw`` names, confined to ``roots``; ``BadInput`` otherwise."""
        if not str(raw).strip():
            raise BadInput(f"{what}: no path given")
        found, escape = [], None
        for base in self.bases[:1] if Path(raw).is_absolute() else self.bases:
            try:
                candidate = confine(raw, base=base, roots=list(self.roots))
            except BadInput as err:
                escape = escape or err
                continue
            if candidate.exists():
                return candidate
            found.append(candidate)
        if not found:
            raise BadInput(f"{what}: {escape}")
        raise BadInput(f"{what} '{raw}' not found (looked for {', '.join(str(p) for p in found)})")


_ACTIVE: contextvars.ContextVar[UserPaths | None] = contextvars.ContextVar("poisonbench_user_paths",
                                                                           default=None)


@contextlib.contextmanager
def allowed_paths(policy: UserPaths) -> Iterator[UserPaths]:
    """Make ``policy`` the one plugins use while the block runs (runner / CLI wrap a run in this)."""
    token = _ACTIVE.set(policy)
    try:
        yield policy
    finally:
        _ACTIVE.reset(token)


def active_paths(*, data_dir: Path | None = None, extra: dict[str, Any] | None = None) -> UserPaths:
    """``extra["user_paths"]`` if the harness passed one, else the ``allowed_paths`` block, else default."""
    if extra and extra.get("user_paths"):
        return UserPaths.from_json(extra["user_paths"])
    return _ACTIVE.get() or UserPaths.default(data_dir)


# -- formats -----------------------------------------------------------------------------------

@dataclass
class Imported:
    """A poisoned training set read from a foreign file, with what the manifest records about it."""

    images: torch.Tensor  # uint8 (N, H, W, C), aligned with the clean split
    format: str
    applied: str  # 'class' or 'sample'
    sha256: str
    count: int  # images (or perturbations) in the source
    notes: dict[str, Any] = field(default_factory=dict)

    def manifest(self, path: Path) -> dict[str, Any]:
        return {"file": path.name, "format": self.format, "sha256": self.sha256,
                "applied": self.applied, "count": self.count, **self.notes}


def detect_format(path: Path) -> str:
    """The format of ``path`` from its kind and suffix (``BadInput`` when it cannot tell)."""
    if path.is_dir():
        return "png"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".npy", ".npz"):
        return "numpy"
    if suffix in PERTURBATION_SUFFIXES:
        return "perturbation"
    raise BadInput(f"{path}: cannot tell the poison format from the name; set format to one of "
                   f"{', '.join(FORMATS)} (folders are read as PNG folders)")


def source_sha256(path: Path) -> str:
    """sha256 of a file; of a PNG folder, over its sorted ``<name>\\0<sha256 of bytes>`` lines."""
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    folder = _png_folder(path)
    digest = hashlib.sha256()
    for item in sorted(folder.iterdir()):
        if item.is_file() and item.suffix.lower() == ".png":
            digest.update(f"{item.name}\0{hashlib.sha256(item.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def import_poison(path: Path, *, fmt: str, clean: Split, num_classes: int, applied: str = "auto",
                  full_train: Callable[[], Split] | None = None) -> Imported:
    """Read ``path`` in format ``fmt`` ('auto' detects) and return it as a poisoned copy of ``clean``.

    ``full_train`` returns the dataset's whole training split; it is called only when the source
    holds more images than ``clean`` (alignment by image content, ``align_rows``).
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise BadInput(f"{path}: unknown poison format '{fmt}' (known: {', '.join(FORMATS)})")
    sha = source_sha256(path)
    if fmt == "perturbation":
        delta = read_perturbation(path, shape=clean.images.shape, num_classes=num_classes)
        kind = _applied(path, delta.shape[0], n=len(clean), num_classes=num_classes, applied=applied,
                        full_train=full_train)
        if kind == "class":
            if delta.shape[0] != num_classes:
                raise ArtifactError(f"{path}: {delta.shape[0]} class-wise perturbations for {num_classes} classes")
            images = apply_perturbation(clean.images, delta, index=clean.labels)
        else:
            rows = _rows(path, delta.shape[0], clean, full_train)
            images = apply_perturbation(clean.images, delta, index=rows)
        return Imported(images, fmt, kind, sha, int(delta.shape[0]),
                        {"delta_linf": float(delta.abs().max()) if delta.numel() else 0.0})
    if fmt == "png":
        index = png_index(_png_folder(path), n=len(clean))
        rows = _rows(path, len(index), clean, full_train)
        images = read_png_folder(index, rows=rows, n=len(clean), shape=tuple(clean.images.shape[1:]))
        return Imported(images, fmt, "sample", sha, len(index))
    if fmt == "numpy":
        array, labels = read_numpy(path, shape=tuple(clean.images.shape[1:]))
        rows = _rows(path, array.shape[0], clean, full_train)
        images, labels = _take_rows(array, labels, rows)
        _check_labels(path, labels, clean)
        return Imported(images, fmt, "sample", sha, int(array.shape[0]))
    from poisonbench.crafting.artifacts import read_artifact

    artifact = read_artifact(path)
    rows = _rows(path, len(artifact), clean, full_train)
    images, labels = _take_rows(artifact.images, artifact.labels, rows)
    _check_labels(path, labels, clean)
    return Imported(images, fmt, str(artifact.manifest.get("applied", "sample")), sha, len(artifact),
                    {"poison": artifact.manifest.get("poison")})


def _png_folder(path: Path) -> Path:
    return path / "data" if (path / "data").is_dir() else path


def _applied(path: Path, count: int, *, n: int, num_classes: int, applied: str,
             full_train: Callable[[], Split] | None) -> str:
    """'class' when the first dimension is the number of classes, 'sample' when it is N."""
    if applied != "auto":
        return applied
    if count == num_classes and count != n:
        return "class"
    if count == n:
        return "sample"
    full = full_train() if full_train is not None and count > n else None
    if full is not None and count == len(full):
        return "sample"
    raise ArtifactError(f"{path}: {count} perturbations match neither the {n} training images "
                        f"(sample-wise) nor the {num_classes} classes (class-wise)")


def _rows(path: Path, count: int, clean: Split, full_train: Callable[[], Split] | None):
    """None when the source is aligned with ``clean``; else indices of ``clean`` in the full set."""
    if count == len(clean):
        return None
    full = full_train() if full_train is not None and count > len(clean) else None
    if full is None or len(full) != count:
        what = f" or the full training set's {len(full)}" if full is not None else ""
        raise ArtifactError(f"{path}: holds {count} images, but the clean training set has "
                            f"{len(clean)}{what}")
    return align_rows(full, clean, source=str(path))


def align_rows(full: Split, subset: Split, *, source: str):
    """int64 indices ``rows`` with ``full.images[rows] == subset.images`` (labels equal too).

    Exact duplicates in the full set are matched in order, so each full row is used at most once.
    """
    import torch

    places: dict[bytes, list[int]] = {}
    full_np, sub_np = full.images.contiguous().numpy(), subset.images.contiguous().numpy()
    for i in range(full_np.shape[0]):
        places.setdefault(hashlib.blake2b(full_np[i].tobytes(), digest_size=16).digest(), []).append(i)
    rows = []
    for j in range(sub_np.shape[0]):
        found = places.get(hashlib.blake2b(sub_np[j].tobytes(), digest_size=16).digest())
        match = next((i for i in found or () if int(full.labels[i]) == int(subset.labels[j])), None)
        if match is None:
            raise ArtifactError(f"{source}: clean training image {j} is not in the full training set "
                                "(cannot align the file by index)")
        found.remove(match)
        rows.append(match)
    return torch.tensor(rows, dtype=torch.int64)


def _take_rows(images, labels, rows):
    import torch

    images = torch.as_tensor(images)
    labels = None if labels is None else torch.as_tensor(labels).to(torch.int64)
    if rows is not None:
        images = images[rows]
        labels = None if labels is None else labels[rows]
    return images.contiguous(), labels


def _check_labels(path: Path, labels, clean: Split) -> None:
    if labels is None:
        return
    if labels.shape != clean.labels.shape:
        raise ArtifactError(f"{path}: {labels.shape[0]} labels for {len(clean)} images")
    changed = (labels != clean.labels).nonzero()
    if changed.numel():
        i = int(changed[0])
        raise ArtifactError(f"{path}: label of image {i} is {int(labels[i])}, the clean label is "
                            f"{int(clean.labels[i])} (the file is not aligned with this training set)")


def apply_perturbation(images: torch.Tensor, delta: torch.Tensor, *, index) -> torch.Tensor:
    """uint8 ``floor(255·clamp(x/255 + δ[index], 0, 1) + 0.5)``; δ is ``[M, C, H, W]`` on [0, 1].

    ``index`` picks each image's perturbation (labels for class-wise, rows or None for sample-wise).
    """
    import torch

    out = torch.empty_like(images)
    delta = delta.to(torch.float64).permute(0, 2, 3, 1)  # NCHW -> NHWC like the images
    for start in range(0, images.shape[0], APPLY_CHUNK):
        stop = min(start + APPLY_CHUNK, images.shape[0])
        d = delta[start:stop] if index is None else delta[index[start:stop]]
        x = (images[start:stop].to(torch.float64) / 255.0 + d).clamp(0.0, 1.0)
        out[start:stop] = torch.floor(255.0 * x + 0.5).to(torch.uint8)
    return out


# -- readers -----------------------------------------------------------------------------------

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


def preflight(path: Path, *, fmt: str, eps: float | None) -> str:
    """Cheap checks before any work (suite validation): format, no pickle/object data, PNG index
    gaps, and for perturbation files the declared budget. Returns the format."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "perturbation":
        delta = load_tensor(path, mmap=True)
        top = float(delta.abs().max()) if delta.numel() else 0.0
        from poisonbench.crafting.artifacts import ROUNDING_TOLERANCE

        if eps is not None and not top <= eps + ROUNDING_TOLERANCE:  # NaN fails too
            raise ArtifactError(f"{path}: perturbation reaches {top * 255:.2f}/255, over the declared "
                                f"eps {eps * 255:.2f}/255 (+0.5 rounding)")
    elif fmt == "png":
        png_index(_png_folder(path), n=0)
    elif fmt == "numpy":
        numpy_headers(path)
    elif fmt == "safetensors":
        from poisonbench.crafting.artifacts import read_artifact

        read_artifact(path)
    return fmt


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
