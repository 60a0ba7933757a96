"""Attack transferability (the paper's Table 2): how many poison images clean-trained victims misclassify.

Sandoval-Segura et al. (CVPR Workshops 2022, Section 4.2): "attack transferability is measured by computing the fraction of
examples in the poison which are misclassified by the victim network", for ResNet-18, VGG-19,
MobileNet and GoogLeNet trained on clean CIFAR-10 for 200 epochs. ``poisonbench transfer SUITE``
runs it: every suite victim is trained once per seed on the suite's clean training set under the
suite's ``train`` protocol (checkpointed per epoch under ``OUT/checkpoints/``, so a killed run
resumes and a finished one is reused), then every suite poison's artifact is obtained exactly as
``poisonbench run`` obtains it (the cache is shared) and each victim's final model classifies it.

A misclassification is a prediction different from the image's (unchanged) training label, so the
``clean`` row is the victims' training error: the floor a poison's row should be read against.
Results: ``OUT/transfer.json`` (rows per poison × victim × seed, the victims' clean test accuracy,
the resolved suite) and a table on stdout (``--json`` prints the JSON instead).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonbench.results.labels import label

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from poisonbench.api import PreparedData
    from poisonbench.suite import Component, Suite

CHECKPOINT_NAME = "clean_victim.pt"


def transferability(models: Mapping[str, nn.Module] | nn.Module, poisoned_images: torch.Tensor,
                    labels: torch.Tensor, *, mean, std, device: str = "cpu", batch_size: int = 1024,
                    precision: str = "auto", normalize: bool = True) -> dict[str, float] | float:
    """Fraction of ``poisoned_images`` (uint8 N×H×W×C) each model does not classify as ``labels``.

    ``models`` maps names to victims trained on clean data (one bare model gives one float). The
    models see the images the way the trainer feeds them: scaled to [0, 1] and normalised with the
    dataset's ``mean``/``std`` (unless ``normalize`` is False), in eval mode.
    """
    from poisonbench.api import Split
    from poisonbench.training.trainer import predict

    split = Split(images=poisoned_images, labels=labels)
    single = not isinstance(models, Mapping)
    named = {"model": models} if single else dict(models)
    out = {}
    for name, model in named.items():
        predicted = predict(model, split, mean=mean, std=std, device=device, batch_size=batch_size,
                            precision=precision, normalize=normalize)
        out[name] = float((predicted != labels.cpu()).float().mean()) if len(labels) else 0.0
    return out["model"] if single else out


def clean_victim(*, suite: Suite, victim: Component, data: PreparedData, seed: int, catalog, out: Path,
                 device: str, progress=None) -> tuple[nn.Module, dict[str, Any]]:
    """A victim trained on the clean training set under the suite's protocol (resumable)."""
    import torch

    from poisonbench.runner import cell_seed_for
    from poisonbench.training.trainer import train_victim
    from poisonbench.util.files import safe_name

    cell_seed = cell_seed_for(seed)  # the same init and data order as the suite's clean cells
    height, _, channels = data.train.image_shape
    torch.manual_seed(cell_seed)
    model = catalog.victims.create(victim.name, victim.params).build(
        num_classes=data.num_classes, in_channels=channels, image_size=height)
    safe = safe_name(victim.label)
    history = train_victim(model=model, train=data.train, test=data.test, val=None, config=suite.train,
                           mean=data.mean, std=data.std, seed=cell_seed, device=device,
                           checkpoint_path=Path(out) / "checkpoints" / f"{safe}__s{seed}" / CHECKPOINT_NAME,
                           progress=progress)
    model.eval()
    return model, history


def run_transfer(suite: Suite, *, catalog, out: Path, device: str, cache_dir: Path | None,
                 data_dir: Path | None, progress=None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the suite's victims on clean data, measure every poison on each; write OUT/transfer.json."""
    from poisonbench.crafting import obtain_poison
    from poisonbench.data import prepare_data
    from poisonbench.util.files import atomic_write_json

    started = time.time()
    data = prepare_data(catalog, suite.dataset, suite.dataset_component, data_dir=data_dir)
    rows, victims = [], []
    for seed in suite.seeds:
        models = {}
        for victim in suite.victims:
            log(f"training {victim.label} on clean {data.name} ({len(data.train)} images, "
                f"{suite.train.epochs} epochs, seed {seed})")
            model, history = clean_victim(suite=suite, victim=victim, data=data, seed=seed, catalog=catalog,
                                          out=out, device=device, progress=progress)
            models[victim.label] = model
            victims.append({"victim": victim.to_json(), "seed": seed, "epochs": len(history["test_acc"]),
                            "final_test_acc": history["test_acc"][-1] if history["test_acc"] else None})
        for poison in suite.poisons:
            artifact = obtain_poison(catalog=catalog, poison=poison, data=data, seed=seed,
                                     cache_dir=cache_dir, device=device, progress=progress,
                                     data_dir=data_dir)
            fractions = transferability(models, artifact.images, artifact.labels, mean=data.mean,
                                        std=data.std, device=device,
                                        batch_size=suite.train.eval_batch_size,
                                        precision=suite.train.precision, normalize=suite.train.normalize)
            for victim in suite.victims:
                rows.append({"poison": poison.to_json(), "victim": victim.to_json(), "seed": seed,
                             "misclassified": fractions[victim.label], "poison_sha256": artifact.sha256})
    result = {"suite": suite.resolved, "dataset_fingerprint": data.fingerprint, "device": device,
              "victims": victims, "rows": rows, "wall_s": round(time.time() - started, 3)}
    atomic_write_json(Path(out) / "transfer.json", result)
    return result


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Table 2's layout: one row per poison, a column per victim (mean over seeds, %) and the average."""
    victims = list(dict.fromkeys(label(r["victim"]) for r in result["rows"]))
    poisons = list(dict.fromkeys(label(r["poison"]) for r in result["rows"]))
    cells: dict[tuple[str, str], list[float]] = {}
    for row in result["rows"]:
        cells.setdefault((label(row["poison"]), label(row["victim"])), []).append(row["misclassified"])
    body = []
    for poison in poisons:
        means = [statistics.fmean(cells[(poison, v)]) * 100 for v in victims]
        body.append([poison, *(f"{m:.2f}" for m in means), f"{statistics.fmean(means):.2f}"])
    return ["poison", *victims, "avg"], body


