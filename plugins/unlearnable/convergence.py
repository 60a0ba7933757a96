"""Watching a min-min craft converge: the accuracy trend, rounds left, and an early stall verdict.

The unlearnable-examples loop stops once the crafting model's accuracy on the poisoned data exceeds
``stop_acc``; a round can take a minute on a CPU, and the loop gives up only after ``max_rounds``.
``Convergence`` turns the per-round accuracies into what a user needs to decide early:

- ``trend``: the least-squares slope of the last ``window`` accuracies (accuracy per round);
- ``rounds_left``: (stop_acc − last accuracy) / trend, rounded up; None while the trend is not
  positive (no estimate);
- ``stalled``: after ``stall_rounds`` rounds, the best accuracy so far is still within
  ``chance_margin`` of chance (1 / classes) — the loop is not learning at all and will not converge.
  A loop that learns but slowly is never called stalled; its estimate says how slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CHANCE_MARGIN = 0.05  # accuracy within 5 points of chance counts as "at chance"
TREND_WINDOW = 4  # rounds in the slope estimate


@dataclass
class Convergence:
    """Per-round accuracies of one craft and what they say (see the module docstring)."""

    stop_acc: float
    num_classes: int
    stall_rounds: int
    window: int = TREND_WINDOW
    accs: list[float] = field(default_factory=list)

    def add(self, acc: float) -> None:
        self.accs.append(float(acc))

    @property
    def chance(self) -> float:
        return 1.0 / max(1, self.num_classes)

    @property
    def trend(self) -> float | None:
        """Slope (accuracy per round) of the last ``window`` rounds; None before two rounds."""
        ys = self.accs[-self.window:]
        if len(ys) < 2:
            return None
        n = len(ys)
        mean_x, mean_y = (n - 1) / 2, sum(ys) / n
        num = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(ys))
        den = sum((i - mean_x) ** 2 for i in range(n))
        return num / den

    @property
    def rounds_left(self) -> int | None:
        """Rounds until ``stop_acc`` at the current trend; 0 when there; None without an estimate."""
        if not self.accs:
            return None
        gap = self.stop_acc - self.accs[-1]
        if gap < 0:
            return 0
        slope = self.trend
        if slope is None or slope <= 1e-6:
            return None
        return math.ceil(gap / slope)

    @property
    def stalled(self) -> bool:
        """True once ``stall_rounds`` rounds ran and none got clear of chance."""
        if len(self.accs) < self.stall_rounds:
            return False
        return max(self.accs) <= self.chance + CHANCE_MARGIN

    def fields(self) -> dict[str, str | float]:
        """Progress-line fields: ``acc``, ``trend`` (points per round) and ``left`` (rounds, or ?)."""
        out: dict[str, str | float] = {"acc": round(self.accs[-1], 4) if self.accs else 0.0}
        if self.trend is not None:
            out["trend"] = f"{100 * self.trend:+.1f}pt/round"
        left = self.rounds_left
        out["left"] = "?" if left is None else f"~{left}"
        return out

    def stall_message(self, label: str) -> str:
        accs = ", ".join(f"{a:.1%}" for a in self.accs[-self.stall_rounds:])
        return (f"{label} is not converging: the crafting model's accuracy stayed at chance "
                f"({self.chance:.0%}) for {len(self.accs)} rounds ({accs}); it would run its "
                "max_rounds and fail. Try its CPU preset (SU-cpu / CU-cpu: BatchNorm statistics "
                "refreshed before each noise update), another crafting model, or a larger eps")
