"""Crafting speed of the model-free poisons LSP, AR, OPS and CUDA: 50,000 CIFAR-sized images on the CPU.

Each poison crafts the whole set as ``poisonbench run`` would (one ``craft`` call), then the
harness's artifact check runs on the result (the threat model's norm per image). Prints the best of
--repeat runs: wall-clock and process CPU seconds, with the torch version and thread count (2 by
default: the project's reference machine). Images are random bytes with balanced labels; none of
these algorithms' cost depends on the content. AR on 3 channels with ≤ 10 classes uses the
released coefficients (no search); --ar-search also times the coefficient search for 100 classes.

    .venv/bin/python perf/bench_model_free.py [--n 50000] [--repeat 1] [--threads 2] \\
        [--poisons LSP,AR,OPS,CUDA] [--ar-search]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from poisonbench.api import CraftContext, Split
from poisonbench.catalog import default_catalog
from poisonbench.crafting.artifacts import Artifact, check_artifact


def timed(fn):
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="images (default 50000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per poison; the best is reported")
    parser.add_argument("--poisons", default="LSP,AR,OPS,CUDA", help="comma-separated registry names")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--ar-search", action="store_true", help="also time AR's search for K=100, C=3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    clean = Split(images=torch.randint(0, 256, (args.n, 32, 32, 3), generator=gen, dtype=torch.uint8),
                  labels=torch.randperm(args.n, generator=gen) % 10)
    ctx = CraftContext(num_classes=10, seed=0)
    catalog = default_catalog()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; {args.n} images 32×32×3, 10 classes; "
          f"best of {args.repeat}")
    for name in args.poisons.split(","):
        poison = catalog.poisons.create(name, {})
        best = None
        for _ in range(args.repeat):
            out, wall, cpu = timed(lambda poison=poison: poison.craft(clean, ctx=ctx))
            probe = Artifact(out, clean.labels, {}, "")
            _, check_wall, _ = timed(lambda probe=probe, poison=poison, name=name: check_artifact(
                probe, clean, budget=poison.budget_for((32, 32, 3)), threat_model=poison.threat_model,
                source=name))
            if best is None or wall < best[0]:
                best = (wall, cpu, check_wall)
        assert out.shape == clean.images.shape and out.dtype == torch.uint8
        print(f"  {name:6s} craft {best[0]:7.2f} s wall {best[1]:7.2f} s cpu   "
              f"artifact check ({poison.threat_model}) {best[2]:5.2f} s")
    if args.ar_search:
        from poisonbench.plugins.autoregressive import ops

        _, wall, cpu = timed(lambda: ops.find_coefficients.__wrapped__(
            100, 3, required_response=3.0, max_candidates=100_000, seed=0))
        print(f"  AR coefficient search, 100 classes × 3 channels: {wall:.1f} s wall {cpu:.1f} s cpu")


if __name__ == "__main__":
    main()
