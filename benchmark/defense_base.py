"""The defense side of the plugin API: the Defense base class, its stages and the contexts it receives.

Part of the declared plugin API: plugins import these names from ``poisonbench.api`` (which
re-exports them), never from this module. Import-light: nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from poisonbench.plugin_base import Plugin, Split

if TYPE_CHECKING:  # pragma: no cover
    import torch


DefenseStage = Literal["preprocess", "batch", "training", "selection"]
STAGES: tuple[str, ...] = ("preprocess", "batch", "training")  # the order a chain runs in


@dataclass
class DefenseContext:
    """What a *preprocess* defense may use; handed in once per training by the harness.

    ``seed`` is the training's seed (derive sub-seeds with ``derive_seed(seed, ...)``); the result
    must be a pure function of (training set, params, seed) because it is cached like an artifact.
    """

    seed: int
    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C) of the training images
    device: str = "cpu"
    mean: tuple[float, ...] = ()  # the dataset's per-channel normalisation, images in [0, 1]
    std: tuple[float, ...] = ()
    progress: Any = None

    def advance_bar(self, description: str, total: int):
        """A progress callable ``advance(n=1, **fields)``; a no-op when the harness gave none."""
        if self.progress is None:
            return lambda n=1, **fields: None
        return self.progress(description, total)


@dataclass
class BatchContext:
    """Per-batch facts for *batch* and *training* defenses (one per defense, epoch and step).

    ``seed`` is ``derive_seed(training seed, "defense", defense registry name, epoch, step)``: every
    random draw of a batch defense must come from it (``generator``, or ``fork_rng()`` around a
    library that draws from torch's global RNG, e.g. kornia), so a run killed at any point resumes
    bit-identically. Never use Python's ``random`` or the unseeded global RNG.
    """

    seed: int
    epoch: int  # 0-based epoch index
    step: int  # 0-based batch index within the epoch
    epochs: int  # epochs of the whole training
    device: str = "cpu"
    num_classes: int = 0
    model: Any = None  # the victim (nn.Module): training defenses switch eval()/train() themselves
    _generator: Any = field(default=None, repr=False)

    @property
    def generator(self) -> torch.Generator:
        """A ``torch.Generator`` on the batch's device, seeded with ``seed`` (created on first use)."""
        if self._generator is None:
            import torch

            self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        return self._generator

    def fork_rng(self):
        """Context manager: torch's global RNG (CPU and this CUDA device) forked and seeded with ``seed``."""
        import contextlib

        import torch

        @contextlib.contextmanager
        def forked():
            cuda = str(self.device).startswith("cuda")
            devices = [torch.device(self.device).index or 0] if cuda else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed)  # also seeds every CUDA device
                yield

        return forked()


@dataclass
class MixedTarget:
    """Labels of a mixed batch (mixup, cutmix): image i counts ``1 - lam[i]`` for ``y_a[i]`` and
    ``lam[i]`` for ``y_b[i]``. Train accuracy is then ``Σ (1-lam)·1(ŷ=y_a) + lam·1(ŷ=y_b)``."""

    y_a: torch.Tensor  # int64 (B,)
    y_b: torch.Tensor  # int64 (B,)
    lam: torch.Tensor  # float (B,) in [0, 1]


