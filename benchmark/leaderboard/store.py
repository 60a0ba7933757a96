"""Leaderboard entries on disk: ``entries/<suite>/<poison>__<victim>__<defense>.json``, and ``add``.

``entries_from_run`` turns a run directory into one entry per (poison, victim, defense) group;
``add_run`` validates all of them (schema and consistency) before writing any, so a run with a NaN
accuracy, a missing or a duplicate seed adds nothing. Files are written atomically and as plain
JSON (``allow_nan=False``: numbers are numbers).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from poisonbench.errors import BadInput
from poisonbench.leaderboard.schema import (
    CURVES,
    METRICS,
    SCHEMA_VERSION,
    EntryInvalid,
    consistency_problems,
    validate_entry,
)
from poisonbench.results.figures import write_atomic
from poisonbench.results.report import Group, Run, Stat, group_records, label

ENTRIES = "entries"


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: ``early_stopping[select=val]`` → ``early_stopping@select=val``."""
    text = text[:-1].replace("[", "@", 1) if text.endswith("]") and "[" in text else text
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.=,@") else "-" for ch in text)
    return safe.strip(".")[:80] or "-"


def entry_filename(entry: dict[str, Any]) -> str:
    """``<poison>__<victim>__<defense>.json``; a hash of the labels is added when a name had to be
    changed to fit a file name (so two odd names cannot share a file)."""
    labels = [label(entry["poison"]), label(entry["victim"]), label(entry["defense"])]
    parts = [slug(x) for x in labels]
    plain = [x[:-1].replace("[", "@", 1) if x.endswith("]") and "[" in x else x for x in labels]
    name = "__".join(parts)
    if parts != plain or any("__" in p for p in parts):
        name += "__" + hashlib.sha256("\0".join(labels).encode()).hexdigest()[:8]
    return name + ".json"


def entry_path(root: Path, entry: dict[str, Any]) -> Path:
    return Path(root) / ENTRIES / slug(entry["suite"]["name"]) / entry_filename(entry)


