"""Contract checks every registered poison must pass, shipped for plugin authors (``poisonbench.testing``).

Use in a plugin's own tests::

    from poisonbench.testing import check_poison, contract_cases

    def test_my_poison_contract():
        check_poison("my_poison")                    # resolves against the installed catalog

    @pytest.mark.parametrize("name", contract_cases())   # or every registered poison
    def test_contract(name):
        check_poison(name)

What is checked, on tiny data of both a CIFAR-like (32×32×3) and a Fashion-MNIST-like (28×28×1)
shape: the result is a uint8 tensor of the input's shape; the input is not modified; the same seed
gives the same bytes; a poison stays within its declared budget for the shape (``budget_for``):
L∞ plus half a grey level for the round-half-up export, L2 and L0 by the artifact check's rules;
an additive (linf, l2) class-wise poison gives one perturbation per class wherever no pixel was
clamped. The poison's ``contract_params`` (cheapest settings that still run the
algorithm, e.g. ``{"steps": 2}``) are applied; a poison whose ``contract_params`` is None needs
external input (a file) and is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHAPES = ((32, 32, 3), (28, 28, 1))
N_IMAGES = 24
NUM_CLASSES = 4


class ContractViolation(AssertionError):
    """A poison or defense broke the contract; the message names the plugin and the rule."""


def tiny_split(shape: tuple[int, int, int], *, n: int = N_IMAGES, num_classes: int = NUM_CLASSES, seed: int = 0):
    """Random-but-structured uint8 images (class-dependent brightness) with balanced labels."""
    import torch

    from poisonbench.api import Split

    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n, dtype=torch.int64) % num_classes
    base = (labels.float() * (200.0 / max(num_classes - 1, 1)) + 20).view(n, 1, 1, 1)
    noise = torch.randint(-20, 21, (n, *shape), generator=gen).float()
    images = (base + noise).clamp(0, 255).to(torch.uint8)
    return Split(images=images, labels=labels)


def tiny_surrogate(num_classes: int, in_channels: int):
    """An untrained, frozen conv net standing in for a trained surrogate (contract checks only)."""
    import torch
    from torch import nn

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                              nn.Flatten(), nn.Linear(32, num_classes))
    model.eval().requires_grad_(False)
    return model


def contract_cases(catalog=None) -> list[str]:
    """Names of every registered poison (presets included), for ``pytest.mark.parametrize``."""
    from poisonbench.catalog import default_catalog

    return (catalog or default_catalog()).poisons.names()


def _context(catalog, *, seed: int, in_channels: int):
    from poisonbench.api import CraftContext

    return CraftContext(num_classes=NUM_CLASSES, seed=seed, device="cpu", dataset_name="contract",
                        dataset_fingerprint="contract", mean=(0.5,) * in_channels, std=(0.25,) * in_channels,
                        catalog=catalog,
                        surrogate=lambda name, recipe=None, checkpoints=None: (
                            tiny_surrogate(NUM_CLASSES, in_channels) if checkpoints is None  # ensembles (SEP):
                            else [tiny_surrogate(NUM_CLASSES, in_channels) for _ in checkpoints]))  # one per epoch


def check_poison(name: str, *, catalog=None, params: Mapping[str, Any] | None = None) -> None:
    """Run every contract rule on poison ``name``; raise ``ContractViolation`` on the first breach."""
    import pytest
    import torch

    from poisonbench.catalog import default_catalog

    catalog = catalog or default_catalog()
    entry, _ = catalog.poisons.lookup(name)
    cheap = entry.cls.contract_params
    if cheap is None and params is None:
        pytest.skip(f"poison '{name}' needs external input (contract_params is None)")
    poison = catalog.poisons.create(name, {**(cheap or {}), **(params or {})})
    for shape in SHAPES:
        clean = tiny_split(shape)
        before = clean.images.clone()
        first = poison.craft(clean, ctx=_context(catalog, seed=1, in_channels=shape[2]))
        where = f"poison '{name}' on {shape[0]}×{shape[1]}×{shape[2]}"
        if not isinstance(first, torch.Tensor) or first.dtype != torch.uint8:
            raise ContractViolation(f"{where}: craft must return a uint8 tensor, got {getattr(first, 'dtype', type(first))}")
        if tuple(first.shape) != tuple(clean.images.shape):
            raise ContractViolation(f"{where}: shape {tuple(first.shape)} != input {tuple(clean.images.shape)}")
        if not torch.equal(clean.images, before):
            raise ContractViolation(f"{where}: craft modified its input images")
        again = poison.craft(clean, ctx=_context(catalog, seed=1, in_channels=shape[2]))
        if not torch.equal(first, again):
            raise ContractViolation(f"{where}: the same seed gave different bytes")
        _check_budget(poison, clean.images, first, where)
        if poison.applied == "class" and poison.threat_model in ("linf", "l2"):  # additive ones
            _check_class_wise(clean, first, where)


def _check_budget(poison, clean, poisoned, where: str) -> None:
    budget = poison.budget_for(tuple(clean.shape[1:]))
    if poison.threat_model in ("l2", "l0") and budget is not None:  # the artifact check's own rule
        import torch

        from poisonbench.api import Split
        from poisonbench.crafting.artifacts import Artifact, check_artifact
        from poisonbench.errors import ArtifactError

        labels = torch.zeros(len(clean), dtype=torch.int64)
        try:
            check_artifact(Artifact(poisoned, labels, {}, ""), Split(clean, labels), budget=budget,
                           threat_model=poison.threat_model, source=where)
        except ArtifactError as err:
            raise ContractViolation(f"{err} (exceeds the declared budget)") from None
        return
    if poison.threat_model != "linf" or budget is None:
        return
    diff = (poisoned.int() - clean.int()).abs().amax().item()
    if diff > budget * 255 + 0.5 + 1e-6:
        raise ContractViolation(f"{where}: L∞ {diff}/255 exceeds the declared budget {budget * 255:.2f}/255")


def _check_class_wise(clean, poisoned, where: str) -> None:
    """Within a class, unclamped pixels carry the same perturbation (±1 grey level for rounding)."""
    delta = poisoned.int() - clean.images.int()
    free = (poisoned > 0) & (poisoned < 255)  # clamped pixels may differ
    for label in clean.labels.unique():
        members = (clean.labels == label).nonzero().flatten()
        ref = delta[members[0]]
        for index in members[1:]:
            both = free[members[0]] & free[index]
            if ((delta[index] - ref).abs()[both] > 1).any():
                raise ContractViolation(f"{where}: class {int(label)} images {int(members[0])} and "
                                        f"{int(index)} carry different perturbations")


# -- defenses ---------------------------------------------------------------------------------
# check_defense(name): on both shapes, with the defense's ``contract_params`` (cheapest settings,
# e.g. {"steps": 1}) over its defaults. preprocess: uint8 of the input's shape, input untouched,
# same seed → same bytes. batch: shape kept, finite, in [0, 1], input untouched, labels or a
# MixedTarget with λ in [0, 1], same batch seed → same output. loss (defines_loss): a finite scalar
# with a gradient, logits (B, classes), the model left in train mode with trainable parameters.
# Params that ``check_data`` rejects for a shape skip that shape.

def defense_contract_cases(catalog=None) -> list[str]:
    """Names of every registered defense that acts on data or training (selection aliases left out)."""
    from poisonbench.catalog import default_catalog

    catalog = catalog or default_catalog()
    return [n for n in catalog.defenses.names() if catalog.defenses.lookup(n)[0].cls.stage != "selection"]


def check_defense(name: str, *, catalog=None, params: Mapping[str, Any] | None = None) -> None:
    """Run the defense contract on tiny data; raise ``ContractViolation`` naming the rule broken."""
    import torch

    from poisonbench.api import BatchContext, DefenseContext, MixedTarget
    from poisonbench.catalog import default_catalog

    catalog = catalog or default_catalog()
    cls = catalog.defenses.lookup(name)[0].cls
    defense = catalog.defenses.create(name, {**getattr(cls, "contract_params", {}), **dict(params or {})})
    for shape in SHAPES:
        if defense.check_data(image_shape=shape):
            continue
        where = f"defense '{name}' on {shape[0]}×{shape[1]}×{shape[2]}"
        split = tiny_split(shape)
        ctx = DefenseContext(seed=3, num_classes=NUM_CLASSES, image_shape=shape, mean=(0.5,) * shape[2],
                             std=(0.25,) * shape[2])
        if defense.stage == "preprocess":
            before = split.images.clone()
            out = defense.preprocess(split, ctx=ctx)
            if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or out.shape != before.shape:
                raise ContractViolation(f"{where}: preprocess must return uint8 {tuple(before.shape)}")
            if not torch.equal(split.images, before):
                raise ContractViolation(f"{where}: preprocess modified its input")
            if not torch.equal(defense.preprocess(split, ctx=ctx), out):
                raise ContractViolation(f"{where}: preprocess is not deterministic given the seed")
            continue
        model = tiny_surrogate(NUM_CLASSES, shape[2]).train().requires_grad_(True)
        x = split.images.permute(0, 3, 1, 2).float() / 255
        batch_ctx = lambda m=model: BatchContext(seed=5, epoch=0, step=0, epochs=2,  # noqa: E731
                                                 num_classes=NUM_CLASSES, model=m)
        x_in = x.clone()
        out, target = defense.batch(x_in, split.labels, ctx=batch_ctx())
        again, _ = defense.batch(x.clone(), split.labels, ctx=batch_ctx())
        if not torch.equal(x_in, x):
            raise ContractViolation(f"{where}: batch modified its input")
        if out.shape != x.shape or not bool(torch.isfinite(out).all()) or float(out.min()) < 0 or float(out.max()) > 1:
            raise ContractViolation(f"{where}: batch must keep the shape and stay finite in [0, 1]")
        if not torch.equal(out, again):
            raise ContractViolation(f"{where}: batch is not a function of the batch seed")
        if isinstance(target, MixedTarget) and not bool(((target.lam >= 0) & (target.lam <= 1)).all()):
            raise ContractViolation(f"{where}: MixedTarget.lam outside [0, 1]")
        if defense.defines_loss:
            loss, logits = defense.loss(model, out, target, ctx=batch_ctx())
            if loss.dim() != 0 or not bool(torch.isfinite(loss)) or not loss.requires_grad:
                raise ContractViolation(f"{where}: loss must be a finite scalar with a gradient")
            if tuple(logits.shape) != (len(x), NUM_CLASSES):
                raise ContractViolation(f"{where}: loss must return logits (B, classes)")
            if not model.training or not all(p.requires_grad for p in model.parameters()):
                raise ContractViolation(f"{where}: loss must leave the model in train mode, parameters trainable")
