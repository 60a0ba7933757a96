"""Leaderboard rows: one per entry (poison × victim × training-side defense), flattened for tables.

Shared by the Markdown (``render``) and HTML (``page``) renderers, which import this module and
never each other. Rows are ranked by suite, then mean peak test accuracy (lower = stronger poison).
Entries of an older schema that upgrade to the same row (one file per selection rule) are shown
once: the first by file name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonbench.leaderboard.store import load_entries
from poisonbench.results.labels import display, label

MEASURED = ("measured", "verified")


@dataclass(frozen=True)
class Row:
    """One entry, flattened: display names, summary statistics, the mean test-accuracy curve."""

    suite: str
    suite_version: int
    status: str
    poison: str  # short name (preset name or the suite's label)
    poison_detail: str  # params that differ from the preset's defaults
    poison_key: str  # canonical label, unique within a suite
    family: str
    kind: str
    applied: str
    threat_model: str
    paper: dict[str, Any] | None
    victim: str
    victim_detail: str
    defense: str
    defense_detail: str
    summary: dict[str, dict[str, Any]]
    never: int | None  # seeds that never reached the loss threshold (None: unknown, reported)
    n_seeds: int | None
    loss_threshold: float
    curve: tuple[float, ...]  # mean clean test accuracy per epoch over seeds (empty for reported)
    artifact: str
    date: str
    reference: str
    detail: str
    path: str

    @property
    def peak(self) -> float | None:
        return self.summary["peak_test_acc"]["mean"]

    def mean(self, key: str) -> float | None:
        return self.summary[key]["mean"]

    def acc_text(self, key: str) -> str:
        """``45.02 ± 1.20`` (percent; n is its own column); ``–`` when unknown."""
        stat = self.summary[key]
        if stat["mean"] is None:
            return "–"
        text = f"{100 * stat['mean']:.2f}"
        if self.status != "reported" and stat.get("std") is not None:
            text += f" ± {100 * stat['std']:.2f}"
        return text

    def speed_text(self) -> str:
        stat = self.summary["epochs_to_loss_threshold"]
        if self.never is not None and self.n_seeds and self.never == self.n_seeds:
            return "never"
        if stat["mean"] is None:
            return "–"
        text = f"{stat['mean']:g}" if stat.get("n") == 1 else f"{stat['mean']:.1f}"
        if stat.get("std") is not None:
            text += f" ± {stat['std']:.1f}"
        return text + (f"; never in {self.never}/{self.n_seeds}" if self.never else "")

    def cite(self) -> str:
        """``Huang et al., ICLR 2021`` or ``""``."""
        if not self.paper:
            return ""
        where = f"{self.paper.get('venue')} {self.paper.get('year')}"
        return f"{self.paper['authors']}, {where}" if self.paper.get("authors") else where


def mean_curve(per_seed: list[dict[str, Any]]) -> tuple[float, ...]:
    """Per-epoch mean of the seeds' ``test_acc`` (epochs every seed has; non-finite values skipped)."""
    curves = [item["history"]["test_acc"] for item in per_seed]
    if not curves:
        return ()
    out = []
    for epoch in range(min(len(c) for c in curves)):
        values = [c[epoch] for c in curves if c[epoch] is not None and math.isfinite(c[epoch])]
        out.append(round(sum(values) / len(values), 6) if values else 0.0)
    return tuple(out)


def _names(component: dict[str, Any]) -> tuple[str, str]:
    """(short name, detail): as stored by ``leaderboard add``, else derived from the params."""
    shown = display(component)
    return str(component.get("label") or shown.name), str(component.get("detail", shown.detail))


def make_row(path: Path, entry: dict[str, Any], root: Path) -> Row:
    per_seed = entry["per_seed"]
    hashes = sorted({item["artifact_sha256"] for item in per_seed})
    artifact = hashes[0][:12] if len(hashes) == 1 else (f"{len(hashes)} artifacts" if hashes else "—")
    reported = entry["status"] == "reported"
    source = entry.get("source") or {}
    poison, victim, defense = entry["poison"], entry["victim"], entry["defense"]
    (p_name, p_detail), (v_name, v_detail), (d_name, d_detail) = map(_names, (poison, victim, defense))
    return Row(
        suite=entry["suite"]["name"], suite_version=entry["suite"]["version"], status=entry["status"],
        poison=p_name, poison_detail=p_detail, poison_key=label(poison),
        family=str(poison.get("family") or poison["name"]), kind=poison["kind"], applied=poison["applied"],
        threat_model=str(poison.get("threat_model") or "?"), paper=poison.get("paper"),
        victim=v_name, victim_detail=v_detail, defense=d_name, defense_detail=d_detail,
        summary=entry["summary"],
        never=None if reported else sum(i["metrics"]["epochs_to_loss_threshold"] is None for i in per_seed),
        n_seeds=None if reported else len(per_seed), loss_threshold=entry["loss_threshold"],
        curve=mean_curve(per_seed), artifact=artifact, date=entry["date"][:10],
        reference=str(source.get("reference") or ""), detail=str(source.get("detail") or ""),
        path=path.relative_to(root).as_posix())


def ranked(rows: list[Row]) -> list[Row]:
    """By suite, then ascending peak (missing peaks last), then names (a stable, total order)."""
    return sorted(rows, key=lambda r: (r.suite, r.peak is None, r.peak or 0.0, r.poison_key, r.victim,
                                       r.defense, r.path))


def load_rows(root: Path) -> list[Row]:
    """Every entry under ``root/entries`` as a ranked row; an upgraded duplicate is shown once."""
    root = Path(root)
    rows, seen = [], set()
    for path, entry in load_entries(root):
        row = make_row(path, entry, root)
        key = (row.suite, row.status == "reported", row.poison_key, label(entry["victim"]),
               label(entry["defense"]))
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return ranked(rows)


def by_suite(rows: list[Row]) -> dict[tuple[str, int], list[Row]]:
    out: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        out.setdefault((row.suite, row.suite_version), []).append(row)
    return out
