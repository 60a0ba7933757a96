"""Fabricated but realistic run directories (manifest.json + cells.jsonl) for report/leaderboard tests."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FakePoison:
    name: str
    family: str
    kind: str
    applied: str
    loss_rate: float  # per-epoch decay of the training loss: bigger = learned faster
    peak: float  # peak clean test accuracy (fraction)
    final: float  # last-epoch clean test accuracy (fraction)
    params: tuple = ()


POISONS = [
    FakePoison("clean", "clean", "baseline", "sample", 0.25, 0.90, 0.89),
    FakePoison("R4", "regions", "random", "class", 0.9, 0.25, 0.12),
    FakePoison("LF3", "low_frequency", "random", "class", 0.6, 0.43, 0.40),
    FakePoison("P250", "pgd", "max", "sample", 0.3, 0.57, 0.08, (("surrogate", "resnet18"),)),
    FakePoison("FC", "functional", "max", "sample", 0.05, 0.87, 0.86),  # never reaches loss < 0.5
    FakePoison("CU", "unlearnable", "min", "class", 0.8, 0.33, 0.19),
]


def fake_history(poison: FakePoison, *, seed: int, epochs: int) -> dict[str, list[float]]:
    """Loss decays exponentially; test accuracy climbs to ``peak`` at mid-run, then drifts to ``final``."""
    jitter = 0.004 * ((seed * 7 + len(poison.name)) % 5 - 2)  # deterministic, seed-dependent
    loss = [round(0.3 + 2.0 * math.exp(-poison.loss_rate * (e + 1)) + jitter, 6) for e in range(epochs)]
    peak_at = epochs // 2
    acc = []
    for e in range(epochs):
        if e < peak_at:
            value = 0.1 + (poison.peak - 0.1) * (e + 1) / (peak_at + 1)
        elif e == peak_at:
            value = poison.peak
        else:
            value = poison.peak + (poison.final - poison.peak) * (e - peak_at) / (epochs - 1 - peak_at)
        acc.append(round(min(1.0, max(0.0, value + jitter)), 6))
    train_acc = [round(min(1.0, 1.0 - 0.9 * math.exp(-poison.loss_rate * (e + 1))), 6) for e in range(epochs)]
    val = [round(min(1.0, a + 0.002 * ((e % 3) - 1)), 6) for e, a in enumerate(acc)]
    return {"train_loss": loss, "train_acc": train_acc, "test_acc": acc, "val_acc": val}


def derive_metrics(history: dict, *, threshold: float) -> dict:
    acc, loss = history["test_acc"], history["train_loss"]
    peak = max(acc)
    peak_epoch = acc.index(peak) + 1
    selected_epoch = history["val_acc"].index(max(history["val_acc"])) + 1
    reached = next((i + 1 for i, v in enumerate(loss) if v < threshold), None)
    return {"peak_test_acc": peak, "peak_epoch": peak_epoch, "final_test_acc": acc[-1],
            "selected_test_acc": acc[selected_epoch - 1], "selected_epoch": selected_epoch,
            "epochs_to_loss_threshold": reached}


def fake_record(poison: FakePoison, *, seed: int, epochs: int, threshold: float = 0.5,
                victim: str = "tiny_cnn", defense: dict | None = None) -> dict:
    history = fake_history(poison, seed=seed, epochs=epochs)
    sha = hashlib.sha256(f"{poison.name}:{seed}".encode()).hexdigest()
    defense = defense or {"name": "early_stopping", "params": {"select": "val"}}
    digest = hashlib.sha256(json.dumps([poison.params, defense], sort_keys=True).encode()).hexdigest()[:8]
    return {
        "cell_id": f"{poison.name}__{victim}__{defense['name']}__s{seed}__{digest}",
        "dataset": "synthetic", "victim": {"name": victim, "params": {}},
        "poison": {"name": poison.name, "params": dict(poison.params), "family": poison.family,
                   "kind": poison.kind, "applied": poison.applied},
        "defense": defense,
        "seed": seed, "poison_sha256": sha,
        "metrics": derive_metrics(history, threshold=threshold), "history": history,
        "wall_s": 1.5, "linf": 0.0 if poison.kind == "baseline" else 8 / 255, "diverged": False,
    }


def fake_manifest(*, seeds: list[int], epochs: int, poisons=POISONS, suite: str = "fake") -> dict:
    return {
        "suite": {"suite": suite, "version": 1, "description": "fabricated",
                  "dataset": {"name": "synthetic", "train_subset": 64, "test_subset": 64,
                              "val_split": 16, "subset_seed": 0, "params": {}},
                  "victims": [{"name": "tiny_cnn", "params": {}}],
                  "poisons": [{"name": p.name, "params": dict(p.params)} for p in poisons],
                  "defenses": [{"name": "early_stopping", "params": {"select": "val"}}],
                  "seeds": seeds, "train": {"epochs": epochs, "batch_size": 32, "lr": 0.05},
                  "metrics": {"loss_threshold": 0.5}},
        "versions": {"poisonbench": "0.1.0", "torch": "2.14.1", "python": "3.11.2",
                     "plugins": {"poisonbench": "0.1.0"}},
        "device": {"type": "cpu", "name": "Fake CPU", "threads": 2},
        "git": "0123456789abcdef0123456789abcdef01234567",
        "started": "2025-01-02T03:04:05+00:00", "finished": "2025-01-02T03:14:05+00:00",
    }


def write_run(path: Path, *, seeds=(0, 1, 2), epochs: int = 12, poisons=POISONS,
              records: list[dict] | None = None, suite: str = "fake") -> Path:
    """Write a run directory; ``records`` overrides the generated cells."""
    path.mkdir(parents=True, exist_ok=True)
    manifest = fake_manifest(seeds=list(seeds), epochs=epochs, poisons=poisons, suite=suite)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if records is None:
        records = [fake_record(p, seed=s, epochs=epochs) for p in poisons for s in seeds]
    (path / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
