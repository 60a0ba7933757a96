"""Typed blocks of a suite file: ``dataset``, ``train`` (the victim protocol) and ``metrics``.

Defaults are the paper's protocol (docs/protocol.md): SGD lr 0.1, momentum 0.9, weight decay 5e-4,
100 epochs, batch 128, lr × 0.1 at epoch 50, random crop (4 px zero padding) and horizontal flip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AUGMENTATIONS = ("crop", "flip")


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset and which part of it.

    train_subset / test_subset: a stratified, seeded subset of that many images (null = all).
    val_split: number of clean training images held out (stratified) for the defender's validation
    split; the poisoner never sees them and the victim does not train on them.
    subset_seed: seed of the subset and validation draws (independent of the cell seeds, so every
    cell of a suite sees the same images).
    """

    name: str = "cifar10"
    train_subset: int | None = None
    test_subset: int | None = None
    val_split: int = 0
    subset_seed: int = 0

    def __post_init__(self):
        for key in ("train_subset", "test_subset"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be positive or null, got {value}")
        if self.val_split < 0:
            raise ValueError(f"val_split must be >= 0, got {self.val_split}")


@dataclass(frozen=True)
class TrainConfig:
    """The victim training protocol (units: epochs are counts, lr is per batch of ``batch_size``)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5.0e-4
    milestones: list[int] = field(default_factory=lambda: [50])  # epochs after which lr *= gamma
    gamma: float = 0.1
    augment: list[str] = field(default_factory=lambda: ["crop", "flip"])
    crop_padding: int = 4  # pixels of padding before the random crop
    # What the crop pads with. "black": zeros in pixel space, as torchvision's RandomCrop pads the
    # PIL image (the paper's victims). "mean": the normalisation mean colour, i.e. zeros in
    # normalised space (the surrogate/crafting augmentation of Fowl et al.'s code).
    crop_fill: Literal["black", "mean"] = "black"
    normalize: bool = True  # subtract the dataset's mean, divide by its std
    eval_batch_size: int = 1024
    compile: bool = False  # torch.compile the model (CUDA only; ignored on CPU)
    device: str = "auto"  # auto = cuda when available, else cpu
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU

    def __post_init__(self):
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation '{unknown[0]}' (known: {', '.join(AUGMENTATIONS)})")
        if any(m <= 0 for m in self.milestones):
            raise ValueError("milestones must be positive epoch numbers")


@dataclass(frozen=True)
class MetricsConfig:
    """How learning speed is measured (see ``poisonbench.results.speed``).

    loss_threshold: 'epochs until training loss < threshold' uses this (0.5 in the paper).
    speed_epochs: k of the threshold-free measure, the mean training loss over epochs 1..k.
    clean_level_epoch: when set, also 'epochs until the loss is at or below the clean run's loss at
    this epoch' (a threshold relative to the clean run of the same victim and seed).
    """

    loss_threshold: float = 0.5
    speed_epochs: int = 5  # epochs
    clean_level_epoch: int | None = None  # epoch of the clean run whose loss is the level

    def __post_init__(self):
        if not self.loss_threshold > 0:
            raise ValueError(f"loss_threshold must be > 0, got {self.loss_threshold}")
        if self.speed_epochs < 1:
            raise ValueError(f"speed_epochs must be >= 1, got {self.speed_epochs}")
        if self.clean_level_epoch is not None and self.clean_level_epoch < 1:
            raise ValueError(f"clean_level_epoch must be >= 1 or null, got {self.clean_level_epoch}")
