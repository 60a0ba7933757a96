"""Victim-side defenses: ``none`` (keep the last epoch) and ``early_stopping`` (keep the best epoch).

Early stopping is the paper's passive defense (Sandoval-Segura et al. 2022, §1): a practitioner keeps
the best model seen during training. ``select: test`` picks the epoch of peak clean *test* accuracy
(the paper's "peak", an oracle); ``select: val`` picks the epoch of best accuracy on a clean
validation split the defender held out (``dataset.val_split``), the realistic version. Ties go to the
earliest epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from poisonbench.api import Defense
from poisonbench.hookspecs import hookimpl


def first_argmax(values: list[float]) -> int:
    """1-based index of the first maximum (NaN counts as lowest)."""
    best, best_i = float("-inf"), 0
    for i, value in enumerate(values):
        if value == value and value > best:  # value == value is False for NaN
            best, best_i = value, i
    return best_i + 1


class NoDefense(Defense):
    """No defense: the victim keeps the model of the last epoch (how most poison papers report)."""

    name = "none"

    def select_epoch(self, history):
        return len(history["test_acc"])


@dataclass(frozen=True)
class EarlyStoppingParams:
    select: Literal["test", "val"] = "test"  # test = the paper's oracle peak; val = held-out clean split


class EarlyStopping(Defense):
    """Keep the epoch with the best clean accuracy (test = oracle peak, val = held-out validation)."""

    name = "early_stopping"
    Params = EarlyStoppingParams

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
