"""Base classes every plugin subclasses: Poison, Defense, Victim, Dataset, and the data they exchange.

Import-light on purpose: nothing here imports torch, so ``poisonbench list`` stays instant.
Plugin modules follow the same rule (timm/torchvision style): heavy imports happen inside methods
or in private helper modules (``plugins/_*.py``) imported from those methods.

Data conventions (DESIGN.md): images are uint8 tensors ``(N, H, W, C)``, labels int64 ``(N,)``.
A poison returns the whole poisoned training set as uint8 of the same shape; labels never change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass(frozen=True)
class NoParams:
    """Params of a plugin that takes none."""


@dataclass
class Split:
    """One split of a dataset: uint8 images (N, H, W, C) and int64 labels (N,), both torch tensors."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]


@dataclass
class DatasetSplits:
    """What a Dataset plugin loads: full train and test splits plus facts the trainer needs."""

    train: Split
    test: Split
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]  # per-channel normalisation mean, images scaled to [0, 1]
    std: tuple[float, ...]


@dataclass
class PreparedData:
    """A dataset after the harness applied the suite's subset/val choices (benchmark.data)."""

    name: str
    train: Split  # what the poisoner sees and perturbs
    test: Split  # clean test split
    val: Split | None  # clean split held out from training for the defender (val_split > 0)
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str  # sha256 over the prepared train/test(/val) bytes and labels


class Plugin:
    """Common surface of registered classes: a typed ``Params`` dataclass and a ``version``.

    ``name`` is the registry key of the class itself (presets get their own names in the registry).
    Bump ``version`` whenever the same params would produce different results.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    Params: ClassVar[type] = NoParams
    description: ClassVar[str] = ""

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.params, f.name)!r}" for f in dataclasses.fields(self.params))
        return f"{type(self).__name__}({fields})"


@dataclass
class CraftContext:
    """Everything a poison may use while crafting, handed in by the harness.

    ``progress(description, total)`` returns a callable ``advance(n=1, **fields)``; fields such as
    ``loss=0.3`` appear next to the bar. ``surrogate(victim_name, recipe)`` returns a trained,
    cached surrogate model (set by the harness once surrogate support exists; None before).
    """

    num_classes: int
    seed: int
    device: str = "cpu"
    dataset_name: str = ""
    dataset_fingerprint: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    cache_dir: Path | None = None
    data_dir: Path | None = None
    catalog: Any = None  # benchmark.catalog.Catalog
    progress: Any = None
    surrogate: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def advance_bar(self, description: str, total: int):
        """A progress callable; a no-op when the harness gave none (tests, library use)."""
        if self.progress is None:
            return lambda n=1, **fields: None
        return self.progress(description, total)


class Poison(Plugin):
    """A data poison: maps the clean training split to a poisoned one of the same shape.

    Class attributes describe it for listing and figures:
      family  -- the class's registry name (presets of one family share it)
      kind    -- 'max' (error-maximising), 'min' (error-minimising), 'random', 'baseline'
      applied -- 'class' (one perturbation per class) or 'sample' (one per image)
      threat_model -- 'linf' (additive, bounded by ``budget()``) or 'functional'
    """

    family: ClassVar[str] = ""
    kind: ClassVar[Literal["max", "min", "random", "baseline"]] = "baseline"
    applied: ClassVar[Literal["class", "sample"]] = "sample"
    threat_model: ClassVar[Literal["linf", "functional"]] = "linf"
    # Cheapest params that still exercise the algorithm; poisonbench.testing's contract checks use
    # them (e.g. {"steps": 2, "restarts": 1}) so every registered poison can be checked in seconds.
    contract_params: ClassVar[dict[str, Any]] = {}

    def budget(self) -> float | None:
        """Declared L∞ bound as a fraction of the pixel range (8/255 ≈ 0.0314), None if unbounded."""
        eps = getattr(self.params, "eps", None)
        return float(eps) if eps is not None else None

    def cache_extras(self, ctx: CraftContext) -> dict[str, Any]:
        """Anything beyond (name, version, params, dataset, seed) that determines the artifact."""
        return {}

    def manifest_extras(self) -> dict[str, Any]:
        """Extra manifest fields (e.g. component bounds of a functional poison)."""
        return {}

    def craft(self, clean: Split, *, ctx: CraftContext) -> torch.Tensor:
        """Return poisoned uint8 images shaped like ``clean.images``; never modify ``clean``."""
        raise NotImplementedError


class Defense(Plugin):
    """A victim-side defense: may transform the training set, observes training, selects an epoch."""

    needs_validation: ClassVar[bool] = False  # True when it needs the dataset's val split

    @property
    def transforms_data(self) -> bool:
        """True when ``transform_train`` changes the data (cells then cannot share one training run)."""
        return False

    def transform_train(self, train: Split, *, seed: int) -> Split:
        return train

    def select_epoch(self, history: dict[str, list[float]]) -> int:
        """1-based epoch whose model the victim keeps, given per-epoch ``history``."""
        return len(history["test_acc"])


class Victim(Plugin):
    """A model architecture the victim trains (also usable as a crafting surrogate)."""

    def build(self, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        raise NotImplementedError


class Dataset(Plugin):
    """A source of clean data; ``load`` returns full splits as uint8 NHWC tensors."""

    image_shape: ClassVar[tuple[int, int, int] | None] = None  # (H, W, C) when fixed
    num_classes: ClassVar[int | None] = None

    def locations(self, data_dir: Path | None) -> list[Path]:
        """Where ``load`` looks for files, for ``list datasets`` and error messages."""
        return []

    def load(self, *, data_dir: Path | None, download: bool = True) -> DatasetSplits:
        raise NotImplementedError
