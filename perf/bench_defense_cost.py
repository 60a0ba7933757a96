"""Epoch cost of the training-side defenses (adversarial training, UEraser, COIN, ...) against a plain epoch.

One run trains the same victim (same init, same data) for two epochs with the real trainer, once
without a defense and once per defense chain, and times the second epoch of each (the first warms
kernels up). The ratio is what a suite pays per epoch for the defense. Expected: PGD adversarial
training ≈ steps + 1 (10 PGD forward/backward passes + the training step; ``at8`` → ≈ 11×),
UEraser ≈ 1× + augmentation in Lite epochs and ≈ K× (5×) in adversarial epochs, COIN ≈ 1×.

Callable from other scripts (run from ``perf/`` or with it on ``sys.path``)::

    from bench_defense_cost import epoch_cost_ratio
    epoch_cost_ratio("at8", images=2048, size=28, channels=1, victim="small_cnn", device="cpu")

Command line::

    python perf/bench_defense_cost.py                        # at8 on 2048 Fashion-MNIST-sized images, CPU
    python perf/bench_defense_cost.py --defenses at8 ueraser_max coin --threads 1
    python perf/bench_defense_cost.py --preset gpu           # resnet18, 10k 32×32×3, batch 128

CPU time (``process_time``) is reported next to wall time: with ``--threads 1`` it is robust on a
shared machine. Only the defense's per-batch work is timed: preprocess defenses (orthogonal
projection, JPEG, ...) run once before training and are measured separately by their own scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trainer import build, make_data, now  # noqa: E402

from poisonbench.api import Split  # noqa: E402
from poisonbench.catalog import default_catalog  # noqa: E402
from poisonbench.suite.config import TrainConfig  # noqa: E402
from poisonbench.training.defended import Chain  # noqa: E402
from poisonbench.training.trainer import train_victim  # noqa: E402

MEAN, STD = 0.4, 0.3


def epoch_seconds(data: Split, *, victim: str, chain: list[dict] | None, batch: int,
                  device: str) -> tuple[float, float]:
    """(wall, CPU) seconds of the second of two training epochs on ``data`` under ``chain``."""
    stamps: list[tuple[float, float]] = []

    def progress(description, total):
        def advance(n=1, **fields):
            if "epoch" in fields:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                stamps.append(now())
        return advance

    size, channels = int(data.images.shape[1]), int(data.images.shape[3])
    built = Chain.build(default_catalog(), chain or [], num_classes=10) if chain else None
    config = TrainConfig(epochs=2, batch_size=batch, lr=0.01, milestones=[10])
    tiny_test = Split(data.images[:1], data.labels[:1])  # evaluation is not what we time
    train_victim(model=build(victim, channels, size), train=data, test=tiny_test, val=None, config=config,
                 mean=(MEAN,) * channels, std=(STD,) * channels, seed=0, device=device, progress=progress,
                 chain=built)
    return stamps[1][0] - stamps[0][0], stamps[1][1] - stamps[0][1]


def epoch_cost_ratio(defense: str, params: dict | None = None, *, images: int = 2048, size: int = 28,
                     channels: int = 1, victim: str = "small_cnn", batch: int = 128,
                     device: str = "cpu", data: Split | None = None,
                     plain: tuple[float, float] | None = None) -> dict:
    """Per-epoch cost of ``defense`` (a registry name, with optional ``params``) relative to no defense.

    Returns ``{"defense", "params", "plain_wall_s", "plain_cpu_s", "defended_wall_s",
    "defended_cpu_s", "ratio_wall", "ratio_cpu", "expected"}``; ``expected`` is steps + 1 for
    adversarial training, None otherwise. ``plain`` reuses an earlier ``epoch_seconds`` of no defense.
    """
    data = data if data is not None else make_data(images, size, channels)
    plain = plain or epoch_seconds(data, victim=victim, chain=None, batch=batch, device=device)
    member = {"name": defense, "params": params or {}}
    defended = epoch_seconds(data, victim=victim, chain=[member], batch=batch, device=device)
    made = default_catalog().defenses.create(defense, params or {})
    expected = made.params.steps + 1 if made.stage == "training" and hasattr(made.params, "steps") else None
    return {"defense": defense, "params": params or {}, "images": len(data), "victim": victim,
            "batch": batch, "device": device, "plain_wall_s": plain[0], "plain_cpu_s": plain[1],
            "defended_wall_s": defended[0], "defended_cpu_s": defended[1],
            "ratio_wall": defended[0] / plain[0], "ratio_cpu": defended[1] / max(plain[1], 1e-9),
            "expected": expected}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defenses", nargs="+", default=["at8"])
    parser.add_argument("--preset", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--images", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--victim")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    preset = {"cpu": dict(images=2048, size=28, channels=1, victim="small_cnn"),
              "gpu": dict(images=10_000, size=32, channels=3, victim="resnet18")}[args.preset]
    for key in preset:
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    data = make_data(preset["images"], preset["size"], preset["channels"])
    plain = epoch_seconds(data, victim=preset["victim"], chain=None, batch=args.batch, device=args.device)
    rows = [epoch_cost_ratio(name, data=data, victim=preset["victim"], batch=args.batch, device=args.device,
                             plain=plain) for name in args.defenses]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        expected = f" (expected ≈ {r['expected']})" if r["expected"] else ""
        print(f"{r['defense']:>14}: plain {r['plain_cpu_s']:.2f} s CPU / {r['plain_wall_s']:.2f} s wall, "
              f"defended {r['defended_cpu_s']:.2f} / {r['defended_wall_s']:.2f} s -> "
              f"×{r['ratio_cpu']:.2f} CPU, ×{r['ratio_wall']:.2f} wall{expected}")


if __name__ == "__main__":
    main()
