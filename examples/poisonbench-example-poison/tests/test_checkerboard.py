"""The example plugin's tests: poisonbench's contract checks plus one property of its own."""

import pytest

from poisonbench.testing import check_poison, tiny_split


@pytest.mark.parametrize("name", ["checkerboard", "CB4"])
def test_contract(name):
    check_poison(name)


def test_perturbation_is_exactly_eps_where_not_clamped():
    import torch

    from poisonbench.api import CraftContext
    from poisonbench.catalog import default_catalog

    poison = default_catalog().poisons.create("checkerboard")
    clean = tiny_split((32, 32, 3))
    out = poison.craft(clean, ctx=CraftContext(num_classes=4, seed=0))
    delta = (out.int() - clean.images.int()).abs()
    free = (out > 0) & (out < 255)
    assert torch.all(delta[free] == 8)
