"""Suite files: load (safe YAML + ``include:``), validate everything at once, expand into cells.

Every problem is collected and reported together as ``file:line:col: message`` before any work
starts (``ValidationFailed``, exit code 2). Names are resolved against the catalog's registries and
params are type-checked against each plugin's ``Params`` dataclass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonbench.catalog import Catalog
from poisonbench.catalog.params import check_params, params_to_dict
from poisonbench.catalog.suggest import suggestion_suffix
from poisonbench.errors import Problem, UnknownName, ValidationFailed
from poisonbench.suite.config import DatasetConfig, MetricsConfig, TrainConfig
from poisonbench.suite.includes import display_path, load_with_includes
from poisonbench.suite.yaml_marks import Mark, MarkedDict, MarkedList
from poisonbench.util.files import safe_name

TOP_LEVEL_KEYS = ("suite", "version", "include", "description", "dataset", "victims", "poisons",
                  "defenses", "seeds", "train", "metrics")
DATASET_KEYS = ("name", "params", "train_subset", "test_subset", "val_split", "subset_seed")
REQUIRED = ("suite", "dataset", "victims", "poisons")
MAX_LABEL = 40  # characters of a poison's display `label:`


@dataclass(frozen=True)
class Component:
    """One resolved victim/poison/defense/dataset: its name, user params and fully merged params."""

    name: str
    params: dict[str, Any]  # as written in the suite (JSON-ready)
    resolved: dict[str, Any]  # preset defaults + user params, after type checking
    display: str | None = None  # a poison's `label:` in the suite: shown in tables, never in cell ids
    chain: tuple[Component, ...] = ()  # a stacked defense chain's members, in application order
    # A poison's `fraction:` (0 < f < 1): share of the training set poisoned; None = all of it.
    fraction: float | None = None

    @property
    def label(self) -> str:
        """``name[k=v,...]`` (``@50%`` for a partial poison): the one label rule, ``results.labels.label``."""
        from poisonbench.results.labels import label

        return label(self.to_json())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "params": dict(self.params)}
        if self.chain:
            out["chain"] = [member.to_json() for member in self.chain]
        if self.fraction is not None:  # absent for a whole-set poison: its ids stay as they were
            out["fraction"] = self.fraction
        return out


@dataclass(frozen=True)
class Cell:
    """One unit of work: train ``victim`` on ``poison`` of ``dataset`` under ``defense`` with ``seed``."""

    dataset: Component
    victim: Component
    poison: Component
    defense: Component
    seed: int
    cell_id: str


@dataclass
class Suite:
    name: str
    version: int
    path: Path
    description: str
    dataset: DatasetConfig
    dataset_component: Component
    victims: list[Component]
    poisons: list[Component]
    defenses: list[Component]
    seeds: list[int]
    train: TrainConfig
    metrics: MetricsConfig
    resolved: dict[str, Any] = field(default_factory=dict)  # JSON-ready, for run manifests
    notes: list[Problem] = field(default_factory=list)  # not errors: deprecated aliases, identity defenses

    def cells(self) -> list[Cell]:
        """All cells, poison-major so a poison's cells run together (its artifact stays warm)."""
        cells = []
        for poison in self.poisons:
            for victim in self.victims:
                for defense in self.defenses:
                    for seed in self.seeds:
                        cells.append(Cell(self.dataset_component, victim, poison, defense, seed,
                                          make_cell_id(self, victim, poison, defense, seed)))
        return cells


def make_cell_id(suite: Suite, victim: Component, poison: Component, defense: Component, seed: int) -> str:
    """Readable and unique: ``<poison>__<victim>__<defense>__s<seed>__<hash8>``.

    The hash covers everything that determines the cell's result, so changing the protocol in the
    suite never reuses a stale result on resume.
    """
    material = {"dataset": suite.resolved.get("dataset"), "train": suite.resolved.get("train"),
                "metrics": suite.resolved.get("metrics"), "victim": victim.to_json(),
                "poison": poison.to_json(), "defense": defense.to_json(), "seed": seed}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:8]
    return f"{safe_name(poison.name)}__{safe_name(victim.name)}__{safe_name(defense.name)}__s{seed}__{digest}"


