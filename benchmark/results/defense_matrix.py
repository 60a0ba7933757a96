"""The poison × defense matrix: peak, val-selected and final accuracy per cell, plus each defense's cost on clean data.

Columns are training-side defenses (a chain is one column, ``a + b``); the selection aliases
``none`` and ``early_stopping`` are all the undefended column ``none``, because selection is not a
defense: every cell reports the oracle ``peak``, the ``val_selected`` epoch (best clean validation
accuracy; null without a validation split) and the ``final`` epoch, each mean ± std over seeds.
Cells that shared one training (aliases, identity defenses) count that training once per seed.
A defense that is the identity on the dataset (grayscale on 1-channel images, σ 0.1 blur) is
marked ``identity`` with its reason: its numbers are the undefended training's.

``clean_cost`` is the matrix's extra row: for every defense, the clean baseline's accuracy under
it minus the clean baseline's undefended accuracy (points, negative = the defense costs accuracy),
for each selection. Without a ``clean`` poison in the run the row is absent.
"""

from __future__ import annotations

from typing import Any

from poisonbench.results.labels import display, label
from poisonbench.results.report import Stat, val_selected_acc

SELECTIONS = ("peak", "val_selected", "final")
UNDEFENDED = "none"
ALIASES = ("none", "early_stopping")  # records written before chains existed carry no training_chain


def defense_column(record: dict[str, Any]) -> str:
    """The matrix column of a record: ``none`` for the undefended training, else the defense label."""
    defense = record.get("defense") or {}
    name = defense.get("name") if isinstance(defense, dict) else str(defense)
    if "training_chain" in record:
        if not record["training_chain"] and not record.get("defense_identity"):
            return UNDEFENDED
    elif name in ALIASES:
        return UNDEFENDED
    if isinstance(defense, dict) and defense.get("chain"):
        return " + ".join(label(member) for member in defense["chain"])
    return label(defense)


def _column_name(record: dict[str, Any]) -> str:
    """What a person reads for the column: ``at8 (steps=3)``, ``jpeg10 + cutout``."""
    column = defense_column(record)
    defense = record.get("defense") or {}
    if column == UNDEFENDED or not isinstance(defense, dict):
        return column
    members = defense.get("chain") or [defense]
    return " + ".join(display(member).text for member in members)


def _selections(record: dict[str, Any]) -> dict[str, float | None]:
    metrics = record.get("metrics") or {}
    return {"peak": metrics.get("peak_test_acc"), "val_selected": val_selected_acc(record),
            "final": metrics.get("final_test_acc")}


def build_matrix(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"poisons", "defenses", "names", "cells", "identity", "clean_cost"}`` (JSON-ready; fractions
    in [0, 1]). Rows and columns are keyed by canonical labels; ``names`` maps each to its short name."""
    poisons: list[str] = []
    defenses: list[str] = []
    seen: dict[tuple[str, str], dict[Any, dict[str, float | None]]] = {}
    identity: dict[str, str] = {}
    names: dict[str, str] = {}  # canonical label -> the short name tables and figures show
    for record in records:
        poison, column = label(record.get("poison")), defense_column(record)
        if poison not in poisons:
            poisons.append(poison)
            names.setdefault(poison, display(record.get("poison")).name)
        if column not in defenses:
            defenses.append(column)
            names.setdefault(column, _column_name(record))
        for reason in (record.get("defense_identity") or {}).values():
            identity[column] = reason
        per_seed = seen.setdefault((poison, column), {})
        per_seed.setdefault((label(record.get("victim")), record.get("seed")), _selections(record))
    if UNDEFENDED in defenses:  # the reference column first
        defenses.remove(UNDEFENDED)
        defenses.insert(0, UNDEFENDED)
    cells: dict[str, dict[str, Any]] = {}
    for (poison, column), per_seed in seen.items():
        values = list(per_seed.values())
        cells.setdefault(poison, {})[column] = {
            key: Stat.of([v[key] for v in values]).to_json() for key in SELECTIONS}
    shown = list(names.values())
    names = {key: (name if shown.count(name) == 1 else key) for key, name in names.items()}  # stay unique
    return {"poisons": poisons, "defenses": defenses, "names": names, "cells": cells, "identity": identity,
            "clean_cost": clean_cost(cells, defenses)}


def clean_cost(cells: dict[str, dict[str, Any]], defenses: list[str]) -> dict[str, dict[str, float | None]] | None:
    """Per defense and selection: clean accuracy under the defense minus undefended clean (points)."""
    clean = cells.get("clean")
    if not clean or UNDEFENDED not in clean:
        return None
    base = clean[UNDEFENDED]
    out = {}
    for column in defenses:
        if column not in clean:
            continue
        out[column] = {key: None if clean[column][key]["mean"] is None or base[key]["mean"] is None
                       else 100.0 * (clean[column][key]["mean"] - base[key]["mean"]) for key in SELECTIONS}
    return out


def matrix_rows(matrix: dict[str, Any]) -> list[list[str]]:
    """Text rows ``[poison, "peak/val/final" per defense]`` in percent, then the clean-cost row."""
    def cell(stats: dict[str, Any] | None) -> str:
        if not stats:
            return "–"
        parts = ["–" if stats[k]["mean"] is None else f"{100 * stats[k]['mean']:.1f}" for k in SELECTIONS]
        spread = [stats[k]["std"] for k in SELECTIONS if stats[k]["std"] is not None]
        return "/".join(parts) + (f" ±{100 * max(spread):.1f}" if spread else "")

    names = matrix.get("names") or {}
    rows = [[names.get(poison, poison)] + [cell(matrix["cells"][poison].get(d)) for d in matrix["defenses"]]
            for poison in matrix["poisons"]]
    cost = matrix.get("clean_cost")
    if cost:
        def delta(column: str) -> str:
            if column not in cost:
                return "–"
            return "/".join("–" if cost[column][k] is None else f"{cost[column][k]:+.1f}" for k in SELECTIONS)
        rows.append(["cost on clean (Δ pts)"] + [delta(d) for d in matrix["defenses"]])
    return rows


def column_header(matrix: dict[str, Any], column: str) -> str:
    """The defense's short name, marked ``(≡ none)`` when it is the identity on this dataset."""
    name = (matrix.get("names") or {}).get(column, column)
    return f"{name} (≡ none)" if column in matrix["identity"] else name


