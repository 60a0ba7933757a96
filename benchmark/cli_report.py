"""``poisonbench report RUN_DIR``: the ranked table, the learning-speed correlation and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import click

EPILOG = """\b
Examples:
  poisonbench report runs/demo
  poisonbench report runs/demo --json | jq '.ranking[0]'
  poisonbench report runs/demo --no-figures
"""


@click.command("report", epilog=EPILOG)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help='Print {"ranking", "correlation", "figures"} as JSON instead of a table.')
@click.option("--figures/--no-figures", default=True, show_default=True,
              help="Write fig1/fig2/fig5 (PNG and SVG) under RUN_DIR/figures/.")
def report_command(run_dir: Path, as_json: bool, figures: bool):
    """Rank the poisons of a run by peak test accuracy (lower = stronger) and draw the figures."""
    from .report import build_report, group_records, load_run, rank_groups

    run = load_run(run_dir)
    report = build_report(run)
    written: list[Path] = []
    if figures and run.records:
        from .figures import write_figures

        groups = rank_groups(group_records(run.records))
        written = write_figures(groups, run.path / "figures", threshold=run.loss_threshold,
                                corr=report["correlation"])
    report["figures"] = [str(p) for p in written]
    if as_json:
        click.echo(json.dumps(report, indent=2, allow_nan=False))
        return
    _print_table(report)
    if written:
        click.echo(f"figures: {len(written)} files in {written[0].parent}")


def _print_table(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .report import format_stat, format_threshold

    thr = report["loss_threshold"]
    table = Table(box=box.SIMPLE_HEAD, title=f"{report.get('suite') or report['run_dir']}: ranked by peak test accuracy "
                        "(lower = stronger poison; %, mean ± std (n))")
    rows = report["ranking"]
    # victim / defense columns only when the run has more than one of them
    extra = [key for key in ("victim", "defense") if len({r[key] for r in rows}) > 1]
    columns = ["#", "poison", "kind", "applied", *extra, "peak", "peak epoch", "final",
               "val-selected", f"epochs to loss<{thr:g}"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        m = row["metrics"]
        flag = " [red](diverged)[/red]" if row["diverged"] else ""
        table.add_row(
            str(row["rank"]), escape(row["poison"]) + flag, escape(str(row["kind"] or "?")),
            escape(str(row["applied"] or "?")), *(escape(row[key]) for key in extra),
            format_stat(m["peak_test_acc"], percent=True), format_stat(m["peak_epoch"], percent=False),
            format_stat(m["final_test_acc"], percent=True),
            format_stat(m["selected_test_acc"], percent=True), format_threshold(row))
    console = Console(soft_wrap=False)
    console.print(table)
    corr = report["correlation"]
    if corr["spearman_r"] is None:
        console.print(f"correlation (epochs to loss<{thr:g} vs peak): needs ≥ 3 poisons that reached "
                      f"the threshold, have {corr['n']}")
    else:
        console.print(f"correlation (epochs to loss<{thr:g} vs peak, n = {corr['n']}): "
                      f"Spearman ρ = {corr['spearman_r']:.3f} (p = {corr['spearman_p']:.3g}), "
                      f"Pearson r = {corr['pearson_r']:.3f} (p = {corr['pearson_p']:.3g})")
    for item in corr.get("excluded", []):
        console.print(f"  left out of the correlation: {escape(item['poison'])} "
                      f"({escape(item['victim'])}, {escape(item['defense'])}): {item['reason']}")