# -- loading ----------------------------------------------------------------------------------

def load_suite(path: str | Path, catalog: Catalog) -> Suite:
    """Load and fully validate a suite; raise ``ValidationFailed`` listing every problem."""
    path = Path(path)
    problems: list[Problem] = []
    data = load_with_includes(path, path.resolve().parent, problems, (path.resolve(),))
    if data is None or problems:
        raise ValidationFailed(problems or [Problem(display_path(path), 1, 1, "empty suite file")])
    suite = _SuiteChecker(data, path, catalog, problems).build()
    if problems:
        raise ValidationFailed(sorted(set(problems), key=lambda p: (p.path, p.line, p.col, p.message)))
    assert suite is not None
    return suite


class _SuiteChecker:
    """Walks the merged mapping once, collecting problems with their marks."""

    def __init__(self, data: MarkedDict, path: Path, catalog: Catalog, problems: list[Problem]):
        from poisonbench.suite.defense_checks import DefenseChecks

        self.data, self.path, self.catalog, self.problems = data, path, catalog, problems
        self.notes: list[Problem] = []
        self.defense_checks = DefenseChecks(self)

    def at(self, container: Any, key: Any) -> Mark:
        if isinstance(container, MarkedDict):
            return container.value_marks.get(key, container.mark)
        if isinstance(container, MarkedList):
            return container.item_marks[key]
        return self.data.mark

    def key_at(self, container: MarkedDict, key: str) -> Mark:
        return container.key_marks.get(key, container.mark)

    def add(self, mark: Mark, message: str) -> None:
        self.problems.append(mark.problem(message))

    def build(self) -> Suite | None:
        d = self.data
        for key in d:
            if key not in TOP_LEVEL_KEYS:
                self.add(self.key_at(d, key), f"unknown key '{key}'{suggestion_suffix(str(key), TOP_LEVEL_KEYS)}")
        for key in REQUIRED:
            if key not in d:
                self.add(d.mark, f"missing required key '{key}'")
        name = d.get("suite")
        if "suite" in d and (not isinstance(name, str) or not name.strip()):
            self.add(self.at(d, "suite"), "suite: expected a non-empty name")
        version = d.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            self.add(self.at(d, "version"), f"version: expected a positive integer, got {version!r}")
        description = d.get("description", "")
        if not isinstance(description, str):
            self.add(self.at(d, "description"), "description: expected text")
        dataset_cfg, dataset_component = self.check_dataset(d.get("dataset"))
        victims = self.check_components("victims", "victims", required=True)
        poisons = self.check_components("poisons", "poisons", required=True)
        defenses = self.check_components("defenses", "defenses", required=False) or (
            [] if "defenses" in d else [self.default_component("defenses", "early_stopping")])
        seeds = self.check_seeds(d.get("seeds", [0]))
        train = self.check_block("train", TrainConfig)
        metrics = self.check_block("metrics", MetricsConfig)
        if dataset_cfg is not None and dataset_cfg.val_split == 0:
            for i, defense in enumerate(defenses):
                if defense.chain:  # a stack of data/training defenses selects nothing
                    continue
                instance = self.catalog.defenses.create(defense.name, defense.params)
                if getattr(instance, "needs_validation", False):
                    mark = self.at(d.get("defenses"), i) if isinstance(d.get("defenses"), MarkedList) else d.mark
                    self.add(mark, f"defense '{defense.label}' selects on a validation split, but dataset.val_split is 0")
        if self.problems:
            return None
        resolved = {
            "suite": name, "version": version, "description": description,
            "dataset": {**params_to_dict(dataset_cfg), "params": dataset_component.params},
            "victims": [c.to_json() for c in victims],
            "poisons": [{**c.to_json(), **({"label": c.display} if c.display else {})} for c in poisons],
            "defenses": [c.to_json() for c in defenses], "seeds": seeds,
            "train": params_to_dict(train), "metrics": params_to_dict(metrics),
        }
        return Suite(name, version, self.path, description, dataset_cfg, dataset_component, victims,
                     poisons, defenses, seeds, train, metrics, resolved, notes=list(self.notes))

    def default_component(self, kind: str, name: str) -> Component:
        params, _ = self.catalog.registry(kind).check(name, {})
        return Component(name, {}, params_to_dict(params))

    def check_dataset(self, raw: Any) -> tuple[DatasetConfig | None, Component | None]:
        mark = self.at(self.data, "dataset")
        if raw is None:
            if "dataset" in self.data:
                self.add(mark, "dataset: expected a name or a mapping with 'name'")
            return None, None
        if isinstance(raw, str):
            raw_map: dict = {"name": raw}
            marks = {}
        elif isinstance(raw, MarkedDict):
            raw_map, marks = raw, raw.value_marks
        else:
            self.add(mark, "dataset: expected a name or a mapping with 'name'")
            return None, None
        config_part = {k: v for k, v in raw_map.items() if k in DATASET_KEYS and k != "params"}
        plugin_params = dict(raw_map.get("params") or {}) if isinstance(raw_map.get("params"), Mapping) else {}
        if "params" in raw_map and not isinstance(raw_map["params"], Mapping):
            self.add(marks.get("params", mark), "dataset.params: expected a mapping")
        extra = {k: v for k, v in raw_map.items() if k not in DATASET_KEYS}
        plugin_params.update(extra)  # flat form: {name: image_folder, root: DIR}
        cfg, problems = check_params(DatasetConfig, config_part)
        for key, message in problems:
            self.add(marks.get(key, mark), f"dataset: {message}")
        name = raw_map.get("name")
        if not isinstance(name, str) or not name:
            self.add(marks.get("name", mark), "dataset: expected 'name' (a registered dataset)")
            return cfg, None
        component = self.resolve("datasets", name, plugin_params, marks.get("name", mark),
                                 lambda key: marks.get(key, mark) if key else mark)
        return cfg, component

    def check_components(self, key: str, kind: str, *, required: bool) -> list[Component]:
        raw = self.data.get(key)
        if raw is None:
            return []
        if not isinstance(raw, MarkedList) or (required and not raw):
            self.add(self.at(self.data, key), f"{key}: expected a non-empty list")
            return []
        components, seen, labels = [], {}, {}
        for i, item in enumerate(raw):
            mark = raw.item_marks[i]
            if kind == "defenses" and isinstance(item, MarkedList):  # a stacked chain (defense_checks)
                component = self.defense_checks.component(item, i, mark)
                ident = json.dumps(component.to_json(), sort_keys=True) if component is not None else None
                if ident in seen:
                    self.add(mark, f"{key}: '{component.label}' is listed twice (first at line {seen[ident].line})")
                elif component is not None:
                    seen[ident] = mark
                    components.append(component)
                continue
            if isinstance(item, str):
                name, params, pmarks = item, {}, {}
            elif isinstance(item, MarkedDict):
                allowed = ("name", "params", "label", "fraction") if kind == "poisons" else ("name", "params")
                for k in item:
                    if k not in allowed:
                        self.add(item.key_marks[k], f"{key}[{i}]: unknown key '{k}' (expected "
                                 + ", ".join(f"'{a}'" for a in allowed) + ")")
                name, params = item.get("name"), item.get("params") or {}
                if not isinstance(name, str):
                    self.add(item.value_marks.get("name", mark), f"{key}[{i}]: expected 'name'")
                    continue
                if not isinstance(params, Mapping):
                    self.add(item.value_marks.get("params", mark), f"{key}[{i}]: params must be a mapping")
                    continue
                pmarks = params.value_marks if isinstance(params, MarkedDict) else {}
                mark = item.value_marks.get("name", mark)
            else:
                self.add(mark, f"{key}[{i}]: expected a name or {{name, params}}, got {type(item).__name__}")
                continue
            param_mark = lambda k, pm=pmarks, m=mark: pm.get(k, m) if k else m  # noqa: E731
            component = self.resolve(kind, name, dict(params), mark, param_mark)
            if component is None:
                continue
            display = item.get("label") if isinstance(item, MarkedDict) else None
            if display is not None:  # a short name for tables and figures (the default is the name)
                if not isinstance(display, str) or not display.strip() or len(display) > MAX_LABEL:
                    self.add(item.value_marks.get("label", mark),
                             f"{key}[{i}]: label must be non-empty text of at most {MAX_LABEL} characters")
                    continue
                if display in labels:
                    self.add(item.value_marks.get("label", mark),
                             f"{key}[{i}]: label '{display}' is already used (line {labels[display].line})")
                    continue
                labels[display] = item.value_marks.get("label", mark)
                component = dataclasses.replace(component, display=display.strip())
            if isinstance(item, MarkedDict) and "fraction" in item:
                fraction = self.check_fraction(item, f"{key}[{i}]", mark)
                if fraction is False:
                    continue
                component = dataclasses.replace(component, fraction=fraction)
            ident = json.dumps(component.to_json(), sort_keys=True)
            if ident in seen:
                self.add(mark, f"{key}: '{component.label}' is listed twice (first at line {seen[ident].line})")
                continue
            seen[ident] = mark
            components.append(component)
        return components

    def check_fraction(self, item: MarkedDict, where: str, mark: Mark) -> float | None | bool:
        """A poison's ``fraction``: a number with 0 < f <= 1 (1 = the whole set, stored as None);
        False after reporting a problem at the value's line and column."""
        value = item["fraction"]
        at = item.value_marks.get("fraction", mark)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(at, f"{where}: fraction must be a number in (0, 1], got {value!r}")
            return False
        if not 0 < float(value) <= 1:
            self.add(at, f"{where}: fraction must be in (0, 1] (the share of the training set "
                         f"poisoned), got {value}")
            return False
        return None if float(value) == 1 else float(value)

    def resolve(self, kind: str, name: str, params: dict, mark: Mark, param_mark) -> Component | None:
        registry = self.catalog.registry(kind)
        try:
            instance_params, problems = registry.check(name, params)
        except UnknownName as err:
            self.add(mark, str(err))
            return None
        singular = registry.kind
        for key, message in problems:
            self.add(param_mark(key), f"{singular} '{name}': {message}")
        if problems:
            return None
        component = Component(name, json.loads(json.dumps(params)), params_to_dict(instance_params))
        instance = registry.create(name, params)
        for key, message in self.reference_problems(instance):
            self.add(param_mark(key), f"{singular} '{name}': {message}")
        if kind == "defenses" and not self.defense_checks.single(instance, name, mark, param_mark):
            return None
        return component

    def reference_problems(self, instance: Any) -> list[tuple[str | None, str]]:
        check = getattr(instance, "check_references", None)
        return list(check(self.catalog)) if check else []

    def check_seeds(self, raw: Any) -> list[int]:
        mark = self.at(self.data, "seeds")
        if isinstance(raw, int) and not isinstance(raw, bool):
            return [raw]
        if not isinstance(raw, list) or not raw:
            self.add(mark, "seeds: expected a non-empty list of integers")
            return []
        seeds = []
        for i, seed in enumerate(raw):
            if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
                self.add(self.at(raw, i), f"seeds[{i}]: expected a non-negative integer, got {seed!r}")
            elif seed in seeds:
                self.add(self.at(raw, i), f"seeds: {seed} is listed twice")
            else:
                seeds.append(seed)
        return seeds

    def check_block(self, key: str, cls: type) -> Any:
        raw = self.data.get(key, {})
        mark = self.at(self.data, key)
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            self.add(mark, f"{key}: expected a mapping")
            return cls()
        value, problems = check_params(cls, raw)
        marks = raw.value_marks if isinstance(raw, MarkedDict) else {}
        for k, message in problems:
            self.add(marks.get(k, mark) if k else mark, f"{key}: {message}")
        return value if value is not None else cls()
