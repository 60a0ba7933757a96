"""Defense chains in suites: the fixed composition order, chain validation and the chain of a cell.

A suite's ``defenses:`` list holds cells' defenses. An item is a defense (``jpeg10``,
``{name: cutout, params: {length: 8}}``) or a *chain*: a YAML list of defenses stacked in one
training (``[jpeg10, at8]``). A chain always runs in the fixed order -- preprocess defenses
(orthogonal projection → bit depth → grayscale → JPEG → blur → median), then batch defenses
(COIN / noise / UEraser → cutout → mixup | cutmix), then the loss (the one loss-defining defense,
or adversarial training) -- whatever order the suite lists them in, so ``[at8, jpeg10]`` and
``[jpeg10, at8]`` are the same cell. Each defense's ``stage`` and ``rank`` give that order.

Refused by ``validate`` (one line each, exit 2): two loss-defining defenses in one chain (mixup,
cutmix, UEraser, adversarial training), the same defense twice, a selection alias (``none``,
``early_stopping``) inside a chain, an empty chain, and params a defense's ``check_data`` rejects
for the dataset's image shape (e.g. a cutout longer than the image). Notes (printed, not errors):
a deprecated alias, and a defense that is the identity on the dataset (``identity_on``:
grayscale on 1-channel images, the APBench-faithful ``gaussian_blur`` with σ 0.1).

Selection is not a defense: every training records the oracle peak, the validation-selected and
the final epoch, so ``none`` (no training-side defense) and the deprecated ``early_stopping`` are
the same training. Torch-free, so ``validate`` stays instant.
"""

from __future__ import annotations

from typing import Any

from poisonbench.defense_base import STAGES  # the order a chain runs in

CHAIN_JOIN = "+"


def stage_of(defense: Any) -> str:
    """The stage a defense acts in; a legacy defense with ``transforms_data`` counts as preprocess."""
    stage = getattr(defense, "stage", "selection")
    if stage == "selection" and defense.transforms_data:
        return "preprocess"
    return stage


def order_key(defense: Any) -> tuple[int, int, str]:
    """Sort key of the fixed composition order: stage, then rank, then registry name."""
    stage = stage_of(defense)
    index = STAGES.index(stage) if stage in STAGES else len(STAGES)
    return index, int(getattr(defense, "rank", 50)), getattr(defense, "registry_name", defense.name)


def chain_problems(members: list[Any]) -> list[str]:
    """Why ``members`` (defense instances of one chain) cannot be stacked; [] when they can."""
    problems = []
    names = [getattr(d, "registry_name", d.name) for d in members]
    selection = [n for d, n in zip(members, names, strict=True) if stage_of(d) == "selection"]
    if selection:
        problems.append(f"'{selection[0]}' only selects an epoch (every training records peak, "
                        "val_selected and final); leave it out of the chain")
    losses = [n for d, n in zip(members, names, strict=True) if getattr(d, "defines_loss", False)]
    if len(losses) > 1:
        problems.append(f"'{losses[0]}' and '{losses[1]}' both define the training loss; a chain may "
                        "hold at most one of mixup, cutmix, ueraser, adversarial_training")
    classes = [type(d).name for d in members]
    twice = sorted({c for c in classes if classes.count(c) > 1})
    if twice:
        problems.append(f"'{twice[0]}' appears twice in one chain")
    return problems


def training_chain(defense_json: dict[str, Any], catalog: Any) -> list[dict[str, Any]]:
    """The ordered training-side defenses (``{"name", "params"}``) of a cell's defense entry.

    A chain entry carries ``chain``; a single defense is a chain of one; a selection alias
    (``none``, ``early_stopping``) is the empty chain.
    """
    members = defense_json.get("chain") or [{"name": defense_json["name"],
                                             "params": defense_json.get("params") or {}}]
    made = [(m, catalog.defenses.create(m["name"], m.get("params") or {})) for m in members]
    kept = [(m, d) for m, d in made if stage_of(d) != "selection"]
    return [{"name": m["name"], "params": dict(m.get("params") or {})}
            for m, _ in sorted(kept, key=lambda pair: order_key(pair[1]))]


def identity_notes(chain: list[dict[str, Any]], catalog: Any,
                   image_shape: tuple[int, int, int] | None) -> dict[str, str]:
    """``{defense name: reason}`` for members that leave images of ``image_shape`` unchanged."""
    if image_shape is None:
        return {}
    notes = {}
    for member in chain:
        defense = catalog.defenses.create(member["name"], member.get("params") or {})
        reason = defense.identity_on(image_shape=tuple(image_shape))
        if reason:
            notes[member["name"]] = reason
    return notes


def dataset_image_shape(catalog: Any, name: str | None,
                        params: dict[str, Any] | None = None) -> tuple[int, int, int] | None:
    """The (H, W, C) a dataset plugin declares, or its params ``image_size``/``channels`` give
    (None when it depends on files: such checks then run before training)."""
    if not name:
        return None
    try:
        entry, _ = catalog.datasets.lookup(name)
    except Exception:  # an unknown dataset is reported elsewhere
        return None
    shape = getattr(entry.cls, "image_shape", None)
    if shape:
        return tuple(shape)
    merged = entry.merged(params or {})
    defaults = entry.cls.Params() if hasattr(entry.cls, "Params") else None
    size = merged.get("image_size", getattr(defaults, "image_size", None))
    channels = merged.get("channels", getattr(defaults, "channels", None))
    if isinstance(size, int) and isinstance(channels, int):
        return (size, size, channels)
    return None
