"""The leaderboard entry schema, as code: every problem is reported as (JSON path, message).

An entry is one poison × victim × training-side defense (``none`` when the victim trains plainly);
*which epoch the victim keeps* is not part of the key but three columns of every entry, measured
from the same training. Layout (``schema: 2``)::

    status      measured | verified | reported
    suite       {name, version}                      dataset  {name, params}
    protocol    resolved suite blocks {dataset, train, metrics} (null only for reported)
    victim      {name, params}
    defense     {name, params[, label, detail, paper]}   the training-side defense, or ``none``
    poison      {name, params, family, kind, applied, plugin: {distribution, version}
                 [, label, detail, threat_model, paper: {title, venue, year, url, authors}]}
    loss_threshold   number > 0
    seeds       [int, ...]   -- every seed the suite ran; per_seed has exactly these, once each
    per_seed    [{seed, cell_id, artifact_sha256, metrics, history, wall_s, linf, diverged}]
    summary     {metric: {mean, std, n}} over per_seed (for reported: the paper's numbers)
    versions    {poisonbench, torch, ...}             hardware {device, ...}
    date        ISO 8601                              source  free-form provenance
    verification  null or what ``leaderboard verify --update`` measured

Metrics, per seed and summarised: ``peak_test_acc``/``peak_epoch`` (the oracle: best clean test
accuracy of any epoch, the paper's number), ``val_selected_test_acc``/``val_selected_epoch`` (the
epoch with the best clean *validation* accuracy, what a realistic defender keeps; null without a
validation split), ``final_test_acc`` (the last epoch, what most papers report),
``final_flatters_by`` (peak − final: how much reporting the last epoch flatters the poison) and
``epochs_to_loss_threshold`` (null when never reached). Ties go to the earliest epoch.
``label``/``detail`` are the short name and the params that differ from the preset's defaults;
``paper`` is what the plugin declares. Schema 1 entries (selection as a "defense") are upgraded on
reading (``compat``).

Numbers must be JSON numbers (not strings, not booleans), finite; accuracies are fractions in
[0, 1]; epochs are integers ≥ 1. ``reported`` entries carry no per-seed data and no artifact hash
(they are a paper's claim), and only they may leave ``protocol``, ``versions``, ``hardware`` and the
poison's ``plugin`` null. Consistency between numbers (metrics vs curves, summary vs seeds) is
checked separately by ``consistency_problems``.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

from poisonbench.errors import BadInput

SCHEMA_VERSION = 2
STATUSES = ("measured", "verified", "reported")
METRICS = ("peak_test_acc", "peak_epoch", "val_selected_test_acc", "val_selected_epoch", "final_test_acc",
           "final_flatters_by", "epochs_to_loss_threshold")
ACCURACIES = ("peak_test_acc", "val_selected_test_acc", "final_test_acc", "final_flatters_by")
EPOCHS = ("peak_epoch", "val_selected_epoch", "epochs_to_loss_threshold")
NULLABLE = ("val_selected_test_acc", "val_selected_epoch", "epochs_to_loss_threshold")
PAPER_KEYS = ("title", "venue", "year", "url")
CURVES = ("train_loss", "train_acc", "test_acc", "val_acc", "lr")  # lr: the rate of each epoch
KINDS = ("max", "min", "random", "baseline")
APPLIED = ("class", "sample")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TOP_KEYS = {"schema", "status", "suite", "dataset", "protocol", "victim", "defense", "poison",
            "loss_threshold", "seeds", "per_seed", "summary", "versions", "hardware", "date",
            "source", "verification"}
SEED_KEYS = {"seed", "cell_id", "artifact_sha256", "metrics", "history", "wall_s", "linf", "diverged"}

Problems = list[tuple[str, str]]


class EntryInvalid(BadInput):
    """One or more schema problems in entry files; all are listed, one per line."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        lines = [f"{source}: {path}: {message}" for source, path, message in problems]
        n = len(problems)
        lines.append(f"{n} problem{'s' if n != 1 else ''} in leaderboard entries")
        super().__init__("\n".join(lines))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Collects (path, message) pairs while walking an entry."""

    def __init__(self) -> None:
        self.problems: Problems = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def obj(self, value: Any, path: str, required: tuple[str, ...] = (), *, allowed: set | None = None,
            nullable: bool = False) -> bool:
        if value is None and nullable:
            return False
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, got {_kind(value)}")
            return False
        for key in required:
            if key not in value:
                self.fail(f"{path}.{key}", "is missing")
        for key in sorted(set(value) - allowed) if allowed is not None else ():
            self.fail(f"{path}.{key}", "unknown key")
        return True

    def text(self, value: Any, path: str, *, nullable: bool = False, choices: tuple = ()) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, str) or not value:
            self.fail(path, f"must be a non-empty string, got {_kind(value)}")
        elif choices and value not in choices:
            self.fail(path, f"must be one of {', '.join(choices)}, got {value!r}")

    def number(self, value: Any, path: str, *, low: float | None = None, high: float | None = None,
               nullable: bool = False, integer: bool = False) -> None:
        if value is None and nullable:
            return
        if not is_number(value) or (integer and not isinstance(value, int)):
            self.fail(path, f"must be {'an integer' if integer else 'a number'}, got {_kind(value)}")
        elif not math.isfinite(value):
            self.fail(path, f"must be finite, got {value}")
        elif (low is not None and value < low) or (high is not None and value > high):
            self.fail(path, f"must be in [{_bound(low, '-inf')}, {_bound(high, 'inf')}], got {value}")

    def component(self, value: Any, path: str) -> None:
        if self.obj(value, path, ("name", "params")):
            self.text(value.get("name"), f"{path}.name")
            self.obj(value.get("params"), f"{path}.params")
            for key in ("label", "detail"):
                if key in value and not isinstance(value[key], str):
                    self.fail(f"{path}.{key}", f"must be a string, got {_kind(value[key])}")
            if self.obj(value.get("paper"), f"{path}.paper", PAPER_KEYS, nullable=True):
                for key in ("title", "venue", "url"):
                    self.text(value["paper"].get(key), f"{path}.paper.{key}")
                self.number(value["paper"].get("year"), f"{path}.paper.year", low=1900, integer=True)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return {bool: "a boolean", str: f"the string {str(value)[:40]!r}", list: "a list", dict: "an object",
            int: f"{value}", float: f"{value}"}.get(type(value), type(value).__name__)


def _bound(value: float | None, unbounded: str) -> str:
    return unbounded if value is None else f"{value:g}"


def validate_entry(entry: Any) -> Problems:
    """All schema problems of ``entry`` as (JSON path, message); empty when valid."""
    c = _Checker()
    if not c.obj(entry, "$", tuple(sorted(TOP_KEYS - {"source", "verification"})), allowed=TOP_KEYS):
        return c.problems
    c.number(entry.get("schema"), "$.schema", low=SCHEMA_VERSION, high=SCHEMA_VERSION, integer=True)
    status = entry.get("status")
    c.text(status, "$.status", choices=STATUSES)
    reported = status == "reported"
    if c.obj(entry.get("suite"), "$.suite", ("name", "version")):
        c.text(entry["suite"].get("name"), "$.suite.name")
        c.number(entry["suite"].get("version"), "$.suite.version", low=0, integer=True)
    c.component(entry.get("dataset"), "$.dataset")
    c.component(entry.get("victim"), "$.victim")
    c.component(entry.get("defense"), "$.defense")
    if c.obj(entry.get("protocol"), "$.protocol", ("dataset", "train", "metrics"), nullable=reported):
        for key in ("dataset", "train", "metrics"):
            c.obj(entry["protocol"].get(key), f"$.protocol.{key}")
    _check_poison(c, entry.get("poison"), reported=reported)
    c.number(entry.get("loss_threshold"), "$.loss_threshold", low=1e-12)
    if c.obj(entry.get("hardware"), "$.hardware", nullable=reported) and not entry["hardware"]:
        c.fail("$.hardware", "must not be empty")
    if c.obj(entry.get("versions"), "$.versions", ("poisonbench", "torch"), nullable=reported):
        for key, value in entry["versions"].items():  # null: a package the run did not have
            required = key in ("poisonbench", "torch")
            if not isinstance(value, str | dict) and (required or value is not None):
                c.fail(f"$.versions.{key}", f"must be a string, got {_kind(value)}")
    _check_date(c, entry.get("date"), "$.date")
    c.obj(entry.get("source"), "$.source", nullable=True)
    if c.obj(entry.get("verification"), "$.verification", ("date", "seed"), nullable=True):
        _check_date(c, entry["verification"].get("date"), "$.verification.date")
    _check_seeds(c, entry, reported=reported)
    _check_summary(c, entry.get("summary"), reported=reported)
    return c.problems


def _check_poison(c: _Checker, poison: Any, *, reported: bool) -> None:
    if not c.obj(poison, "$.poison", ("name", "params", "family", "kind", "applied", "plugin")):
        return
    c.component(poison, "$.poison")
    c.text(poison.get("family"), "$.poison.family", nullable=True)
    c.text(poison.get("kind"), "$.poison.kind", choices=KINDS)
    c.text(poison.get("applied"), "$.poison.applied", choices=APPLIED)
    c.text(poison.get("threat_model"), "$.poison.threat_model", nullable=True)
    if c.obj(poison.get("plugin"), "$.poison.plugin", ("distribution", "version"), nullable=reported):
        c.text(poison["plugin"].get("distribution"), "$.poison.plugin.distribution")
        c.text(poison["plugin"].get("version"), "$.poison.plugin.version")


def _check_date(c: _Checker, value: Any, path: str) -> None:
    if not isinstance(value, str):
        c.fail(path, f"must be an ISO 8601 date string, got {_kind(value)}")
        return
    try:
        datetime.datetime.fromisoformat(value)
    except ValueError:
        c.fail(path, f"must be an ISO 8601 date, got {value!r}")


def _check_seeds(c: _Checker, entry: dict, *, reported: bool) -> None:
    seeds, per_seed = entry.get("seeds"), entry.get("per_seed")
    if not isinstance(seeds, list):
        c.fail("$.seeds", f"must be a list of integers, got {_kind(seeds)}")
        seeds = []
    if not isinstance(per_seed, list):
        c.fail("$.per_seed", f"must be a list, got {_kind(per_seed)}")
        per_seed = []
    if reported:
        if seeds or per_seed:
            c.fail("$.per_seed", "a reported entry carries no per-seed data (it is a paper's claim)")
        return
    if not seeds:
        c.fail("$.seeds", "must list at least one seed")
    for i, seed in enumerate(seeds):
        c.number(seed, f"$.seeds[{i}]", low=0, integer=True)
        if seed in seeds[:i]:
            c.fail(f"$.seeds[{i}]", f"duplicate seed {seed}")
    seen: list[Any] = []
    for i, item in enumerate(per_seed):
        path = f"$.per_seed[{i}]"
        if not c.obj(item, path, ("seed", "cell_id", "artifact_sha256", "metrics", "history"),
                     allowed=SEED_KEYS):
            continue
        seed = item.get("seed")
        c.number(seed, f"{path}.seed", low=0, integer=True)
        if seed in seen:
            c.fail(f"{path}.seed", f"duplicate seed {seed}")
        elif is_number(seed) and seed not in seeds:
            c.fail(f"{path}.seed", f"seed {seed} is not listed in $.seeds")
        seen.append(seed)
        c.text(item.get("cell_id"), f"{path}.cell_id")
        sha = item.get("artifact_sha256")
        if not isinstance(sha, str) or not SHA256.match(sha):
            c.fail(f"{path}.artifact_sha256", f"must be 64 lowercase hex digits, got {_kind(sha)}")
        c.number(item.get("wall_s"), f"{path}.wall_s", low=0, nullable=True)
        c.number(item.get("linf"), f"{path}.linf", low=0, high=1, nullable=True)
        if not isinstance(item.get("diverged", False), bool):
            c.fail(f"{path}.diverged", "must be true or false")
        if c.obj(item.get("metrics"), f"{path}.metrics", METRICS, allowed=set(METRICS)):
            _check_metrics(c, item["metrics"], f"{path}.metrics")
        _check_history(c, item.get("history"), f"{path}.history")
    for seed in seeds:
        if is_number(seed) and seed not in seen:
            c.fail("$.per_seed", f"seed {seed} is listed in $.seeds but has no per-seed data (missing seed)")


def _check_metrics(c: _Checker, metrics: dict, path: str) -> None:
    for key in ACCURACIES:
        c.number(metrics.get(key), f"{path}.{key}", low=0, high=1, nullable=key in NULLABLE)
    for key in EPOCHS:
        c.number(metrics.get(key), f"{path}.{key}", low=1, integer=True, nullable=key in NULLABLE)


def _check_history(c: _Checker, history: Any, path: str) -> None:
    if not c.obj(history, path, ("train_loss", "train_acc", "test_acc"), allowed=set(CURVES)):
        return
    lengths = set()
    for key in CURVES:
        curve = history.get(key)
        if curve is None and key in ("val_acc", "lr"):
            continue
        if not isinstance(curve, list) or not curve:
            c.fail(f"{path}.{key}", f"must be a non-empty list of numbers, got {_kind(curve)}")
            continue
        lengths.add(len(curve))
        for e, value in enumerate(curve):
            if key == "train_loss":  # null marks a non-finite loss (a diverged epoch)
                c.number(value, f"{path}.{key}[{e}]", low=0, nullable=True)
            elif key == "lr":
                c.number(value, f"{path}.{key}[{e}]", low=0)
            else:
                c.number(value, f"{path}.{key}[{e}]", low=0, high=1)
    if len(lengths) > 1:
        c.fail(path, f"curves have different lengths {sorted(lengths)}")


def _check_summary(c: _Checker, summary: Any, *, reported: bool) -> None:
    if not c.obj(summary, "$.summary", METRICS, allowed=set(METRICS)):
        return
    for key in METRICS:
        stat, path = summary.get(key), f"$.summary.{key}"
        if not c.obj(stat, path, ("mean", "std", "n"), allowed={"mean", "std", "n"}):
            continue
        high = 1 if key in ACCURACIES else None
        low = 0 if key in ACCURACIES else 1
        required = key == "peak_test_acc" or (not reported and key in ACCURACIES and key not in NULLABLE)
        c.number(stat.get("mean"), f"{path}.mean", low=low, high=high, nullable=not required)
        c.number(stat.get("std"), f"{path}.std", low=0, nullable=True)
        c.number(stat.get("n"), f"{path}.n", low=0, integer=True, nullable=reported)


# -- consistency: numbers that must agree with each other ----------------------------------------

def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 1e-9 * (1.0 + abs(float(b)))


def first_best(values: list[Any] | None) -> int | None:
    """1-based epoch of the first maximum of ``values`` (None/NaN never win); None when empty."""
    best, best_epoch = -math.inf, None
    for epoch, value in enumerate(values or [], start=1):
        if value is not None and value == value and value > best:
            best, best_epoch = value, epoch
    return best_epoch


def derive_metrics(history: dict, *, loss_threshold: float) -> dict[str, Any]:
    """The three selections and the learning speed the curves of one training imply.

    Peak, final and the loss threshold come from ``results.cell_metrics`` (the run's own rule);
    the val-selected epoch is the first best of ``history["val_acc"]``.
    """
    from poisonbench.results import cell_metrics

    acc = history["test_acc"]
    losses = [math.nan if v is None else v for v in history["train_loss"]]
    val_epoch = first_best(history.get("val_acc"))
    base = cell_metrics({**history, "train_loss": losses}, selected_epoch=val_epoch or len(acc),
                        loss_threshold=loss_threshold)
    return {"peak_test_acc": base["peak_test_acc"], "peak_epoch": base["peak_epoch"],
            "val_selected_test_acc": base["selected_test_acc"] if val_epoch else None,
            "val_selected_epoch": val_epoch,
            "final_test_acc": base["final_test_acc"],
            "final_flatters_by": base["peak_test_acc"] - base["final_test_acc"],
            "epochs_to_loss_threshold": base["epochs_to_loss_threshold"]}


def consistency_problems(entry: dict) -> Problems:
    """Metrics that disagree with their own curves, or a summary that is not the seeds' statistics.

    Only meaningful for an entry that passed ``validate_entry``. Editing any metric of any seed,
    or any summary number, shows up here (without re-training anything).
    """
    from poisonbench.results.report import Stat

    problems: Problems = []
    if entry.get("status") == "reported":
        return problems
    per_seed = entry["per_seed"]
    for i, item in enumerate(per_seed):
        metrics = item["metrics"]
        implied = derive_metrics(item["history"], loss_threshold=entry["loss_threshold"])
        for key in METRICS:
            if not _close(metrics[key], implied[key]):
                problems.append((f"$.per_seed[{i}].metrics.{key}",
                                 f"is {metrics[key]}, but the seed's curves give {implied[key]}"))
    for key in METRICS:
        stat = Stat.of([item["metrics"][key] for item in per_seed])
        recorded = entry["summary"][key]
        for field in ("mean", "std", "n"):
            if not _close(recorded.get(field), getattr(stat, field)):
                problems.append((f"$.summary.{key}.{field}",
                                 f"is {recorded.get(field)}, but the per-seed metrics give {getattr(stat, field)}"))
    return problems
