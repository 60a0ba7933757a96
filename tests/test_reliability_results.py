"""Results sanity end to end: a diverged training is recorded as diverged and never ranked first.

``test_report.py`` checks the ranking rule on fabricated records; here the records come from real
`poisonbench run`s: one whose protocol blows up (lr 1e6), and one where one victim's loss turns NaN
after its first epoch while its accuracy is the lowest of the run — the naive "lowest peak first"
would rank it as the strongest poison.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from poisonbench import cli as cli_module
from poisonbench.api import Victim
from poisonbench.catalog import Catalog
from poisonbench.catalog.manager import load_plugins
from poisonbench.hookspecs import hookimpl
from poisonbench.results import read_records

from .helpers_reliability import run_main, tiny_suite

pytestmark = pytest.mark.usefixtures("one_thread")


def _finite_json(text: str):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))


def test_lr_1e6_is_recorded_as_diverged_without_nan_in_the_files(tmp_path, capsys):
    suite, out = tiny_suite(tmp_path, epochs=6, lr=1e6), tmp_path / "run"
    code, _, err = run_main(capsys, "run", suite, "--out", out, "-q")
    assert code == 0, err  # a diverged training is a result, not a failure
    (record,) = read_records(out)
    assert record["diverged"] is True and record["epochs"] < 6
    assert all(math.isfinite(v) for curve in record["history"].values() for v in curve)
    _finite_json((out / "cells.jsonl").read_text())  # strict JSON: no NaN/Infinity tokens
    code, stdout, err = run_main(capsys, "report", out, "--json", "--no-figures")
    assert code == 0, err
    (row,) = _finite_json(stdout)["ranking"]
    assert row["diverged"] is True


class NaNAfterFirstEpoch(Victim):
    """Test victim: predicts class 0 for everything (25% on 4 balanced classes) and its training
    loss turns NaN from the 5th training batch on (4 batches per epoch: epoch 2 diverges)."""

    name = "nan_after_first_epoch"

    def build(self, *, num_classes, in_channels, image_size):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bias = torch.nn.Parameter(torch.zeros(num_classes))
                self.calls = 0

            def forward(self, x):
                logits = self.bias.expand(x.shape[0], -1) + torch.tensor([1.0] + [0.0] * (num_classes - 1))
                if self.training:
                    self.calls += 1
                    if self.calls > 4:
                        logits = logits * float("nan")
                return logits

        return Net()


class NaNPlugin:
    @hookimpl
    def poisonbench_register_victims(self, register):
        register(NaNAfterFirstEpoch)


def test_diverged_cell_with_the_lowest_peak_is_never_ranked_first(tmp_path, capsys, monkeypatch):
    pm, infos = load_plugins()
    pm.register(NaNPlugin(), name="nan-plugin")
    catalog = Catalog.from_manager(pm, infos)
    monkeypatch.setattr(cli_module.Settings, "catalog", lambda self: catalog)
    suite = tiny_suite(tmp_path, epochs=3, n_train=128,
                       victims="[{name: small_cnn, params: {width: 4}}, nan_after_first_epoch]")
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "run", suite, "--out", out, "-q")
    assert code == 0, err
    by_victim = {r["victim"]["name"]: r for r in read_records(out)}
    diverged, healthy = by_victim["nan_after_first_epoch"], by_victim["small_cnn"]
    assert diverged["diverged"] is True and diverged["history"]["test_acc"] == [0.25]
    assert healthy["diverged"] is False
    # the premise: by peak alone the diverged cell would look like the strongest poison
    assert diverged["metrics"]["peak_test_acc"] < healthy["metrics"]["peak_test_acc"]
    code, stdout, err = run_main(capsys, "report", out, "--json", "--no-figures")
    assert code == 0, err
    ranking = _finite_json(stdout)["ranking"]
    assert [(r["victim"].split("[")[0], r["diverged"]) for r in ranking] == [("small_cnn", False),
                                                               ("nan_after_first_epoch", True)]
    assert ranking[1]["metrics"]["peak_test_acc"]["mean"] == 0.25  # lowest peak, yet ranked last
