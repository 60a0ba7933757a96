"""How often bf16 autocast flips the sign of PGD gradient components vs fp32, and what that does to a P*.

Sign-gradient attacks (P*, M*) step by α on ``sign(∇δ L)`` of every pixel, so a component whose sign
flips under bf16 moves the wrong way for that step. This script measures, on the CPU (bf16 autocast
exists there too) and with a small_cnn surrogate trained briefly on Fashion-MNIST:

1. sign flips: at several points of a fp32 PGD trajectory, the share of gradient components whose
   sign under bf16 autocast differs from fp32 -- overall, and among the components that matter
   (|g| above the median |g| of the batch); plus components that are exactly 0 in one and not the other;
2. the artifact: a 10-step, one-restart targeted PGD poison crafted once in fp32 and once in bf16
   from the same surrogate and seed -- share of bytes that differ, mean |difference| in grey levels,
   and the surrogate's targeted success rate on each (share of poisoned images classified as the
   target class).

    OMP_NUM_THREADS=1 .venv/bin/python perf/bench_bf16_sign.py [--images 1000] [--batch 250]

Never run inside the tests (seconds to minutes depending on the machine's load).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from poisonbench.catalog import default_catalog
from poisonbench.crafting import make_context, obtain_poison
from poisonbench.data import prepare_data
from poisonbench.plugins.adversarial import ops
from poisonbench.suite import Component
from poisonbench.suite.config import DatasetConfig
from poisonbench.training.device import autocast, autocast_dtype, derive_seed

EPS, ALPHA = 8 / 255, 0.4 / 255
SURROGATE = {"surrogate": "small_cnn", "surrogate_epochs": 2, "surrogate_milestones": [1],
             "surrogate_precision": "fp32"}


def grad(model, x, delta, targets, precision: str) -> torch.Tensor:
    delta = delta.clone().requires_grad_(True)
    with autocast("cpu", autocast_dtype("cpu", precision)):
        logits = model(x + delta)
    loss = F.cross_entropy(logits.float(), targets)
    (g,) = torch.autograd.grad(loss, delta)
    return g


def sign_flips(model, x, targets, *, steps: int, probe_every: int) -> list[dict[str, float]]:
    """Walk a fp32 PGD trajectory; at every ``probe_every`` steps compare fp32 and bf16 gradients."""
    gen = torch.Generator().manual_seed(derive_seed(0, "bf16-bench"))
    delta = (torch.randn(x.shape, generator=gen) * EPS).clamp(-EPS, EPS)
    rows = []
    for t in range(steps + 1):
        g32 = grad(model, x, delta, targets, "fp32")
        if t % probe_every == 0:
            g16 = grad(model, x, delta, targets, "bf16")
            s32, s16 = g32.sign(), g16.sign()
            big = g32.abs() > g32.abs().median()
            rows.append({"step": t, "flip_all": float((s32 != s16).float().mean()),
                         "flip_big": float((s32 != s16)[big].float().mean()),
                         "opposite": float((s32 * s16 < 0).float().mean()),
                         "zero_mismatch": float(((s32 == 0) != (s16 == 0)).float().mean())})
        delta = (delta - ALPHA * g32.sign()).clamp(-EPS, EPS)
        delta = (x + delta).clamp(0, 1) - x
    return rows


def success(model, images: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(share classified as the target, mean target cross-entropy: the attack's objective)."""
    with torch.no_grad():
        logits = model(images.permute(0, 3, 1, 2).float().div(255))
        return (float((logits.argmax(1) == targets).float().mean()),
                float(F.cross_entropy(logits, targets)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--step-size", type=float, default=ALPHA, help="α of the artifact (0.4/255 = P*)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s); Fashion-MNIST {args.images} images, small_cnn surrogate")
    catalog = default_catalog()
    data = prepare_data(catalog, DatasetConfig(name="fashion_mnist", train_subset=args.images),
                        Component("fashion_mnist", {}, {}), data_dir=None)
    with tempfile.TemporaryDirectory(prefix="bf16-bench-") as cache:
        ctx = make_context(data=data, seed=0, device="cpu", cache_dir=Path(cache), data_dir=None,
                           catalog=catalog, progress=None)
        instance = catalog.poisons.create("pgd", {**SURROGATE, "steps": args.steps})
        model = instance.surrogate_model(ctx, "pgd")
        x = data.train.images[: args.batch].permute(0, 3, 1, 2).float().div(255)
        targets = ops.next_class_targets(data.train.labels[: args.batch], data.num_classes)
        print("\n1. sign of ∇δ L, bf16 autocast vs fp32 (same δ, along a fp32 PGD trajectory)")
        print(" step  differ(all)  differ(|g|>median)  opposite  zero-mismatch")
        for row in sign_flips(model, x, targets, steps=args.steps, probe_every=max(1, args.steps // 5)):
            print(f" {row['step']:4d}  {row['flip_all']:10.2%}  {row['flip_big']:18.2%}  "
                  f"{row['opposite']:8.2%}  {row['zero_mismatch']:12.2%}")
        print(f"\n2. one P-style artifact ({args.steps} steps of {args.step_size * 255:.2g}/255, 1 restart, "
          "augment on), fp32 vs bf16")
        made = {}
        for precision in ("fp32", "bf16"):
            poison = Component("pgd", {**SURROGATE, "steps": args.steps, "restarts": 1,
                                       "precision": precision, "batch_size": args.batch,
                                       "step_size": args.step_size}, {})
            start = time.perf_counter()
            made[precision] = obtain_poison(catalog=catalog, poison=poison, data=data, seed=0,
                                            cache_dir=Path(cache), device="cpu")
            print(f" {precision}: crafted in {time.perf_counter() - start:.1f} s")
        a, b = made["fp32"].images, made["bf16"].images
        diff = (a.int() - b.int()).abs()
        all_targets = ops.next_class_targets(data.train.labels, data.num_classes)
        print(f" bytes that differ: {float((diff > 0).float().mean()):.2%}; mean |Δ| "
              f"{float(diff.float().mean()):.3f} levels, max {int(diff.max())} levels")
        for what, images in (("fp32 poison", a), ("bf16 poison", b), ("clean set", data.train.images)):
            hit, loss = success(model, images, all_targets)
            print(f" {what}: surrogate predicts the target for {hit:.2%}, mean target CE {loss:.4f}")


if __name__ == "__main__":
    main()
