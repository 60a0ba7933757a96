"""Reading older leaderboard entries: schema 1 → schema 2, in memory (files are never rewritten here).

Schema 1 keyed an entry by a *selection rule* posing as a defense (``early_stopping[select=test]``,
``early_stopping[select=val]``, ``none``), so one training appeared up to three times. Schema 2 keys
by the training-side defense and makes the selections columns. Upgrading an entry:

- a selection-only defense (``early_stopping``, ``none``) becomes ``none``; any other is kept;
- measured entries: every seed's metrics are recomputed from its own curves (val-selected from
  ``val_acc`` when it was recorded, else null) and the summary from the seeds;
- reported entries (a paper's numbers): peak and final are kept, ``final_flatters_by`` is their
  difference, val-selected stays unknown (null).

Several schema-1 files that upgrade to the same row (one per selection rule) are shown once; the
board keeps the first by file name. ``poisonbench leaderboard migrate`` is not needed: re-adding
the run, or rewriting a file with ``upgrade``'s output, moves it to schema 2 for good.
"""

from __future__ import annotations

import copy
from typing import Any

from poisonbench.leaderboard.schema import METRICS, SCHEMA_VERSION, derive_metrics
from poisonbench.results.labels import label

SELECTION_ONLY = ("early_stopping", "none")  # schema-1 "defenses" that only picked an epoch


def training_defense(defense: Any) -> dict[str, Any]:
    """The training-side part of a cell's defense: ``none`` for a rule that only selects an epoch."""
    if isinstance(defense, list | tuple):
        kept = [training_defense(d) for d in defense]
        kept = [d for d in kept if d["name"] != "none"]
        if not kept:
            return {"name": "none", "params": {}}
        return kept[0] if len(kept) == 1 else {"name": label(kept), "params": {}, "chain": kept}
    if isinstance(defense, str):
        defense = {"name": defense, "params": {}}
    if not isinstance(defense, dict) or defense.get("name") in SELECTION_ONLY or not defense.get("name"):
        return {"name": "none", "params": {}}
    return {"name": defense["name"], "params": dict(defense.get("params") or {}),
            **{k: defense[k] for k in ("label", "detail", "paper", "chain") if k in defense}}


def upgrade(entry: Any) -> Any:
    """``entry`` in the current schema (a copy); anything that is not a schema-1 entry is returned as is."""
    if not isinstance(entry, dict) or entry.get("schema") != 1:
        return entry
    from poisonbench.results.report import Stat

    new = copy.deepcopy(entry)
    new["schema"] = SCHEMA_VERSION
    if isinstance(new.get("defense"), dict | str | list):
        new["defense"] = training_defense(new["defense"])
    if new.get("status") == "reported":
        new["summary"] = _reported_summary(new.get("summary"))
        return new
    per_seed = new.get("per_seed")
    threshold = new.get("loss_threshold")
    if not isinstance(per_seed, list) or not isinstance(threshold, int | float):
        return new  # malformed: the validator names the problem
    for item in per_seed:
        history = item.get("history") if isinstance(item, dict) else None
        try:
            item["metrics"] = derive_metrics(history, loss_threshold=threshold)
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # malformed curves: the validator reports them
    try:
        new["summary"] = {m: Stat.of([item["metrics"].get(m) for item in per_seed]).to_json() for m in METRICS}
    except (KeyError, TypeError, AttributeError):
        pass
    return new


def _reported_summary(old: Any) -> Any:
    if not isinstance(old, dict):
        return old
    blank = {"mean": None, "std": None, "n": None}
    peak = dict(old.get("peak_test_acc") or blank)
    final = dict(old.get("final_test_acc") or blank)
    gap = dict(blank)
    if isinstance(peak.get("mean"), int | float) and isinstance(final.get("mean"), int | float):
        gap["mean"] = round(peak["mean"] - final["mean"], 10)
    return {"peak_test_acc": peak, "peak_epoch": dict(old.get("peak_epoch") or blank),
            "val_selected_test_acc": dict(blank), "val_selected_epoch": dict(blank),
            "final_test_acc": final, "final_flatters_by": gap,
            "epochs_to_loss_threshold": dict(old.get("epochs_to_loss_threshold") or blank)}
