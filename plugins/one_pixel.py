"""OPS — the one-pixel shortcut: every image of a class gets the same pixel set to the same extreme colour.

Paper: Wu, Chen, Xie, Huang, "One-Pixel Shortcut: on the Learning Preference of Deep Neural
Networks", ICLR 2023, https://arxiv.org/abs/2205.12141 (code: github.com/cychomatica/One-Pixel-Shotcut).

Threat model ``l0``: per image at most ``sparsity`` pixel positions (h, w) change, all channels of
a position, by any amount; no surrogate. The values are written as bytes directly (255·colour), so
no other pixel moves even by a rounding level.

Algorithm (model-free search on the clean training images of each class): the candidate colours
are the 2^C corners of the colour cube (C = 3: 8 colours; C = 1: black and white; colour v has
channel c = bit C−1−c of v). For class k, position p and colour v, D = |colour(v) − x[p]| over the
class's images and channels (n_k·C values in [0, 1]); score = mean(D)/std(D) (population std): a
colour far from, and consistently far from, what the class has there. Classes in order 0…K−1 take
their best-scoring (position, colour) pair not taken by an earlier class; ties go to the smallest
index p·2^C + v with p = h·W + w (row-major on any H, W). A zero std (every image of the class has
the same value there — common on Fashion-MNIST's black border) scores +inf when the mean is > 0
(0 otherwise); the manifest lists each class's pixel, colour and score so such picks are visible.

Vectorised: D is x for a colour bit 0 and 1 − x for bit 1, so per class and position only Σx and
Σx² per channel are needed; they are accumulated as exact integers over the uint8 bytes (one pass
over the data), so a zero variance is detected exactly and no loop over pixels exists.

Decisions: taken pairs are excluded (−inf) rather than scored 0, so no two classes can share a
(position, colour) pair; ``dedup: position`` keeps classes apart by position too. With
``sparsity`` > 1 a class skips pairs at a position it already uses. The ART variant's
mean-minus-variance objective is not provided.

Params:
  sparsity [pixel positions]  pixels per class and image = the L0 budget (1)
  dedup                       pair (no two classes share a position-and-colour) | position
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from poisonbench.api import CraftContext, Paper, Poison, Split, check_ranges, register_presets
from poisonbench.errors import BadInput
from poisonbench.hookspecs import hookimpl

CHUNK = 4096  # images per statistics step (int64 temporaries of 4096×H×W×C)


@dataclass(frozen=True)
class OPSParams:
    sparsity: int = 1  # pixel positions per image = the L0 budget
    dedup: Literal["pair", "position"] = "pair"

    def __post_init__(self):
        check_ranges(self, at_least_one=("sparsity",))


def colours(channels: int):
    """(2^C, C) int64 bits: colour v has channel c = bit C−1−c of v (C = 3: 4 → red)."""
    import torch

    v = torch.arange(2**channels).view(-1, 1)
    shifts = torch.arange(channels - 1, -1, -1).view(1, -1)
    return (v >> shifts) & 1


def class_sums(images, labels, num_classes: int):
    """Per-class image counts (K,) and exact Σx, Σx² per position and channel (K, H·W, C) int64."""
    import torch

    n, height, width, channels = images.shape
    s1 = torch.zeros(num_classes, height * width, channels, dtype=torch.int64)
    s2 = torch.zeros_like(s1)
    for start in range(0, n, CHUNK):
        x = images[start:start + CHUNK].reshape(-1, height * width, channels).to(torch.int64)
        y = labels[start:start + CHUNK]
        s1.index_add_(0, y, x)
        s2.index_add_(0, y, x * x)
    return torch.bincount(labels, minlength=num_classes), s1, s2


def scores(count: int, s1, s2):
    """(H·W, 2^C) float64 mean(D)/std(D) of one class (``count`` images; Σx, Σx² (H·W, C) int64)
    per position and colour: +inf where std = 0 < mean, 0 for an empty class."""
    import torch

    channels = s1.shape[1]
    if count == 0:
        return torch.zeros(s1.shape[0], 2**channels, dtype=torch.float64)
    on = colours(channels).bool().unsqueeze(0)  # (1, V, C)
    a, b = s1.unsqueeze(1), s2.unsqueeze(1)  # (P, 1, C)
    sum_d = torch.where(on, count * 255 - a, a).sum(dim=2)  # Σ D in grey levels, (P, V)
    sum_sq = torch.where(on, count * 255 * 255 - 2 * 255 * a + b, b).sum(dim=2)
    m = count * channels  # values per (position, colour)
    var_num = m * sum_sq - sum_d * sum_d  # m²·var, exact in int64: zero iff every D is equal
    score = sum_d.double() / var_num.double().sqrt()  # mean/std: the units and m cancel
    return torch.where(var_num == 0, torch.where(sum_d > 0, torch.inf, 0.0), score)


def choose(score, *, sparsity: int, dedup: str) -> list[list[tuple[int, int, float]]]:
    """Per class (in order) its ``sparsity`` (position, colour, score) picks; see the module docstring."""
    import torch

    num_classes, positions, num_colours = score.shape
    if positions * num_colours < num_classes * sparsity:
        raise BadInput(f"OPS: {num_classes} classes × {sparsity} pixels exceed the "
                       f"{positions * num_colours} (position, colour) pairs of these images")
    taken = torch.zeros(positions, num_colours, dtype=torch.bool)
    picks = []
    for k in range(num_classes):
        flat = score[k].clone()
        flat[taken] = -torch.inf
        order = torch.sort(-flat.flatten(), stable=True).indices  # ties: smallest p·2^C + v first
        mine: list[tuple[int, int, float]] = []
        for index in order.tolist():
            p, v = divmod(index, num_colours)
            if bool(taken[p, v]) or any(p == q for q, _, _ in mine):
                continue
            mine.append((p, v, float(score[k, p, v])))
            if len(mine) == sparsity:
                break
        if len(mine) < sparsity:
            raise BadInput(f"OPS: class {k} finds only {len(mine)} free (position, colour) pairs for "
                           f"sparsity {sparsity} (dedup: position needs K·sparsity positions)")
        for p, v, _ in mine:
            if dedup == "position":
                taken[p] = True
            taken[p, v] = True
        picks.append(mine)
    return picks


class OnePixelShortcut(Poison):
    """OPS: one pixel per class set to the colour that deviates most stably from that class's images."""

    name = "one_pixel"
    kind = "random"
    applied = "class"
    threat_model = "l0"
    Params = OPSParams
    paper = Paper(title="One-Pixel Shortcut: on the Learning Preference of Deep Neural Networks",
                  venue="ICLR", year=2023, url="https://arxiv.org/abs/2205.12141", authors="Wu et al.")

    def __init__(self, params: Any = None):
        super().__init__(params)
        self.picks: list[dict[str, Any]] = []

    def budget(self) -> float:
        return float(self.params.sparsity)

    def manifest_extras(self) -> dict[str, Any]:
        """Each class's pixel(s), colour and score (the search's result)."""
        return {"one_pixel": self.picks}

    def craft(self, clean: Split, *, ctx: CraftContext):
        import torch

        height, width, channels = clean.image_shape
        counts, s1, s2 = class_sums(clean.images, clean.labels, ctx.num_classes)
        score = torch.stack([scores(int(counts[k]), s1[k], s2[k]) for k in range(ctx.num_classes)])
        picks = choose(score, sparsity=self.params.sparsity, dedup=self.params.dedup)
        palette = (colours(channels) * 255).to(torch.uint8)
        out = clean.images.clone()
        self.picks = []
        for k, mine in enumerate(picks):
            members = (clean.labels == k).nonzero().flatten()
            for p, v, value in mine:
                h, w = divmod(p, width)
                out[members, h, w, :] = palette[v]
                self.picks.append({"class": k, "pixel": [h, w], "colour": palette[v].tolist(),
                                   "score": value if value != float("inf") else "inf"})
        return out


@hookimpl
def poisonbench_register_poisons(register):
    register_presets(register, OnePixelShortcut, {
        "OPS": ({}, "OPS: one pixel per class set to its most stably deviating corner colour (L0 = 1)")})
