"""Base classes of the plugin API: Plugin, Poison, Victim, Dataset, their context and the data they exchange.

Part of the declared plugin API: plugins import these names from ``poisonbench.api`` (which
re-exports them), never from this module. Import-light: nothing here imports torch.

Data conventions: images are uint8 tensors ``(N, H, W, C)``, labels int64 ``(N,)``.
A poison returns the whole poisoned training set as uint8 of the same shape; labels never change.
"""

from __future__ import annotations

import dataclasses
import math
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
    params: dict[str, Any] = field(default_factory=dict)  # the dataset plugin's params, as given


@dataclass(frozen=True)
class Paper:
    """The publication a plugin implements, for ``list`` and the leaderboard's links.

    ``Paper(title="Unlearnable Examples: Making Personal Data Unexploitable", venue="ICLR", year=2021,
    url="https://arxiv.org/abs/2101.04898", authors="Huang et al.")``
    """

    title: str
    venue: str  # short venue as cited: "ICLR", "NeurIPS", "CVPR Workshops", "arXiv"
    year: int
    url: str  # a stable link: arXiv abs page, OpenReview forum or DOI
    authors: str = ""  # "Surname et al." as cited in text; empty when unknown

    def cite(self) -> str:
        """``Huang et al., ICLR 2021`` (or ``ICLR 2021`` without authors)."""
        where = f"{self.venue} {self.year}"
        return f"{self.authors}, {where}" if self.authors else where

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Plugin:
    """Common surface of registered classes: a typed ``Params`` dataclass and a ``version``.

    ``name`` is the registry key of the class itself (presets get their own names in the registry).
    Bump ``version`` whenever the same params would produce different results. ``paper`` is the
    publication the plugin implements (None for baselines such as ``clean`` and for victims/datasets
    that need no citation).
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    Params: ClassVar[type] = NoParams
    description: ClassVar[str] = ""
    paper: ClassVar[Paper | None] = None

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.params, f.name)!r}" for f in dataclasses.fields(self.params))
        return f"{type(self).__name__}({fields})"


@dataclass
class CraftContext:
    """Everything a poison may use while crafting, handed in by the harness.

    Progress: use ``advance = ctx.advance_bar(description, total)``, then ``advance(n=1, **fields)``;
    fields such as ``loss=0.3`` appear next to the bar (``progress`` is the harness's raw factory,
    None in tests and library use, where ``advance_bar`` returns a no-op).

    Surrogates: ``ctx.surrogate(victim_name: str, recipe: Mapping | SurrogateRecipe | None = None)
    -> torch.nn.Module`` returns a victim architecture trained on the clean training split by the
    harness's trainer (``train_victim``) with ``recipe`` (partial mappings fill in
    ``SurrogateRecipe``'s defaults), normalised inside (feed images in [0, 1], NCHW float), frozen
    (eval mode, no parameter gradients), on ``ctx.device``, cached by (victim, recipe, dataset
    fingerprint, seed). None when the harness gives none (``poisonbench.testing`` installs an
    untrained stand-in). Poisons whose params inherit ``SurrogateParams`` call
    ``UsesSurrogate.surrogate_model(ctx, label)`` instead of using it directly.
    ``ctx.surrogate(victim_name, recipe, checkpoints=[e1, e2, ...])`` returns a list instead: the
    weights at the end of those epochs (1-based) of ONE training with ``recipe`` (an ensemble of
    checkpoints, as SEP uses), each cached; an interrupted training resumes from its last epoch.

    Long crafts resume: ``craft_state(ctx, label=..., identity=...)`` gives a ``CraftState`` to
    ``save`` after each finished round and ``load`` at the start (None without a cache dir).

    ``mean``/``std`` are the dataset's per-channel normalisation statistics (declared by its
    Dataset plugin); ``seed`` is the poison's seed — derive sub-seeds with ``derive_seed``.

    ``full_train()`` returns the dataset's whole training split (before the suite's
    ``train_subset``/``val_split``), loaded on the first call, or None when it cannot be loaded; a
    poison read from a file made on the full set uses it to align the file to the prepared split.
    ``full_train`` itself is None when the harness gives none (tests, library use).
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
    full_train: Any = None  # () -> Split | None, see above
    extra: dict[str, Any] = field(default_factory=dict)

    def advance_bar(self, description: str, total: int):
        """A progress callable; a no-op when the harness gave none (tests, library use)."""
        if self.progress is None:
            return lambda n=1, **fields: None
        return self.progress(description, total)


