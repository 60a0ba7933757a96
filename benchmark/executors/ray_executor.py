"""The Ray executor: a suite's crafts, then one task per training group, on a Ray cluster.

The same functions and records as the local executor: one crafting task per distinct artifact
(``runner.craft_for_plan``) is submitted first; as each artifact is ready, one training task per
pending group (``runner.run_training_group``, 1 CPU and ``--gpus-per-cell`` GPUs) follows. The
driver puts the prepared dataset in the object store once, appends each returned record to
``cells.jsonl`` and shows the usual progress (worker bars arrive through a tiny relay actor).

Paths: when every node sees the run and cache directories (a probe task per node; one node always
does; ``POISONBENCH_RAY_SHARED_FS=1|0`` forces the answer), artifacts travel as cache paths and
checkpoints live in ``RUN_DIR/checkpoints/``; otherwise artifacts travel through the object store
and checkpoints stay in the worker node's temp directory. Faults: a dead worker's task is retried
(``max_retries``, default 2) and resumes from its last epoch checkpoint; a Python exception fails
its cells as in the local executor; Ctrl-C cancels the tasks and re-running resumes.

Joining a cluster (``--address HOST:PORT`` or ``auto``): recent Ray (2.60 was tested) turns token
authentication on for a head started where a token exists (``~/.ray/auth_token``, made by
``ray get-auth-token --generate`` or by any earlier local ``ray.init()``); a driver on an explicit
address is then refused unless ``RAY_AUTH_MODE=token`` is set and the head's token is available
(``~/.ray/auth_token``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``). A refused connection is
one line naming the likely cause: authentication, a wrong address, or a Ray/Python version that
differs from the head's.

What runs on the workers (the tasks, the progress relay, the path probe) is in ``ray_worker.py``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poisonbench import runner
from poisonbench.errors import BadInput, Interrupted
from poisonbench.training.trainer import INTERRUPTED_MESSAGE
from poisonbench.util.paths import active_paths

INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install 'poisonbench[ray]'"
try:
    import ray
except ImportError:  # the optional extra is missing: bad input (exit 2), not a traceback
    raise BadInput(INSTALL_HINT) from None

from poisonbench.executors import ray_worker  # noqa: E402  (needs ray, checked just above)
from poisonbench.executors.ray_worker import CPUS_PER_TASK  # noqa: E402

MAX_RETRIES = 2  # retries of a task whose worker died (not of Python exceptions)
SHARED_ENV = "POISONBENCH_RAY_SHARED_FS"
PROBE_TIMEOUT_S = 120.0  # a node that cannot answer the shared-path probe by then: not shared
POLL_S = 0.5  # driver loop: wait for results, relay progress, notice Ctrl-C


def run(plan: runner.RunPlan, ctx: runner.RunContext, *, address: str | None = None,
        gpus_per_cell: float | None = None, max_retries: int = MAX_RETRIES) -> None:
    """Run the plan's unfinished groups on Ray (``address``: None starts a local instance)."""
    pending = [g for g in plan.groups if not set(g.cell_ids) <= ctx.finished]
    started, local = connect(address) if pending else (False, False)  # before any live display
    try:
        cells_bar = ctx.progress.bar("cells", len(plan.cells), keep=True)
        cells_bar(sum(c.cell_id in ctx.finished for c in plan.cells))
        if not pending:
            return
        with runner.interrupt_guard(ctx) as training:
            training(True)  # first Ctrl-C: stop gracefully (cancel tasks, keep checkpoints)
            try:
                _Driver(plan, ctx, pending, cells_bar, gpus_per_cell, max_retries, local).run()
            except KeyboardInterrupt:
                raise Interrupted(INTERRUPTED_MESSAGE) from None
    finally:
        if started:
            ray.shutdown()


