"""Reading poisons made elsewhere: the formats other papers' code saves, turned into a poisoned set.

Formats (``detect_format`` picks one from the path when ``format: auto``):

``safetensors``   a poisonbench artifact (``poisonbench.api.read_artifact``; never unpickled).
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

The safe readers of each format are in ``readers.py``. ``preflight`` runs the cheap checks (format,
no pickle/object data, PNG index gaps, a perturbation's values against the declared ε) at suite
validation, before any work; ``import_poison`` does the rest when the poison is crafted. A source
with more images than the prepared training set (a file for the full training set used with
``train_subset``/``val_split``) is aligned by matching the clean images byte for byte (``align.py``).
Which paths may be read at all is the harness's path policy (``poisonbench.api.active_paths``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonbench.api import export_uint8
from poisonbench.errors import ArtifactError, BadInput
from poisonbench.plugins.file_poison.align import check_labels, detect_applied, rows_for, take_rows
from poisonbench.plugins.file_poison.readers import (
    load_tensor,
    numpy_headers,
    png_index,
    read_numpy,
    read_perturbation,
    read_png_folder,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from poisonbench.api import Split

FORMATS = ("safetensors", "png", "perturbation", "numpy")
PERTURBATION_SUFFIXES = (".pt", ".pth", ".tar", ".bin")


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
    holds more images than ``clean`` (alignment by image content, ``align.align_rows``).
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise BadInput(f"{path}: unknown poison format '{fmt}' (known: {', '.join(FORMATS)})")
    sha = source_sha256(path)
    if fmt == "perturbation":
        delta = read_perturbation(path, shape=clean.images.shape, num_classes=num_classes)
        kind = detect_applied(path, delta.shape[0], n=len(clean), num_classes=num_classes, applied=applied,
                        full_train=full_train)
        if kind == "class":
            if delta.shape[0] != num_classes:
                raise ArtifactError(f"{path}: {delta.shape[0]} class-wise perturbations for {num_classes} classes")
            images = apply_perturbation(clean.images, delta, index=clean.labels)
        else:
            rows = rows_for(path, delta.shape[0], clean, full_train)
            images = apply_perturbation(clean.images, delta, index=rows)
        return Imported(images, fmt, kind, sha, int(delta.shape[0]),
                        {"delta_linf": float(delta.abs().max()) if delta.numel() else 0.0})
    if fmt == "png":
        index = png_index(_png_folder(path), n=len(clean))
        rows = rows_for(path, len(index), clean, full_train)
        images = read_png_folder(index, rows=rows, n=len(clean), shape=tuple(clean.images.shape[1:]))
        return Imported(images, fmt, "sample", sha, len(index))
    if fmt == "numpy":
        array, labels = read_numpy(path, shape=tuple(clean.images.shape[1:]))
        rows = rows_for(path, array.shape[0], clean, full_train)
        images, labels = take_rows(array, labels, rows)
        check_labels(path, labels, clean)
        return Imported(images, fmt, "sample", sha, int(array.shape[0]))
    from poisonbench.api import read_artifact

    artifact = read_artifact(path)
    rows = rows_for(path, len(artifact), clean, full_train)
    images, labels = take_rows(artifact.images, artifact.labels, rows)
    check_labels(path, labels, clean)
    return Imported(images, fmt, str(artifact.manifest.get("applied", "sample")), sha, len(artifact),
                    {"poison": artifact.manifest.get("poison")})


def _png_folder(path: Path) -> Path:
    return path / "data" if (path / "data").is_dir() else path


def apply_perturbation(images: torch.Tensor, delta: torch.Tensor, *, index) -> torch.Tensor:
    """uint8 ``floor(255·clamp(x/255 + δ[index], 0, 1) + 0.5)``; δ is ``[M, C, H, W]`` on [0, 1].

    ``index`` picks each image's perturbation (labels for class-wise, rows or None for sample-wise).
    """
    import torch

    # the project's one export (poisonbench.api.export_uint8), with δ's levels computed in float64
    return export_uint8(images, delta.to(torch.float64), index=index, channels_first=True)


def preflight(path: Path, *, fmt: str, eps: float | None) -> str:
    """Cheap checks before any work (suite validation): format, no pickle/object data, PNG index
    gaps, and for perturbation files the declared budget. Returns the format."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "perturbation":
        delta = load_tensor(path, mmap=True)
        top = float(delta.abs().max()) if delta.numel() else 0.0
        from poisonbench.api import ROUNDING_TOLERANCE

        if eps is not None and not top <= eps + ROUNDING_TOLERANCE:  # NaN fails too
            raise ArtifactError(f"{path}: perturbation reaches {top * 255:.2f}/255, over the declared "
                                f"eps {eps * 255:.2f}/255 (+0.5 rounding)")
    elif fmt == "png":
        png_index(_png_folder(path), n=0)
    elif fmt == "numpy":
        numpy_headers(path)
    elif fmt == "safetensors":
        from poisonbench.api import read_artifact

        read_artifact(path)
    return fmt
