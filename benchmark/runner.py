"""Running a suite: plan it (cells → crafts → training groups), run one training group, build records.

Shared training: a training group is one (victim, poison, seed, training-side defense chain). Cells
whose chains are equal read the same history and train once: ``none`` and the deprecated
``early_stopping`` aliases have the empty chain, a chain's order is the fixed composition order
(``[at8, jpeg10]`` is ``[jpeg10, at8]``), and a defense that is the identity on the dataset
(grayscale on 1-channel images, ``gaussian_blur`` at σ 0.1) is dropped from the chain, so its cell
shares the undefended training (its record says so in ``defense_identity``). Every record carries
peak, val-selected and final accuracy; a selection alias also picks the legacy ``selected_test_acc``.
Every record of a shared group carries the group's id (``train_group``) and training time.

Executors (``executors/local.py``, and a Ray executor) drive the same two functions:
``craft_for_plan`` (one distinct (poison, params, seed) → an artifact, via ``obtain_poison``) and
``run_training_group`` (a pure function of JSON-ready inputs: the resolved suite, a group, paths,
a device) which returns the group's cell records. Writing records, observers and resume bookkeeping
live in ``RunContext`` so every executor behaves the same.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from poisonbench.errors import BadInput
from poisonbench.results import append_record, cell_metrics, now_iso
from poisonbench.suite import Component, Suite
from poisonbench.suite.config import DatasetConfig, MetricsConfig, TrainConfig
from poisonbench.suite.defense_chains import dataset_image_shape, identity_notes, training_chain
from poisonbench.training.device import derive_seed
from poisonbench.util.files import safe_name

CHECKPOINT_NAME = "train.safetensors"


@dataclass(frozen=True)
class CraftJob:
    """One distinct poison artifact to obtain: (poison, params, seed) on the suite's dataset."""

    craft_id: str
    poison: dict[str, Any]  # {"name", "params"}
    seed: int


@dataclass(frozen=True)
class TrainingGroup:
    """Cells that share one training run; ``cells`` is a list of (cell_id, defense) pairs."""

    group_id: str
    craft_id: str
    victim: dict[str, Any]
    poison: dict[str, Any]
    seed: int
    cells: list[tuple[str, dict[str, Any]]]
    transform_defense: dict[str, Any] | None = None  # the cells' defense entry when it changes training
    chain: list[dict[str, Any]] = field(default_factory=list)  # ordered training-side defenses ([] = none)

    @property
    def cell_ids(self) -> list[str]:
        return [cell_id for cell_id, _ in self.cells]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingGroup:
        return cls(**{**data, "cells": [tuple(c) for c in data["cells"]]})


@dataclass
class RunPlan:
    """What a run will do: the selected cells, the distinct crafts and the training groups."""

    suite_resolved: dict[str, Any]
    cells: list[Any]  # suite.Cell
    crafts: list[CraftJob]
    groups: list[TrainingGroup]

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite_resolved.get("suite"), "cells": [c.cell_id for c in self.cells],
                "crafts": [asdict(c) for c in self.crafts], "groups": [g.to_json() for g in self.groups]}


def _digest(material: Any) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:8]


def select_cells(cells: list[Any], only: tuple[str, ...] | list[str]) -> list[Any]:
    """Cells whose cell_id, poison name or poison label matches any fnmatch pattern of ``only``."""
    if not only:
        return list(cells)
    chosen = [c for c in cells if any(fnmatchcase(c.cell_id, p) or fnmatchcase(c.poison.name, p)
                                      or fnmatchcase(c.poison.label, p) for p in only)]
    if not chosen:
        example = cells[0].cell_id if cells else "none"
        raise BadInput(f"--only {' '.join(only)} matched no cell (cell ids look like '{example}')")
    return chosen