class Defense(Plugin):
    """A victim-side defense: acts in one place of training, fixed by ``stage``.

    * ``preprocess`` -- ``preprocess(train, ctx=DefenseContext)`` returns new uint8 images for the
      whole training set, once before training; deterministic given ``ctx.seed``; cached as uint8
      keyed by (input artifact sha256, chain up to it, seed, plugin versions).
    * ``batch`` -- ``batch(x, target, ctx=BatchContext)`` maps a float batch ``x`` (B, C, H, W) in
      [0, 1] pixel units (after crop/flip, before normalisation) and its target (int64 labels or a
      ``MixedTarget``) to new ones; randomness only from ``ctx``.
    * ``training`` -- changes the optimisation: overrides ``loss`` (e.g. an inner attack, with
      ``ctx.model`` switched to eval mode and back).
    * ``selection`` -- only picks an epoch (``select_epoch``); the deprecated aliases ``none`` and
      ``early_stopping`` (every training now records peak, val-selected and final).

    ``loss(f, x, target, ctx=)`` returns ``(loss, logits)``; ``f`` is the victim with the dataset's
    normalisation inside, fed [0, 1] images, so every ε, std and fill value is in pixel units. The
    default is cross-entropy (mixed by ``MixedTarget``). A defense that overrides it, or mixes
    targets, sets ``defines_loss`` (at most one per chain). A chain runs preprocess defenses, then batch
    defenses, then the loss, each stage sorted by ``rank`` (lower first) whatever the suite's order.
    ``applies_to_eval`` (default False): test and validation images are untouched unless True,
    when ``transform_eval`` is applied to them too.
    """

    stage: ClassVar[DefenseStage] = "selection"
    rank: ClassVar[int] = 50  # position inside its stage in the fixed composition order
    defines_loss: ClassVar[bool] = False  # owns the loss: overrides ``loss`` or yields MixedTarget (one per chain)
    deprecated: ClassVar[str] = ""  # non-empty: the one-line note ``validate`` prints
    needs_validation: ClassVar[bool] = False  # True when it needs the dataset's val split

    @property
    def applies_to_eval(self) -> bool:
        """True when test and validation images get ``transform_eval`` as well (default False)."""
        return False

    @property
    def transforms_data(self) -> bool:
        """True when the defense changes training (cells then cannot share one training run)."""
        return self.stage != "selection"

    def check_data(self, *, image_shape: tuple[int, int, int]) -> list[tuple[str | None, str]]:
        """``(param, message)`` problems when the params cannot apply to images (H, W, C)."""
        return []

    def identity_on(self, *, image_shape: tuple[int, int, int]) -> str | None:
        """A one-line reason when the defense leaves images of this shape unchanged, else None."""
        return None

    def preprocess(self, train: Split, *, ctx: DefenseContext) -> torch.Tensor:
        """New uint8 (N, H, W, C) training images; never modify ``train``."""
        return self.transform_train(train, seed=ctx.seed).images

    def transform_eval(self, images: torch.Tensor, *, ctx: DefenseContext) -> torch.Tensor:
        """What ``applies_to_eval`` does to uint8 test/val images (default: ``preprocess``)."""
        import torch

        return self.preprocess(Split(images, torch.zeros(len(images), dtype=torch.long)), ctx=ctx)

    def batch(self, x: torch.Tensor, target: Any, *, ctx: BatchContext) -> tuple[torch.Tensor, Any]:
        """Transform a float batch in [0, 1] (B, C, H, W) and its target; default: unchanged."""
        return x, target

    def loss(self, f, x: torch.Tensor, target: Any, *, ctx: BatchContext) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean loss, logits)`` of the batch; default: cross-entropy of ``f(x)`` (mixed targets too)."""
        logits = f(x)
        return mixed_cross_entropy(logits, target), logits

    def transform_train(self, train: Split, *, seed: int) -> Split:
        """Legacy preprocess hook (a defense with ``transforms_data`` True and no ``stage``)."""
        return train

    def select_epoch(self, history: dict[str, list[float]]) -> int:
        """1-based epoch the legacy ``selected_test_acc`` reads (default: the last epoch)."""
        return len(history["test_acc"])


# -- the default loss and train accuracy (mixed targets too); torch is imported when they run -------

def mixed_cross_entropy(logits: torch.Tensor, target: Any) -> torch.Tensor:
    """Mean cross-entropy; for a ``MixedTarget`` ``mean((1-lam)·CE(y_a) + lam·CE(y_b))``."""
    import torch.nn.functional as F

    if isinstance(target, MixedTarget):
        lam = target.lam.to(logits.dtype)
        per = (1 - lam) * F.cross_entropy(logits, target.y_a, reduction="none") \
            + lam * F.cross_entropy(logits, target.y_b, reduction="none")
        return per.mean()
    return F.cross_entropy(logits, target)


def soft_correct(logits: torch.Tensor, target: Any) -> torch.Tensor:
    """Correct predictions as float: ``Σ (1-lam)·1(ŷ=y_a) + lam·1(ŷ=y_b)`` for mixed targets."""
    predicted = logits.argmax(1)
    if isinstance(target, MixedTarget):
        lam = target.lam.float()
        return ((1 - lam) * (predicted == target.y_a).float() + lam * (predicted == target.y_b).float()).sum()
    return (predicted == target).sum().float()
