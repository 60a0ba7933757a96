"""Aggregate a run directory into a ranking by peak accuracy and the learning-speed correlation.

A run directory (docs/formats.md) holds ``manifest.json`` and ``cells.jsonl``. Cells are grouped by
(poison with its params, victim, defense); every metric gets mean ± std (n) over the group's seeds
(std is the sample standard deviation, ddof=1, and null for a single seed).

Ranking: by mean peak test accuracy, ascending (a lower peak means a stronger poison). A group with
a diverged cell (the runner marks ``diverged``, or a non-finite training loss) is never ranked
first: diverged groups come last, flagged, because a victim whose training blew up says nothing
about the poison.

Correlation (the paper's Fig. 1): Spearman and Pearson between a group's mean learning speed and its
mean peak accuracy, for each measure of ``poisonbench.results.speed`` (``correlations``): the
threshold-free ``early_loss`` (mean training loss of the first k epochs; every training has one),
the paper's epochs until the loss falls below the threshold (``correlation``, kept under its old key)
and, when configured, epochs until the clean run's level. For the threshold measure: one point per distinct
training (defenses that only select an epoch share one), over the groups that
(a) are poisons (``kind`` not ``baseline``: the clean reference is no poison), (b) did not diverge
and (c) reached the threshold in *every* seed. A group that never reached it (in any seed) has no
learning speed to correlate -- its value is censored, and imputing the epoch count would invent a
number -- so it is left out and listed under ``excluded`` with the reason. Fewer than 3 points give
null coefficients. The other measures leave out a group only where a seed has no value, and say so.

Flattery (the paper's headline as a column): per cell ``peak_minus_final`` and
``val_selected_minus_final`` -- how much better the poison looks when judged by the final epoch
than by the oracle peak or by the epoch a clean validation split selects.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonbench.errors import BadInput
from poisonbench.results import val_selected  # the rule cells.jsonl records use
from poisonbench.results.labels import display, label, short_label  # noqa: F401 (re-exported)
from poisonbench.results.speed import DEFAULT_SPEED_EPOCHS, annotate_clean_level, learning_speed

METRICS = ("peak_test_acc", "peak_epoch", "val_selected_test_acc", "final_test_acc", "selected_test_acc", "selected_epoch",
           "epochs_to_loss_threshold", "early_loss", "epochs_to_clean_level", "peak_minus_final",
           "val_selected_minus_final")
# The learning-speed measures a report correlates with peak accuracy (poisonbench.results.speed).
SPEED_MEASURES = ("early_loss", "epochs_to_loss_threshold", "epochs_to_clean_level")
DEFAULT_LOSS_THRESHOLD = 0.5
MIN_CORRELATION_POINTS = 3


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for n < 2) and count of one metric over seeds."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat:
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            return cls(None, None, 0)
        std = statistics.stdev(finite) if len(finite) > 1 else None
        return cls(statistics.fmean(finite), std, len(finite))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    manifest: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def suite(self) -> dict[str, Any]:
        return manifest_suite(self.manifest)

    @property
    def loss_threshold(self) -> float:
        metrics = self.suite.get("metrics") or {}
        return float(metrics.get("loss_threshold", DEFAULT_LOSS_THRESHOLD))

    @property
    def speed_epochs(self) -> int:
        """k of the threshold-free measure (the records' own k when they carry one)."""
        used = [(r.get("metrics") or {}).get("early_loss_epochs") for r in self.records]
        used = [k for k in used if isinstance(k, int)]
        metrics = self.suite.get("metrics") or {}
        return max(used) if used else int(metrics.get("speed_epochs", DEFAULT_SPEED_EPOCHS))

    @property
    def clean_level_epoch(self) -> int | None:
        value = (self.suite.get("metrics") or {}).get("clean_level_epoch")
        return int(value) if value is not None else None


@dataclass
class Group:
    """All seeds of one (poison, victim, defense) combination."""

    poison: dict[str, Any]
    victim: dict[str, Any]
    defense: dict[str, Any]
    dataset: str
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.get("seed") for r in self.records]

    @property
    def diverged(self) -> bool:
        return any(record_diverged(r) for r in self.records)

    @property
    def stats(self) -> dict[str, Stat]:
        return {m: Stat.of([(r.get("metrics") or {}).get(m) for r in self.records]) for m in METRICS}

    @property
    def never_reached(self) -> int:
        """How many seeds never got the training loss below the threshold."""
        return sum((r.get("metrics") or {}).get("epochs_to_loss_threshold") is None for r in self.records)

    def to_json(self) -> dict[str, Any]:
        linf = [r.get("linf") for r in self.records if isinstance(r.get("linf"), int | float)]
        return {
            "poison": label(self.poison), "name": self.poison.get("name"),
            **({"fraction": self.poison["fraction"]} if self.poison.get("fraction") is not None else {}),
            "params": self.poison.get("params") or {}, "family": self.poison.get("family"),
            "kind": self.poison.get("kind"), "applied": self.poison.get("applied"),
            "victim": label(self.victim), "defense": label(self.defense), "dataset": self.dataset,
            "seeds": self.seeds, "n": len(self.records), "diverged": self.diverged,
            "never_reached_threshold": self.never_reached,
            "linf": max(linf) if linf else None,
            "metrics": {m: s.to_json() for m, s in self.stats.items()},
        }


