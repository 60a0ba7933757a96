"""The one label formatter: canonical labels for ids and files, short labels for people.

- ``label(component)`` — ``name[k=v,...]`` with every param the suite wrote: unique, used to group
  cells, name leaderboard files and match ``--poison``; never shown where space is short.
- ``display(component, defaults=...)`` — what tables, figures, the HTML board and ``report`` show:
  the preset name (or the suite's ``label:`` for that poison) and, as a second line or tooltip,
  only the params that differ from the preset's defaults, with values written the way papers do
  (``8/255`` rather than ``0.03137254901960784``).
- ``short_label(x, width)`` — a display name cut to ``width`` characters (figures, terminals).

A component is a mapping ``{"name", "params"}`` (optionally ``"label"``), a plain name, a list of
components (a defense chain, shown as ``a + b``) or None.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

PIXEL_LEVELS = 255  # values k/255 (budgets, step sizes) are shown as fractions of the pixel range


@dataclass(frozen=True)
class Display:
    """A short name and the params that differ from its defaults (``""`` when none)."""

    name: str
    detail: str = ""

    @property
    def text(self) -> str:
        """One line: ``name (detail)`` — for places that have no second line or tooltip."""
        return f"{self.name} ({self.detail})" if self.detail else self.name

    def __str__(self) -> str:
        return self.name


def label(component: Any) -> str:
    """``name`` or ``name[k=v,...]`` (all params, sorted), the same label suites use for a component."""
    if component is None:
        return "?"
    if isinstance(component, list | tuple):
        return " + ".join(label(c) for c in component) if component else "none"
    if isinstance(component, str):
        return component
    params = component.get("params") or {}
    name = str(component.get("name", "?")) + fraction_suffix(component)
    if not params:
        return name
    return name + "[" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + "]"


def fraction_suffix(component: Any) -> str:
    """``@50%`` for a partial poison (``fraction`` < 1 in its suite entry), else ``""``."""
    fraction = component.get("fraction") if isinstance(component, dict) else None
    if fraction is None or float(fraction) >= 1:
        return ""
    return f"@{100 * float(fraction):g}%"


def format_value(value: Any) -> str:
    """A param value as a reader writes it: ``8/255``, ``0.1``, ``true``, ``[5,8]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        levels = value * PIXEL_LEVELS
        if 0 < abs(value) < 1 and abs(levels - round(levels)) < 1e-6 and round(levels) != 0:
            return f"{round(levels)}/{PIXEL_LEVELS}"
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def differing(params: dict[str, Any] | None, defaults: dict[str, Any] | None) -> dict[str, Any]:
    """The params whose value is not the default (all of them when the defaults are unknown)."""
    params = params or {}
    if defaults is None:
        return dict(params)
    return {k: v for k, v in params.items() if k not in defaults or _normal(defaults[k]) != _normal(v)}


def _normal(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def display(component: Any, *, defaults: dict[str, Any] | None = None) -> Display:
    """The short name and the differing params of ``component`` (see the module docstring).

    ``defaults``: the preset's full default params (``preset_defaults``); None shows every param
    the suite wrote. A ``label`` the suite gave wins over the name.
    """
    if component is None:
        return Display("?")
    if isinstance(component, list | tuple):
        parts = [display(c) for c in component]
        return Display(" + ".join(p.name for p in parts) or "none",
                       "; ".join(f"{p.name}: {p.detail}" for p in parts if p.detail))
    if isinstance(component, str):
        return Display(component)
    name = str(component.get("label") or component.get("name", "?")) + fraction_suffix(component)
    shown = differing(component.get("params"), defaults)
    detail = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(shown.items()))
    return Display(name, detail)


def short_label(component: Any, width: int = 32) -> str:
    """The display name (a text is taken as is), cut to ``width`` characters with an ellipsis."""
    text = component if isinstance(component, str) else display(component).name
    return text if len(text) <= width else text[: width - 1] + "…"


def preset_defaults(catalog: Any, kind: str, name: str) -> dict[str, Any] | None:
    """Every param of registered ``name`` at its preset default, or None when ``name`` is unknown."""
    if catalog is None:
        return None
    try:
        from poisonbench.catalog.params import params_to_dict

        instance_params, problems = catalog.registry(kind).check(name, {})
    except Exception:  # an unknown or broken plugin: show every param instead
        return None
    return None if problems or instance_params is None else params_to_dict(instance_params)


def paper_of(catalog: Any, kind: str, name: str) -> dict[str, Any] | None:
    """The ``Paper`` a registered plugin declares, as JSON (None when unknown or undeclared)."""
    if catalog is None:
        return None
    try:
        entry, _ = catalog.registry(kind).lookup(name)
    except Exception:
        return None
    paper = getattr(entry.cls, "paper", None)
    return paper.to_json() if hasattr(paper, "to_json") else None
