"""Lining a foreign poison file up with the prepared training set: row alignment and label checks.

A file made for the whole training set may be used with a suite that holds out a validation split
or takes a ``train_subset``: its rows are matched to the prepared images byte for byte
(``align_rows``; the full split comes from ``CraftContext.full_train``). Labels a file carries must
equal the clean labels. A perturbation tensor whose first dimension is the number of classes is
class-wise, one whose first dimension is the number of images sample-wise (``detect_applied``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from poisonbench.errors import ArtifactError

if TYPE_CHECKING:  # pragma: no cover
    from poisonbench.api import Split


def detect_applied(path: Path, count: int, *, n: int, num_classes: int, applied: str,
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


def rows_for(path: Path, count: int, clean: Split, full_train: Callable[[], Split] | None):
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


def take_rows(images, labels, rows):
    import torch

    images = torch.as_tensor(images)
    labels = None if labels is None else torch.as_tensor(labels).to(torch.int64)
    if rows is not None:
        images = images[rows]
        labels = None if labels is None else labels[rows]
    return images.contiguous(), labels


def check_labels(path: Path, labels, clean: Split) -> None:
    if labels is None:
        return
    if labels.shape != clean.labels.shape:
        raise ArtifactError(f"{path}: {labels.shape[0]} labels for {len(clean)} images")
    changed = (labels != clean.labels).nonzero()
    if changed.numel():
        i = int(changed[0])
        raise ArtifactError(f"{path}: label of image {i} is {int(labels[i])}, the clean label is "
                            f"{int(clean.labels[i])} (the file is not aligned with this training set)")
