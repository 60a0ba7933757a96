"""Loads plugins from the ``poisonbench`` entry-point group into a fresh pluggy manager.

Which plugins load:
  * ``--no-plugins`` (or ``POISONBENCH_NO_PLUGINS=1``): only the built-ins shipped in this distribution.
  * ``POISONBENCH_PLUGINS=a,b``: an allow-list of entry-point or distribution names (built-ins always load).
  * ``POISONBENCH_BLOCK_PLUGINS=a,b``: never load these (a built-in can be blocked too).
A plugin that fails to import is recorded in ``failures`` as one line naming it; the others load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

import pluggy

from poisonbench import hookspecs

BUILTIN_DIST = "poisonbench"
GROUP = "poisonbench"


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``poisonbench plugins`` shows it."""

    name: str  # entry-point name
    module: str
    distribution: str
    version: str
    builtin: bool
    status: str  # 'loaded', 'blocked', 'not allowed', 'failed'
    error: str = ""


def _env_list(name: str) -> set[str]:
    return {item.strip() for item in os.environ.get(name, "").split(",") if item.strip()}


def new_manager() -> pluggy.PluginManager:
    """A manager with poisonbench's hookspecs and no plugins (tests register their own)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(*, no_plugins: bool = False, allowed: set[str] | None = None,
                 blocked: set[str] | None = None) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """A fresh manager with the entry-point plugins loaded according to the flags and the env.

    ``allowed``/``blocked`` given (even empty) replace ``POISONBENCH_PLUGINS``/``_BLOCK_PLUGINS``
    and ``POISONBENCH_NO_PLUGINS`` is then ignored too: a Ray worker rebuilds the driver's catalog
    this way, whatever its own node's environment says.
    """
    pm = new_manager()
    infos: list[PluginInfo] = []
    explicit = allowed is not None or blocked is not None
    if not explicit:
        no_plugins = no_plugins or os.environ.get("POISONBENCH_NO_PLUGINS", "") not in ("", "0")
    allowed = _env_list("POISONBENCH_PLUGINS") if allowed is None else set(allowed)
    blocked = _env_list("POISONBENCH_BLOCK_PLUGINS") if blocked is None else set(blocked)
    seen: set[str] = set()
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if (dist, ep.name) in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add((dist, ep.name))
        builtin = dist == BUILTIN_DIST
        base = dict(name=ep.name, module=ep.value, distribution=dist, version=version, builtin=builtin)
        if ep.name in blocked or dist in blocked:
            infos.append(PluginInfo(**base, status="blocked"))
            continue
        if not builtin and (no_plugins or (allowed and ep.name not in allowed and dist not in allowed)):
            infos.append(PluginInfo(**base, status="not allowed"))
            continue
        try:
            module = ep.load()
            pm.register(module, name=f"{dist}:{ep.name}" if not builtin else ep.name)
        except Exception as err:  # a broken plugin must not take the others down
            message = f"plugin '{ep.name}' ({dist} {version}) failed to load: {type(err).__name__}: {err}"
            infos.append(PluginInfo(**base, status="failed", error=message))
            continue
        infos.append(PluginInfo(**base, status="loaded"))
    return pm, infos
