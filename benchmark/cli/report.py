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
    from poisonbench.results.report import build_report, group_records, load_run, rank_groups

    run = load_run(run_dir)
    report = build_report(run)
    written: list[Path] = []
    if figures and run.records:
        from poisonbench.results.figures import write_figures

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


def _merge_defenses(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per training: defenses that share a training differ only in the epoch they select.

    Rows (already ranked) with the same poison, victim, peak and final merge into one whose
    ``selected`` maps each defense label to its selected accuracy; ranking order is kept.
    """
    import json

    merged: dict[str, dict] = {}
    defenses: list[str] = []
    for row in rows:
        m = row["metrics"]
        key = json.dumps([row["poison"], row["victim"], m["peak_test_acc"], m["final_test_acc"]], sort_keys=True)
        target = merged.setdefault(key, {**row, "selected": {}})
        target["selected"][row["defense"]] = m["selected_test_acc"]
        if row["defense"] not in defenses:
            defenses.append(row["defense"])
    return list(merged.values()), defenses


def _defense_header(defense: str) -> str:
    """Short column header: 'early_stopping[select=val]' -> 'selected: val'."""
    if defense.startswith("early_stopping"):
        return "selected: " + ("val" if "select=val" in defense else "test (peak)")
    return f"selected: {defense}"


def _print_table(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from poisonbench.results.report import format_stat, format_threshold, short_label

    thr = report["loss_threshold"]
    table = Table(box=box.SIMPLE_HEAD, title=f"{report.get('suite') or report['run_dir']}: ranked by peak test accuracy "
                        "(lower = stronger poison; %, mean ± std (n seeds) when several)")
    rows, defenses = _merge_defenses(report["ranking"])
    extra = ["victim"] if len({r["victim"] for r in rows}) > 1 else []  # only when there are several
    columns = ["#", "poison", "kind", "applied", *extra, "peak", "peak epoch", "final",
               *(_defense_header(d) for d in defenses if _defense_header(d) != "selected: test (peak)"),
               f"epochs to loss<{thr:g}"]
    shown = [d for d in defenses if _defense_header(d) != "selected: test (peak)"]  # = peak; no column
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "poison")
    for rank, row in enumerate(rows, 1):
        m = row["metrics"]
        flag = " [red](diverged)[/red]" if row["diverged"] else ""
        selected = [format_stat(row["selected"][d], percent=True) if d in row["selected"] else "—" for d in shown]
        table.add_row(
            str(rank), escape(short_label(row["poison"])) + flag, escape(str(row["kind"] or "?")),
            escape(str(row["applied"] or "?")), *(escape(row[key]) for key in extra),
            format_stat(m["peak_test_acc"], percent=True), format_stat(m["peak_epoch"], percent=False),
            format_stat(m["final_test_acc"], percent=True), *selected, format_threshold(row))
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(soft_wrap=False, width=max(console.width, 130))
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
