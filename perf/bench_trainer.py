"""Epoch time of poisonbench's trainer vs the reference pipeline and a bare loop, in one run.

Three ways to train the same victim (same init, same SGD settings) on the same uint8 images:

* ours      -- ``poisonbench.training.trainer.train_victim``: data resident on the device as uint8, batched
               crop/flip on the device, channels_last, bf16 autocast on CUDA.
* reference -- how the original code trains: a torchvision-style Dataset of PIL images with
               ``RandomCrop(size, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``,
               fed by a shuffling ``DataLoader`` (fp32, NCHW). Timed with each ``--workers`` value;
               the fastest counts.
* bare      -- a loop over pre-made, pre-normalised float batches (no augmentation, no indexing):
               the model's own cost, a floor for any pipeline (same precision/layout as ours).

Each pipeline runs two epochs; the second epoch is timed (the first warms up kernels and caches).
Targets: CPU -- ours no slower than reference and within 1.15× of bare;
GPU -- ours ≥ 3× faster than reference for resnet18 at batch 128.

    python perf/bench_trainer.py --preset cpu          # small_cnn on 10k 28×28×1 + resnet18, a few batches
    python perf/bench_trainer.py --preset gpu          # resnet18, 50k 32×32×3, batch 128
    python perf/bench_trainer.py --victim small_cnn --images 10000 --size 28 --channels 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from poisonbench.api import Split
from poisonbench.catalog import default_catalog
from poisonbench.suite.config import TrainConfig
from poisonbench.training.device import autocast, autocast_dtype, is_cuda, resolve_device
from poisonbench.training.trainer import train_victim

FMNIST = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.4, 0.3


def make_data(n: int, size: int, channels: int) -> Split:
    """Fashion-MNIST images when asked for 28×28×1 and available, else random uint8 images."""
    if (size, channels) == (28, 1) and (FMNIST / "train-images-idx3-ubyte.gz").exists():
        from poisonbench.suite.config import DatasetConfig
        from poisonbench.data import prepare_data
        from poisonbench.suite import Component

        data = prepare_data(default_catalog(), DatasetConfig(name="fashion_mnist", train_subset=n),
                            Component("fashion_mnist", {}, {}), data_dir=None, download=False)
        return data.train
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, size, size, channels), generator=gen, dtype=torch.uint8)
    return Split(images, torch.randint(0, 10, (n,), generator=gen))


def build(victim: str, channels: int, size: int):
    torch.manual_seed(0)
    return default_catalog().victims.create(victim, {}).build(num_classes=10, in_channels=channels,
                                                              image_size=size)


def sync(device: str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). CPU time is robust on a busy machine but only
    comparable with one thread and no DataLoader workers (``--threads 1 --workers 0``)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


def time_ours(victim, data: Split, *, batch: int, device: str) -> tuple[float, float]:
    stamps: list[tuple[float, float]] = []

    def progress(description, total):
        def advance(n=1, **fields):
            if "epoch" in fields:
                stamps.append(now())
        return advance

    channels, size = data.images.shape[3], data.images.shape[1]
    config = TrainConfig(epochs=2, batch_size=batch, lr=0.01, milestones=[10])
    tiny_test = Split(data.images[:1], data.labels[:1])  # evaluation is not what we time
    train_victim(model=build(victim, channels, size), train=data, test=tiny_test, val=None,
                 config=config, mean=(MEAN,) * channels, std=(STD,) * channels, seed=0,
                 device=device, progress=progress)
    return stamps[1][0] - stamps[0][0], stamps[1][1] - stamps[0][1]


def _epochs(model, batches, *, device: str, dtype, epochs: int = 2) -> tuple[float, float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    started = now()
    for _ in range(epochs):
        sync(device)
        started = now()
        for x, y in batches():
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, dtype):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
    return since(started)


class PILDataset(torch.utils.data.Dataset):
    """torchvision-style: numpy HWC uint8 → PIL image → transforms, one image per __getitem__."""

    def __init__(self, split: Split, transform):
        self.images, self.labels, self.transform = split.images.numpy(), split.labels.tolist(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        image = self.images[i]
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        return self.transform(pil), self.labels[i]


def time_reference(victim, data: Split, *, batch: int, device: str, workers: int) -> tuple[float, float]:
    from torchvision import transforms as T

    channels, size = data.images.shape[3], data.images.shape[1]
    transform = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((MEAN,) * channels, (STD,) * channels)])
    loader = torch.utils.data.DataLoader(PILDataset(data, transform), batch_size=batch, shuffle=True,
                                         num_workers=workers, pin_memory=is_cuda(device),
                                         persistent_workers=workers > 0)
    model = build(victim, channels, size).to(device)
    return _epochs(model, lambda: loader, device=device, dtype=None)


def time_bare(victim, data: Split, *, batch: int, device: str) -> tuple[float, float]:
    channels, size = data.images.shape[3], data.images.shape[1]
    x = ((data.images.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = data.labels.to(device)
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]
    model = build(victim, channels, size).to(device).to(memory_format=torch.channels_last)
    return _epochs(model, lambda: batches, device=device, dtype=autocast_dtype(device))


def bench(victim: str, *, images: int, size: int, channels: int, batch: int, device: str,
          workers: list[int], clock: str, repeats: int = 1) -> dict:
    """Time the three pipelines ``repeats`` times, interleaved; keep each one's fastest epoch."""
    data = make_data(images, size, channels)
    pick = 0 if clock == "wall" else 1
    fastest = lambda a, b: a if a is not None and a[pick] <= b[pick] else b  # noqa: E731
    ours = bare = None
    reference: dict[int, tuple[float, float] | None] = {w: None for w in workers}
    for _ in range(repeats):
        ours = fastest(ours, time_ours(victim, data, batch=batch, device=device))
        for w in workers:
            reference[w] = fastest(reference[w], time_reference(victim, data, batch=batch,
                                                                device=device, workers=w))
        bare = fastest(bare, time_bare(victim, data, batch=batch, device=device))
    best_ref = min(t[pick] for t in reference.values())
    result = {"victim": victim, "images": images, "shape": [size, size, channels], "batch": batch,
              "device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "clock": clock, "repeats": repeats, "epoch_s": {"ours": ours, "bare": bare,
                                          **{f"reference_w{w}": t for w, t in reference.items()}},
              "reference_over_ours": best_ref / ours[pick], "ours_over_bare": ours[pick] / bare[pick]}
    fmt = lambda t: f"{t[0]:.2f} s wall / {t[1]:.2f} s cpu"  # noqa: E731
    print(f"{victim} ×{images} {size}×{size}×{channels} batch {batch} on {device} "
          f"({torch.get_num_threads()} threads), second epoch: ours {fmt(ours)}; bare {fmt(bare)}; "
          + "; ".join(f"reference (workers={w}) {fmt(t)}" for w, t in reference.items()))
    print(f"  [{clock} clock] reference / ours = {best_ref / ours[pick]:.2f}×  (target: ≥ 1 on CPU, ≥ 3 on GPU)")
    print(f"  [{clock} clock] ours / bare      = {ours[pick] / bare[pick]:.3f}×  (target: ≤ 1.15 on CPU)")
    return result


PRESETS = {
    "cpu": [dict(victim="small_cnn", images=10000, size=28, channels=1, batch=128),
            dict(victim="resnet18", images=384, size=32, channels=3, batch=128)],
    "gpu": [dict(victim="resnet18", images=50000, size=32, channels=3, batch=128)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--victim", default="small_cnn")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--workers", default="0,2", help="DataLoader workers to try for the reference")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="ratios from wall time, or from process CPU time (busy machines; needs "
                             "--threads 1 --workers 0 to be comparable)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repetitions; fastest counts")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    workers = [int(w) for w in args.workers.split(",")]
    configs = PRESETS[args.preset] if args.preset else [
        dict(victim=args.victim, images=args.images, size=args.size, channels=args.channels, batch=args.batch)]
    if args.clock == "cpu" and (torch.get_num_threads() != 1 or any(workers)):
        parser.error("--clock cpu needs --threads 1 and --workers 0")
    results = [bench(**config, device=device, workers=workers, clock=args.clock, repeats=args.repeats)
               for config in configs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
