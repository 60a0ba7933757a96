"""Victim training under the paper's protocol, resumable bit for bit: ``train_victim``, ``evaluate``, ``predict``.

The protocol (docs/protocol.md; every knob is a ``TrainConfig`` field): SGD (lr 0.1, momentum 0.9,
weight decay 5e-4, optional Nesterov), lr × gamma at each milestone epoch (MultiStepLR stepped once
per epoch), cross-entropy, random crop with zero padding + horizontal flip, normalisation with the
dataset's mean/std. Logged per epoch: mean training loss over the epoch's batches (train mode,
augmented data), training accuracy on those same augmented batches, clean test accuracy and, when a
validation split is given, clean validation accuracy.

Speed (airbench style): the training set lives on the device as uint8 NHWC; crop/flip/normalise are
batched tensor ops on the device (``augment.py``); channels_last; bf16 autocast on CUDA, fp32 on CPU;
evaluation in large batches under ``inference_mode``; optional ``torch.compile`` on CUDA. No
DataLoader in the hot path.

Determinism: epoch e's order, crop offsets and flips come from a generator seeded by
``derive_seed(seed, "epoch", e)``; everything else that is random (dropout) uses torch's global RNG,
seeded from ``seed`` at a fresh start and restored from the checkpoint on resume. Every epoch is
checkpointed atomically, so a run killed at any moment resumes to bit-identical history and weights
on the same machine, device and thread count.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from poisonbench.api import Split
from poisonbench.errors import Interrupted
from poisonbench.suite.config import TrainConfig
from poisonbench.training.augment import (
    crop_flip,
    normalisation,
    pad_fill,
    plan_epoch,
    to_model_input,
)
from poisonbench.training.checkpoint import load_checkpoint, save_checkpoint
from poisonbench.training.device import autocast, autocast_dtype, derive_seed, is_cuda

INTERRUPTED_MESSAGE = "interrupted; re-run the same command to resume"
# channels_last helps convolutions on CUDA (tensor cores) and with oneDNN on CPU; the NHWC uint8
# data gives channels_last inputs for free (augment.to_model_input), so it is on everywhere.
CHANNELS_LAST = True

Progress = Callable[..., Callable[..., None]]


def train_victim(*, model: nn.Module, train: Split, test: Split, val: Split | None, config: TrainConfig,
                 mean, std, seed: int, device: str, checkpoint_path: Path | None = None,
                 progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                 chain: Any = None) -> dict[str, Any]:
    """Train ``model`` in place on ``train``; return the per-epoch history.

    Returns ``{"train_loss": [...], "train_acc": [...], "test_acc": [...], "lr": [...],
    ("val_acc": [...]), "diverged": bool, "wall_s": float}``: lists have one entry per finished
    epoch (accuracies are fractions; ``lr`` is the rate used during that epoch). A non-finite mean
    training loss stops training early: that epoch is not recorded and ``diverged`` is True.
    ``checkpoint_path``: written after every epoch and resumed from when present (a corrupt or
    foreign file raises ``ArtifactError``). ``progress(description, total)`` returns an
    ``advance(n=1, **fields)`` callable, advanced per batch. ``should_stop()`` is polled after
    every batch; when it returns True the run raises ``Interrupted`` (the last finished epoch is
    already checkpointed). ``chain`` (``training.defended.Chain``): the batch/training defenses run
    on every batch in [0, 1] pixel space (preprocessing is done by the caller); without one, or with
    only preprocess defenses, the plain uint8 path runs, bit-identical to an undefended training.
    """
    cuda = is_cuda(device)
    if cuda:  # fastest conv algorithms; GPU results are reproducible only up to cuDNN's nondeterminism
        torch.backends.cudnn.benchmark = True
    model.to(device)
    images, labels = _resident(train, device)
    channels = int(images.shape[-1])
    scale, shift = normalisation(mean, std, channels=channels, normalize=config.normalize, device=device)
    fill = pad_fill(config.crop_fill, mean, channels=channels, device=device)
    _materialize_lazy(model, to_model_input(images[:2], scale=scale, shift=shift))
    if CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device, config.precision)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones),
                                                     gamma=config.gamma)
    per_batch = chain is not None and chain.per_batch
    identity = run_identity(model=model, train=train, config=config, mean=mean, std=std, seed=seed,
                            defenses=chain.describe() if per_batch else None)
    if per_batch:
        from poisonbench.training.defended import scale_shift01

        scale01, shift01 = scale_shift01(mean, std, channels=channels, normalize=config.normalize,
                                         device=device)
    state = _fresh_state(val is not None)
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = load_checkpoint(Path(checkpoint_path), model=model, optimizer=optimizer,
                                scheduler=scheduler, identity=identity)
    else:
        torch.manual_seed(derive_seed(seed, "global-rng"))  # dropout & co.; also seeds CUDA
    n = len(labels)
    n_batches = math.ceil(n / config.batch_size)
    advance = progress("train", config.epochs * n_batches) if progress else (lambda n=1, **f: None)
    advance(state["epoch"] * n_batches)
    forward = torch.compile(model) if (config.compile and cuda) else model
    evaluation = [(key, *_resident(split, device)) for key, split in (("test", test), ("val", val))
                  if split is not None]
    while not state["finished"]:
        epoch = state["epoch"]  # 0-based index of the epoch about to run
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch))
        plan = plan_epoch(n, generator=generator, augment=config.augment,
                          padding=config.crop_padding).to(device)
        lr_used = float(optimizer.param_groups[0]["lr"])
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long if not per_batch else _soft_dtype(device), device=device)
        for step, start in enumerate(range(0, n, config.batch_size)):
            order, dy, dx, flip = plan.batch(start, start + config.batch_size)
            x = crop_flip(images[order], dy=dy, dx=dx, flip=flip, padding=config.crop_padding, fill=fill)
            y = labels[order]
            if per_batch:  # defenses: [0, 1] pixel space, normalisation inside the model call
                with autocast(device, dtype):
                    loss, logits, hits = chain.step(
                        forward=forward, x_u8=x, y=y, scale01=scale01, shift01=shift01, seed=seed,
                        epoch=epoch, step=step, epochs=config.epochs, device=device, model=model)
            else:
                x = to_model_input(x, scale=scale, shift=shift, channels_last=CHANNELS_LAST)
                with autocast(device, dtype):
                    logits = forward(x)
                    loss = F.cross_entropy(logits, y)
                hits = (logits.detach().argmax(1) == y).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().float()
            correct += hits.to(correct.dtype)
            advance(1)
            if should_stop is not None and should_stop():
                raise Interrupted(INTERRUPTED_MESSAGE)
        scheduler.step()
        train_loss = float(loss_sum.item()) / n_batches
        if not math.isfinite(train_loss):
            state.update(finished=True, diverged=True)
        else:
            history = state["history"]
            history["train_loss"].append(train_loss)
            history["train_acc"].append((float(correct.item()) if per_batch else int(correct.item())) / n)
            history["lr"].append(lr_used)
            for key, eval_images, eval_labels in evaluation:
                history[f"{key}_acc"].append(_accuracy(forward, eval_images, eval_labels, scale=scale,
                                                       shift=shift, batch_size=config.eval_batch_size,
                                                       device=device, dtype=dtype))
            state["epoch"] = epoch + 1
            state["finished"] = state["epoch"] >= config.epochs
        state["wall_s"] += time.perf_counter() - started
        if checkpoint_path is not None:
            save_checkpoint(Path(checkpoint_path), model=model, optimizer=optimizer, scheduler=scheduler,
                            state=state, identity=identity)
        hist = state["history"]
        if hist["train_loss"]:
            advance(0, epoch=f"{state['epoch']}/{config.epochs}", loss=hist["train_loss"][-1],
                    acc=hist["train_acc"][-1], test=hist["test_acc"][-1])
    return {**{k: list(v) for k, v in state["history"].items()},
            "diverged": bool(state["diverged"]), "wall_s": float(state["wall_s"])}


def _soft_dtype(device: str) -> torch.dtype:
    """Accumulator of soft (mixed-label) correct counts: float64 where the device has it."""
    return torch.float32 if str(device).startswith("mps") else torch.float64


def _materialize_lazy(model: nn.Module, sample: torch.Tensor) -> None:
    """Give lazy modules (``nn.LazyLinear``...) their shapes with one eval-mode forward, so the
    optimiser sees real parameters; eval mode leaves BatchNorm statistics untouched."""
    if not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        return
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(sample)
    model.train(was_training)


def _fresh_state(with_val: bool) -> dict[str, Any]:
    keys = ["train_loss", "train_acc", "test_acc", "lr"] + (["val_acc"] if with_val else [])
    return {"epoch": 0, "finished": False, "diverged": False, "wall_s": 0.0,
            "history": {key: [] for key in keys}}


def run_identity(*, model: nn.Module, train: Split, config: TrainConfig, mean, std, seed: int,
                 defenses: list[dict[str, Any]] | None = None) -> str:
    """sha256 over everything a checkpoint must match: protocol, seed, model layout, training data
    and (when there are any) the batch/training defenses."""
    protocol = {k: v for k, v in asdict(config).items() if k not in ("device", "eval_batch_size", "compile")}
    layout = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    digest = hashlib.sha256()
    material = {"protocol": protocol, "seed": seed, "mean": list(mean), "std": list(std), "layout": layout}
    if defenses:
        material["defenses"] = defenses
    digest.update(json.dumps(material, sort_keys=True).encode())
    for tensor in (train.images, train.labels):
        digest.update(tensor.detach().to("cpu").contiguous().numpy().data)
    return digest.hexdigest()


def _resident(split: Split, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC images and int64 labels on the device (no copy when already there)."""
    images = split.images
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 (N, H, W, C) images, got {images.dtype} {tuple(images.shape)}")
    return images.to(device).contiguous(), split.labels.to(device=device, dtype=torch.long)