def dump_entry(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_entry(path: Path, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, dump_entry(entry).encode("utf-8"))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def read_entry(path: Path) -> dict[str, Any]:
    """Parse one entry file; a JSON error or a schema problem raises ``EntryInvalid`` (exit 2)."""
    try:
        entry = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except OSError as err:
        raise BadInput(f"{path}: cannot read entry: {err.strerror or err}") from None
    except (json.JSONDecodeError, ValueError) as err:
        raise EntryInvalid([(str(path), "$", f"not a valid JSON entry ({err})")]) from None
    problems = validate_entry(entry)
    if problems:
        raise EntryInvalid([(str(path), p, m) for p, m in problems])
    return entry


def load_entries(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every entry under ``root/entries`` (sorted by path), all problems of all files reported at once."""
    base = Path(root) / ENTRIES
    found, problems = [], []
    for path in sorted(base.glob("*/*.json")):
        try:
            entry = read_entry(path)
        except EntryInvalid as err:
            problems.extend(err.problems)
            continue
        if slug(entry["suite"]["name"]) != path.parent.name:
            problems.append((str(path), "$.suite.name",
                             f"entry of suite {entry['suite']['name']!r} is filed under {path.parent.name}/"))
        found.append((path, entry))
    if problems:
        raise EntryInvalid(problems)
    return found


# -- building entries from a run ----------------------------------------------------------------

def _finite_or_none(values: list[Any]) -> list[Any]:
    """Training losses: a non-finite value (diverged epoch) is stored as null, JSON has no NaN."""
    return [v if isinstance(v, int | float) and math.isfinite(v) else None for v in values]


def _plugin(group: Group, run: Run, catalog) -> dict[str, str] | None:
    """The poison's plugin distribution and version: as the run recorded it, else as installed now."""
    if catalog is None or group.poison.get("name") not in catalog.poisons:
        return None
    entry, _ = catalog.poisons.lookup(group.poison["name"])
    for info in run.manifest.get("plugins") or []:  # the versions the run actually used
        if isinstance(info, dict) and entry.provider in (info.get("name"),
                                                         f"{info.get('distribution')}:{info.get('name')}"):
            return {"distribution": str(info.get("distribution")), "version": str(info.get("version"))}
    distribution, _, version = catalog.provider_version(entry.provider).partition(" ")
    return {"distribution": distribution, "version": version or "unknown"}


def _per_seed(record: dict[str, Any]) -> dict[str, Any]:
    history = {k: v for k, v in (record.get("history") or {}).items() if k in CURVES}
    if isinstance(history.get("train_loss"), list):
        history["train_loss"] = _finite_or_none(history["train_loss"])
    if history.get("val_acc") is None:
        history.pop("val_acc", None)
    item = {"seed": record.get("seed"), "cell_id": record.get("cell_id"),
            "artifact_sha256": record.get("poison_sha256"), "metrics": dict(record.get("metrics") or {}),
            "history": history, "wall_s": record.get("wall_s"), "linf": record.get("linf"),
            "diverged": bool(record.get("diverged", False))}
    return item


def _date(manifest: dict[str, Any]) -> str:
    for key in ("finished", "ended", "end_time", "finished_at", "started", "start_time", "started_at"):
        value = manifest.get(key)
        if isinstance(value, str):
            return value
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _hardware(manifest: dict[str, Any]) -> dict[str, Any] | None:
    value = manifest.get("hardware", manifest.get("device"))
    if isinstance(value, str):
        return {"device": value}
    return value


def build_entry(group: Group, run: Run, *, catalog=None) -> dict[str, Any]:
    """The (not yet validated) entry for one group of a run."""
    suite = run.suite
    per_seed = [_per_seed(r) for r in group.records]
    summary = {m: Stat.of([item["metrics"].get(m) for item in per_seed]).to_json() for m in METRICS}
    poison = {key: group.poison.get(key) for key in ("name", "params", "family", "kind", "applied")}
    poison["params"] = poison["params"] or {}
    poison["plugin"] = _plugin(group, run, catalog)
    dataset = suite.get("dataset") or {}
    return {
        "schema": SCHEMA_VERSION, "status": "measured",
        "suite": {"name": suite.get("suite"), "version": suite.get("version")},
        "dataset": {"name": dataset.get("name", group.dataset), "params": dataset.get("params") or {}},
        "protocol": {key: suite.get(key) for key in ("dataset", "train", "metrics")},
        "victim": group.victim, "defense": group.defense, "poison": poison,
        "loss_threshold": run.loss_threshold,
        "seeds": list(suite.get("seeds") or group.seeds),
        "per_seed": per_seed, "summary": summary,
        "versions": run.manifest.get("versions"), "hardware": _hardware(run.manifest),
        "date": _date(run.manifest),
        "source": {"run": run.path.name, "git": run.manifest.get("git") or run.manifest.get("git_hash")},
        "verification": None,
    }


def entries_from_run(run: Run, *, poisons: list[str] | None = None, catalog=None) -> list[dict[str, Any]]:
    """One entry per (poison, victim, defense) group, optionally only the named poisons."""
    groups = group_records(run.records)
    if poisons:
        known = {g.poison.get("name") for g in groups} | {label(g.poison) for g in groups}
        unknown = [p for p in poisons if p not in known]
        if unknown:
            raise BadInput(f"{run.path}: no cells of poison {unknown[0]!r} "
                           f"(the run has: {', '.join(sorted(str(k) for k in known))})")
        groups = [g for g in groups if g.poison.get("name") in poisons or label(g.poison) in poisons]
    return [build_entry(g, run, catalog=catalog) for g in groups]


def add_run(run: Run, root: Path, *, poisons: list[str] | None = None, catalog=None,
            replace: bool = False) -> list[Path]:
    """Validate every entry of ``run`` and write them under ``root``; nothing is written on a problem."""
    entries = entries_from_run(run, poisons=poisons, catalog=catalog)
    if not entries:
        raise BadInput(f"{run.path}: the run has no finished cells")
    problems, targets = [], []
    for entry in entries:
        where = f"{run.path} [{label(entry['poison'])} / {label(entry['victim'])} / {label(entry['defense'])}]"
        found = validate_entry(entry)
        found = found or consistency_problems(entry)
        problems.extend((where, path, message) for path, message in found)
        target = entry_path(root, entry) if not found else None
        if target is not None and target.exists() and not replace:
            problems.append((where, "$", f"{target} exists (use --replace to overwrite it)"))
        targets.append(target)
    if problems:
        raise EntryInvalid(problems)
    for entry, target in zip(entries, targets, strict=True):
        write_entry(target, entry)
    return targets
