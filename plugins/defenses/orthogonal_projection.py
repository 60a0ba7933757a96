"""Orthogonal projection: fit a linear classifier on the poisoned set, then remove its class directions from every image.

Paper: Sandoval-Segura, Singla, Geiping, Goldblum and Goldstein, "What Can We Learn from Unlearnable
Datasets?", NeurIPS 2023, https://arxiv.org/abs/2305.19254 (code: psandovalsegura/learn-from-unlearnable,
``orthogonal_projection_step_{1,2}.py``).

Threat model: a victim-side defense against poisons whose shortcut is linearly separable and
class-wise (LSP, OPS, class-wise noise, regions): a linear model on raw pixels learns exactly the
poison's class directions, and projecting them out of the data removes the shortcut. It is not
meant to help against sample-wise poisons (EM, TAP). Where it acts: the whole training set once
before training (stage ``preprocess``, first in the chain so it sees the raw poison); the result is
cached as uint8 like an artifact. Test and validation images are not projected (as the reference).

Step 1: a bias-free ``Linear(D, K)`` on flattened [0, 1] pixels (D = H·W·C, no normalisation, no
augmentation), PyTorch's default init, plain SGD (no momentum, no weight decay) on mean
cross-entropy, ``epochs`` epochs of ``batch_size``, lr × 0.1 at each milestone. Step 2: the rows of
W are normalised, Q = an orthonormal basis of their span (reduced QR, D×K), and every image becomes
``x − (x Q) Qᵀ`` — K directions fewer. The projected floats leave [0, 1]; they are stored as
``floor(255·clamp(x, 0, 1) + 0.5)`` (the reference trains on unclamped floats whose colour jitter
clamps later: close, not bit-exact). The progress bar shows the linear model's training accuracy
and the fraction of clamped values.

Params:
  epochs     -- passes of the linear fit (default 20)
  lr         -- SGD learning rate of the linear fit (default 0.1)
  batch_size -- images per SGD step of the linear fit (default 1024)
  milestones -- fractions of ``epochs`` where lr × 0.1 (default [0.5, 0.75] = epochs 10 and 15 of 20)

Decision: the fit visits batches in a seeded order per epoch (the reference does not shuffle; on a
class-sorted split that would harm). The paper's step 2 also trains with extra augmentation and
CutMix; that is the suite's choice (add ``cutmix`` to the chain), not part of this defense.

Any size and channel count: D = H·W·C. On 1-channel Fashion-MNIST it removes 10 of 784
directions (10 of 3072 on CIFAR-10), so expect a larger cost on clean data there. Cost: 20 passes of
a matrix product over the training set (seconds on a GPU; runs on the training device) plus one
projection. Determinism: init and data order come from CPU generators seeded by the training seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from poisonbench.api import Defense, Paper, derive_seed
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class OrthogonalProjectionParams:
    epochs: int = 20  # passes over the training set of the linear fit
    lr: float = 0.1  # SGD learning rate of the linear fit
    batch_size: int = 1024  # images per SGD step of the linear fit
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of epochs where lr × 0.1

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if any(not 0 < m <= 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be ascending fractions of epochs in (0, 1], got {list(self.milestones)}")


class OrthogonalProjection(Defense):
    """Orthogonal projection: remove the span of a linear classifier's class weights from every training image."""

    name = "orthogonal_projection"
    stage = "preprocess"
    rank = 10
    Params = OrthogonalProjectionParams
    contract_params = {"epochs": 2, "batch_size": 64}  # cheapest settings for the contract check
    paper = Paper(title="What Can We Learn from Unlearnable Datasets?", venue="NeurIPS", year=2023,
                  url="https://arxiv.org/abs/2305.19254", authors="Sandoval-Segura et al.")

    def preprocess(self, train, *, ctx):
        from poisonbench.plugins.defenses.robust_ops import orthogonal_projection

        p = self.params
        advance = ctx.advance_bar("orthogonal projection", 1)
        images, stats = orthogonal_projection(
            train.images, train.labels, num_classes=ctx.num_classes, epochs=p.epochs, lr=p.lr,
            batch_size=p.batch_size, milestones=tuple(p.milestones),
            seed=derive_seed(ctx.seed, "orthogonal_projection"), device=ctx.device)
        advance(1, linear_acc=f"{stats['linear_train_acc']:.3f}", clipped=f"{stats['clipped_fraction']:.4f}")
        return images


@hookimpl
def poisonbench_register_defenses(register):
    register(OrthogonalProjection)
