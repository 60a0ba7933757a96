"""``poisonbench craft``: craft (or fetch from the cache) one poison artifact into a file."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from poisonbench.errors import BadInput
from poisonbench.util.progress import RunProgress

EPILOG = """\b
Examples:
  poisonbench craft R4 --dataset fashion_mnist --subset 2000 --out r4.safetensors
  poisonbench craft LF3 --dataset cifar10 --seed 1 --set scale=clip --out lf3-clip.safetensors
  poisonbench craft regions --dataset synthetic --set regions=8 --set signed=false \\
      --out r8.safetensors
  poisonbench craft R4 --dataset fashion_mnist --subset 2000 --fraction 0.5 --out r4-half.safetensors

The file is a safetensors artifact (tensors 'images' uint8 N×H×W×C and 'labels' int64, metadata
'manifest' JSON); it is also kept in the cache (--cache-dir), so crafting it again is instant.
"""


def parse_sets(items: tuple[str, ...]) -> dict:
    """``key=value`` pairs, values read as YAML scalars (``8`` int, ``0.03`` float, ``false``)."""
    import yaml

    params: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set '{item}': expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise BadInput(f"--set '{item}': value is not a YAML scalar") from None
        if isinstance(value, dict):
            raise BadInput(f"--set '{item}': value must be a scalar or a list, not a mapping")
        params[key.strip()] = value
    return params


@contextlib.contextmanager
def one_line_warnings():
    """Show Python warnings from plugins as ``warning: message`` on stderr (no source line)."""
    import warnings

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        click.echo(f"warning: {message}", err=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


@click.command("craft", epilog=EPILOG)
@click.argument("poison")
@click.option(
    "--dataset",
    "dataset_name",
    required=True,
    help="Registered dataset name (poisonbench list datasets).",
)
@click.option(
    "--subset",
    type=click.IntRange(min=1),
    default=None,
    help="Stratified subset of N training images.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Crafting seed.")
@click.option(
    "--fraction",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Poison only this share of the training set (seeded, stratified); the rest stays clean.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Poison param (YAML scalar); repeatable.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Artifact file to write.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:1, ... (auto: cuda if available).",
)
@click.option("--no-cache", is_flag=True, help="Craft without reading or writing the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_obj
def craft(settings, poison, dataset_name, subset, seed, fraction, sets, out, device, no_cache, as_json):
    """Craft POISON on a dataset's training set and write the artifact to --out."""
    import tempfile

    from poisonbench.crafting import obtain_poison
    from poisonbench.crafting.artifacts import read_artifact
    from poisonbench.data import prepare_data
    from poisonbench.suite import Component
    from poisonbench.suite.config import DatasetConfig
    from poisonbench.util.files import atomic_write_bytes

    catalog = settings.catalog()
    params = parse_sets(sets)
    resolved, problems = catalog.poisons.check(poison, params)  # unknown name → did you mean
    if problems:
        raise BadInput(f"poison '{poison}': " + "; ".join(message for _, message in problems))
    if dataset_name not in catalog.datasets:
        raise BadInput(catalog.datasets.unknown_message(dataset_name))
    if out.exists() and out.is_dir():
        raise BadInput(f"--out {out}: is a folder")
    from poisonbench.catalog.params import params_to_dict

    component = Component(poison, params, params_to_dict(resolved),
                          fraction=None if fraction is None or fraction >= 1 else fraction)
    data = prepare_data(
        catalog,
        DatasetConfig(name=dataset_name, train_subset=subset),
        Component(dataset_name, {}, {}),
        data_dir=settings.data_dir,
    )
    device = _resolve_device(device)
    with contextlib.ExitStack() as stack:
        cache_dir = settings.cache_dir
        if no_cache:
            cache_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="poisonbench-craft-"))
            )
        progress = stack.enter_context(RunProgress(quiet=as_json)).factory()  # bars on stderr
        stack.enter_context(one_line_warnings())
        artifact = obtain_poison(
            catalog=catalog,
            poison=component,
            data=data,
            seed=seed,
            cache_dir=cache_dir,
            device=device,
            progress=progress,
            data_dir=settings.data_dir,
        )
        atomic_write_bytes(out, Path(artifact.path).read_bytes())
    written = read_artifact(out)
    if as_json:
        click.echo(
            json.dumps(
                {"path": str(out), "sha256": written.sha256, "manifest": written.manifest}, indent=2
            )
        )
        return
    m = written.manifest
    click.echo(
        f"{out}: {m['poison']} on {m['dataset']['name']} "
        f"({len(written)} images, seed {m['seed']}), "
        + (f"{m['poisoned_count']} poisoned ({m['fraction']:.0%}), " if m.get("fraction") else "")
        + f"L∞ {m['linf'] * 255:.2f}/255, " + _norm_text(m.get("norm")) + f"sha256 {written.sha256[:16]}…"
    )


def _norm_text(norm) -> str:
    """The measured norm of an l2 / l0 / filter poison (manifest ``norm``) for the summary line."""
    if not norm:
        return ""
    threat = norm.get("threat_model")
    if threat == "l2":
        return f"L2 max {norm['l2_max']:.3f} (mean/budget {norm.get('l2_mean_ratio', float('nan')):.3f}), "
    if threat == "l0":
        return f"L0 max {norm['l0_max']} px, "
    psnr = norm.get("psnr_db")
    return f"PSNR {psnr:.1f} dB, " if psnr is not None else ""


def _resolve_device(requested: str) -> str:
    try:
        from poisonbench.training.device import resolve_device
    except ImportError:  # the device module is optional for crafting synthetic poisons
        return "cpu" if requested == "auto" else requested
    return resolve_device(requested)
