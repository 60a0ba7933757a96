"""Every registered data/training defense passes poisonbench.testing's defense contract."""

from __future__ import annotations

import pytest
import torch

from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import load_plugins
from poisonbench.plugins.defenses.augmentation import GaussianNoise
from poisonbench.testing import ContractViolation, check_defense, defense_contract_cases

_PM, _INFOS = load_plugins()
CATALOG = Catalog.from_manager(_PM, _INFOS)


@pytest.mark.parametrize("name", defense_contract_cases(CATALOG))
def test_registered_defense_meets_contract(name, one_thread):
    check_defense(name, catalog=CATALOG)


def test_defense_contract_catches_unseeded_draws(monkeypatch):
    def unseeded(self, x, target, *, ctx):
        return (x + 0.01 * torch.rand(x.shape)).clamp(0, 1), target

    monkeypatch.setattr(GaussianNoise, "batch", unseeded)
    with pytest.raises(ContractViolation, match="not a function of the batch seed"):
        check_defense("gaussian_noise", catalog=CATALOG)


def test_defense_contract_catches_out_of_range_output(monkeypatch):
    monkeypatch.setattr(GaussianNoise, "batch", lambda self, x, target, *, ctx: (x * 2, target))
    with pytest.raises(ContractViolation, match=r"in \[0, 1\]"):
        check_defense("gaussian_noise", catalog=CATALOG)