def plan_run(suite: Suite, *, catalog, only: tuple[str, ...] | list[str] = ()) -> RunPlan:
    """Expand ``suite`` into cells (filtered by ``only``), distinct crafts and training groups."""
    resolved = suite.resolved
    cells = select_cells(suite.cells(), only)
    crafts: dict[str, CraftJob] = {}
    groups: dict[str, TrainingGroup] = {}
    base = {"dataset": resolved.get("dataset"), "train": resolved.get("train")}
    shape = dataset_image_shape(catalog, (resolved.get("dataset") or {}).get("name"),
                                (resolved.get("dataset") or {}).get("params"))
    for cell in cells:
        poison, victim, defense = cell.poison.to_json(), cell.victim.to_json(), cell.defense.to_json()
        craft_id = f"{safe_name(cell.poison.name)}__s{cell.seed}__{_digest([base['dataset'], poison, cell.seed])}"
        crafts.setdefault(craft_id, CraftJob(craft_id, poison, cell.seed))
        chain = training_chain(defense, catalog)  # selection aliases: []; identity defenses dropped
        identity = identity_notes(chain, catalog, shape)
        chain = [member for member in chain if member["name"] not in identity]
        material = {**base, "victim": victim, "poison": poison, "seed": cell.seed,
                    "defense": (chain[0] if len(chain) == 1 else chain) if chain else None}
        group_id = (f"{safe_name(cell.poison.name)}__{safe_name(cell.victim.name)}__s{cell.seed}"
                    + (f"__{safe_name('+'.join(m['name'] for m in chain))}" if chain else "") + f"__{_digest(material)}")
        if group_id not in groups:
            groups[group_id] = TrainingGroup(group_id, craft_id, victim, poison, cell.seed, [],
                                             defense if chain else None, chain)
        groups[group_id].cells.append((cell.cell_id, defense))
    return RunPlan(resolved, cells, list(crafts.values()), list(groups.values()))


# -- configs from the JSON-ready resolved suite (what a remote worker receives) ---------------

def dataset_from_resolved(resolved: dict[str, Any]) -> tuple[DatasetConfig, Component]:
    raw = dict(resolved["dataset"])
    params = raw.pop("params", {}) or {}
    fields = DatasetConfig.__dataclass_fields__
    config = DatasetConfig(**{k: v for k, v in raw.items() if k in fields})
    return config, Component(raw["name"], dict(params), dict(params))


def train_from_resolved(resolved: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**(resolved.get("train") or {}))


def metrics_from_resolved(resolved: dict[str, Any]) -> MetricsConfig:
    return MetricsConfig(**(resolved.get("metrics") or {}))


def prepare_suite_data(resolved: dict[str, Any], *, catalog, data_dir: Path | None):
    """The suite's PreparedData (dataset, subsets and validation split)."""
    from poisonbench.data import prepare_data

    config, component = dataset_from_resolved(resolved)
    return prepare_data(catalog, config, component, data_dir=data_dir)


def craft_for_plan(craft: CraftJob, *, catalog, data, cache_dir: Path | None, device: str,
                   data_dir: Path | None = None, progress=None):
    """The artifact of one craft job (from the cache, or crafted now)."""
    from poisonbench.crafting import obtain_poison

    poison = Component(craft.poison["name"], dict(craft.poison["params"]), dict(craft.poison["params"]),
                       fraction=craft.poison.get("fraction"))
    return obtain_poison(catalog=catalog, poison=poison, data=data, seed=craft.seed, cache_dir=cache_dir,
                         device=device, progress=progress, data_dir=data_dir)


def cell_seed_for(seed: int) -> int:
    """The training seed of a cell (model init, data order, dropout); 31 bits, derived from ``seed``.

    Derived rather than ``seed`` itself so the model's initialisation is not the same random
    stream a poison crafted with ``seed`` used. All poisons of one seed share it (common random
    numbers: the same init and data order, so differences come from the poison).
    """
    return derive_seed(seed, "victim-training") % (2**31)


def checkpoint_dir(run_dir: Path, group_id: str) -> Path:
    return Path(run_dir) / "checkpoints" / group_id


