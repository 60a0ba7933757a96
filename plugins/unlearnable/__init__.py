"""Error-minimising "unlearnable examples" poisons SU (sample-wise) and CU (class-wise).

Paper: Huang, Ma, Erfani, Bailey, Wang, "Unlearnable Examples: Making Personal Data Unexploitable",
ICLR 2021. The algorithm (this benchmark's reading of the authors' code): docs/poisons.md, SU, CU.

Threat model: additive L∞ perturbation, ``eps`` (fraction of the pixel range, 8/255 by default).
The noise *minimises* the training loss (bi-level min-min): a fresh model (no pretrained surrogate)
is trained jointly with the noise, so the noise becomes a shortcut the victim learns instead of the
image content. Crafting loop, per round: ``train_steps`` SGD steps of the model on the poisoned
data, then the noise update (sign-gradient descent on the cross-entropy, model in eval mode); stop
once the model's accuracy on the poisoned data exceeds ``stop_acc``; fail after ``max_rounds``.

Params (both families; units in brackets):
  eps [pixel fraction]        L∞ budget, 8/255
  step_size [pixel fraction]  sign-gradient step α, 0.8/255
  attack_steps [steps]        inner min-min steps per noise update: SU 20, CU 1
  model [victim name]         crafting architecture, built fresh from the victim registry (resnet18)
  lr, momentum, weight_decay  the crafting model's SGD (constant lr 0.1, 0.9, 5e-4)
  grad_clip [L2 norm]         gradient-norm clip of each model step, 5.0
  batch_size [images]         512, for model steps, noise updates and the accuracy check
  train_steps [batches]       model SGD steps per round, 10
  stop_acc [fraction]         stop when accuracy on the poisoned data is > this, 0.99
  max_rounds [rounds]         give up (RunFailed) after this many rounds, 100
  on_max_rounds               fail (default) | keep: export the noise after max_rounds anyway
                              (the manifest then says converged: false)
  refresh_batchnorm [bool]    recompute the crafting model's BatchNorm running statistics on the
                              current poisoned data (one forward pass) before each noise update and
                              accuracy check; false = the original (running averages of the last steps)
  stall_rounds [rounds]       after this many rounds, an accuracy that never left chance (within 5
                              points of 1/classes) means the craft is not converging, 5
  on_stall                    warn (default) | fail: stop with that message instead of running on

Progress: each round shows the accuracy, its trend (points per round over the last 4 rounds) and
the estimated rounds left; the manifest records every round's accuracy (``crafting_accs``).

CPU presets ``SU-cpu`` and ``CU-cpu``: ``small_cnn`` crafting model, ``refresh_batchnorm: true``,
``on_stall: fail``. Why: with 10 SGD steps per round the running BatchNorm averages lag the weights,
so the eval-mode model that the noise is fitted to (and that the stop check judges) is not the one
trained -- the noise chases a stale model and the check can sit at chance on real photos. Measured
numbers are in docs/measurement.md.
  subset_fraction (CU only)   seeded stratified share of the training set used for the noise, 0.2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from poisonbench.api import CraftContext, Paper, Poison, Split, check_ranges, register_presets
from poisonbench.hookspecs import hookimpl


@dataclass(frozen=True)
class SampleWiseParams:
    eps: float = 8 / 255  # L∞ budget as a fraction of the pixel range
    step_size: float = 0.8 / 255  # α of each sign-gradient step
    attack_steps: int = 20  # min-min steps per noise update
    model: str = "resnet18"  # victim-registry name of the crafting model (trained from scratch)
    lr: float = 0.1  # constant SGD learning rate of the crafting model
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    grad_clip: float = 5.0  # max L2 norm of the model gradient per step
    batch_size: int = 512
    train_steps: int = 10  # model SGD steps per round
    stop_acc: float = 0.99  # stop once accuracy on the poisoned data is strictly above this
    max_rounds: int = 100  # fail loudly after this many rounds instead of looping forever
    on_max_rounds: Literal["fail", "keep"] = "fail"  # keep = export the unconverged noise anyway
    refresh_batchnorm: bool = False  # recompute BatchNorm statistics before noise update and check
    stall_rounds: int = 5  # rounds after which an accuracy still at chance means "not converging"
    on_stall: Literal["warn", "fail"] = "warn"  # fail = stop then, instead of after max_rounds

    def __post_init__(self):
        check_ranges(self, positive=("eps", "step_size"),
                     at_least_one=("attack_steps", "batch_size", "max_rounds", "stall_rounds"),
                     non_negative=("lr", "momentum", "weight_decay", "grad_clip", "train_steps"))
        if not 0 <= self.stop_acc < 1:  # accuracy must be strictly above it, so 1 never stops
            raise ValueError(f"stop_acc must be in [0, 1), got {self.stop_acc}")


@dataclass(frozen=True)
class ClassWiseParams(SampleWiseParams):
    attack_steps: int = 1  # one min-min step per subset batch
    subset_fraction: float = (
        0.2  # share of each class used for the noise updates and the stop check
    )

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self, fraction=("subset_fraction",))


class ErrorMinimising(Poison):
    """Base of the family (SU, CU, REM): L∞ noise that minimises the loss of a model crafted alongside it.

    The crafting model is trained from scratch while crafting: ``params.model`` names its victim
    architecture (checked against the catalog); ``self.stats`` is what crafting recorded (rounds or
    steps run, the crafting model's final loss/accuracy), written to the manifest.
    """

    kind = "min"
    threat_model = "linf"

    def __init__(self, params: Any = None):
        super().__init__(params)
        self.stats: dict[str, Any] = {}

    def check_references(self, catalog) -> list[tuple[str | None, str]]:
        if self.params.model not in catalog.victims:
            return [("model", catalog.victims.unknown_message(self.params.model))]
        return []

    def manifest_extras(self) -> dict[str, Any]:
        """What crafting recorded: rounds or steps run, the crafting model's final loss/accuracy."""
        return dict(self.stats)


class _Unlearnable(ErrorMinimising):
    """Shared surface of SU and CU; the torch code lives in ops.py beside this file."""

    family = "unlearnable"
    paper = Paper(title="Unlearnable Examples: Making Personal Data Unexploitable", venue="ICLR", year=2021,
                  url="https://arxiv.org/abs/2101.04898", authors="Huang et al.")
    label: ClassVar[str] = ""  # short name used in messages
    # Contract checks (poisonbench.testing): a small net and one short round, converged or not.
    contract_params: ClassVar[dict[str, Any]] = {
        "model": "small_cnn",
        "max_rounds": 1,
        "train_steps": 2,
        "attack_steps": 2,
        "on_max_rounds": "keep",
    }

    def craft(self, clean: Split, *, ctx: CraftContext):
        from poisonbench.plugins.unlearnable import ops

        poisoned, self.stats = ops.craft(
            clean, ctx=ctx, params=self.params, classwise=self.applied == "class", label=self.label
        )
        return poisoned


class UnlearnableSample(_Unlearnable):
    """Sample-wise error-minimising noise (unlearnable examples, Huang et al. 2021)."""

    name = "unlearnable_sample"
    applied = "sample"
    label = "SU"
    Params = SampleWiseParams


class UnlearnableClass(_Unlearnable):
    """Class-wise error-minimising noise (unlearnable examples, Huang et al. 2021)."""

    name = "unlearnable_class"
    applied = "class"
    label = "CU"
    Params = ClassWiseParams


CPU_PRESET = {"model": "small_cnn", "refresh_batchnorm": True, "on_stall": "fail"}
PAPER_PRESETS = {  # class: description of its paper preset, registered as the class's label (SU, CU)
    UnlearnableSample: "sample-wise unlearnable examples (error-minimising, 20 steps of 0.8/255)",
    UnlearnableClass: "class-wise unlearnable examples (error-minimising, 20% subset)",
}


@hookimpl
def poisonbench_register_poisons(register):
    for cls, description in PAPER_PRESETS.items():
        register_presets(register, cls, {
            cls.label: ({}, description),
            f"{cls.label}-cpu": (CPU_PRESET, f"CPU preset of {cls.label}: small_cnn, BatchNorm statistics "
                                             "refreshed each round"),
        })