@torch.inference_mode()
def _logits_batches(model, images, *, scale, shift, batch_size, device, dtype):
    for start in range(0, len(images), batch_size):
        x = to_model_input(images[start:start + batch_size], scale=scale, shift=shift,
                           channels_last=CHANNELS_LAST)
        with autocast(device, dtype):
            yield start, model(x)


def _accuracy(model, images, labels, *, scale, shift, batch_size, device, dtype) -> float:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start, logits in _logits_batches(model, images, scale=scale, shift=shift,
                                         batch_size=batch_size, device=device, dtype=dtype):
        correct += (logits.argmax(1) == labels[start:start + len(logits)]).sum()
    model.train(was_training)
    return int(correct.item()) / max(1, len(labels))


def predict(model: nn.Module, split: Split, *, mean, std, device: str, batch_size: int = 1024,
            precision: str = "auto", normalize: bool = True) -> torch.Tensor:
    """Predicted labels (int64, CPU) of ``model`` (moved to ``device``) in eval mode for ``split``."""
    model.to(device)
    images, _ = _resident(split, device)
    scale, shift = normalisation(mean, std, channels=int(images.shape[-1]), normalize=normalize,
                                 device=device)
    was_training = model.training
    model.eval()
    out = [logits.argmax(1).cpu() for _, logits in _logits_batches(
        model, images, scale=scale, shift=shift, batch_size=batch_size, device=device,
        dtype=autocast_dtype(device, precision))]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def evaluate(model: nn.Module, split: Split, *, mean, std, device: str, batch_size: int = 1024,
             precision: str = "auto", normalize: bool = True) -> float:
    """Accuracy (fraction in [0, 1]) of ``model`` in eval mode on ``split``."""
    predicted = predict(model, split, mean=mean, std=std, device=device, batch_size=batch_size,
                        precision=precision, normalize=normalize)
    return int((predicted == split.labels.cpu()).sum()) / len(predicted) if len(predicted) else 0.0
