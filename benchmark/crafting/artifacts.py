"""Poison artifacts: the safetensors file format (images, labels, manifest) and the checks on load.

An artifact is the whole poisoned training set: tensors ``images`` (uint8, N×H×W×C) and ``labels``
(int64, N) plus a metadata key ``manifest`` holding JSON (docs/formats.md). Files are
written to a temp file in the same folder and renamed, so a reader never sees half a file. They
are never unpickled: anything that is not a safetensors file is refused with one line.

The manifest carries ``images_sha256``/``labels_sha256`` (hashes of the raw tensor bytes), so a
flipped byte anywhere in the payload is detected; the file's own sha256 is ``Artifact.sha256``.
``check_artifact`` compares an artifact with the clean split it claims to poison.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonbench.errors import ArtifactError
from poisonbench.util.files import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from poisonbench.api import Split

# Export is floor(255·x' + 0.5): a perturbation of ε can move a pixel by up to 255·ε + 0.5 levels.
ROUNDING_TOLERANCE = 0.5 / 255
REQUIRED_MANIFEST_KEYS = ("poison", "params", "seed", "dataset", "linf")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit; a bigger "header" is not one
CHECK_CHUNK = 4096  # images compared per step (bounded memory on 50k-image sets)


@dataclass
class Artifact:
    """A poisoned training set read from (or about to be written to) a safetensors file."""

    images: torch.Tensor  # uint8 (N, H, W, C)
    labels: torch.Tensor  # int64 (N,)
    manifest: dict[str, Any]
    sha256: str  # of the whole file
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw contiguous bytes (what safetensors stores)."""
    import torch

    array = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(array)).hexdigest()


