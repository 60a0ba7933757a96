"""CLI commands about what is installed: ``validate``, ``list`` and ``plugins``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from poisonbench.errors import PoisonbenchError, ValidationFailed

KINDS = ("poisons", "defenses", "victims", "datasets")
LIST_COLUMNS = {
    "poisons": ("family", "kind", "applied", "threat_model", "budget", "paper"),
    "defenses": ("stage", "paper"),
    "victims": (),
    "datasets": (),
}


def _warn_failures(catalog) -> None:
    for failure in catalog.failures:
        click.echo(f"warning: {failure}", err=True)


@click.command(epilog="\b\nExamples:\n  poisonbench validate suites/*.yaml")
@click.argument("suites", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("--allow-path", "allow", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Another folder the suites' files (file poisons, image folders) may be read from.")
@click.pass_obj
def validate(settings, suites, allow):
    """Check suite files completely (names, params, types, includes) without running anything.

    Paths in a suite resolve against its folder, then --data-dir, and may not leave those folders
    (or an --allow-path) by '..', an absolute path or a symlink.
    """
    from poisonbench.suite import load_suite
    from poisonbench.util.paths import UserPaths, allowed_paths

    catalog = settings.catalog()
    _warn_failures(catalog)
    problems = []
    for path in suites:
        if Path(path).name.startswith("_"):  # include fragments (suites/_cifar10_base.yaml) are not suites
            click.echo(f"{path}: include fragment, checked through the suites that include it")
            continue
        try:
            with allowed_paths(UserPaths.for_suite(path, data_dir=settings.data_dir, allow=allow)):
                suite = load_suite(path, catalog)
        except ValidationFailed as err:
            problems.extend(err.problems)
            continue
        click.echo(f"{path}: ok ({len(suite.cells())} cells)")
        for note in suite.notes:  # not errors: deprecated aliases, defenses that are the identity here
            click.echo(str(note))
    if problems:
        raise ValidationFailed(problems)


@click.command("list", epilog="\b\nExamples:\n  poisonbench list poisons\n  poisonbench list poisons 'LF*' --json\n  poisonbench list victims 'timm:*'")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON objects instead of a table.")
@click.pass_obj
def list_command(settings, kind, pattern, as_json):
    """List registered poisons, defenses, victims or datasets (fnmatch PATTERN, natural order)."""
    catalog = settings.catalog()
    _warn_failures(catalog)
    registry = catalog.registry(kind)
    entries = [e.describe() for e in registry.entries(pattern)]
    if kind == "datasets":
        for item, entry in zip(entries, registry.entries(pattern), strict=True):
            item.update(_dataset_facts(entry.cls, settings.data_dir))
    if kind == "poisons":
        for item, entry in zip(entries, registry.entries(pattern), strict=True):
            item.update(_poison_budget(registry, entry))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from poisonbench.results.labels import format_value

    console = Console(soft_wrap=False)
    table = Table(title=f"{kind} ({len(entries)})")
    columns = ("name",) + LIST_COLUMNS[kind] + ("defaults",)
    if kind == "datasets":
        columns = ("name", "shape", "classes", "looks in")
    if console.width >= 110:  # narrow terminals: descriptions are in --json
        columns += ("description",)
    for column in columns:
        if column == "description":  # one line each; the full text is in --json
            table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=48)
        elif column in ("name", "family", "kind", "applied", "threat_model", "shape", "classes"):  # never squeeze
            width = max([len(column)] + [len(str(item.get(column) or "")) for item in entries])
            table.add_column(column, no_wrap=True, min_width=width)
        else:
            table.add_column(column, overflow="fold")
    for item in entries:
        row = []
        for column in columns:
            value = item.get({"looks in": "locations"}.get(column, column), "")
            if column == "defaults":  # the project's one value formatter: 8/255, [5,8], true
                value = ", ".join(f"{k}={format_value(v)}" for k, v in item["defaults"].items())
            elif column == "paper":  # "Huang et al., ICLR 2021"; title and URL are in --json
                paper = item.get("paper") or {}
                value = ", ".join(x for x in (paper.get("authors"), f"{paper.get('venue')} {paper.get('year')}")
                                  if x) if paper else ""
            elif isinstance(value, list | tuple):
                joiner = {"shape": "×", "looks in": "\n"}.get(column, ", ")
                value = joiner.join(str(v) for v in value)
            row.append(str(value if value is not None else ""))
        table.add_row(*row)
    console.print(table)


def _poison_budget(registry, entry) -> dict:
    """``budget`` in words (``L2 1.304 at 32×32×3``) and ``budget_value`` at 32×32×3 (threat model's
    units) of a poison with its preset's defaults; empty when it cannot be built without input."""
    try:
        poison = registry.create(entry.name)
        return {"budget": poison.budget_label(), "budget_value": poison.budget_for((32, 32, 3))}
    except Exception:  # describing must never fail the listing (e.g. `file` needs a path)
        return {"budget": "", "budget_value": None}


def _dataset_facts(cls, data_dir) -> dict:
    try:
        locations = [str(p) for p in cls().locations(data_dir)]
    except Exception:  # describing must never fail the listing
        locations = []
    return {"shape": list(cls.image_shape) if cls.image_shape else None, "classes": cls.num_classes,
            "locations": locations}


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def plugins_command(settings, as_json):
    """List plugin packages: where each comes from, its version, and whether it loaded."""
    from dataclasses import asdict

    catalog = settings.catalog()
    infos = [asdict(p) for p in catalog.plugins]
    counts = {}
    for kind in KINDS:
        for entry in catalog.registry(kind).entries():
            counts.setdefault(entry.provider, {}).setdefault(kind, 0)
            counts[entry.provider][kind] += 1
    for info in infos:
        key = info["name"] if info["builtin"] else f"{info['distribution']}:{info['name']}"
        info["registered"] = counts.get(key, {})
    if as_json:
        click.echo(json.dumps({"plugins": infos, "failures": catalog.failures}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="plugins")
    for column in ("name", "distribution", "version", "status", "registered"):
        table.add_column(column)
    for info in infos:
        registered = ", ".join(f"{n} {k}" for k, n in info["registered"].items())
        table.add_row(info["name"], info["distribution"], info["version"], info["status"], registered)
    Console().print(table)
    _warn_failures(catalog)


__all__ = ["validate", "list_command", "plugins_command", "PoisonbenchError"]
