"""``poisonbench import``: convert a poison made elsewhere into a checked poisonbench artifact, once."""

from __future__ import annotations

import json
from pathlib import Path

import click

from poisonbench.errors import BadInput

FORMAT_CHOICES = ("auto", "safetensors", "png", "perturbation", "numpy")
EPILOG = """\b
Examples:
  poisonbench import cu_noise.pt --dataset cifar10 --eps 0.0314 --out cu.safetensors
  poisonbench import poisons/P250/ --dataset cifar10 --format png --eps 0.0314 --out p250.safetensors
  poisonbench import x.npz --dataset image_folder --dataset-param root=photos --out x.safetensors

\b
Formats: safetensors (our artifacts), png (folder of data/<i>.png aligned with the
training set by index), perturbation (torch.save'd float tensor [N|K, C, H, W] in
[-eps, eps], read with torch.load(weights_only=True) only), numpy (.npy/.npz uint8
N×H×W×C, allow_pickle=False). The result passes the same checks as a crafted poison
(count, labels, uint8, measured L∞ against --eps) and records the source's sha256.
"""


@click.command("import", epilog=EPILOG)
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--dataset", "dataset_name", required=True, help="Registered dataset the poison was made on.")
@click.option("--dataset-param", "dataset_params", multiple=True, metavar="KEY=VALUE",
              help="Dataset param (YAML scalar), e.g. root=photos for image_folder; repeatable.")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Stratified subset of N training images (a full-set file is aligned to it).")
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True)
@click.option("--eps", type=click.FloatRange(0, 1), default=None,
              help="Declared L∞ budget as a fraction of the pixel range (8/255 ≈ 0.0314); enforced.")
@click.option("--applied", type=click.Choice(("auto", "class", "sample")), default="auto", show_default=True,
              help="Class- or sample-wise, for perturbation files whose first dimension is ambiguous.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Artifact file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_obj
def import_command(settings, src, dataset_name, dataset_params, subset, fmt, eps, applied, out, as_json):
    """Read SRC (file or PNG folder), check it against DATASET's training set, write --out."""
    from poisonbench.catalog.params import params_to_dict
    from poisonbench.cli.craft import parse_sets
    from poisonbench.crafting import build_manifest, craft_checked, key_material, make_context
    from poisonbench.crafting.artifacts import (
        check_artifact,
        measure_linf,
        read_artifact,
        write_artifact,
    )
    from poisonbench.crafting.cache import cache_key
    from poisonbench.data import prepare_data
    from poisonbench.plugins.file_poison.formats import UserPaths, allowed_paths
    from poisonbench.suite import Component
    from poisonbench.suite.config import DatasetConfig

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
    params = {"path": str(src), "format": fmt, "eps": eps, "applied": applied}
    instance = catalog.poisons.create("file", params)
    # Paths on the command line are the user's own choice: no confinement beyond the filesystem.
    policy = UserPaths(bases=(Path.cwd().resolve(),), roots=(Path(src.anchor),))
    with allowed_paths(policy):
        data = prepare_data(catalog, DatasetConfig(name=dataset_name, train_subset=subset),
                            Component(dataset_name, dparams, params_to_dict(resolved)),
                            data_dir=settings.data_dir)
        ctx = make_context(data=data, seed=0, device="cpu", cache_dir=None, data_dir=settings.data_dir,
                           catalog=catalog, progress=None)
        ctx.extra["dataset_params"] = dparams
        images = craft_checked(instance, data.train, ctx=ctx, who=str(src))
        material = key_material(instance=instance, registry_name="file", data=data, seed=0, ctx=ctx)
    linf, _ = measure_linf(images, data.train.images)
    provider = catalog.poisons.lookup("file")[0].provider
    manifest = build_manifest(instance, registry_name="file", data=data, seed=0, linf=linf,
                              plugin_version=catalog.provider_version(provider), key=cache_key(material))
    write_artifact(out, images=images, labels=data.train.labels, manifest=manifest)
    written = read_artifact(out)
    check_artifact(written, data.train, budget=instance.budget(), threat_model=instance.threat_model,
                   source=str(out), fingerprint=data.fingerprint)
    if as_json:
        click.echo(json.dumps({"path": str(out), "sha256": written.sha256, "manifest": written.manifest}, indent=2))
        return
    source = written.manifest.get("source", {})
    click.echo(f"{out}: {source.get('format')} poison from {src.name} ({source.get('applied')}-wise, "
               f"{len(written)} images), L∞ {linf * 255:.2f}/255, sha256 {written.sha256[:16]}…")