def run_training_group(*, suite_resolved: dict[str, Any], group: TrainingGroup | dict[str, Any],
                       run_dir: Path, device: str, catalog=None, data=None, artifact=None,
                       artifact_path: str | Path | None = None, data_dir: Path | None = None,
                       skip: set[str] | frozenset[str] = frozenset(), progress=None,
                       should_stop: Callable[[], bool] | None = None,
                       cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Train the group's victim once on its poison (resuming a checkpoint) and return cell records.

    ``data``/``artifact`` may be passed in-process; otherwise they are loaded from ``data_dir`` and
    ``artifact_path``. Cells listed in ``skip`` (already recorded) get no record. The group's
    defense chain runs here: preprocess defenses on the artifact (cached under ``cache_dir``,
    computed in memory without one), batch/training defenses inside ``train_victim``.
    """
    import torch

    from poisonbench.api import DefenseContext, Split
    from poisonbench.catalog import default_catalog
    from poisonbench.training.trainer import train_victim

    group = group if isinstance(group, TrainingGroup) else TrainingGroup.from_json(group)
    catalog = catalog or default_catalog()
    if data is None:
        data = prepare_suite_data(suite_resolved, catalog=catalog, data_dir=data_dir)
    if artifact is None:
        from poisonbench.crafting.artifacts import read_artifact

        artifact = read_artifact(artifact_path)
    if len(artifact) != len(data.train) or not torch.equal(artifact.labels, data.train.labels):
        raise BadInput(f"artifact {artifact.path or group.craft_id} does not match the suite's training set")
    config = train_from_resolved(suite_resolved)
    seed = cell_seed_for(group.seed)
    train = Split(artifact.images, artifact.labels)
    members = group.chain or (training_chain(group.transform_defense, catalog) if group.transform_defense else [])
    chain = defended_chain(catalog, members, data=data)
    ctx = DefenseContext(seed=seed, num_classes=data.num_classes, image_shape=data.train.image_shape,
                         device=device, mean=tuple(data.mean), std=tuple(data.std), progress=progress)
    train = chain.preprocess(train, ctx=ctx, source_sha256=artifact.sha256, fingerprint=data.fingerprint,
                             cache_dir=cache_dir, dataset_name=data.name)
    test, val = chain.eval_split(data.test, ctx=ctx), chain.eval_split(data.val, ctx=ctx)
    victim = catalog.victims.create(group.victim["name"], group.victim["params"])
    height, _, channels = data.train.image_shape
    torch.manual_seed(seed)  # model initialisation
    model = victim.build(num_classes=data.num_classes, in_channels=channels, image_size=height)
    history = train_victim(model=model, train=train, test=test, val=val, config=config,
                           mean=data.mean, std=data.std, seed=seed, device=device,
                           checkpoint_path=checkpoint_dir(run_dir, group.group_id) / CHECKPOINT_NAME,
                           progress=progress, should_stop=should_stop, chain=chain)
    metrics_config = metrics_from_resolved(suite_resolved)
    return [make_record(suite_resolved=suite_resolved, group=group, cell_id=cell_id, defense=defense_json,
                        history=history, artifact=artifact, catalog=catalog, data=data, device=device,
                        cell_seed=seed, loss_threshold=metrics_config.loss_threshold,
                        speed_epochs=metrics_config.speed_epochs)
            for cell_id, defense_json in group.cells if cell_id not in skip]


def defended_chain(catalog, members: list[dict[str, Any]], *, data):
    """The runtime ``Chain`` of ``members``; ``BadInput`` when a defense's params cannot apply to the data.

    ``validate`` already refuses such params for datasets that declare their image shape; this is
    the same check for the others (image folders), made before training starts.
    """
    from poisonbench.training.defended import Chain

    chain = Chain.build(catalog, members, num_classes=data.num_classes)
    shape = tuple(data.train.image_shape)
    for defense in chain.defenses:
        for _, message in defense.check_data(image_shape=shape):
            raise BadInput(f"defense '{getattr(defense, 'registry_name', defense.name)}': {message}")
    return chain


def make_record(*, suite_resolved, group: TrainingGroup, cell_id: str, defense: dict[str, Any],
                history: dict[str, Any], artifact, catalog, data, device: str, cell_seed: int,
                loss_threshold: float, speed_epochs: int = 5) -> dict[str, Any]:
    """One ``cells.jsonl`` record: the documented fields first (docs/formats.md), then extras."""
    curves = {k: v for k, v in history.items() if isinstance(v, list)}
    if defense.get("chain"):  # a stacked chain selects nothing: its legacy selected = final
        selected = len(curves["test_acc"])
    else:
        selector = catalog.defenses.create(defense["name"], defense["params"])
        selected = selector.select_epoch(curves) if curves["test_acc"] else 0
    identity = identity_notes(training_chain(defense, catalog), catalog, tuple(data.train.image_shape))
    manifest = artifact.manifest or {}
    entry, _ = catalog.poisons.lookup(group.poison["name"])
    poison = {**group.poison}
    for key in ("family", "kind", "applied"):
        poison[key] = manifest.get(key) or getattr(entry.cls, key, None) or entry.cls.name
    return {
        "cell_id": cell_id, "dataset": suite_resolved["dataset"]["name"], "victim": dict(group.victim),
        "poison": poison, "defense": dict(defense), "seed": group.seed, "poison_sha256": artifact.sha256,
        "metrics": cell_metrics(curves, selected_epoch=selected, loss_threshold=loss_threshold,
                                speed_epochs=speed_epochs),
        "history": curves, "wall_s": round(float(history.get("wall_s", 0.0)), 3),
        "linf": manifest.get("linf"), "diverged": bool(history.get("diverged", False)),
        "device": device, "cell_seed": cell_seed, "train_group": group.group_id,
        "shared_by": len(group.cells), "epochs": len(curves["test_acc"]),
        "training_chain": [member["name"] for member in group.chain], "defense_identity": identity or None,
        "dataset_fingerprint": data.fingerprint, "finished": now_iso(),
    }


# -- what every executor shares --------------------------------------------------------------

@dataclass
class RunContext:
    """Everything an executor needs besides the plan; ``record_finished`` does the bookkeeping."""

    run_dir: Path
    catalog: Any
    device: str
    data_dir: Path | None
    cache_dir: Path | None
    progress: Any  # progress.RunProgress
    finished: set[str] = field(default_factory=set)
    emit_json: Callable[[dict[str, Any]], None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def record_finished(self, record: dict[str, Any]) -> None:
        """Append the record, notify observers, print it; called once per finished cell."""
        append_record(self.run_dir, record)
        self.finished.add(record["cell_id"])
        notify_observers(self.catalog, record, warn=self.progress.error)
        if self.emit_json is not None:
            self.emit_json(record)
        m = record["metrics"]
        peak = "n/a" if m["peak_test_acc"] is None else f"{m['peak_test_acc']:.4f} @ epoch {m['peak_epoch']}"
        flag = "  DIVERGED" if record.get("diverged") else ""
        chosen = "n/a" if m["selected_test_acc"] is None else f"{m['selected_test_acc']:.4f}"
        self.progress.log(f"done {record['cell_id']}: peak {peak}, selected {chosen}{flag}")

    def fail(self, group: TrainingGroup, err: BaseException) -> None:
        """Record that a group failed: one line on the console, the traceback under DIR/failures/."""
        path = Path(self.run_dir) / "failures" / f"{group.group_id}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(type(err), err, err.__traceback__)))
        line = f"{', '.join(group.cell_ids)}: {type(err).__name__}: {err}"
        self.failures.append(line)
        self.progress.error(f"FAILED {line} (traceback: {path})")  # shown even with --quiet

    def group_done(self, group: TrainingGroup) -> None:
        """Drop the group's checkpoint once every cell of it is recorded."""
        if all(cell_id in self.finished for cell_id in group.cell_ids):
            folder = checkpoint_dir(self.run_dir, group.group_id)
            shutil.rmtree(folder, ignore_errors=True)
            if folder.parent.is_dir() and not any(folder.parent.iterdir()):
                folder.parent.rmdir()


def notify_observers(catalog, record: dict[str, Any], *, warn: Callable[[str], None]) -> None:
    """Call every ``poisonbench_cell_finished`` observer with its own deep copy; report failures by name."""
    hook = catalog.pm.hook.poisonbench_cell_finished
    for impl in hook.get_hookimpls():
        try:
            impl.function(record=copy.deepcopy(record))
        except Exception as err:  # an observer cannot fail the run
            warn(f"warning: observer '{impl.plugin_name}' failed on {record['cell_id']}: "
                 f"{type(err).__name__}: {err}")


@contextmanager
def interrupt_guard(ctx: RunContext) -> Iterator[Callable[[bool], None]]:
    """SIGINT/SIGTERM: during training set ``ctx.stop`` (the trainer stops after its batch); at any
    other time, or on a second signal, raise KeyboardInterrupt at once. Yields ``training(on)``."""
    state = {"training": False}

    def handler(signum, frame):
        if state["training"] and not ctx.stop.is_set():
            ctx.stop.set()
            return
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield lambda on: None
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda on: state.__setitem__("training", on)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
