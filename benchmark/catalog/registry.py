"""Name → (class, default params) registries with presets, prefixes, fnmatch listing and "did you mean".

A *preset* binds a name to a class plus default params (Table 1's ``R4`` is the ``regions``
class with ``regions: 4``). A *prefix* entry such as ``timm`` answers every name ``timm:<x>``
by passing ``x`` as one param (``arch``). Registering a name twice is an error naming both providers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from poisonbench.catalog.params import check_params, params_schema
from poisonbench.catalog.suggest import did_you_mean, filter_names
from poisonbench.errors import DuplicateName, PluginError, UnknownName


@dataclass(frozen=True)
class Entry:
    """One registered name."""

    name: str
    cls: type
    defaults: Mapping[str, Any] = field(default_factory=dict)
    provider: str = "?"
    description: str = ""
    prefix_param: str | None = None  # for prefix entries: the param that receives the suffix

    @property
    def is_preset(self) -> bool:
        return self.name != getattr(self.cls, "name", None)

    def merged(self, params: Mapping[str, Any] | None, suffix: str | None = None) -> dict[str, Any]:
        merged = dict(self.defaults)
        if self.prefix_param and suffix is not None:
            merged[self.prefix_param] = suffix
        merged.update(params or {})
        return merged

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for ``poisonbench list --json``."""
        cls = self.cls
        out: dict[str, Any] = {
            "name": self.name + (":<" + self.prefix_param + ">" if self.prefix_param else ""),
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "provider": self.provider,
            "description": self.description or first_line(cls.__doc__),
            "version": getattr(cls, "version", 1),
            "preset_of": getattr(cls, "name", None) if self.is_preset else None,
            "defaults": dict(self.defaults),
            "params": params_schema(cls.Params),
        }
        for attr in ("family", "kind", "applied", "threat_model"):
            if hasattr(cls, attr):
                out[attr] = getattr(cls, attr) or getattr(cls, "name", None)
        if hasattr(cls, "defines_loss"):  # a defense: where it acts (preprocess/batch/training/selection)
            out["stage"] = cls.stage if not (cls.stage == "selection" and "transforms_data" in vars(cls)) \
                else "preprocess"
            out.update(rank=cls.rank, defines_loss=cls.defines_loss, deprecated=cls.deprecated or None)
        paper = getattr(cls, "paper", None)  # api.Paper: the publication the plugin implements
        out["paper"] = paper.to_json() if hasattr(paper, "to_json") else None
        if "params" in out:
            for key, value in self.defaults.items():
                if key in out["params"]:
                    out["params"][key] = {**out["params"][key], "default": value}
        return out


def first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


class Registry:
    """The names of one kind of plugin (poison, defense, victim, dataset)."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, Entry] = {}

    # -- registration ---------------------------------------------------------------------
    def add(
        self,
        cls: type,
        name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        description: str = "",
        prefix: str | None = None,
        prefix_param: str = "arch",
        provider: str = "?",
    ) -> Entry:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(f"plugin '{provider}' registered {cls!r} as a {self.kind}, but it is not a {self.base.__name__} subclass")
        if prefix is not None:
            entry = Entry(prefix, cls, dict(params or {}), provider, description, prefix_param)
            if prefix in self._prefixes:
                raise DuplicateName(
                    f"{self.kind} prefix '{prefix}:' is registered by both '{self._prefixes[prefix].provider}' and '{provider}'"
                )
            self._prefixes[prefix] = entry
            return entry
        name = name or getattr(cls, "name", "")
        if not name:
            raise PluginError(f"plugin '{provider}' registered {cls.__name__} without a name")
        if ":" in name:
            raise PluginError(f"plugin '{provider}': {self.kind} name '{name}' may not contain ':'")
        if name in self._entries:
            raise DuplicateName(
                f"{self.kind} '{name}' is registered by both '{self._entries[name].provider}' and '{provider}'"
            )
        _, problems = check_params(cls.Params, params or {})
        if problems:
            raise PluginError(f"plugin '{provider}': preset '{name}': " + "; ".join(m for _, m in problems))
        entry = Entry(name, cls, dict(params or {}), provider, description)
        self._entries[name] = entry
        return entry

    # -- lookup ---------------------------------------------------------------------------
    def lookup(self, name: str) -> tuple[Entry, str | None]:
        """``(entry, suffix)``; suffix is the part after ``prefix:`` for prefix entries."""
        if name in self._entries:
            return self._entries[name], None
        if ":" in name:
            prefix, _, suffix = name.partition(":")
            if prefix in self._prefixes and suffix:
                return self._prefixes[prefix], suffix
        raise UnknownName(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        close = did_you_mean(name, self.names())
        hint = f". Did you mean: {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} '{name}'{hint}"

    def __contains__(self, name: str) -> bool:
        try:
            self.lookup(name)
        except UnknownName:
            return False
        return True

    def names(self, pattern: str | None = None) -> list[str]:
        return filter_names(self._entries, pattern)

    def entries(self, pattern: str | None = None) -> list[Entry]:
        listed = [self._entries[n] for n in self.names(pattern)]
        for prefix, entry in sorted(self._prefixes.items()):
            if filter_names([f"{prefix}:<{entry.prefix_param}>"], pattern):
                listed.append(entry)
        return listed

    def check(self, name: str, params: Mapping[str, Any] | None) -> tuple[Any | None, list[tuple[str | None, str]]]:
        """Resolve and type-check without building: ``(params_instance, problems)``."""
        entry, suffix = self.lookup(name)
        return check_params(entry.cls.Params, entry.merged(params, suffix))

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> Any:
        """An instance of the class behind ``name`` with preset defaults overridden by ``params``."""
        entry, suffix = self.lookup(name)
        instance_params, problems = check_params(entry.cls.Params, entry.merged(params, suffix))
        if problems:
            from poisonbench.errors import BadInput

            raise BadInput(f"{self.kind} '{name}': " + "; ".join(m for _, m in problems))
        obj = entry.cls(instance_params)
        obj.registry_name = name  # which name (preset) the user asked for
        return obj
