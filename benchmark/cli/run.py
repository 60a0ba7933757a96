"""``poisonbench run``: run a suite into a run directory (resumable), or list its cells with --dry-run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from poisonbench.errors import EXIT_INTERRUPTED, BadInput, Interrupted, PoisonbenchError

EPILOG = """\b
Examples:
  poisonbench run suites/smoke.yaml --out /tmp/smoke     # seconds on a CPU
  poisonbench run suites/paper.yaml --dry-run            # cells, trainings and their cost
  poisonbench run suites/paper.yaml --only 'R*' --only clean
  poisonbench run suites/paper.yaml --executor ray       # one task per training on a Ray cluster
  poisonbench run suites/demo.yaml --json --quiet | jq .metrics.peak_test_acc
\b
Re-running the same command skips finished cells and resumes a partial one from its last epoch.
"""


@click.command("run", epilog=EPILOG)
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory (default: runs/<suite name>).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where cells run: this process, or a Ray cluster (poisonbench[ray]).")
@click.option("--address", default=None, metavar="auto|HOST:PORT",
              help="Ray cluster to join (--executor ray; default: start a local Ray instance).")
@click.option("--gpus-per-cell", type=click.FloatRange(min=0), default=None,
              help="GPUs per Ray task (default: 1 if the cluster has GPUs, else 0 = CPU).")
@click.option("--only", "only", multiple=True, metavar="PATTERN",
              help="Run only cells whose id or poison name matches (fnmatch; repeatable).")
@click.option("--dry-run", is_flag=True, help="List cells, trainings and estimated cost; run nothing.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue a run directory (--no-resume refuses one that holds results).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Training device (default: the suite's train.device, normally auto).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-cell lines (failures still show).")
@click.option("--json", "as_json", is_flag=True, help="Print each finished cell's record as a JSON line.")
@click.option("--allow-path", "allow", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Another folder the suite's files (file poisons, image folders) may be read from.")
@click.pass_context
def run_command(ctx, suite_path, out, executor, address, gpus_per_cell, only, dry_run, resume,
                device, quiet, as_json, allow):
    """Run SUITE: craft each poison once, train every victim, write DIR/cells.jsonl and manifest.json.

    Paths in the suite resolve against its folder, then --data-dir, and may not leave those folders
    (or an --allow-path) by '..', an absolute path or a symlink.
    """
    from poisonbench.runner import plan_run
    from poisonbench.suite import load_suite
    from poisonbench.training.device import resolve_device
    from poisonbench.util.paths import UserPaths, allowed_paths

    settings = ctx.obj
    # for the whole command (validation, data, crafting): paths are the suite's, not the cwd's
    policy = UserPaths.for_suite(suite_path, data_dir=settings.data_dir, allow=allow)
    ctx.with_resource(allowed_paths(policy))
    catalog = settings.catalog()
    for failure in catalog.failures:
        click.echo(f"warning: {failure}", err=True)
    suite = load_suite(suite_path, catalog)
    for note in suite.notes:  # deprecated aliases, identity defenses: the run goes on
        click.echo(str(note), err=True)
    plan = plan_run(suite, catalog=catalog, only=only)
    out = out or Path("runs") / suite.name
    if dry_run:
        _dry_run(plan, suite=suite, catalog=catalog, out=out, data_dir=settings.data_dir, as_json=as_json)
        return
    from poisonbench.executors import execute, get_executor
    from poisonbench.util.progress import RunProgress

    get_executor(executor)  # unknown/uninstalled executor: bad input before any work
    options = {"address": address, "gpus_per_cell": gpus_per_cell} if executor == "ray" else {}
    if executor != "ray" and (address is not None or gpus_per_cell is not None):
        raise BadInput("--address and --gpus-per-cell need --executor ray")
    device_option, device = device, resolve_device(device or suite.train.device)
    emit = (lambda record: click.echo(json.dumps(record))) if as_json else None
    try:
        with RunProgress(quiet=quiet) as progress:
            progress.log(f"suite {suite.name}: {len(plan.cells)} cells, {len(plan.crafts)} poison "
                         f"artifacts, {len(plan.groups)} trainings on {device} -> {out}")
            summary = execute(plan, executor=executor, run_dir=out, catalog=catalog, device=device,
                              data_dir=settings.data_dir, cache_dir=settings.cache_dir,
                              progress=progress, resume=resume, emit_json=emit, argv=sys.argv[1:],
                              executor_options=options)
            progress.log(f"{summary['cells']} cells: {summary['ran']} run, {summary['skipped']} already "
                         f"done -> {Path(out) / 'cells.jsonl'}")
    except Interrupted:
        resume_with = _resume_command(settings, suite_path=suite_path, out=out, only=only,
                                      executor=executor, address=address, device=device_option)
        click.echo(f"interrupted; re-run the same command to resume (finished epochs are kept): "
                   f"{resume_with}", err=True)
        ctx.exit(EXIT_INTERRUPTED)


def _resume_command(settings, *, suite_path: Path, out: Path, only, executor: str, address,
                    device: str | None) -> str:
    """The shell command that continues this run (the options that decide what and where it runs)."""
    import os
    import shlex

    from poisonbench.util.files import default_cache_dir

    words = ["poisonbench"]
    if settings.data_dir is not None and str(settings.data_dir) != os.environ.get("POISONBENCH_DATA_DIR"):
        words += ["--data-dir", str(settings.data_dir)]
    if Path(settings.cache_dir) != default_cache_dir():
        words += ["--cache-dir", str(settings.cache_dir)]
    if settings.no_plugins:
        words.append("--no-plugins")
    words += ["run", str(suite_path), "--out", str(out)]
    for pattern in only:
        words += ["--only", pattern]
    if executor != "local":
        words += ["--executor", executor] + (["--address", address] if address else [])
    return shlex.join(words + (["--device", device] if device else []))


def _dry_run(plan, *, suite, catalog, out: Path, data_dir, as_json: bool) -> None:
    from poisonbench.data import declared_train_size
    from poisonbench.results import finished_cell_ids
    from poisonbench.runner import dataset_from_resolved, prepare_suite_data

    # The dataset plugin's declared split sizes answer without reading a file; else load the data.
    n_train: int | None = declared_train_size(catalog, *dataset_from_resolved(plan.suite_resolved))
    if n_train is None:
        try:
            n_train = len(prepare_suite_data(plan.suite_resolved, catalog=catalog, data_dir=data_dir).train)
        except PoisonbenchError:  # data not there yet: estimate from the suite alone when possible
            n_train = suite.dataset.train_subset
    epochs = suite.train.epochs
    try:
        done = finished_cell_ids(out) if Path(out).exists() else set()
    except PoisonbenchError:
        done = set()
    trainings = []
    for group in plan.groups:
        pending = [c for c in group.cell_ids if c not in done]
        cost = epochs * n_train if n_train is not None else None
        trainings.append({"group_id": group.group_id, "cells": group.cell_ids, "pending": pending,
                          "epochs": epochs, "train_images": n_train, "image_passes": cost})
    todo = [t for t in trainings if t["pending"]]
    total = sum(t["image_passes"] or 0 for t in todo) if n_train is not None else None
    if as_json:
        click.echo(json.dumps({**plan.to_json(), "trainings": trainings, "image_passes": total,
                               "already_done": sorted(done & set(plan.to_json()["cells"]))}, indent=2))
        return
    click.echo(f"suite {suite.name} -> {out}: {len(plan.cells)} cells, {len(plan.crafts)} poison "
               f"artifacts (crafted once each, or read from the cache), {len(plan.groups)} trainings")
    for craft in plan.crafts:
        click.echo(f"  craft  {craft.poison['name']} params={json.dumps(craft.poison['params'])} seed={craft.seed}")
    images = "?" if n_train is None else str(n_train)
    for t in trainings:
        status = "done" if not t["pending"] else f"{epochs} epochs × {images} images"
        shared = f" (shared by {len(t['cells'])} cells)" if len(t["cells"]) > 1 else ""
        click.echo(f"  train  {t['group_id']}: {status}{shared}")
        for cell_id in t["cells"]:
            click.echo(f"           cell {cell_id}{'  [done]' if cell_id in done else ''}")
    estimate = "unknown (dataset not available)" if total is None else f"{total:,} image-passes"
    click.echo(f"estimated training cost: {estimate}; nothing was run.")
