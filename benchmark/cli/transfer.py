"""``poisonbench transfer``: the paper's Table 2 — poison images misclassified by clean-trained victims."""

from __future__ import annotations

import json
from pathlib import Path

import click

EPILOG = """\b
Examples:
  poisonbench transfer suites/transfer.yaml --out runs/transfer     # Table 2 (GPU: 4 × 200 epochs)
  poisonbench transfer suites/transfer.yaml --json | jq '.rows[] | {poison, misclassified}'
\b
Each suite victim is trained once per seed on the clean training set with the suite's `train`
protocol (checkpointed under OUT/checkpoints/: re-running resumes, or reuses a finished model);
each poison's artifact comes from the shared cache (crafted when missing) and the fraction of its
images each victim misclassifies is written to OUT/transfer.json.
"""


@click.command("transfer", epilog=EPILOG)
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: runs/<suite name>-transfer).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Device (default: the suite's train.device, normally auto).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print transfer.json to stdout instead of a table.")
@click.pass_obj
def transfer_command(settings, suite_path, out, device, quiet, as_json):
    """Measure attack transferability of SUITE's poisons against its victims trained on clean data."""
    from poisonbench.results.transfer import run_transfer, table
    from poisonbench.suite import load_suite
    from poisonbench.training.device import resolve_device
    from poisonbench.util.progress import RunProgress

    catalog = settings.catalog()
    for failure in catalog.failures:
        click.echo(f"warning: {failure}", err=True)
    suite = load_suite(suite_path, catalog)
    out = out or Path("runs") / f"{suite.name}-transfer"
    device = resolve_device(device or suite.train.device)
    with RunProgress(quiet=quiet) as progress:
        result = run_transfer(suite, catalog=catalog, out=out, device=device, cache_dir=settings.cache_dir,
                              data_dir=settings.data_dir, progress=progress.bar, log=progress.log)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    header, rows = table(result)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    click.echo("% of poison images misclassified by victims trained on clean data")
    for row in [header, *rows]:
        click.echo("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in
                             enumerate(zip(row, widths, strict=True))))
    for victim in result["victims"]:
        acc = victim["final_test_acc"]
        acc_text = "n/a" if acc is None else f"{acc * 100:.2f}%"
        click.echo(f"clean test accuracy of {victim['victim']['name']} (seed {victim['seed']}, "
                   f"{victim['epochs']} epochs): {acc_text}")
    click.echo(f"-> {Path(out) / 'transfer.json'}")
