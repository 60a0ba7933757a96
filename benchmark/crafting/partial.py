"""Partial poisoning: poison a fixed, seeded, stratified share of the training set, leave the rest as is.

A suite's poison entry may set ``fraction`` (``{name: R4, fraction: 0.5}``; ``poisonbench craft …
--fraction 0.5``). Then:

- **Which images.** ``round(fraction · N)`` indices (at least one) drawn by the project's stratified
  sampler (``poisonbench.data.stratified_indices``: per-class counts as equal as possible) from a
  seed derived from the cell seed alone. Every poison of one seed and fraction therefore protects
  the *same* images (common random numbers: differences between poisons come from the poisons).
- **What the poisoner may look at.** Class-wise poisons (``applied = 'class'``: one perturbation per
  class) compute their patterns from the whole clean training set -- a class pattern is a property
  of the class, and a data owner protecting part of a class still knows the class; the pattern is
  then added to the chosen images only. Sample-wise poisons (``applied = 'sample'``) are crafted on
  the chosen subset alone: the poisoner owns and optimises only the images it protects (a
  surrogate, where one is used, is still trained on the clean training set, as for a full poison).
- **The rest.** Every image outside the subset is the clean image, byte for byte. The artifact holds
  the whole training set (same count and labels as clean), and its manifest records ``fraction``
  and the sorted ``poisoned_indices``.
- **No mixing inside batches.** Each image appears once, poisoned or clean -- never both ways, which
  would show the victim every protected image clean as well.

A fraction of 1 is the whole-set poison (no key changes, same artifact as before).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from poisonbench.training.device import derive_seed

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from poisonbench.api import Split

PARTIAL_RULE = 1  # bump when the choice of indices or the crafting rule above changes


def partial_count(n: int, fraction: float) -> int:
    """Images poisoned: ``fraction · n`` rounded half up, at least 1 and at most ``n``."""
    return min(n, max(1, int(fraction * n + 0.5)))


def partial_indices(labels: torch.Tensor, *, fraction: float, seed: int) -> torch.Tensor:
    """Sorted int64 indices of the poisoned images (stratified, seeded, see the module docstring)."""
    from poisonbench.data import stratified_indices

    n = partial_count(len(labels), fraction)
    return stratified_indices(labels, n, seed=derive_seed(seed, "partial-poison") % (2**63))


def key_extras(fraction: float | None) -> dict[str, Any]:
    """What a partial poison adds to the artifact's cache key material ({} for a whole-set one)."""
    if fraction is None or fraction >= 1:
        return {}
    return {"fraction": float(fraction), "partial_rule": PARTIAL_RULE}


def craft_partial(craft, instance, clean: Split, *, fraction: float, seed: int) -> tuple[torch.Tensor, list[int]]:
    """(whole poisoned set uint8, poisoned indices) for ``fraction`` of ``clean``.

    ``craft(split) -> uint8 images`` is the checked crafting call (``craft_checked`` bound to the
    poison and context); it gets the whole set for a class-wise poison, the subset otherwise.
    """
    from poisonbench.api import Split

    idx = partial_indices(clean.labels, fraction=fraction, seed=seed)
    images = clean.images.clone()
    if getattr(instance, "applied", "sample") == "class":
        crafted = craft(clean)
        images[idx] = crafted[idx]
    else:
        subset = Split(images=clean.images[idx].clone(), labels=clean.labels[idx].clone())
        images[idx] = craft(subset)
    return images, idx.tolist()


def check_untouched(images: torch.Tensor, clean: torch.Tensor, manifest: dict[str, Any], *, source: str) -> None:
    """Raise ``ArtifactError`` unless every image outside ``poisoned_indices`` equals the clean one."""
    import torch

    from poisonbench.errors import ArtifactError

    indices = manifest.get("poisoned_indices")
    if indices is None:
        return
    keep = torch.ones(len(clean), dtype=torch.bool)
    try:
        keep[torch.as_tensor(indices, dtype=torch.long)] = False
    except (IndexError, TypeError, ValueError, RuntimeError):
        raise ArtifactError(f"{source}: manifest poisoned_indices are not indices of the training set") from None
    if not torch.equal(images[keep], clean[keep]):
        raise ArtifactError(f"{source}: images outside the manifest's poisoned_indices differ from the clean set")
