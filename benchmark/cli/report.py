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
              help='Print {"ranking", "correlation", "correlations", "figures"} as JSON instead of a table.')
@click.option("--figures/--no-figures", default=True, show_default=True,
              help="Write fig1/fig2/fig5 (PNG and SVG) under RUN_DIR/figures/.")
def report_command(run_dir: Path, as_json: bool, figures: bool):
    """Rank the poisons of a run by peak test accuracy (lower = stronger) and draw the figures."""
    from poisonbench.results.report import build_report, group_records, load_run, rank_groups

    run = load_run(run_dir)
    report = build_report(run)
    from poisonbench.results.defense_matrix import build_matrix

    matrix = build_matrix(run.records)
    if len(matrix["defenses"]) > 1:  # a run with training-side defenses: the poison × defense matrix
        report["defense_matrix"] = matrix
    written: list[Path] = []
    if figures and run.records:
        from poisonbench.results.figures import write_figures

        groups = rank_groups(group_records(run.records))
        written = write_figures(groups, run.path / "figures", threshold=run.loss_threshold,
                                corr=report["correlation"], corrs=report["correlations"],
                                speed_epochs=run.speed_epochs, clean_epoch=run.clean_level_epoch)
    if figures and "defense_matrix" in report:
        from poisonbench.results.defense_matrix import write_matrix_figure

        written += write_matrix_figure(report["defense_matrix"], run.path / "figures")
    report["figures"] = [str(p) for p in written]
    if as_json:
        click.echo(json.dumps(report, indent=2, allow_nan=False))
        return
    _print_table(report)
    if "defense_matrix" in report:
        from poisonbench.results.defense_matrix import print_matrix

        print_matrix(report["defense_matrix"])
    if written:
        click.echo(f"figures: {len(written)} files in {written[0].parent}")


def _print_table(report: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from poisonbench.results.report import format_stat, format_threshold

    thr = report["loss_threshold"]
    catalog = _catalog_or_none()
    table = Table(box=box.SIMPLE_HEAD, title=f"{report.get('suite') or report['run_dir']}: ranked by peak test accuracy "
                        "(lower = stronger poison; %, mean ± std (n seeds) when several)")
    rows = report["ranking"]  # one row per poison × victim × defense chain (seeds aggregated)
    extra = [key for key in ("victim", "defense") if len({r[key] for r in rows}) > 1]  # only when several
    columns = ["#", "poison", "kind", "applied", *extra, "peak", "peak epoch", "val-selected", "final",
               "pk−fin", "val−fin", f"epochs to loss<{thr:g}", f"loss 1–{report.get('speed_epochs', 5)}"]
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "poison")
    for rank, row in enumerate(rows, 1):
        m = row["metrics"]
        flag = " [red](diverged)[/red]" if row["diverged"] else ""
        table.add_row(
            str(rank), _poison_cell(row, catalog) + flag, escape(str(row["kind"] or "?")),
            escape(str(row["applied"] or "?")), *(escape(row[key]) for key in extra),
            format_stat(m["peak_test_acc"], percent=True), format_stat(m["peak_epoch"], percent=False),
            format_stat(m.get("val_selected_test_acc") or {}, percent=True),
            format_stat(m["final_test_acc"], percent=True), *_flattery(m), format_threshold(row),
            _loss_stat(m.get("early_loss")))
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(soft_wrap=False, width=max(console.width, 160))
    console.print(table)
    console.print(f"loss 1–{report.get('speed_epochs', 5)}: mean training loss of the first epochs "
                  "(threshold-free learning speed; lower = learned faster). pk−fin, val−fin: points by "
                  "which the final accuracy flatters the poison, against the peak and the "
                  "validation-selected epoch")
    corrs = report.get("correlations") or {"epochs_to_loss_threshold": report["correlation"]}
    for measure, corr in corrs.items():
        name = _measure_name(measure, report)
        if corr["spearman_r"] is None:
            console.print(f"correlation ({name} vs peak): needs ≥ 3 poisons with a value, have {corr['n']}")
        else:
            console.print(f"correlation ({name} vs peak, n = {corr['n']}): "
                          f"Spearman ρ = {corr['spearman_r']:.3f} (p = {corr['spearman_p']:.3g}), "
                          f"Pearson r = {corr['pearson_r']:.3f} (p = {corr['pearson_p']:.3g})")
        left = [e for e in corr.get("excluded", []) if e["reason"] != "baseline, not a poison"]
        for item in left:
            console.print(f"  left out: {escape(item['poison'])} "
                          f"({escape(item['victim'])}, {escape(item['defense'])}): {item['reason']}")


DETAIL_WIDTH = 28  # characters of differing params under a poison's name (all of them: --json)


def _catalog_or_none():
    """The installed catalog, to know each preset's defaults (None if plugins fail: labels still work)."""
    try:
        from poisonbench.catalog import default_catalog

        return default_catalog()
    except Exception:
        return None


def _poison_cell(row: dict, catalog) -> str:
    """The preset name (or the suite's label), and dimmed under it only the params that differ
    from the preset's defaults — never the whole parameter string."""
    from rich.markup import escape

    from poisonbench.results.labels import display, preset_defaults, short_label

    component = {"name": row.get("name") or row["poison"], "params": row.get("params") or {},
                 "label": row.get("label"), "fraction": row.get("fraction")}
    shown = display(component, defaults=preset_defaults(catalog, "poisons", str(component["name"])))
    detail = short_label(shown.detail, DETAIL_WIDTH)  # the poison column never wraps: keep it narrow
    return escape(shown.name) + (f"\n[dim]{escape(detail)}[/dim]" if shown.detail else "")


def _measure_name(measure: str, report: dict) -> str:
    if measure == "early_loss":
        return f"mean training loss of epochs 1–{report.get('speed_epochs', 5)}, threshold-free"
    if measure == "epochs_to_clean_level":
        return f"epochs to the clean run's loss at epoch {report.get('clean_level_epoch')}"
    return f"epochs to loss<{report['loss_threshold']:g}"


def _loss_stat(stat: dict | None) -> str:
    """A mean training loss: ``0.412`` (one seed) or ``0.412 ± 0.010 (3)``."""
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.3f}"
    if stat.get("n", 1) > 1:
        text += (f" ± {stat['std']:.3f}" if stat.get("std") is not None else "") + f" ({stat['n']})"
    return text


def _flattery(metrics: dict) -> list[str]:
    """Percentage points by which the final accuracy flatters the poison (peak−final, val−final)."""
    out = []
    for key in ("peak_minus_final", "val_selected_minus_final"):
        stat = metrics.get(key) or {}
        out.append("–" if stat.get("mean") is None else f"{100 * stat['mean']:+.2f}")
    return out
