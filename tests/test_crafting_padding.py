"""The crafting shift/flip pads with zero in normalised space (the dataset-mean colour), not black."""

from __future__ import annotations

import torch
from torch import nn

from poisonbench.api import shift_flip
from poisonbench.crafting.surrogate import normalized
from poisonbench.plugins.adversarial import ops

MEAN = (0.4915, 0.4823, 0.4468)
STD = (0.2470, 0.2435, 0.2616)


def _shift_out(n: int, pixels: float, width: int) -> torch.Tensor:
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = pixels * 2.0 / width  # output column j samples input column j + pixels
    return theta


def test_shift_pads_with_the_fill_colour_and_keeps_the_rest():
    x = torch.rand(2, 3, 8, 8)
    fill = torch.tensor(MEAN)
    out = shift_flip(x, _shift_out(2, 2.0, 8), fill=fill)
    # The last two columns came from outside the image: exactly the mean colour, per channel.
    assert torch.allclose(out[:, :, :, -2:], fill.view(1, 3, 1, 1).expand(2, 3, 8, 2), atol=1e-6)
    assert torch.allclose(out[:, :, :, :-2], x[:, :, :, 2:], atol=1e-5)  # the rest moved, unchanged
    black = shift_flip(x, _shift_out(2, 2.0, 8))
    assert torch.all(black[:, :, :, -2:].abs() < 1e-6)  # without a fill: black (the old behaviour)


class _Recorder(nn.Module):
    """Records the (normalised) input it sees; logits from a fixed linear map."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.head(x.mean(dim=(2, 3)))


def test_pgd_crafting_pads_with_zero_in_normalised_space():
    net = _Recorder()
    model = normalized(net, (MEAN, STD), channels=3).eval()
    x = torch.rand(4, 3, 8, 8)
    cfg = ops.AttackConfig(eps=8 / 255, steps=1, step_size=1 / 255, augment=True, channels_last=False)
    thetas = _shift_out(4, 100.0, 8).unsqueeze(0)  # everything shifted in from outside
    ops.attack_batch(model, x, torch.zeros(4, dtype=torch.long), cfg=cfg, delta=torch.zeros_like(x),
                     thetas=thetas)
    seen = net.seen[0]
    assert seen.abs().max() < 1e-5  # the network sees zeros in normalised space (= the mean colour)


def test_surrogate_training_crop_pads_with_the_mean_colour_victims_with_black():
    """The recipe's ``crop_fill``: surrogates pad with round(255·mean), victims with black (0)."""
    from poisonbench.crafting.surrogate import SurrogateRecipe
    from poisonbench.suite.config import TrainConfig
    from poisonbench.training.augment import crop_flip, pad_fill

    images = torch.full((2, 4, 4, 3), 200, dtype=torch.uint8)
    corner = torch.zeros(2, dtype=torch.long)  # offset 0 = the top-left padded corner
    fill = pad_fill(SurrogateRecipe().crop_fill, MEAN, channels=3, device="cpu")
    out = crop_flip(images, dy=corner, dx=corner, flip=None, padding=2, fill=fill)
    assert out[0, 0, 0].tolist() == [round(255 * m) for m in MEAN] == [125, 123, 114]
    assert out[0, 2:, 2:].eq(200).all()  # the image itself is untouched
    assert pad_fill(TrainConfig().crop_fill, MEAN, channels=3, device="cpu") is None
    black = crop_flip(images, dy=corner, dx=corner, flip=None, padding=2)
    assert black[0, 0, 0].tolist() == [0, 0, 0]