def manifest_suite(manifest: dict[str, Any]) -> dict[str, Any]:
    """The resolved suite stored in a run manifest (under ``suite``, or ``resolved_suite``)."""
    for key in ("suite", "resolved_suite", "resolved"):
        value = manifest.get(key)
        if isinstance(value, dict):
            return value
    return {"suite": manifest.get("suite")} if isinstance(manifest.get("suite"), str) else {}


def record_diverged(record: dict[str, Any]) -> bool:
    if record.get("diverged"):
        return True
    losses = (record.get("history") or {}).get("train_loss") or []
    return any(v is None or not math.isfinite(float(v)) for v in losses)


# -- loading ----------------------------------------------------------------------------------

def _read_cells(path: Path) -> list[dict[str, Any]]:
    """Fallback reader: one JSON object per line; an unterminated last line (a crash mid-write) is
    ignored, any other malformed line is an error naming it."""
    # The piece after the last newline is either empty or a line the writer died in the middle of
    # (that cell re-runs on resume), so it is dropped.
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]
    records = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise BadInput(f"{path}:{number}: not a JSON cell record ({err.msg})") from None
    return records


def load_run(run_dir: str | Path) -> Run:
    """Read ``manifest.json`` and ``cells.jsonl``; raises ``BadInput`` naming what is missing."""
    path = Path(run_dir)
    cells = path / "cells.jsonl"
    if not path.is_dir():
        raise BadInput(f"run directory '{path}' does not exist")
    if not cells.is_file():
        raise BadInput(f"'{path}' is not a run directory: {cells.name} is missing")
    manifest: dict[str, Any] = {}
    manifest_path = path / "manifest.json"
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BadInput(f"{manifest_path}: not JSON ({err.msg}, line {err.lineno})") from None
    try:
        from poisonbench.results import read_records
    except ImportError:
        records = _read_cells(cells)
    else:
        records = list(read_records(path))
    run = Run(path, manifest, records)
    annotate_records(run)
    return run


def annotate_records(run: Run) -> None:
    """Derived per-cell metrics a record may lack (older runs), added in memory, never written:
    ``early_loss`` (threshold-free speed), ``epochs_to_clean_level``, and how far the final
    accuracy flatters the poison: ``peak_minus_final`` and ``val_selected_minus_final``."""
    for record in run.records:
        metrics = record.setdefault("metrics", {})
        history = record.get("history") or {}
        if "early_loss" not in metrics:
            metrics.update(learning_speed(history, speed_epochs=run.speed_epochs))
        peak, final = metrics.get("peak_test_acc"), metrics.get("final_test_acc")
        metrics["peak_minus_final"] = None if peak is None or final is None else peak - final
        chosen = val_selected_acc(record)
        metrics["val_selected_test_acc"] = chosen
        metrics["val_selected_minus_final"] = None if chosen is None or final is None else chosen - final
    annotate_clean_level(run.records, clean_epoch=run.clean_level_epoch)


