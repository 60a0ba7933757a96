"""``poisonbench import``: convert a poison made elsewhere into a checked poisonbench artifact, once."""

from __future__ import annotations

import json
from pathlib import Path

import click

from poisonbench.errors import BadInput

EPILOG = """\b
Examples:
  poisonbench import cu_noise.pt --dataset cifar10 --eps 0.0314 --out cu.safetensors
  poisonbench import poisons/P250/ --dataset cifar10 --format png --eps 0.0314 --out p250.safetensors
  poisonbench import x.npz --dataset image_folder --dataset-param root=photos --out x.safetensors

\b
Formats of the built-in `file` poison: safetensors (our artifacts), png (folder of data/<i>.png aligned with the
training set by index), perturbation (torch.save'd float tensor [N|K, C, H, W] in
[-eps, eps], read with torch.load(weights_only=True) only), numpy (.npy/.npz uint8
N×H×W×C, allow_pickle=False). The result passes the same checks as a crafted poison
(count, labels, uint8, measured L∞ against --eps) and records the source's sha256.
--format, --eps and --applied are that poison's params, checked by the registry like a suite's.
"""


@click.command("import", epilog=EPILOG)
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--dataset", "dataset_name", required=True, help="Registered dataset the poison was made on.")
@click.option("--dataset-param", "dataset_params", multiple=True, metavar="KEY=VALUE",
              help="Dataset param (YAML scalar), e.g. root=photos for image_folder; repeatable.")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Stratified subset of N training images (a full-set file is aligned to it).")
@click.option("--format", "fmt", default="auto", show_default=True,
              metavar="auto|safetensors|png|perturbation|numpy", help="Format of SRC (auto: from its name).")
@click.option("--eps", type=click.FloatRange(0, 1), default=None,
              help="Declared L∞ budget as a fraction of the pixel range (8/255 ≈ 0.0314); enforced.")
@click.option("--applied", default="auto", show_default=True, metavar="auto|class|sample",
              help="Class- or sample-wise, for perturbation files whose first dimension is ambiguous.")
@click.option("--poison", "poison_name", default="file", show_default=True, metavar="NAME",
              help="The registered poison that reads SRC (it takes the params path, format, eps, applied).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Artifact file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_obj
def import_command(settings, src, dataset_name, dataset_params, subset, fmt, eps, applied, poison_name, out,
                   as_json):
    """Read SRC (file or PNG folder), check it against DATASET's training set, write --out.

    The same as a suite entry ``{name: file, params: {path: SRC, ...}}`` crafted with seed 0 and no
    cache: the poison comes from the registry and the artifact passes the same checks.
    """
    from poisonbench.catalog.params import params_to_dict
    from poisonbench.cli.craft import parse_sets
    from poisonbench.crafting import obtain_poison
    from poisonbench.crafting.artifacts import read_artifact, write_artifact
    from poisonbench.data import prepare_data
    from poisonbench.suite import Component
    from poisonbench.suite.config import DatasetConfig
    from poisonbench.util.paths import UserPaths, allowed_paths

    catalog = settings.catalog()
    if dataset_name not in catalog.datasets:
        raise BadInput(catalog.datasets.unknown_message(dataset_name))
    dparams = parse_sets(dataset_params)
    resolved, problems = catalog.datasets.check(dataset_name, dparams)
    if problems:
        raise BadInput(f"dataset '{dataset_name}': " + "; ".join(message for _, message in problems))
    src = src.expanduser().resolve()
    if not src.exists():
        raise BadInput(f"{src}: no such file or folder")
    if out.exists() and out.is_dir():
        raise BadInput(f"--out {out}: is a folder")
    # the suite entry {name: POISON, params: {path: SRC, ...}} with the options the user gave
    params = {"path": str(src), **({"format": fmt} if fmt != "auto" else {}),
              **({"eps": eps} if eps is not None else {}),
              **({"applied": applied} if applied != "auto" else {})}
    poison_resolved, problems = catalog.poisons.check(poison_name, params)  # unknown → did you mean
    if problems:
        raise BadInput(f"poison '{poison_name}': " + "; ".join(message for _, message in problems))
    # Paths on the command line are the user's own choice: no confinement beyond the filesystem.
    with allowed_paths(UserPaths.unconfined(anchor=Path(src.anchor))):
        data = prepare_data(catalog, DatasetConfig(name=dataset_name, train_subset=subset),
                            Component(dataset_name, dparams, params_to_dict(resolved)),
                            data_dir=settings.data_dir)
        artifact = obtain_poison(catalog=catalog, data=data, seed=0, cache_dir=None, device="cpu",
                                 poison=Component(poison_name, params, params_to_dict(poison_resolved)),
                                 data_dir=settings.data_dir)
    write_artifact(out, images=artifact.images, labels=artifact.labels, manifest=artifact.manifest)
    written = read_artifact(out)
    linf = float(written.manifest.get("linf") or 0.0)
    if as_json:
        click.echo(json.dumps({"path": str(out), "sha256": written.sha256, "manifest": written.manifest}, indent=2))
        return
    source = written.manifest.get("source", {})
    click.echo(f"{out}: {source.get('format')} poison from {src.name} ({source.get('applied')}-wise, "
               f"{len(written)} images), L∞ {linf * 255:.2f}/255, sha256 {written.sha256[:16]}…")
