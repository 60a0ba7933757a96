"""Defense chains at training time: ordering, the cached preprocess pass, and the per-batch step.

A chain is the training-side defenses of one cell, run in a fixed order whatever order the suite
lists them in: every ``preprocess`` defense (by ``rank``), then every ``batch`` defense (by
``rank``), then the loss -- the one ``defines_loss`` defense's ``loss`` (mixup, cutmix, UEraser,
adversarial training) or cross-entropy. Test and validation images are untouched unless a
defense's ``applies_to_eval`` is True.

Determinism: a batch defense gets a ``BatchContext`` whose seed is
``derive_seed(training seed, "defense", registry name, epoch, step)``, so a resumed run redraws
exactly what the killed one drew. Preprocessing is a pure function of (images, params, seed) and
is cached as uint8 under ``<cache>/defended/`` keyed by the input artifact's sha256, the chain's
preprocess part (names, classes, versions, params), the seed and the dataset fingerprint -- the
same content-addressed cache the poison artifacts use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from poisonbench.api import (
    BatchContext,
    DefenseContext,
    Split,
    mixed_cross_entropy,
    soft_correct,
)
from poisonbench.suite.defense_chains import order_key, stage_of
from poisonbench.training.device import derive_seed

KEY_FORMAT = 1  # bump when the meaning of a preprocess cache key changes


@dataclass
class Chain:
    """The ordered training-side defenses of one training (empty = no defense)."""

    defenses: list[Any] = field(default_factory=list)
    num_classes: int = 0

    @classmethod
    def build(cls, catalog, components: list[dict[str, Any]], *, num_classes: int = 0) -> Chain:
        made = [catalog.defenses.create(c["name"], c.get("params") or {}) for c in components]
        return cls(sorted([d for d in made if stage_of(d) != "selection"], key=order_key), num_classes)

    def of_stage(self, stage: str) -> list[Any]:
        return [d for d in self.defenses if stage_of(d) == stage]

    @property
    def per_batch(self) -> bool:
        """True when the trainer must take the [0, 1] path (a batch or training defense)."""
        return any(stage_of(d) in ("batch", "training") for d in self.defenses)

    @property
    def loss_defense(self):
        owners = [d for d in self.defenses if d.defines_loss]
        return owners[0] if owners else None

    def describe(self) -> list[dict[str, Any]]:
        """Name, class, version, params and stage of every member (a checkpoint's identity)."""
        return [{**_identity(d), "stage": stage_of(d)} for d in self.defenses]

    # -- preprocess -------------------------------------------------------------------------
    def preprocess(self, train: Split, *, ctx: DefenseContext, source_sha256: str | None,
                   fingerprint: str, cache_dir: Path | None, dataset_name: str = "") -> Split:
        """``train`` after every preprocess defense, from the cache when present."""
        steps = self.of_stage("preprocess")
        if not steps:
            return train
        if cache_dir is None or source_sha256 is None:
            return Split(self._apply(steps, train, ctx), train.labels)
        from poisonbench.crafting.artifacts import read_artifact, write_artifact
        from poisonbench.crafting.cache import ArtifactCache

        material = {"format": KEY_FORMAT, "source_sha256": source_sha256, "fingerprint": fingerprint,
                    "seed": ctx.seed, "chain": [_identity(d) for d in steps],
                    "name": "+".join(d["name"] for d in [_identity(d) for d in steps]),  # for `cache ls`
                    "dataset": dataset_name or "?"}

        def create(tmp: Path) -> None:
            images = self._apply(steps, train, ctx)
            manifest = {"poison": "defended", "params": {}, "seed": ctx.seed, "linf": None,
                        "dataset": {"fingerprint": fingerprint}, "source_sha256": source_sha256,
                        "defenses": material["chain"]}
            write_artifact(tmp, images=images, labels=train.labels, manifest=manifest)

        path = ArtifactCache(cache_dir).get_or_create(material, create, kind="defended", suffix=".safetensors")
        artifact = read_artifact(path)
        return Split(artifact.images, artifact.labels)

    @staticmethod
    def _apply(steps: list[Any], train: Split, ctx: DefenseContext) -> torch.Tensor:
        current = train
        for defense in steps:
            images = defense.preprocess(Split(current.images.clone(), current.labels), ctx=ctx)
            who = f"defense '{getattr(defense, 'registry_name', defense.name)}'"
            if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 \
                    or tuple(images.shape) != tuple(train.images.shape):
                from poisonbench.errors import PluginError

                raise PluginError(f"{who} preprocess must return uint8 {tuple(train.images.shape)}, got "
                                  f"{getattr(images, 'dtype', type(images).__name__)} "
                                  f"{tuple(getattr(images, 'shape', ()))}")
            current = Split(images.detach().cpu().contiguous(), train.labels)
        return current.images

    def eval_split(self, split: Split | None, *, ctx: DefenseContext) -> Split | None:
        """``split`` after the defenses whose ``applies_to_eval`` is True (usually unchanged)."""
        if split is None:
            return None
        images = split.images
        for defense in self.defenses:
            if defense.applies_to_eval:
                images = defense.transform_eval(images.clone(), ctx=ctx)
        return split if images is split.images else Split(images, split.labels)

    # -- per batch --------------------------------------------------------------------------
    def step(self, *, forward, x_u8: torch.Tensor, y: torch.Tensor, scale01: torch.Tensor,
             shift01: torch.Tensor, seed: int, epoch: int, step: int, epochs: int, device: str, model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch through the batch defenses and the loss: ``(loss, logits, correct)``.

        ``x_u8`` is the cropped/flipped uint8 NHWC batch; ``correct`` is the (soft, for mixed
        targets) number of correct predictions as a float tensor.
        """
        x = x_u8.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # channels_last-strided view, [0, 1]
        target: Any = y

        def context(defense) -> BatchContext:
            name = getattr(defense, "registry_name", defense.name)
            return BatchContext(seed=derive_seed(seed, "defense", name, epoch, step), epoch=epoch,
                                step=step, epochs=epochs, device=device, num_classes=self.num_classes,
                                model=model)

        for defense in self.of_stage("batch"):
            x, target = defense.batch(x, target, ctx=context(defense))

        def f(z: torch.Tensor) -> torch.Tensor:
            return forward(z * scale01 + shift01)

        owner = self.loss_defense
        if owner is None:
            logits = f(x)
            loss = mixed_cross_entropy(logits, target)
        else:
            loss, logits = owner.loss(f, x, target, ctx=context(owner))
        return loss, logits, soft_correct(logits.detach(), target)


def _identity(defense) -> dict[str, Any]:
    from poisonbench.catalog.params import params_to_dict

    cls = type(defense)
    return {"name": getattr(defense, "registry_name", defense.name), "class": f"{cls.__module__}.{cls.__qualname__}",
            "version": getattr(cls, "version", 1), "params": params_to_dict(defense.params)}


def scale_shift01(mean, std, *, channels: int, normalize: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with ``z * scale + shift == (z - mean) / std`` for ``z`` in [0, 1]."""
    if not normalize:
        mean, std = (0.0,) * channels, (1.0,) * channels
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, channels, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, channels, 1, 1)
    return 1.0 / std_t, -mean_t / std_t