def val_selected_acc(record: dict[str, Any]) -> float | None:
    """Test accuracy at the epoch of best clean validation accuracy (earliest on ties); None
    without a validation curve. Reads the record's own ``val_selected_test_acc`` when it has one."""
    metrics = record.get("metrics") or {}
    if metrics.get("val_selected_test_acc") is not None:
        return float(metrics["val_selected_test_acc"])
    history = record.get("history") or {}
    chosen = val_selected(history.get("test_acc") or [], history.get("val_acc"))["val_selected_test_acc"]
    return None if chosen is None else float(chosen)


# -- aggregation ------------------------------------------------------------------------------

def group_records(records: list[dict[str, Any]]) -> list[Group]:
    """Group cells by (poison label, victim label, defense label) in first-seen order, seeds sorted."""
    groups: dict[tuple[str, str, str], Group] = {}
    for record in records:
        poison = record.get("poison") or {}
        key = (label(poison), label(record.get("victim")), label(record.get("defense")))
        if key not in groups:
            victim, defense = record.get("victim"), record.get("defense")
            groups[key] = Group(
                poison=dict(poison),
                victim=victim if isinstance(victim, dict) else {"name": victim, "params": {}},
                defense=defense if isinstance(defense, dict) else {"name": defense, "params": {}},
                dataset=label(record.get("dataset")))
        groups[key].records.append(record)
    for group in groups.values():
        group.records.sort(key=lambda r: (r.get("seed") is None, r.get("seed")))
    return list(groups.values())


def rank_groups(groups: list[Group]) -> list[Group]:
    """Ascending mean peak accuracy (stronger poison first); diverged or peak-less groups last."""
    def key(group: Group):
        peak = group.stats["peak_test_acc"].mean
        return (group.diverged, peak is None, peak if peak is not None else 0.0)

    return sorted(groups, key=key)  # stable: ties keep suite order