def connect(address: str | None) -> tuple[bool, bool]:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local instance.

    Returns (we connected, and so disconnect at the end; we started a local instance)."""
    if ray.is_initialized():  # an embedding program (or a test) already connected: use it as is
        return False, False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    options: dict[str, Any] = {"address": address, "configure_logging": False}
    if address == "local":
        options["include_dashboard"] = False  # saves seconds at start; a cluster has its own
    elif "://" not in address and ":" in address:  # HOST:PORT: Ray would retry it for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as err:
            raise BadInput(f"--address {address}: no Ray head answers there ({err})") from None
    captured: list[str] = []  # Ray's own lines while joining (its C++ client retries for ~20 s)
    try:
        with _stderr_into(captured) if address != "local" else contextlib.nullcontext():
            ray.init(**options)
    except (ConnectionError, RuntimeError) as err:  # a version mismatch is a RuntimeError
        if not isinstance(err, ConnectionError) and "Version mismatch" not in str(err):
            _replay(captured)
            raise
        reason = connect_failure(err)
        if reason.startswith("cannot connect"):  # cause unknown: Ray's own lines may tell more
            _replay(captured)
        raise BadInput(f"--address {address}: {reason}") from None
    _replay(captured)
    return True, address == "local"


@contextlib.contextmanager
def _stderr_into(captured: list[str]) -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ client logs) to a temp file while the block runs;
    its text is appended to ``captured`` afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def _replay(captured: list[str]) -> None:
    """Write what ``_stderr_into`` held back to stderr after all (it was not explained away)."""
    text = "".join(captured)
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()


def connect_failure(err: BaseException) -> str:
    """One line naming the likely cause of a refused connection: authentication, version, address."""
    chain, seen = [], err
    while seen is not None:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(chain)
    if "Version mismatch" in text:
        head = re.search(r"started with:\s*Ray: (\S+)\s*Python: (\S+)", text)
        theirs = f"Ray {head.group(1)}, Python {head.group(2)}" if head else "another version"
        return (f"Ray/Python version mismatch: the cluster runs {theirs}, this process Ray "
                f"{ray.__version__}, Python {platform.python_version()}; install the head's "
                "versions here")
    if re.search(r"AuthenticationError|InvalidAuthToken|Unauthenticated", text):
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            return ("the Ray cluster requires token authentication: set RAY_AUTH_MODE=token and "
                    "make the head's token available here (~/.ray/auth_token, RAY_AUTH_TOKEN or "
                    "RAY_AUTH_TOKEN_PATH)")
        return ("the Ray cluster refused this process's authentication token: copy the head's "
                "~/.ray/auth_token here (or set RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)")
    first = (text.strip().splitlines() or [type(err).__name__])[0][:200]
    return (f"cannot connect to a Ray cluster ({first}); check that the address is the head's "
            f"GCS address (`ray status` on the head) and that this machine runs the head's Ray "
            f"version (here {ray.__version__})")


class _Driver:
    """The driver loop: submit crafts, then trainings as their artifacts arrive; record results."""

    def __init__(self, plan: runner.RunPlan, ctx: runner.RunContext,
                 pending: list[runner.TrainingGroup], cells_bar, gpus: float | None,
                 max_retries: int, local: bool):
        self.plan, self.ctx, self.pending, self.cells_bar = plan, ctx, pending, cells_bar
        self.run_dir = Path(ctx.run_dir).resolve()  # workers may start in another directory
        self.cache_dir = Path(ctx.cache_dir).resolve() if ctx.cache_dir is not None else None
        self.data_dir = Path(ctx.data_dir).resolve() if ctx.data_dir is not None else None
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        self.gpus = float(gpus if gpus is not None else (1 if cluster_gpus > 0 else 0))
        if self.gpus > 0 and cluster_gpus == 0 and local:  # nothing will ever run
            raise BadInput(f"--gpus-per-cell {self.gpus:g}: Ray sees no GPU on this machine "
                           "(--gpus-per-cell 0 trains on CPUs)")
        if self.gpus > 0 and cluster_gpus == 0:  # an autoscaling cluster may still add GPU nodes
            ctx.progress.log(f"warning: --gpus-per-cell {self.gpus:g} but the cluster has no GPU "
                             "now; tasks wait until a GPU node joins (0 trains on CPUs)")
        self.device = "cuda" if self.gpus > 0 else "cpu"
        self.options = {"num_cpus": CPUS_PER_TASK, "num_gpus": self.gpus,
                        "max_retries": max_retries}
        self.shared = paths_shared([self.run_dir] + ([self.cache_dir] if self.cache_dir else []))
        self.blocked = tuple(sorted(p.name for p in getattr(ctx.catalog, "plugins", [])
                                    if p.status != "loaded"))
        self.relay = None if ctx.progress.quiet else ray_worker.Relay.remote()
        self.bars: dict[str, list] = {}  # relay key -> [advance, done]
        self.labels = {g.group_id: f"[{i}/{len(pending)}] {g.poison['name']} · "
                                   f"{g.victim['name']} · s{g.seed}"
                       for i, g in enumerate(pending, start=1)}
        self.waiting: dict[Any, tuple[str, Any]] = {}  # ref -> ("craft", craft) | ("train", group)

    def run(self) -> None:
        ctx = self.ctx
        mode = "shared paths" if self.shared else "object store (paths not shared by all nodes)"
        ctx.progress.log(f"ray: {len(self.pending)} trainings, {self.gpus:g} GPU and "
                         f"{CPUS_PER_TASK} CPU each, on {self.device}; artifacts via {mode}")
        data = runner.prepare_suite_data(self.plan.suite_resolved, catalog=ctx.catalog, data_dir=ctx.data_dir)
        for group in self.pending:  # defense params that do not fit the images: one line, nothing run
            runner.defended_chain(ctx.catalog, group.chain, data=data)
        data_ref = ray.put(data)
        self.common = {"data": data_ref, "blocked": self.blocked, "relay": self.relay,
                       "device": self.device, "shared": self.shared}
        # the driver's path policy (the suite's folder, --data-dir, --allow-path) for file poisons
        self.user_paths = active_paths(data_dir=ctx.data_dir).to_json()
        needed = {g.craft_id for g in self.pending}
        self.artifact_refs: dict[str, Any] = {}
        for craft in self.plan.crafts:
            if craft.craft_id in needed:
                status, artifact = ray_worker.craft_task.options(**self.options, num_returns=2).remote(
                    craft=craft, cache_dir=self.cache_dir, data_dir=self.data_dir,
                    user_paths=self.user_paths, **self.common)
                self.waiting[status] = ("craft", craft)
                self.artifact_refs[craft.craft_id] = artifact
        while self.waiting:
            if ctx.should_stop():
                self._stop()
            ready, _ = ray.wait(list(self.waiting), num_returns=1, timeout=POLL_S)
            self._relay_progress()
            for ref in ready:
                kind, item = self.waiting.pop(ref)
                if kind == "craft":
                    self._craft_done(ref, item)
                else:
                    self._train_done(ref, item)
        self._relay_progress()

    def _craft_done(self, ref, craft) -> None:
        groups = [g for g in self.pending if g.craft_id == craft.craft_id]
        try:
            path = ray.get(ref)
        except Exception as err:  # a broken poison fails its cells, not the run
            for group in groups:
                self._fail(group, err)
            return
        artifact = path if path is not None else self.artifact_refs[craft.craft_id]
        for group in groups:
            ref = ray_worker.train_task.options(**self.options).remote(
                suite_resolved=self.plan.suite_resolved, group=group.to_json(),
                run_dir=self.run_dir, artifact=artifact, label=self.labels[group.group_id],
                skip=sorted(self.ctx.finished & set(group.cell_ids)),
                cache_dir=self.cache_dir if self.shared else None, **self.common)
            self.waiting[ref] = ("train", group)

    def _train_done(self, ref, group: runner.TrainingGroup) -> None:
        try:
            result = ray.get(ref)
        except Exception as err:
            self._fail(group, err)
            return
        if result["resumed_epoch"]:
            self.ctx.progress.log(f"{group.group_id}: resumed from its epoch-"
                                  f"{result['resumed_epoch']} checkpoint on {result['host']}")
        for record in result["records"]:
            self.ctx.record_finished(record)
            self.cells_bar(1)
        self.ctx.group_done(group)

    def _fail(self, group: runner.TrainingGroup, err: BaseException) -> None:
        """``ctx.fail`` with the task's own exception; the full remote traceback in the file."""
        cause = getattr(err, "cause", None)  # RayTaskError: the exception the task raised
        if not isinstance(cause, BaseException):  # the worker or node died on every attempt
            first = (str(err).strip().splitlines() or [""])[0]
            cause = RuntimeError(f"{type(err).__name__} on all {self.options['max_retries'] + 1} "
                                 f"attempt(s): {first}")
        self.ctx.fail(group, cause)
        (self.run_dir / "failures" / f"{group.group_id}.txt").write_text(str(err))

    def _stop(self) -> None:
        """Ctrl-C: keep what already finished, cancel the rest (checkpoints stay), raise."""
        trainings = [ref for ref, (kind, _) in self.waiting.items() if kind == "train"]
        if trainings:
            ready, _ = ray.wait(trainings, num_returns=len(trainings), timeout=0)
            for ref in ready:
                self._train_done(ref, self.waiting.pop(ref)[1])
        for ref in self.waiting:
            ray.cancel(ref)
        raise Interrupted(INTERRUPTED_MESSAGE)

    def _relay_progress(self) -> None:
        if self.relay is None:
            return
        try:
            events = ray.get(self.relay.drain.remote(), timeout=10)
        except Exception as err:  # progress is cosmetic: never fail a run over it
            self.ctx.progress.log(f"warning: progress relay lost ({type(err).__name__}); "
                                  "continuing without per-training bars")
            self.relay = None
            return
        for key, description, done, total, fields in events:
            bar = self.bars.get(key)
            if bar is None:
                bar = self.bars[key] = [self.ctx.progress.bar(description, total), 0]
            if bar[0] is None:  # completed (a live bar is gone once complete)
                continue
            delta = done - bar[1]
            if delta > 0 or fields:  # a retry restarts below the mark: wait until it passes it
                bar[0](max(delta, 0), **fields)
                bar[1] = max(bar[1], done)
            if total and bar[1] >= total:
                bar[0] = None


def paths_shared(paths: list[Path]) -> bool:
    """Whether every alive node sees ``paths`` (a probe file each); one node always does."""
    forced = os.environ.get(SHARED_ENV, "")
    if forced in ("0", "1"):
        return forced == "1"
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if nodes == [ray.get_runtime_context().get_node_id()]:
        return True
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probes = []
    try:
        for folder in paths:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".ray-probe-{token}"
            probe.write_text(token)
            probes.append(str(probe))
        refs = [ray_worker.probe_task.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node, soft=False)).remote(probes, token) for node in nodes]
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
        return not late and all(ray.get(ready))
    finally:
        for probe in probes:
            Path(probe).unlink(missing_ok=True)
