"""What the Ray executor runs on the workers: crafting and training tasks, progress relay, path probe.

``craft_on_worker`` and ``train_on_worker`` are plain functions (callable and testable without
Ray); ``craft_task`` and ``train_task`` are the same functions as Ray tasks, which the driver in
``ray_executor`` submits. A worker rebuilds the driver's plugin catalog (the installed plugins minus
those the driver did not load) and re-enters the driver's path policy before crafting. Progress
goes to the driver through the ``Relay`` actor, throttled to one message per bar per
``PUSH_EVERY_S`` seconds.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from poisonbench import runner
from poisonbench.util.paths import UserPaths, allowed_paths

CPUS_PER_TASK = 1  # each task asks Ray for one CPU and uses one torch thread
PUSH_EVERY_S = 1.0  # seconds between progress messages of one worker bar


@ray.remote(num_cpus=0)
class Relay:
    """Collects progress messages from workers until the driver drains them."""

    def __init__(self):
        self.events: list[tuple] = []

    def push(self, *event) -> None:
        self.events.append(event)

    def drain(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


@ray.remote
def probe_task(probes: list[str], token: str) -> bool:
    """Whether this node reads ``token`` from every probe file the driver wrote."""
    try:
        return all(Path(p).read_text() == token for p in probes)
    except OSError:
        return False


def craft_on_worker(*, craft, data, cache_dir, data_dir, user_paths, blocked, relay, device, shared):
    """Obtain one artifact; returns (its cache path if shared, else None; the artifact or None)."""
    import torch

    torch.set_num_threads(CPUS_PER_TASK)  # one thread per requested CPU
    if cache_dir is not None and not shared:
        try:  # each node caches in its own --cache-dir; one that cannot crafts uncached
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        except OSError:
            cache_dir = None
    label = f"craft {craft.poison['name']} s{craft.seed}:"
    progress = _progress(relay, craft.craft_id, label)
    with allowed_paths(UserPaths.from_json(user_paths)):
        artifact = runner.craft_for_plan(craft, catalog=_catalog(blocked), data=data,
                                         cache_dir=cache_dir, device=device, data_dir=data_dir,
                                         progress=progress)
    progress.flush()
    if shared and artifact.path is not None:
        return str(artifact.path), None
    return None, artifact


def train_on_worker(*, suite_resolved, group, run_dir, artifact, skip, label, data, blocked, relay,
                    device, shared, cache_dir=None) -> dict[str, Any]:
    """Train one group (resuming its checkpoint); returns its records and where it resumed.

    ``cache_dir`` (set when every node shares the driver's paths) caches preprocess defenses, as
    the local executor does; without it each task preprocesses its training set anew.
    """
    import torch

    from poisonbench.training.checkpoint import peek_state

    torch.set_num_threads(CPUS_PER_TASK)
    group = runner.TrainingGroup.from_json(group)
    # without shared paths the checkpoint stays on this node: a retry here resumes, elsewhere not
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    root = Path(run_dir) if shared else Path(tempfile.gettempdir()) / "poisonbench-ray" / digest
    folder = runner.checkpoint_dir(root, group.group_id)
    resumed = 0
    try:
        resumed = (peek_state(folder / runner.CHECKPOINT_NAME) or {}).get("epoch", 0)
    except Exception:  # a corrupt checkpoint is the trainer's to report, with its own message
        pass
    by_path = isinstance(artifact, str)
    progress = _progress(relay, group.group_id, label)
    records = runner.run_training_group(
        suite_resolved=suite_resolved, group=group, run_dir=root, device=device,
        catalog=_catalog(blocked), data=data, artifact=None if by_path else artifact,
        artifact_path=artifact if by_path else None, skip=set(skip), progress=progress,
        cache_dir=Path(cache_dir) if cache_dir is not None else None)
    progress.flush()
    if not shared:
        shutil.rmtree(folder, ignore_errors=True)
    return {"records": records, "resumed_epoch": resumed, "host": platform.node()}


craft_task = ray.remote(craft_on_worker)
train_task = ray.remote(train_on_worker)


_CATALOGS: dict[tuple[str, ...], Any] = {}


def _catalog(blocked: tuple[str, ...]):
    """The driver's catalog rebuilt here: the installed plugins minus those the driver skipped."""
    if blocked not in _CATALOGS:
        from poisonbench.catalog import Catalog
        from poisonbench.catalog.manager import load_plugins

        # explicit lists: this node's own POISONBENCH_*PLUGINS variables do not apply
        _CATALOGS[blocked] = Catalog.from_manager(*load_plugins(allowed=set(), blocked=set(blocked)))
    return _CATALOGS[blocked]


def _progress(relay, key: str, prefix: str):
    """A progress factory whose bars are relayed to the driver's display.

    A bar's messages are throttled; the one that completes it waits for the next call (the
    trainer's epoch fields follow its last batch) or ``flush()``, because a completed live bar
    is gone from the driver's display and takes no further fields.
    """
    bars: list[dict[str, Any]] = []
    sent: list = []  # the last message's ref, so the task can wait for it before returning

    def push(bar: dict[str, Any], fields: dict[str, Any]) -> None:
        bar["sent"], bar["unsent"] = time.monotonic(), False
        sent[:] = [relay.push.remote(bar["key"], bar["text"], bar["done"], bar["total"], fields)]

    def factory(description: str, total: int):
        bar = {"key": f"{key}/{description}", "text": f"{prefix} {description}", "done": 0,
               "total": total, "sent": 0.0, "unsent": False}
        bars.append(bar)

        def advance(n: int = 1, **fields: Any) -> None:
            bar["done"] += n
            bar["unsent"] = bar["unsent"] or n > 0
            complete = bool(total) and bar["done"] >= total
            if relay is not None and (fields or (not complete and time.monotonic() - bar["sent"]
                                                 >= PUSH_EVERY_S)):
                push(bar, fields)

        return advance

    def flush() -> None:
        """Send what is unsent; wait until the relay holds it (so it precedes the task's result)."""
        if relay is None:
            return
        for bar in bars:
            if bar["unsent"]:
                push(bar, {})
        try:
            ray.get(sent, timeout=10)
        except Exception:  # progress is cosmetic
            pass

    factory.flush = flush
    return factory
