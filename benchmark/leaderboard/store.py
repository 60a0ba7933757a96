"""Leaderboard entries on disk: ``entries/<suite>/<poison>__<victim>__<defense>.json``, and ``add``.

``entries_from_run`` turns a run directory into one entry per (poison, victim, training-side
defense): cells that differ only in a rule that picks an epoch (``early_stopping``, ``none``) read
the same training and become one entry, whose metrics hold all three selections (peak,
val-selected, final), recomputed from each seed's own curves. ``add_run`` validates every entry
(schema and consistency) before writing any, so a run with a NaN accuracy, a missing or a duplicate
seed adds nothing. Files are written atomically and as plain JSON (``allow_nan=False``). Entries
also carry what the board shows without the catalog: short labels (the preset name or the suite's
``label:``, and the params that differ from the preset's defaults), threat model and paper.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from poisonbench.errors import BadInput
from poisonbench.leaderboard.compat import training_defense, upgrade
from poisonbench.leaderboard.schema import (
    CURVES,
    METRICS,
    SCHEMA_VERSION,
    EntryInvalid,
    consistency_problems,
    derive_metrics,
    validate_entry,
)
from poisonbench.results.labels import display, label, paper_of, preset_defaults
from poisonbench.results.report import Group, Run, Stat, group_records
from poisonbench.util.files import atomic_write_bytes, safe_name

ENTRIES = "entries"


def slug(text: str) -> str:
    """A file-name-safe form of ``text``: ``early_stopping[select=val]`` → ``early_stopping@select=val``."""
    text = text[:-1].replace("[", "@", 1) if text.endswith("]") and "[" in text else text
    return safe_name(text, keep="-_.=,@", max_len=80)


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
    atomic_write_bytes(path, dump_entry(entry).encode("utf-8"))


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
    entry = upgrade(entry)  # an older schema is read as the current one
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


def _per_seed(record: dict[str, Any], *, loss_threshold: float) -> dict[str, Any]:
    history = {k: v for k, v in (record.get("history") or {}).items() if k in CURVES}
    if isinstance(history.get("train_loss"), list):
        history["train_loss"] = _finite_or_none(history["train_loss"])
    if history.get("val_acc") is None:
        history.pop("val_acc", None)
    try:  # the three selections from the seed's own curves (one rule for every entry)
        metrics = derive_metrics(history, loss_threshold=loss_threshold)
    except (KeyError, TypeError, ValueError):  # malformed curves: the validator names them
        metrics = dict(record.get("metrics") or {})
    item = {"seed": record.get("seed"), "cell_id": record.get("cell_id"),
            "artifact_sha256": record.get("poison_sha256"), "metrics": metrics,
            "history": history, "wall_s": record.get("wall_s"), "linf": record.get("linf"),
            "diverged": bool(record.get("diverged", False))}
    return item


def _suite_labels(suite: dict[str, Any]) -> dict[str, str]:
    """Canonical poison label → the suite's ``label:`` for it."""
    return {label(p): p["label"] for p in suite.get("poisons") or []
            if isinstance(p, dict) and isinstance(p.get("label"), str)}


def _described(component: dict[str, Any], *, kind: str, catalog, given: str | None = None) -> dict[str, Any]:
    """``component`` plus its short label, differing params and paper (what the board shows)."""
    out = dict(component)
    out["params"] = dict(out.get("params") or {})
    if out.get("chain"):  # a defense chain: each member shown by its own short name
        shown = display(out["chain"])
        out["label"], out["detail"] = shown.name, shown.detail
        return out
    shown = display({**out, "label": given}, defaults=preset_defaults(catalog, kind, str(out.get("name"))))
    out["label"], out["detail"] = shown.name, shown.detail
    paper = paper_of(catalog, kind, str(out.get("name")))
    if paper is not None or kind == "poisons":
        out["paper"] = paper
    return out


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
    per_seed = [_per_seed(r, loss_threshold=run.loss_threshold) for r in group.records]
    summary = {m: Stat.of([item["metrics"].get(m) for item in per_seed]).to_json() for m in METRICS}
    poison = {key: group.poison.get(key) for key in ("name", "params", "family", "kind", "applied")}
    poison["params"] = poison["params"] or {}
    if group.poison.get("fraction") is not None:  # a partial poison: part of the row's key
        poison["fraction"] = group.poison["fraction"]
    poison["plugin"] = _plugin(group, run, catalog)
    poison = _described(poison, kind="poisons", catalog=catalog, given=_suite_labels(suite).get(label(poison)))
    threat = group.poison.get("threat_model") or _threat_model(catalog, poison["name"])
    if threat:
        poison["threat_model"] = threat
    dataset = suite.get("dataset") or {}
    return {
        "schema": SCHEMA_VERSION, "status": "measured",
        "suite": {"name": suite.get("suite"), "version": suite.get("version")},
        "dataset": {"name": dataset.get("name", group.dataset), "params": dataset.get("params") or {}},
        "protocol": {key: suite.get(key) for key in ("dataset", "train", "metrics")},
        "victim": _described(group.victim, kind="victims", catalog=catalog),
        "defense": _described(group.defense, kind="defenses", catalog=catalog), "poison": poison,
        "loss_threshold": run.loss_threshold,
        "seeds": list(suite.get("seeds") or group.seeds),
        "per_seed": per_seed, "summary": summary,
        "versions": run.manifest.get("versions"), "hardware": _hardware(run.manifest),
        "date": _date(run.manifest),
        "source": {"run": run.path.name, "git": run.manifest.get("git") or run.manifest.get("git_hash")},
        "verification": None,
    }


def _threat_model(catalog, name: str) -> str | None:
    if catalog is None or name not in catalog.poisons:
        return None
    entry, _ = catalog.poisons.lookup(name)
    return getattr(entry.cls, "threat_model", None)


def _training_side(record: dict[str, Any]) -> dict[str, Any]:
    """The record's training-side defense: ``none`` when the runner says its chain is empty (a
    selection alias); a defense that is the identity on the data keeps its own row."""
    if "training_chain" in record and not record["training_chain"] and not record.get("defense_identity"):
        return {"name": "none", "params": {}}
    return training_defense(record.get("defense"))


def training_groups(records: list[dict[str, Any]]) -> list[Group]:
    """Groups by (poison, victim, training-side defense), one record per seed (the first): cells that
    differ only in an epoch-selection rule share their training and its curves."""
    folded = [{**record, "defense": _training_side(record), "_rule": label(record.get("defense"))}
              for record in records]
    groups = group_records(folded)
    for group in groups:
        rules: dict[Any, str] = {}  # seed -> the selection rule whose record is kept
        kept = []
        for record in group.records:
            rule = record.pop("_rule")
            if rules.setdefault(record.get("seed"), rule) == rule:  # a true duplicate stays (and fails)
                kept.append(record)
        group.records = kept
    return groups


def entries_from_run(run: Run, *, poisons: list[str] | None = None, catalog=None) -> list[dict[str, Any]]:
    """One entry per (poison, victim, training-side defense), optionally only the named poisons."""
    groups = training_groups(run.records)
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
