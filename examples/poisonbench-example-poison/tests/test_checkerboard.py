"""The example plugin's tests: poisonbench's contract checks plus one property of its own."""

import pytest

from poisonbench.testing import check_poison, tiny_split


@pytest.mark.parametrize("name", ["checkerboard", "CB4", "surrogate_nudge"])
def test_contract(name):
    check_poison(name)


def test_perturbation_is_exactly_eps_where_not_clamped():
    import torch

    from poisonbench.api import CraftContext, default_catalog

    poison = default_catalog().poisons.create("checkerboard")
    clean = tiny_split((32, 32, 3))
    out = poison.craft(clean, ctx=CraftContext(num_classes=4, seed=0))
    delta = (out.int() - clean.images.int()).abs()
    free = (out > 0) & (out < 255)
    assert torch.all(delta[free] == 8)


def test_nudge_lowers_the_surrogates_loss_and_uses_the_bar():
    import torch
    import torch.nn.functional as F

    from poisonbench.api import CraftContext, default_catalog
    from poisonbench.testing import tiny_surrogate

    model = tiny_surrogate(4, 3)
    bars = []
    ctx = CraftContext(num_classes=4, seed=0, catalog=default_catalog(),
                       surrogate=lambda name, recipe=None: model,
                       progress=lambda description, total: bars.append((description, total)) or (lambda n=1, **f: None))
    poison = default_catalog().poisons.create("surrogate_nudge", {"batch_size": 10})
    clean = tiny_split((32, 32, 3))
    out = poison.craft(clean, ctx=ctx)

    def loss(images):
        return float(F.cross_entropy(model(images.permute(0, 3, 1, 2).float() / 255), clean.labels))

    assert loss(out) < loss(clean.images)
    assert bars == [("surrogate_nudge crafting", 3)] and torch.equal(clean.images, tiny_split((32, 32, 3)).images)
