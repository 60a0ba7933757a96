"""``poisonbench leaderboard add|verify|render``: entries from runs, re-verification, Markdown + HTML."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

DIR_OPTION = click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path),
                          default=Path("leaderboard"), show_default=True, envvar="POISONBENCH_LEADERBOARD",
                          help="The leaderboard folder (holds entries/, README.md, index.html).")

EPILOG = """\b
Examples:
  poisonbench leaderboard add runs/demo
  poisonbench leaderboard add runs/paper --poison R4 --poison LF3
  poisonbench leaderboard verify leaderboard/entries/demo/R4__small_cnn__none.json --artifact r4.safetensors
  poisonbench leaderboard render --check
"""


@click.group("leaderboard", epilog=EPILOG)
def leaderboard():
    """Leaderboard entries: add them from a run, verify them by re-training, render the tables."""


@leaderboard.command("add")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--poison", "poisons", multiple=True, help="Only this poison (name or label); repeatable.")
@click.option("--replace", is_flag=True, help="Overwrite existing entries for the same poison × victim × defense.")
@click.option("--json", "as_json", is_flag=True, help="Print the written files as JSON.")
@DIR_OPTION
@click.pass_obj
def add_command(settings, run_dir, poisons, replace, as_json, root):
    """One entry per poison × victim × training-side defense of RUN_DIR, validated before anything
    is written. Cells that differ only in which epoch is kept (the deprecated ``early_stopping`` /
    ``none`` aliases) read one training and become one entry holding peak, val-selected and final.

    Rejected (exit 2, every problem as file + JSON path + message): NaN or out-of-range accuracies,
    seeds of the suite without a finished cell, a seed recorded twice, metrics that disagree with
    their own curves.
    """
    from poisonbench.leaderboard.store import add_run
    from poisonbench.results.report import load_run

    run = load_run(run_dir)
    written = add_run(run, root, poisons=list(poisons) or None, catalog=settings.catalog(), replace=replace)
    if as_json:
        click.echo(json.dumps({"written": [str(p) for p in written]}, indent=2))
        return
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"{len(written)} entr{'y' if len(written) == 1 else 'ies'} added; "
               f"run `poisonbench leaderboard render` to update {root}/README.md and index.html")


@leaderboard.command("verify")
@click.argument("entry", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--artifact", type=click.Path(dir_okay=False, path_type=Path),
              help="The poison artifact (safetensors). Without it the artifact is taken from the cache "
                   "or crafted again, and its sha256 must still match.")
@click.option("--seed", type=int, help="Which seed to re-train (default: the artifact's, else the first).")
@click.option("--tolerance", type=click.FloatRange(min=0), default=None,
              help="Accuracy tolerance in percentage points (default: exact on the entry's machine, "
                   "0.5 elsewhere).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--update", is_flag=True, help="On success, set status 'verified' and record the check.")
@click.option("--json", "as_json", is_flag=True, help="Print what was compared as JSON.")
@click.pass_obj
def verify_command(settings, entry, artifact, seed, tolerance, device, update, as_json):
    """Check ENTRY's artifact hash and numbers, re-train one seed and compare (exit 1 on a mismatch)."""
    from poisonbench.leaderboard.verify import verify_entry

    outcome = verify_entry(entry, catalog=settings.catalog(), artifact_path=artifact, seed=seed,
                           tolerance_pt=tolerance, data_dir=settings.data_dir,
                           cache_dir=settings.cache_dir, device=device, update=update)
    if as_json:
        click.echo(json.dumps({"ok": True, **asdict(outcome)}, indent=2))
        return
    mode = "exact (same machine)" if outcome.same_machine else f"±{outcome.tolerance_pt:g} pt"
    click.echo(f"verified {entry}: seed {outcome.seed}, artifact {outcome.artifact_sha256[:12]}…, "
               f"{mode}, max accuracy difference {outcome.max_abs_diff_pt:.3f} pt"
               + ("; status set to verified" if update else ""))


@leaderboard.command("render")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when README.md or index.html is stale.")
@DIR_OPTION
def render_command(check, root):
    """Render README.md (Markdown) and index.html (sortable, filterable page) from the entries."""
    from poisonbench.errors import PoisonbenchError
    from poisonbench.leaderboard.render import stale_files, write_rendered

    if not (root / "entries").is_dir():
        from poisonbench.errors import BadInput

        raise BadInput(f"{root}: no entries/ folder (is --dir the leaderboard folder?)")
    if check:
        stale = stale_files(root)
        if stale:
            names = ", ".join(str(p) for p in stale)
            raise PoisonbenchError(f"stale: {names}; run `poisonbench leaderboard render`")
        click.echo(f"{root}: README.md and index.html are up to date")
        return
    for path in write_rendered(root):
        click.echo(f"wrote {path}")
