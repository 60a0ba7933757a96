"""Crafting throughput (images·steps/s) of our targeted PGD vs torchattacks' PGD, same model and batch.

Targets: ≥ 1.0× torchattacks on CPU (both fp32); ≥ 2× on a GPU, where ours also runs with
bf16 autocast (printed next to our fp32 number). Both attacks get the same model weights, the same
batch, the same number of steps and a random start; torchattacks (3.5.1, install with
``pip install --no-deps torchattacks==3.5.1``) receives the model as a user would (NCHW, parameters
trainable), ours the frozen channels_last copy the harness crafts with. Ours is timed end to end
through ``craft_perturbation`` and ``export_uint8`` (uint8 in, uint8 out), torchattacks on float tensors already on the device.
Runs alternate between the two and the median of ``--repeat`` runs is reported.

    .venv/bin/python perf/bench_pgd.py [--model small_cnn] [--batch 256] [--steps 10] [--repeat 5]
                                       [--device auto]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from poisonbench.api import export_uint8, to_float
from poisonbench.catalog import default_catalog
from poisonbench.crafting.surrogate import freeze, normalized
from poisonbench.plugins.adversarial import ops
from poisonbench.plugins.datasets import Cifar10
from poisonbench.training.device import resolve_device

EPS, ALPHA, K = 8 / 255, 0.4 / 255, 10


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def ours(model, images, targets, *, steps: int, device: str, precision: str):
    cfg = ops.AttackConfig(eps=EPS, steps=steps, step_size=ALPHA, restarts=1, init="normal",
                           batch_size=len(images), precision=precision, channels_last=True)
    return lambda: export_uint8(images, ops.craft_perturbation(model, images, targets, cfg=cfg, seed=0, device=device)[0],
                                channels_first=True)


def theirs(model, images, targets, *, steps: int, device: str):
    import torchattacks

    attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=steps, random_start=True)
    attack.set_mode_targeted_by_function(lambda x, y: (y + 1) % K)
    x = to_float(images, device)
    labels = (targets - 1) % K  # so its target map gives back ``targets``
    labels = labels.to(device)
    return lambda: attack(x, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="victim name (default: small_cnn on CPU, resnet18 on CUDA)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    name = args.model or ("resnet18" if cuda else "small_cnn")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = default_catalog().victims.create(name).build(num_classes=K, in_channels=3, image_size=32)
    model = normalized(net, (Cifar10.crafting_mean, Cifar10.crafting_std), channels=3).to(device).eval()
    frozen = freeze(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 32, 32, 3), generator=gen, dtype=torch.uint8)
    targets = (torch.randint(0, K, (args.batch,), generator=gen) + 1) % K
    where = torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, {device} ({where}), {torch.get_num_threads()} threads; model {name}, "
          f"batch {args.batch}, {args.steps} steps, median of {args.repeat}")

    runs = {"ours fp32": ours(frozen, images, targets, steps=args.steps, device=device, precision="fp32")}
    if cuda:
        runs["ours bf16"] = ours(frozen, images, targets, steps=args.steps, device=device, precision="bf16")
    try:
        runs["torchattacks"] = theirs(model, images, targets, steps=args.steps, device=device)
    except ImportError:
        print("torchattacks is not installed (pip install --no-deps torchattacks==3.5.1): ours only")
    times: dict[str, list[float]] = {key: [] for key in runs}
    for fn in runs.values():  # warm-up (allocator, cuDNN autotuning, oneDNN primitives)
        timed(fn, device)
    for _ in range(args.repeat):
        for key, fn in runs.items():
            times[key].append(timed(fn, device))
    rate = {key: args.batch * args.steps / statistics.median(t) for key, t in times.items()}
    for key in runs:
        print(f"  {key:13s} {rate[key]:10.1f} images·steps/s  (median {statistics.median(times[key]):.3f} s)")
    if "torchattacks" in rate:
        for key in (k for k in rate if k.startswith("ours")):
            target = 2.0 if cuda and key == "ours bf16" else 1.0
            ratio = rate[key] / rate["torchattacks"]
            print(f"  {key} / torchattacks = {ratio:.2f}×  (target ≥ {target:.1f}×)")


if __name__ == "__main__":
    main()
