"""Learning speed of a training: the threshold-free early loss, epochs to a threshold, the clean level.

Three measures, all from a training's per-epoch mean training loss (train mode, augmented poisoned
data), all "lower = learned faster":

``early_loss`` (threshold-free, the default one to read)
    The mean training loss over the first ``k`` epochs (``metrics: {speed_epochs: k}``, 5 by
    default; fewer when the run is shorter, and the record says which ``k`` was used). It is the
    normalised area under the loss curve over epochs 1..k, so it needs no threshold and is defined
    for every training, at any scale: a poison that never gets below the paper's 0.5 still gets a
    value and a place in the correlation. It reads only the early epochs on purpose: the paper's claim
    is about how fast a poison is learned, and an area over the whole run would be dominated by the
    epochs after the learning-rate drop, where every poison's loss falls and which depend on the
    epoch budget. On a reported run of 10,000 CIFAR-10 photos with small_cnn for 15 epochs (clean
    peak 66%), the first-5-epoch mean ranked seven poisons' peak accuracies with Spearman ρ ≈ 0.93
    while only 2 of the 7 ever reached a loss below 0.5 (docs/measurement.md).

``epochs_to_loss_threshold`` (the paper's)
    The first epoch (1-based) whose loss is below ``metrics.loss_threshold`` (0.5 in the paper, chosen
    for ResNet-18, 100 epochs, CIFAR-10); null when never reached (censored: such a training is left
    out of that correlation and listed as left out).

``epochs_to_clean_level`` (a threshold relative to the clean run)
    With ``metrics: {clean_level_epoch: E}``: the first epoch whose loss is at or below the loss the
    *clean* training of the same victim and seed had at epoch E. The clean run reaches it by
    epoch E by construction; a poison learned faster reaches it sooner. Computed when a run is read
    (it needs the clean cell), null when the run has no clean cell for that victim and seed.
"""

from __future__ import annotations

from typing import Any

from poisonbench.results import finite

DEFAULT_SPEED_EPOCHS = 5

# measure key -> (axis label template, what a missing value means)
MEASURES: dict[str, tuple[str, str]] = {
    "early_loss": ("mean training loss over epochs 1–{k}", "no finite training loss"),
    "epochs_to_loss_threshold": ("epochs until training loss < {threshold:g}",
                                 "loss never fell below the threshold"),
    "epochs_to_clean_level": ("epochs until the loss ≤ the clean run's at epoch {clean_epoch}",
                              "no clean run to compare with, or never reached the clean level"),
}


def early_loss(train_loss: list[float], *, epochs: int = DEFAULT_SPEED_EPOCHS) -> tuple[float | None, int]:
    """(mean of the first ``epochs`` losses, epochs used); (None, k) when any of them is not finite."""
    k = min(max(1, int(epochs)), len(train_loss))
    head = train_loss[:k]
    if not head or not all(finite(v) for v in head):
        return None, k
    return sum(float(v) for v in head) / k, k


def epochs_to_level(train_loss: list[float], level: float, *, strict: bool = True) -> int | None:
    """First 1-based epoch whose loss is below ``level`` (``strict``) or at/below it; None if never."""
    for i, loss in enumerate(train_loss):
        if not finite(loss):
            continue
        if float(loss) < level or (not strict and float(loss) <= level):
            return i + 1
    return None


def learning_speed(history: dict[str, list[float]], *, speed_epochs: int = DEFAULT_SPEED_EPOCHS) -> dict[str, Any]:
    """The threshold-free per-cell keys: ``early_loss`` and the ``early_loss_epochs`` (k) it used."""
    value, k = early_loss(list(history.get("train_loss") or []), epochs=speed_epochs)
    return {"early_loss": value, "early_loss_epochs": k}


def annotate_clean_level(records: list[dict[str, Any]], *, clean_epoch: int | None) -> None:
    """Add ``metrics.epochs_to_clean_level`` (and ``clean_level``) to every record, in place.

    The level is the training loss of the clean (``name == 'clean'``) record of the same victim and
    seed at epoch ``clean_epoch`` (its last epoch when the run is shorter). No-op when
    ``clean_epoch`` is None.
    """
    if clean_epoch is None:
        return
    levels: dict[tuple[str, Any], float] = {}
    for record in records:
        if (record.get("poison") or {}).get("name") != "clean":
            continue
        loss = (record.get("history") or {}).get("train_loss") or []
        key = (_victim_key(record), record.get("seed"))
        if loss and key not in levels:
            value = loss[min(int(clean_epoch), len(loss)) - 1]
            if finite(value):
                levels[key] = float(value)
    for record in records:
        metrics = record.setdefault("metrics", {})
        level = levels.get((_victim_key(record), record.get("seed")))
        loss = (record.get("history") or {}).get("train_loss") or []
        metrics["clean_level"] = level
        metrics["epochs_to_clean_level"] = None if level is None else epochs_to_level(loss, level, strict=False)


def _victim_key(record: dict[str, Any]) -> str:
    import json

    victim = record.get("victim")
    return json.dumps(victim, sort_keys=True)


def measure_label(measure: str, *, k: int = DEFAULT_SPEED_EPOCHS, threshold: float = 0.5,
                  clean_epoch: int | None = None) -> str:
    """Human label of a measure for axes and report lines."""
    template = MEASURES[measure][0]
    return template.format(k=k, threshold=threshold, clean_epoch=clean_epoch)
