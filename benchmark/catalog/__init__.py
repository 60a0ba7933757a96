"""The four registries (poisons, defenses, victims, datasets) filled from a plugin manager's hooks.

Each hook implementation is called on its own with a ``register`` bound to its plugin's name, so
duplicates name both providers. Registrations are applied only if the hook returns normally: a
plugin whose hook raises, or registers something that is not a plugin class, is recorded in
``failures`` (one line naming it) and contributes nothing; the others keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import pluggy

from poisonbench.api import Dataset, Defense, Poison, Victim
from poisonbench.catalog.manager import PluginInfo, load_plugins
from poisonbench.catalog.registry import Registry
from poisonbench.errors import DuplicateName, PluginError

KINDS = {
    "poisons": ("poison", Poison, "poisonbench_register_poisons"),
    "defenses": ("defense", Defense, "poisonbench_register_defenses"),
    "victims": ("victim", Victim, "poisonbench_register_victims"),
    "datasets": ("dataset", Dataset, "poisonbench_register_datasets"),
}


@dataclass
class Catalog:
    """Registries plus the plugin manager they came from and what failed on the way."""

    pm: pluggy.PluginManager
    poisons: Registry
    defenses: Registry
    victims: Registry
    datasets: Registry
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def registry(self, kind: str) -> Registry:
        return getattr(self, kind)

    def provider_version(self, provider: str) -> str:
        """Distribution version behind a provider name (for results and leaderboard entries)."""
        for info in self.plugins:
            if provider in (info.name, f"{info.distribution}:{info.name}"):
                return f"{info.distribution} {info.version}"
        return provider

    @classmethod
    def from_manager(cls, pm: pluggy.PluginManager, plugins: list[PluginInfo] | None = None) -> Catalog:
        registries = {kind: Registry(singular, base) for kind, (singular, base, _) in KINDS.items()}
        failures = [p.error for p in plugins or [] if p.status == "failed"]
        for kind, (_, _, hook_name) in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order
                failure = _call_register_hook(impl, registries[kind])
                if failure:
                    failures.append(failure)
        return cls(pm, **registries, plugins=list(plugins or []), failures=failures)


def _call_register_hook(impl, registry: Registry) -> str | None:
    """Run one plugin's catalog hook; apply its registrations only if all are valid."""
    calls: list[tuple[tuple, dict]] = []

    def register(*args, **kwargs):
        calls.append((args, kwargs))

    try:
        impl.function(register=register)
    except Exception as err:
        return f"plugin '{impl.plugin_name}' failed in {registry.kind} registration: {type(err).__name__}: {err}"
    staged = Registry(registry.kind, registry.base)
    try:
        for args, kwargs in calls:
            staged.add(*args, provider=impl.plugin_name, **kwargs)
    except DuplicateName:
        raise
    except (PluginError, TypeError) as err:
        return f"plugin '{impl.plugin_name}' registered a broken {registry.kind}: {err}"
    for args, kwargs in calls:  # DuplicateName across plugins is an error for everyone
        registry.add(*args, provider=impl.plugin_name, **kwargs)
    return None


@lru_cache(maxsize=4)
def default_catalog(no_plugins: bool = False) -> Catalog:
    """The catalog of installed plugins (cached per process; tests build their own)."""
    pm, infos = load_plugins(no_plugins=no_plugins)
    return Catalog.from_manager(pm, infos)