def distinct_trainings(groups: list[Group]) -> list[Group]:
    """One group per distinct training: defenses that only pick an epoch share their victim's
    training (same curves), and counting it once per defense would inflate n."""
    seen, out = set(), []
    for group in groups:
        curves = [[(r.get("history") or {}).get(k) for k in ("train_loss", "test_acc")] for r in group.records]
        key = (label(group.poison), label(group.victim), json.dumps(curves, sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(group)
    return out


def correlation(groups: list[Group], measure: str = "epochs_to_loss_threshold") -> dict[str, Any]:
    """Spearman and Pearson of a mean learning-speed ``measure`` vs mean peak accuracy (module doc).

    Pooled over every distinct (poison, victim) training; with several victims, ``by_victim``
    holds the same object per victim (the paper's claim is per victim).
    """
    distinct = distinct_trainings(groups)
    out = _correlate(distinct, measure)
    victims = sorted({label(g.victim) for g in distinct})
    if len(victims) > 1:
        out["by_victim"] = {v: _correlate([g for g in distinct if label(g.victim) == v], measure)
                            for v in victims}
    return out


def correlations(groups: list[Group], *, clean_level: bool) -> dict[str, dict[str, Any]]:
    """``correlation`` for every learning-speed measure (the clean-relative one when configured)."""
    return {m: correlation(groups, m) for m in SPEED_MEASURES
            if m != "epochs_to_clean_level" or clean_level}


def _missing(group: Group, measure: str) -> str | None:
    """Why ``group`` has no value of ``measure`` in some seed (None when every seed has one)."""
    values = [(r.get("metrics") or {}).get(measure) for r in group.records]
    missing = sum(v is None for v in values)
    if not missing:
        return None
    where = f"in {missing}/{len(values)} seeds"
    if measure == "epochs_to_loss_threshold":
        return f"loss never fell below the threshold {where}"
    if measure == "epochs_to_clean_level":
        return f"no clean run to compare with, or never reached the clean run's level {where}"
    return f"no finite training loss in the first epochs {where}"


def _correlate(groups: list[Group], measure: str = "epochs_to_loss_threshold") -> dict[str, Any]:
    xs, ys, excluded = [], [], []
    for group in groups:
        reason = None
        if group.poison.get("kind") == "baseline":
            reason = "baseline, not a poison"
        elif group.diverged:
            reason = "diverged"
        elif (missing := _missing(group, measure)) is not None:
            reason = missing
        elif group.stats["peak_test_acc"].mean is None:
            reason = "no peak accuracy"
        if reason:
            excluded.append({"poison": label(group.poison), "victim": label(group.victim),
                             "defense": label(group.defense), "reason": reason})
            continue
        xs.append(group.stats[measure].mean)
        ys.append(group.stats["peak_test_acc"].mean)
    out: dict[str, Any] = {"measure": measure, "spearman_r": None, "spearman_p": None, "pearson_r": None,
                           "pearson_p": None, "n": len(xs), "excluded": excluded}
    if len(xs) < MIN_CORRELATION_POINTS:
        return out
    from scipy import stats as sstats

    with warnings.catch_warnings():  # constant input: scipy warns and returns NaN -> null
        warnings.simplefilter("ignore")
        spearman = sstats.spearmanr(xs, ys)
        pearson = sstats.pearsonr(xs, ys)
    values = {"spearman_r": spearman.statistic, "spearman_p": spearman.pvalue,
              "pearson_r": pearson.statistic, "pearson_p": pearson.pvalue}
    for key, value in values.items():
        value = float(value)
        out[key] = value if math.isfinite(value) else None
    return out


def build_report(run: Run) -> dict[str, Any]:
    """The JSON report: ranking (rank 1 = strongest poison) and correlation."""
    ranked = rank_groups(group_records(run.records))
    names = {label(p): p["label"] for p in run.suite.get("poisons") or []  # the suite's `label:`s
             if isinstance(p, dict) and isinstance(p.get("label"), str)}
    ranking = []
    for position, group in enumerate(ranked, start=1):
        row = {"rank": position, **group.to_json()}
        if names.get(row["poison"]):
            row["label"] = names[row["poison"]]
        ranking.append(row)
    return {"run_dir": str(run.path), "suite": run.suite.get("suite"),
            "loss_threshold": run.loss_threshold, "speed_epochs": run.speed_epochs,
            "clean_level_epoch": run.clean_level_epoch, "cells": len(run.records),
            "ranking": ranking, "correlation": correlation(ranked),
            "correlations": correlations(ranked, clean_level=run.clean_level_epoch is not None)}


# -- formatting -------------------------------------------------------------------------------

def format_stat(stat: dict[str, Any], *, percent: bool) -> str:
    """``45.02 ± 1.20 (3)`` for accuracies (percent), ``12.3 ± 0.6 (3)`` for epochs."""
    if stat.get("mean") is None:
        return "–"
    scale, digits = (100.0, 2) if percent else (1.0, 1)
    if stat.get("n") == 1:  # one seed: no spread to show; epochs are whole numbers
        return f"{stat['mean'] * scale:.2f}" if percent else f"{stat['mean']:g}"
    text = f"{stat['mean'] * scale:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std'] * scale:.{digits}f}"
    return text + f" ({stat['n']})"


def format_threshold(row: dict[str, Any]) -> str:
    """Epochs until loss < threshold, saying how many seeds never got there."""
    never, n = row["never_reached_threshold"], row["n"]
    if never == n:
        return "never"
    text = format_stat(row["metrics"]["epochs_to_loss_threshold"], percent=False)
    return text + (f"; never in {never}/{n}" if never else "")
