"""SEP: self-ensemble protection (Chen et al., ICLR 2023) — adversarial poison on checkpoints of ONE training.

Threat model: additive L∞, ``eps`` 8/255 (the value cross-attack tables use; the paper's headline
is 2/255, preset ``SEP-eps2``), sample-wise, every training image poisoned. Each image descends, by
signed steps of ``step_size``, a loss towards the target class t(y) = (y + ⌊K/2⌋) mod K averaged
over M checkpoints of one clean surrogate training (``sep_ops`` has the step): ``ce`` (SEP: CE to
the target), ``fa`` (SEP-FA: MSE of the penultimate features to the target class's clean feature
centroid), ``fa_vr`` (SEP-FA-VR, default: ``fa`` plus a stochastic variance-reduced inner loop of
``m_inner`` steps). Models in eval mode, no augmentation; the export rounds half up (the released
code truncates, which can exceed ε by one level).

The checkpoints: the surrogate training (``surrogate_*``: the released recipe, 120 epochs of SGD
0.1, momentum 0.9, no Nesterov, wd 5e-4, lr × 0.1 after epochs 75 and 90, batch 128) keeps its
weights at the end of epochs round(j·E/M), j = 1..M ("uniform"; E = 120, M = 15 → 8, 16, …, 120),
each cached (``ctx.surrogate(victim, recipe, checkpoints=[…])``). The released code instead keeps
every new-best-test-accuracy checkpoint and subsamples them; that rule needs the test set during
the poisoner's training and is not offered. Its first-epoch linear warm-up is not part of the
harness's recipe (omitted). Its augmentation is crop + flip, as the harness's.

Resuming: the surrogate training continues from its last finished epoch (its training checkpoint
and the finished checkpoints are cached); the crafting saves the finished batches every
``round_batches`` batches under ``<cache dir>/craft-state/`` and continues from there.

Params (units: pixel fractions unless stated): eps (8/255); steps T (30); step_size α (1/255);
variant (fa_vr); num_models M (null = 15 for fa_vr, 30 for ce/fa); m_inner (16); batch_size
[images] per crafted batch (256; fa_vr's inner draws are shared by a batch, so it matters there);
round_batches [batches] between saved craft states (does not change the result); surrogate_*.
Presets: ``SEP`` (SEP-FA-VR as released, 8/255), ``SEP-eps2`` (2/255), ``SEP-cpu`` (CPU-sized, not
paper-faithful: a 6-epoch small_cnn run, 3 checkpoints (epochs 2, 4, 6), 6 steps of 2/255 — the
8/255 ball is reachable in 4 — and 2 inner steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from poisonbench.api import (
    CraftContext,
    Paper,
    Split,
    SurrogateParams,
    check_ranges,
    register_presets,
)
from poisonbench.hookspecs import hookimpl
from poisonbench.plugins.adversarial import SurrogateAttack


@dataclass(frozen=True)
class SepParams(SurrogateParams):
    eps: float = 8 / 255
    steps: int = 30
    step_size: float = 1 / 255
    variant: Literal["ce", "fa", "fa_vr"] = "fa_vr"
    num_models: int | None = None  # null = 15 (fa_vr) or 30 (ce, fa)
    m_inner: int = 16  # SVRE inner steps (fa_vr)
    batch_size: int = 256  # images per crafted batch
    round_batches: int = 8  # batches between saved craft states
    precision: Literal["fp32"] = "fp32"  # sign steps: crafted in fp32
    surrogate_epochs: int = 120
    surrogate_nesterov: bool = False
    surrogate_milestones: list[int] = field(default_factory=lambda: [75, 90])  # epochs

    def __post_init__(self):
        if not 0 < self.eps <= 127 / 255:
            raise ValueError(f"eps must be in (0, 127/255], got {self.eps}")
        check_ranges(self, at_least_one=("steps", "m_inner", "batch_size", "round_batches"), positive=("step_size",))
        if not 1 <= self.models <= self.surrogate_epochs:
            raise ValueError(f"num_models must be in 1..surrogate_epochs ({self.surrogate_epochs}), got {self.models}")

    @property
    def models(self) -> int:
        return self.num_models if self.num_models is not None else (15 if self.variant == "fa_vr" else 30)

    def checkpoint_epochs(self) -> list[int]:
        """round(j·E/M) (half up), j = 1..M: the epochs whose weights form the ensemble."""
        e, m = self.surrogate_epochs, self.models
        return [int(j * e / m + 0.5) for j in range(1, m + 1)]


class SelfEnsembleProtection(SurrogateAttack):
    """Self-ensemble protection: targeted sign descent on M checkpoints of one clean surrogate training."""

    name = "sep"
    paper = Paper(title="Self-Ensemble Protection: Training Checkpoints Are Good Data Protectors",
                  venue="ICLR", year=2023, url="https://openreview.net/forum?id=9MO7bjoAfIA",
                  authors="Chen et al.")
    Params = SepParams
    contract_params = {"steps": 2, "num_models": 2, "m_inner": 2, "batch_size": 10, "surrogate_epochs": 2}

    def craft(self, clean: Split, *, ctx: CraftContext):
        import torch

        from poisonbench.api import craft_state, data_digest
        from poisonbench.plugins.adversarial import sep_ops

        p, label = self.params, getattr(self, "registry_name", self.name)
        models = self.surrogate_model(ctx, label, checkpoints=p.checkpoint_epochs())
        params = {k: v for k, v in asdict(p).items() if k != "round_batches"}
        state = craft_state(ctx, label=label, identity={"params": params,
                                                        "data": data_digest(clean.images, clean.labels)})
        n, (h, w, c) = len(clean), clean.images.shape[1:]
        levels = torch.zeros(n, c, h, w, dtype=torch.int8)
        done: dict[int, bool] = {}
        saved = state.load() if state is not None else None
        if saved is not None:
            done = {int(b): True for b in saved[0]["done"]}
            levels.copy_(saved[1]["levels"])
        n_batches = -(-n // p.batch_size)
        advance = ctx.advance_bar(f"crafting {label} ({p.models} checkpoints, {p.variant})", n_batches)
        advance(len(done))

        def on_batch(b: int, lv: torch.Tensor) -> None:
            levels[b * p.batch_size:b * p.batch_size + len(lv)] = lv
            done[b] = True
            if state is not None and len(done) % p.round_batches == 0 and len(done) < n_batches:
                state.save({"done": sorted(done)}, {"levels": levels})
            advance(1, batch=b + 1)

        device = torch.device(ctx.device)
        with torch.inference_mode(False), torch.enable_grad():
            sep_ops.craft_batches(models, clean.images, clean.labels, p=p, seed=ctx.seed,
                                  num_classes=ctx.num_classes, device=device, done=done, on_batch=on_batch)
        out = (clean.images.to(torch.int16) + levels.permute(0, 2, 3, 1).to(torch.int16)).clamp_(0, 255)
        if state is not None:
            state.clear()
        return out.to(torch.uint8).contiguous()


CPU_PRESET = {"surrogate": "small_cnn", "surrogate_epochs": 6, "surrogate_milestones": [4], "num_models": 3,
              "steps": 6, "step_size": 2 / 255, "m_inner": 2}


PRESETS = {  # name: (params, description)
    "SEP": ({}, "self-ensemble protection (SEP-FA-VR), 15 checkpoints of a 120-epoch resnet18 run, 30 steps, "
                "8/255 (Chen et al. 2023)"),
    "SEP-eps2": ({"eps": 2 / 255}, "SEP-FA-VR at the paper's headline budget 2/255"),
    "SEP-cpu": (CPU_PRESET, "CPU-sized SEP-FA-VR (not paper-faithful): 3 checkpoints of a 6-epoch small_cnn run, "
                            "6 steps of 2/255, 2 inner steps"),
}


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, SelfEnsembleProtection, PRESETS)
