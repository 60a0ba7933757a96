"""Victim-side defenses: registration, presets, and the deprecated selection aliases.

Selection is not a defense: every training records three selections -- ``peak`` (the epoch of
best clean test accuracy, the oracle of Sandoval-Segura et al. 2022), ``val_selected`` (best
accuracy on the clean validation split the defender held out; null without ``val_split``) and
``final`` (the last epoch, what most papers report). ``none`` therefore means "no training-side
defense"; ``early_stopping`` is a deprecated alias of it kept so old suites validate (with a note).
Its ``select`` still picks the record's legacy ``selected_test_acc`` (test = peak, val =
val-selected). Ties go to the earliest epoch.

The data and training defenses live beside this file: ``squeezing`` (preprocess: jpeg, grayscale,
bit_depth, median, gaussian_blur), ``augmentation`` (batch: gaussian_noise, cutout, mixup, cutmix),
their torch code in ``ops``. Names, defaults and presets follow the field (ISS, APBench, ECLIPSE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import Defense, Paper
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins.defenses.augmentation import Cutmix, Cutout, GaussianNoise, Mixup
from poisonbench.plugins.defenses.squeezing import BitDepth, GaussianBlur, Grayscale, Jpeg, Median

EARLY_STOPPING = Paper(title="Poisons that are learned faster are more effective", venue="CVPR Workshops",
                       year=2022, url="https://arxiv.org/abs/2204.08615", authors="Sandoval-Segura et al.")


def first_argmax(values: list[float]) -> int:
    """1-based index of the first maximum (NaN counts as lowest)."""
    best, best_i = float("-inf"), 0
    for i, value in enumerate(values):
        if value == value and value > best:  # value == value is False for NaN
            best, best_i = value, i
    return best_i + 1


class NoDefense(Defense):
    """No training-side defense; the record's peak, val-selected and final accuracies are all there."""

    name = "none"

    def select_epoch(self, history):
        return len(history["test_acc"])


@dataclass(frozen=True)
class EarlyStoppingParams:
    select: Literal["test", "val"] = "test"  # test = the paper's oracle peak; val = held-out clean split


class EarlyStopping(Defense):
    """Deprecated alias of ``none``: keeps the best epoch (test = oracle peak, val = validation)."""

    name = "early_stopping"
    Params = EarlyStoppingParams
    paper = EARLY_STOPPING
    deprecated = ("every training now records peak, val_selected and final, so this is the undefended "
                  "training; write 'none'")

    @property
    def needs_validation(self) -> bool:  # type: ignore[override]
        return self.params.select == "val"

    def select_epoch(self, history):
        key = "val_acc" if self.params.select == "val" else "test_acc"
        return first_argmax(history[key])


@hookimpl
def poisonbench_register_defenses(register):
    register(NoDefense)
    register(EarlyStopping)
    register(Jpeg)
    for quality in (10, 30, 50):
        register(Jpeg, f"jpeg{quality}", params={"quality": quality}, description=f"ISS JPEG at quality {quality}")
    register(Grayscale)
    register(Grayscale, "grayscale_eval", params={"apply_to_eval": True},
             description="ISS grayscale, test and validation images converted too")
    register(BitDepth)
    register(Median)
    register(GaussianBlur)
    register(GaussianNoise)
    register(GaussianNoise, "eclipse_ccm", params={"std": 0.05, "gray_p": 0.4},
             description="ECLIPSE's corruption compensation: grey p=0.4, then N(0, 0.05²)")
    register(Cutout)
    register(Mixup)
    register(Cutmix)
    register(Cutmix, "cutmix_batch", params={"prob": 0.5, "per_sample": False},
             description="CutMix paper recipe: one box per batch with probability 0.5")