class Poison(Plugin):
    """A data poison: maps the clean training split to a poisoned one of the same shape.

    Class attributes describe it for listing and figures:
      family  -- what its presets (and any subclass that keeps it) share; by default the
        class's own ``name``: declare it only where it differs, e.g. on a subclass that is a
        family of its own (set when the class is created, so ``cls.family`` is always filled)
      kind    -- 'max' (error-maximising), 'min' (error-minimising), 'random', 'baseline'
      applied -- 'class' (one perturbation per class) or 'sample' (one per image)
      threat_model -- what ``budget_for(shape)`` bounds, enforced on the exported uint8 by the
        harness's artifact check (Δ = poisoned − clean in grey levels):
        'linf'       max |Δ|/255 per image ≤ budget (+0.5/255 for the round-half-up export);
        'l2'         ‖Δ‖₂/255 per image ≤ budget (pixel units) + 0.5·√d/255 (each of the d = H·W·C
                     entries may round by half a level; clipping to [0, 1] only shrinks Δ);
        'l0'         number of (h, w) positions where any channel changed ≤ budget (an integer count);
        'functional' a transform with its own component bounds (no norm check);
        'filter'     an unbounded transform such as a class-wise convolution (no norm check; its
                     declared params are the threat model; PSNR and mean |Δ| are recorded).
    """

    family: ClassVar[str] = ""
    kind: ClassVar[Literal["max", "min", "random", "baseline"]] = "baseline"
    applied: ClassVar[Literal["class", "sample"]] = "sample"
    threat_model: ClassVar[Literal["linf", "l2", "l0", "functional", "filter"]] = "linf"
    # Cheapest params that still exercise the algorithm; poisonbench.testing's contract checks use
    # them (e.g. {"steps": 2, "restarts": 1}) so every registered poison can be checked in seconds.
    contract_params: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.family and cls.name:  # neither declared nor inherited: a family of its own
            cls.family = cls.name

    def budget(self) -> float | None:
        """Declared L∞ bound as a fraction of the pixel range (8/255 ≈ 0.0314), None if unbounded."""
        eps = getattr(self.params, "eps", None)
        return float(eps) if eps is not None else None

    def radius(self, shape: tuple[int, int, int]) -> float | None:
        """The perturbation's own bound on images of ``shape`` (H, W, C), before the uint8 export, in
        the units of ``threat_model``; default ``budget()``. Override it when the bound depends on
        the shape (an L2 radius that scales with √d)."""
        return self.budget()

    def budget_for(self, shape: tuple[int, int, int]) -> float | None:
        """The bound the artifact check enforces on images of ``shape``: ``radius(shape)``, plus half
        a grey level per entry (L∞ 0.5/255, L2 0.5·√(H·W·C)/255) when the poison exports by
        truncation (``params.quantize == "floor"``); the usual round-half-up export needs none."""
        radius = self.radius(shape)
        if radius is None or getattr(self.params, "quantize", None) != "floor":
            return radius
        half = 0.5 / 255
        return radius + {"linf": half, "l2": half * math.sqrt(math.prod(shape))}.get(self.threat_model, 0.0)

    def budget_label(self) -> str:
        """The threat model and budget in words for ``poisonbench list`` (e.g. ``L∞ 8/255``,
        ``L2 1.304 at 32×32×3``, ``L0 1 px``); unbounded models name what bounds them instead."""
        budget = self.budget_for((32, 32, 3))
        if self.threat_model in ("functional", "filter") or budget is None:
            return {"functional": "functional", "filter": "unbounded filter"}.get(self.threat_model, "none")
        if self.threat_model == "linf":
            return f"L∞ {budget * 255:.3g}/255"
        if self.threat_model == "l2":
            return f"L2 {budget:.4g} at 32×32×3"
        return f"L0 {budget:g} px"

    def cache_extras(self, ctx: CraftContext) -> dict[str, Any]:
        """Anything beyond (name, version, params, dataset, seed) that determines the artifact."""
        return {}

    def manifest_extras(self) -> dict[str, Any]:
        """Extra manifest fields (e.g. component bounds of a functional poison)."""
        return {}

    def craft(self, clean: Split, *, ctx: CraftContext) -> torch.Tensor:
        """Return poisoned uint8 images shaped like ``clean.images``; never modify ``clean``."""
        raise NotImplementedError


class Victim(Plugin):
    """A model architecture the victim trains (also usable as a crafting surrogate)."""

    def build(self, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        raise NotImplementedError


class Dataset(Plugin):
    """A source of clean data; ``load`` returns full splits as uint8 NHWC tensors.

    Facts declared on the class are readable without loading a file (``run --dry-run`` estimates
    costs from them; surrogates read the statistics from them): ``image_shape``, ``num_classes``,
    ``train_size``/``test_size`` (images in the full splits, where fixed), ``mean``/``std`` (the
    per-channel normalisation statistics of images scaled to [0, 1], where fixed; ``load`` returns the
    same in its ``DatasetSplits``) and, when crafting code normalises differently from evaluation code,
    ``crafting_mean``/``crafting_std`` (surrogates use them; None means ``mean``/``std``). A dataset
    whose statistics depend on its params or files leaves them None and measures them in ``load``.
    """

    image_shape: ClassVar[tuple[int, int, int] | None] = None  # (H, W, C) when fixed
    num_classes: ClassVar[int | None] = None
    train_size: ClassVar[int | None] = None  # images in the full train split, when fixed
    test_size: ClassVar[int | None] = None  # images in the full test split, when fixed
    mean: ClassVar[tuple[float, ...] | None] = None  # per channel, images in [0, 1]
    std: ClassVar[tuple[float, ...] | None] = None
    crafting_mean: ClassVar[tuple[float, ...] | None] = None  # surrogates' statistics, when different
    crafting_std: ClassVar[tuple[float, ...] | None] = None

    def locations(self, data_dir: Path | None) -> list[Path]:
        """Where ``load`` looks for files, for ``list datasets`` and error messages."""
        return []

    def split_sizes(self) -> tuple[int | None, int | None]:
        """(train, test) image counts without loading; ``train_size``/``test_size`` unless params decide."""
        return self.train_size, self.test_size

    def load(self, *, data_dir: Path | None, download: bool = True) -> DatasetSplits:
        raise NotImplementedError