def write_matrix_figure(matrix: dict[str, Any], out_dir) -> list:
    """Heat maps (peak | val-selected | final) of poisons × defenses, the clean-cost row beneath."""
    from pathlib import Path

    import numpy as np

    from poisonbench.results.figures import _new_figure, _save

    poisons, defenses = matrix["poisons"], matrix["defenses"]
    cost = matrix.get("clean_cost") or {}
    width = max(6.0, 3 * (1.2 + 0.55 * len(defenses)))
    fig = _new_figure(width, 2.4 + 0.35 * len(poisons) + (0.6 if cost else 0))
    grid = fig.add_gridspec(2 if cost else 1, 3, height_ratios=[max(1, len(poisons)), 1.3] if cost else [1])
    ticks = [column_header(matrix, d) for d in defenses]
    for j, key in enumerate(SELECTIONS):
        ax = fig.add_subplot(grid[0, j])
        values = np.array([[np.nan if (s := matrix["cells"][p].get(d)) is None or s[key]["mean"] is None
                            else 100 * s[key]["mean"] for d in defenses] for p in poisons])
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for (r, c), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
        ax.set_title({"peak": "peak (oracle)", "val_selected": "val-selected", "final": "final epoch"}[key], fontsize=9)
        shown = [(matrix.get("names") or {}).get(p, p) for p in poisons]
        ax.set_yticks(range(len(poisons)), shown if j == 0 else [""] * len(poisons), fontsize=7)
        ax.set_xticks(range(len(defenses)), [] if cost else ticks, rotation=60, ha="right", fontsize=7)
        if cost:
            low = fig.add_subplot(grid[1, j])
            row = np.array([[np.nan if d not in cost or cost[d][key] is None else cost[d][key] for d in defenses]])
            low.imshow(row, vmin=-20, vmax=20, cmap="RdBu", aspect="auto")
            for c, v in enumerate(row[0]):
                if not np.isnan(v):
                    low.text(c, 0, f"{v:+.0f}", ha="center", va="center", fontsize=7)
            low.set_yticks([0], ["clean cost (pts)"] if j == 0 else [""], fontsize=7)
            low.set_xticks(range(len(defenses)), ticks, rotation=60, ha="right", fontsize=7)
    fig.colorbar(image, ax=fig.axes[:: (2 if cost else 1)], shrink=0.8, label="test accuracy (%)")
    return _save(fig, Path(out_dir), "fig_defense_matrix")


def print_matrix(matrix: dict[str, Any]) -> None:
    """The matrix as a rich table on stdout (``report``'s text output).

    Poisons are rows and defenses columns, the clean cost the last row; with more defenses than
    poisons the table is printed transposed (defenses as rows, the clean cost the last column) so
    it fits a terminal.
    """
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    rows = matrix_rows(matrix)
    headers = ["poison"] + [column_header(matrix, d) for d in matrix["defenses"]]
    if len(matrix["defenses"]) > len(matrix["poisons"]) + 1:
        columns = list(zip(*rows, strict=True))  # columns[0]: poison names (and the cost row's label)
        headers = ["defense", *columns[0]]
        rows = [[column_header(matrix, d), *column] for d, column in zip(matrix["defenses"], columns[1:], strict=True)]
    table = Table(box=box.SIMPLE_HEAD, title="poison × defense: test accuracy % as peak/val-selected/final "
                                             "(± largest std over seeds); cost on clean data in points")
    for header in headers:
        table.add_column(escape(header), no_wrap=True)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=max(console.width, 30 + 20 * len(headers)))
    console.print(table)
    for column, reason in matrix["identity"].items():
        column = (matrix.get("names") or {}).get(column, column)
        console.print(f"≡ none: '{escape(column)}' is the identity on this dataset ({escape(reason)}); "
                      "its cells are the undefended training")
