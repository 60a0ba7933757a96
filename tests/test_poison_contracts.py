"""Every registered poison passes poisonbench.testing's contract checks (the kit plugin authors use)."""

from __future__ import annotations

import pytest

from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import load_plugins
from poisonbench.testing import ContractViolation, check_poison, contract_cases

from .plugin_fixtures import Stripes, test_catalog

_PM, _INFOS = load_plugins()
CATALOG = Catalog.from_manager(_PM, _INFOS)


@pytest.mark.parametrize("name", contract_cases(CATALOG))
def test_registered_poison_meets_contract(name):
    check_poison(name, catalog=CATALOG)


def test_contract_catches_a_poison_that_breaks_budget():
    catalog = test_catalog()
    with pytest.raises(ContractViolation, match="exceeds the declared budget"):
        check_poison("stripes", catalog=catalog, params={"eps": 1 / 255})


def test_contract_catches_mutation(monkeypatch):
    def mutating(self, clean, *, ctx):
        clean.images += 1
        return clean.images.clone()

    monkeypatch.setattr(Stripes, "craft", mutating)
    with pytest.raises(ContractViolation, match="modified its input"):
        check_poison("stripes", catalog=test_catalog())


def test_contract_catches_nondeterminism(monkeypatch):
    import torch

    def noisy(self, clean, *, ctx):
        return (clean.images.int() + torch.randint(0, 2, clean.images.shape)).clamp(0, 255).to(torch.uint8)

    monkeypatch.setattr(Stripes, "craft", noisy)
    with pytest.raises(ContractViolation, match="same seed"):
        check_poison("stripes", catalog=test_catalog(), params={"eps": 1.0})