def write_artifact(
    path: str | Path, *, images: torch.Tensor, labels: torch.Tensor, manifest: dict[str, Any]
) -> str:
    """Write an artifact atomically (temp file in the same folder, fsync, rename); return sha256.

    ``images_sha256`` and ``labels_sha256`` are added to the stored manifest. An error while
    writing (disk full, file-size limit) leaves neither the file nor a temp file behind.
    """
    import torch
    from safetensors.torch import save

    path = Path(path)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ArtifactError(
            f"{path}: images must be uint8 N×H×W×C, got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise ArtifactError(
            f"{path}: labels must be int64 of length {images.shape[0]}, "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    images = images.detach().cpu().contiguous()
    labels = labels.detach().cpu().contiguous()
    stored = dict(
        manifest, images_sha256=tensor_sha256(images), labels_sha256=tensor_sha256(labels)
    )
    payload = save(
        {"images": images, "labels": labels},
        metadata={"manifest": json.dumps(stored, sort_keys=True, allow_nan=False)},
    )
    atomic_write_bytes(path, payload)
    return hashlib.sha256(payload).hexdigest()


def _refuse(path: Path, why: str) -> ArtifactError:
    return ArtifactError(
        f"{path}: not a poisonbench artifact ({why}); only safetensors files are read"
    )


def read_artifact(path: str | Path) -> Artifact:
    """Read and verify an artifact's structure; any problem is an ``ArtifactError`` naming the file.

    Checks: safetensors layout (a pickle or other file is refused, never loaded), exactly the
    tensors ``images`` uint8 4-D and ``labels`` int64 1-D of equal length, a JSON manifest with the
    contract's keys, and the payload hashes recorded in the manifest.
    """
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{path}: cannot read artifact: {err.strerror or err}") from None
    header = _parse_header(path, data)
    manifest_text = (header.get("__metadata__") or {}).get("manifest")
    if manifest_text is None:
        raise ArtifactError(f"{path}: artifact has no 'manifest' metadata")
    try:
        manifest = json.loads(manifest_text)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({err.msg})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest must be a JSON object")
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ArtifactError(f"{path}: manifest lacks {', '.join(repr(k) for k in missing)}")
    names = sorted(k for k in header if k != "__metadata__")
    if names != ["images", "labels"]:
        raise ArtifactError(f"{path}: expected tensors 'images' and 'labels', found {names}")
    if header["images"].get("dtype") != "U8" or len(header["images"].get("shape", ())) != 4:
        raise ArtifactError(
            f"{path}: 'images' must be uint8 N×H×W×C, got "
            f"{header['images'].get('dtype')} {header['images'].get('shape')}"
        )
    if header["labels"].get("dtype") != "I64" or len(header["labels"].get("shape", ())) != 1:
        raise ArtifactError(
            f"{path}: 'labels' must be int64 N, got "
            f"{header['labels'].get('dtype')} {header['labels'].get('shape')}"
        )
    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types for bad offsets
        raise _refuse(path, f"unreadable tensors: {err}") from None
    images, labels = tensors["images"], tensors["labels"]
    if images.shape[0] != labels.shape[0]:
        raise ArtifactError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")
    for key, tensor in (("images_sha256", images), ("labels_sha256", labels)):
        if key in manifest and manifest[key] != tensor_sha256(tensor):
            raise ArtifactError(
                f"{path}: {key.split('_')[0]} do not match the manifest's {key} "
                "(file modified or corrupt)"
            )
    return Artifact(images, labels, manifest, hashlib.sha256(data).hexdigest(), path)


def _parse_header(path: Path, data: bytes) -> dict[str, Any]:
    if data[:2] == b"\x80\x04" or data[:2] == b"\x80\x02" or data[:2] == b"PK":
        raise _refuse(path, "looks like a pickle / torch.save file")
    if len(data) < 8:
        raise _refuse(path, "too short")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_HEADER_BYTES, len(data) - 8):
        raise _refuse(path, "no safetensors header")
    try:
        header = json.loads(data[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _refuse(path, "safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise _refuse(path, "safetensors header is not an object")
    return header


def measure_linf(poisoned: torch.Tensor, clean: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``(max |poisoned − clean| / 255, per-image max in pixel levels as int16 (N,))``."""
    import torch

    per_image = torch.empty(poisoned.shape[0], dtype=torch.int16)
    for start in range(0, poisoned.shape[0], CHECK_CHUNK):
        a = poisoned[start : start + CHECK_CHUNK].to(torch.int16)
        b = clean[start : start + CHECK_CHUNK].to(torch.int16)
        per_image[start : start + CHECK_CHUNK] = (a - b).abs().flatten(1).amax(dim=1)
    linf = float(per_image.max()) / 255 if per_image.numel() else 0.0
    return linf, per_image


def measure_norms(poisoned: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image size of Δ = poisoned − clean in grey levels, one pass in chunks: ``linf`` (int16),
    ``l2`` (float64, ‖Δ‖₂), ``l0`` (int64, (h, w) positions where any channel changed), ``sq``
    (float64, ΣΔ², for PSNR) and ``abs`` (float64, Σ|Δ|)."""
    import torch

    n = poisoned.shape[0]
    out = {"linf": torch.empty(n, dtype=torch.int16), "l2": torch.empty(n, dtype=torch.float64),
           "l0": torch.empty(n, dtype=torch.int64), "sq": torch.empty(n, dtype=torch.float64),
           "abs": torch.empty(n, dtype=torch.float64)}
    for start in range(0, n, CHECK_CHUNK):
        stop = start + CHECK_CHUNK
        delta = poisoned[start:stop].to(torch.int16) - clean[start:stop].to(torch.int16)
        absolute = delta.abs()
        wide = absolute.to(torch.int32)
        sq = (wide * wide).flatten(1).sum(dim=1).to(torch.float64)  # integer sums are int64: exact
        out["linf"][start:stop] = absolute.flatten(1).amax(dim=1)
        out["sq"][start:stop] = sq
        out["l2"][start:stop] = sq.sqrt()
        out["l0"][start:stop] = (absolute.amax(dim=3) > 0).flatten(1).sum(dim=1)
        out["abs"][start:stop] = wide.flatten(1).sum(dim=1).to(torch.float64)
    return out


def l2_tolerance(shape: tuple[int, ...]) -> float:
    """Rounding slack of an L2 budget in pixel units: 0.5·√d/255 (0.109 at 32×32×3, 0.055 at 28×28×1).

    Round-half-up moves each of the d = H·W·C entries by at most half a grey level, so the exported
    Δ is within 0.5·√d/255 of the float perturbation (triangle inequality); clipping to [0, 1] only
    shrinks each entry. The bound is worst case; measured Δ sits near √(ε² + d/12/255²).
    """
    d = 1
    for size in shape:
        d *= int(size)
    return 0.5 * d**0.5 / 255


def summarize_norms(norms: dict[str, torch.Tensor], *, threat_model: str, budget: float | None,
                    shape: tuple[int, ...]) -> dict[str, Any]:
    """The measured size of the perturbation for the manifest, in the threat model's units."""
    n = int(norms["l2"].numel())
    if n == 0:
        return {"threat_model": threat_model}
    d = 1
    for size in shape:
        d *= int(size)
    l2 = norms["l2"] / 255
    out: dict[str, Any] = {"threat_model": threat_model, "l2_max": float(l2.max()), "l2_mean": float(l2.mean()),
                           "l0_max": int(norms["l0"].max()), "l0_mean": float(norms["l0"].float().mean()),
                           "mean_abs": float(norms["abs"].sum()) / (n * d * 255)}
    if threat_model == "l2" and budget:
        out["l2_mean_ratio"] = float(l2.mean()) / budget  # ≈ 1.00: clipping shrinks, rounding adds
    mse = float(norms["sq"].sum()) / (n * d * 255**2)
    out["psnr_db"] = 10 * math.log10(1 / mse) if mse > 0 else None  # of the whole set; None: unchanged
    return out


def _check_norms(norms: dict[str, torch.Tensor], *, threat_model: str, budget: float | None,
                 shape: tuple[int, ...], source: str) -> None:
    """Refuse the first image over an L2 or L0 budget, naming it."""
    if budget is None or threat_model not in ("l2", "l0"):
        return
    if threat_model == "l2":
        slack = l2_tolerance(shape)
        over = (norms["l2"] / 255 > budget + slack + 1e-9).nonzero()
        if over.numel():
            i = int(over[0])
            raise ArtifactError(
                f"{source}: image {i} has L2 norm {float(norms['l2'][i]) / 255:.4f} (pixel units), over "
                f"the budget {budget:.4f} (+{slack:.4f} rounding slack)"
            )
        return
    over = (norms["l0"] > budget).nonzero()
    if over.numel():
        i = int(over[0])
        count = int(norms["l0"][i])
        raise ArtifactError(
            f"{source}: image {i} changes {count} pixel position{'s' if count != 1 else ''}, over the "
            f"L0 budget of {budget:g}"
        )


def check_artifact(
    artifact: Artifact,
    clean: Split,
    *,
    budget: float | None,
    threat_model: str,
    source: str,
    fingerprint: str | None = None,
) -> float:
    """Check ``artifact`` poisons ``clean``: count, labels, dtype, shape, L∞ budget; return the L∞.

    ``budget`` is the poison's declared bound for this image shape (``Poison.budget_for``), in the
    threat model's units: ``linf`` (fraction of the pixel range, +0.5/255 for the round-half-up
    export), ``l2`` (per-image ‖Δ‖₂ in pixel units, + ``l2_tolerance``), ``l0`` (changed pixel
    positions per image, exact); ``functional`` and ``filter`` have no norm check. ``source``
    names the file or plugin in error messages, which also give the first offending image index.
    ``fingerprint``, when given, must equal the manifest's dataset fingerprint.
    """
    import torch

    images, labels = artifact.images, artifact.labels
    if images.dtype != torch.uint8:
        raise ArtifactError(f"{source}: images are {images.dtype}, expected uint8")
    if labels.shape[0] != len(clean) or images.shape[0] != len(clean):
        raise ArtifactError(
            f"{source}: {images.shape[0]} images / {labels.shape[0]} labels, "
            f"but the clean training set has {len(clean)}"
        )
    if tuple(images.shape[1:]) != tuple(clean.images.shape[1:]):
        raise ArtifactError(
            f"{source}: image shape {tuple(images.shape[1:])} differs from the clean "
            f"set's {tuple(clean.images.shape[1:])}"
        )
    changed = (labels.to(torch.int64) != clean.labels).nonzero()
    if changed.numel():
        i = int(changed[0])
        raise ArtifactError(
            f"{source}: label of image {i} is {int(labels[i])}, the clean label is "
            f"{int(clean.labels[i])} (labels must not change)"
        )
    want = (artifact.manifest.get("dataset") or {}).get("fingerprint")
    if fingerprint is not None and want is not None and want != fingerprint:
        raise ArtifactError(
            f"{source}: crafted for dataset fingerprint {str(want)[:12]}…, "
            f"this data is {fingerprint[:12]}…"
        )
    linf, per_image = measure_linf(images, clean.images)
    if threat_model == "linf" and budget is not None:
        limit = budget + ROUNDING_TOLERANCE + 1e-9
        over = (per_image.to(torch.float64) / 255 > limit).nonzero()
        if over.numel():
            i = int(over[0])
            raise ArtifactError(
                f"{source}: image {i} is perturbed by {int(per_image[i])}/255, over the "
                f"budget {budget * 255:.2f}/255 (+0.5 rounding)"
            )
    if threat_model in ("l2", "l0") and budget is not None:
        _check_norms(measure_norms(images, clean.images), threat_model=threat_model, budget=budget,
                     shape=tuple(images.shape[1:]), source=source)
    return linf
