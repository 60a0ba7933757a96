"""Executors run a ``RunPlan``: ``local`` (one process, one device) and ``ray`` (one task per group).

An executor module exposes ``run(plan: RunPlan, ctx: RunContext) -> None``. It must obtain each
craft's artifact with ``runner.craft_for_plan``, train each pending group with
``runner.run_training_group`` (skipping cells in ``ctx.finished``), hand every record to
``ctx.record_finished`` in the driver process, call ``ctx.group_done`` after a group, report a
failing group with ``ctx.fail`` and raise ``errors.Interrupted`` when interrupted.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from poisonbench.errors import BadInput, RunFailed

EXECUTORS = {"local": "poisonbench.executors.local", "ray": "poisonbench.executors.ray_executor"}


def get_executor(name: str) -> ModuleType:
    """The executor module for ``name``; ``BadInput`` when it is unknown or not installed."""
    module_name = EXECUTORS.get(name)
    if module_name is None:
        raise BadInput(f"unknown executor '{name}' (choose from: {', '.join(EXECUTORS)})")
    if importlib.util.find_spec(module_name) is None:
        raise BadInput(f"executor '{name}' is not available: install poisonbench[{name}]")
    return importlib.import_module(module_name)


def execute(plan, *, executor: str, run_dir: Path, catalog, device: str, data_dir: Path | None,
            cache_dir: Path | None, progress, resume: bool = True, emit_json=None,
            argv: list[str] | None = None, executor_options: dict[str, Any] | None = None,
            ) -> dict[str, Any]:
    """Run ``plan`` in ``run_dir`` with the named executor under the run directory's rules.

    Takes the run lock (a second run on the same directory is refused at once), removes temp
    files a killed writer left in the directory, refuses to mix
    suites in one directory, skips cells already in ``cells.jsonl`` (``resume``; with
    ``resume=False`` a directory holding results is refused), writes ``manifest.json`` at the start
    and again with the end time. Returns a summary; raises ``RunFailed`` when a cell failed and
    ``Interrupted`` on SIGINT/SIGTERM.
    """
    from poisonbench.results import (
        build_manifest,
        finished_cell_ids,
        lock_run_dir,
        now_iso,
        read_manifest,
        remove_debris,
        write_manifest,
    )
    from poisonbench.runner import RunContext
    from poisonbench.training.device import describe_device

    module = get_executor(executor)
    run_dir = Path(run_dir)
    lock = lock_run_dir(run_dir)
    try:
        remove_debris(run_dir)  # temp files of a killed run; we hold the lock, so nobody writes now
        previous = read_manifest(run_dir)
        finished = finished_cell_ids(run_dir)
        leftovers = finished or (run_dir / "checkpoints").exists()
        if not resume and (previous or leftovers):
            raise BadInput(f"{run_dir} already holds a run; re-run with --resume to continue it "
                           "or choose another --out")
        name = plan.suite_resolved.get("suite")
        old_name = ((previous or {}).get("suite") or {}).get("suite")
        if previous and old_name != name:
            raise BadInput(f"{run_dir} holds results of suite '{old_name}', not '{name}'; "
                           "choose another --out")
        manifest = build_manifest(suite_resolved=plan.suite_resolved, catalog=catalog,
                                  device=describe_device(device), started=now_iso(),
                                  executor=executor, argv=argv)
        if previous:
            manifest["started"] = previous.get("started", manifest["started"])
            manifest["resumed"] = [*previous.get("resumed", []), now_iso()]
        write_manifest(run_dir, manifest)
        ctx = RunContext(run_dir=run_dir, catalog=catalog, device=device, data_dir=data_dir,
                         cache_dir=cache_dir, progress=progress, emit_json=emit_json,
                         finished={c.cell_id for c in plan.cells} & finished)
        skipped = len(ctx.finished)
        module.run(plan, ctx, **(executor_options or {}))  # e.g. ray: address, gpus_per_cell
        done = sum(c.cell_id in ctx.finished for c in plan.cells)
        if done == len(plan.cells):
            manifest["finished"] = now_iso()
        write_manifest(run_dir, manifest)
        summary = {"run_dir": str(run_dir), "cells": len(plan.cells), "skipped": skipped,
                   "ran": done - skipped, "failed": list(ctx.failures)}
        if ctx.failures:
            raise RunFailed(f"{len(ctx.failures)} training group(s) failed (tracebacks under "
                            f"{run_dir / 'failures'}); re-run to retry them")
        return summary
    finally:
        lock.release()
