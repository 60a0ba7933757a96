"""Per-round accuracy of an SU craft in eval mode vs with batch statistics (the BatchNorm lag).

The unlearnable-examples loop fits its noise to, and judges convergence by, the crafting model in
eval mode; after only ``train_steps`` SGD steps per round BatchNorm's running averages lag the
weights. This prints, per round, the eval-mode accuracy the loop sees next to the accuracy of the
same weights with batch statistics (running statistics left untouched), and stops once the loop's
stop condition (> 99%) holds. Numbers in docs/measurement.md.

    OMP_NUM_THREADS=1 .venv/bin/python perf/diag_unlearnable_bn.py 3000 10 fashion_mnist [refresh_batchnorm=1]
    (args: training images, max rounds, dataset, then SU param overrides key=value)
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

from poisonbench.catalog import default_catalog
from poisonbench.crafting import make_context
from poisonbench.data import prepare_data
from poisonbench.plugins.unlearnable import ops
from poisonbench.suite import Component
from poisonbench.suite.config import DatasetConfig


def batch_stat_accuracy(crafter) -> float:
    """Accuracy in train mode (batch statistics) without updating the running averages."""
    norms = [m for m in crafter.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = running: the forward pass leaves them as they are
    crafter.model.train()
    correct = 0
    with torch.no_grad():
        for idx in torch.split(crafter.check_idx, crafter.p.batch_size):
            xp = (crafter.x(idx) + crafter.noise(idx)).clamp(0, 1)
            correct += int((crafter.model(xp).argmax(1) == crafter.labels[idx]).sum())
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    crafter.model.eval()
    return correct / len(crafter.check_idx)


def main() -> None:
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    dataset = sys.argv[3] if len(sys.argv) > 3 else "fashion_mnist"
    catalog = default_catalog()
    defaults = catalog.poisons.create("SU").params
    overrides = {}
    for item in sys.argv[4:]:
        key, _, value = item.partition("=")
        kind = type(getattr(defaults, key))
        overrides[key] = bool(int(value)) if kind is bool else kind(value)
    params = catalog.poisons.create("SU", {"model": "small_cnn", **overrides}).params
    data = prepare_data(catalog, DatasetConfig(name=dataset, train_subset=n), Component(dataset, {}, {}),
                        data_dir=None)
    ctx = make_context(data=data, seed=0, device="cpu", cache_dir=None, data_dir=None, catalog=catalog,
                       progress=None)
    print(params)
    crafter = ops._Crafter(data.train, ctx=ctx, params=params, classwise=False)
    start = time.time()
    for r in range(1, rounds + 1):
        crafter.train_model()
        crafter.update_noise()
        acc = crafter.accuracy()
        print(f"round {r}: eval acc {acc:.4f}  batch-statistics acc {batch_stat_accuracy(crafter):.4f}  "
              f"t={time.time() - start:.0f}s", flush=True)
        if acc > params.stop_acc:
            break


if __name__ == "__main__":
    main()
