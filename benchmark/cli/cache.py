"""``poisonbench cache ls|rm|gc``: inspect and prune the artifact/surrogate cache (--cache-dir)."""

from __future__ import annotations

import datetime
import json

import click

EPILOG = """\b
Examples:
  poisonbench cache ls                 # what is cached, least recently used first
  poisonbench cache ls --json
  poisonbench cache rm 3fa9c1          # one entry, by a unique key prefix (>= 4 characters)
  poisonbench cache gc --days 30       # drop debris and entries unused for 30 days

Entries are content-addressed: the key is the sha256 of everything that determines them (poison
name, class version, resolved params, dataset fingerprint, seed, surrogate recipe). Removing one is
always safe: it is crafted again when needed.
"""


@click.group("cache", epilog=EPILOG)
def cache():
    """List and prune cached poison artifacts and surrogates."""


def _open(settings, *, sweep: bool):
    from poisonbench.crafting.cache import ArtifactCache

    return ArtifactCache(settings.cache_dir, sweep=sweep)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _describe(material: dict) -> str:
    """Short 'what is it' for the table (full key material is in ``ls --json``)."""
    name = material.get("poison") or material.get("victim") or material.get("name") or "?"
    dataset = material.get("dataset")
    dataset = dataset.get("name") if isinstance(dataset, dict) else dataset
    return f"{name} on {dataset or '?'}, seed {material.get('seed')}"


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON objects instead of a table.")
@click.pass_obj
def ls(settings, as_json):
    """List cache entries (least recently used first)."""
    entries = _open(settings, sweep=False).entries()
    if as_json:
        click.echo(json.dumps([e.to_json() for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"cache {settings.cache_dir} is empty")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"cache {settings.cache_dir} ({len(entries)} entries, "
        f"{_size(sum(e.size for e in entries))})"
    )
    for column in ("key", "kind", "what", "size", "created", "last used"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e.key[:12],
            e.kind,
            escape(_describe(e.material)),
            _size(e.size),
            _when(e.created),
            _when(e.last_used),
        )
    Console().print(table)


@cache.command("rm")
@click.argument("keys", nargs=-1, required=True)
@click.pass_obj
def rm(settings, keys):
    """Remove entries by key (a unique prefix of at least 4 characters)."""
    store = _open(settings, sweep=False)
    found = [store.find(key) for key in keys]  # all resolved before anything is removed
    for entry in found:
        store.remove(entry)
        click.echo(f"removed {entry.kind}/{entry.key[:12]} ({_size(entry.size)})")


@cache.command("gc")
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Remove entries not used (crafted or read) for this many days.",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@click.pass_obj
def gc(settings, days, dry_run, as_json):
    """Remove temp files of crashed writes, orphaned metadata and entries unused for --days."""
    report = _open(settings, sweep=False).gc(days=days, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {len(report['expired'])} unused entries, {len(report['debris'])} temp files, "
        f"{len(report['orphans'])} orphaned metadata files"
    )
