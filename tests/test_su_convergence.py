"""Unlearnable crafting says early when it cannot converge; the trend and rounds-left estimate."""

from __future__ import annotations

import warnings

import pytest

from poisonbench.catalog import Catalog
from poisonbench.errors import RunFailed
from poisonbench.plugins.unlearnable.convergence import Convergence

from .test_unlearnable import make_ctx, make_split, unlearnable_catalog

# A crafting model that never learns (lr 0) and noise steps too small to move a prediction: the
# accuracy stays where a fixed random net puts it on random labels -- chance.
FROZEN = {"model": "tiny_test_net", "lr": 0.0, "step_size": 1e-7, "attack_steps": 1, "stall_rounds": 3}


@pytest.fixture
def catalog() -> Catalog:
    return unlearnable_catalog()


def test_trend_and_rounds_left():
    watch = Convergence(stop_acc=0.99, num_classes=10, stall_rounds=5)
    for acc in (0.40, 0.50, 0.60, 0.70):
        watch.add(acc)
    assert watch.trend == pytest.approx(0.10)
    assert watch.rounds_left == 3  # (0.99 − 0.70) / 0.10, rounded up
    assert watch.fields() == {"acc": 0.7, "trend": "+10.0pt/round", "left": "~3"}
    flat = Convergence(stop_acc=0.99, num_classes=10, stall_rounds=3)
    for acc in (0.10, 0.11, 0.09):
        flat.add(acc)
    assert flat.rounds_left is None and flat.fields()["left"] == "?"
    assert flat.stalled  # 3 rounds, none clear of chance (10% + 5 points)
    slow = Convergence(stop_acc=0.99, num_classes=10, stall_rounds=3)
    for acc in (0.10, 0.12, 0.30):
        slow.add(acc)
    assert not slow.stalled  # learning, however slowly, is never called a stall


def test_a_craft_stuck_at_chance_fails_after_stall_rounds_not_max_rounds(catalog):
    log: list[dict] = []
    poison = catalog.poisons.create("SU", {**FROZEN, "max_rounds": 100, "on_stall": "fail"})
    with pytest.raises(RunFailed, match="not converging: .* stayed at chance .* for 3 rounds"):
        poison.craft(make_split(n=120), ctx=make_ctx(catalog, log=log))
    assert [fields["round"] for fields in log] == [1, 2, 3]  # said so at round 3 of 100
    assert all(fields["left"] == "?" for fields in log)


def test_default_warns_early_and_keeps_going(catalog):
    log: list[dict] = []
    poison = catalog.poisons.create("SU", {**FROZEN, "max_rounds": 5, "on_max_rounds": "keep"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        poison.craft(make_split(n=120), ctx=make_ctx(catalog, log=log))
    stalls = [w for w in caught if "not converging" in str(w.message)]
    assert len(stalls) == 1 and len(log) == 5  # one warning at round 3, then on to max_rounds
    assert poison.manifest_extras()["converged"] is False
    assert len(poison.manifest_extras()["crafting_accs"]) == 5


def test_cpu_presets_refresh_batchnorm_and_stop_on_a_stall(catalog):
    for name in ("SU-cpu", "CU-cpu"):
        params = catalog.poisons.create(name).params
        assert params.model == "small_cnn" and params.refresh_batchnorm and params.on_stall == "fail"


def test_refreshed_batchnorm_statistics_match_the_poisoned_data(catalog):
    import torch

    from poisonbench.plugins.unlearnable import ops

    params = catalog.poisons.create("SU", {"model": "tiny_test_net", "refresh_batchnorm": True}).params
    crafter = ops._Crafter(make_split(n=64), ctx=make_ctx(catalog), params=params, classwise=False)
    crafter.train_model()
    crafter.refresh_batchnorm()
    bn = next(m for m in crafter.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        features = crafter.model[0]((crafter.x(crafter.check_idx) + crafter.noise(crafter.check_idx)).clamp(0, 1))
    assert torch.allclose(bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum == 0.1 and not crafter.model.training
