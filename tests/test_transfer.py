"""Attack transferability (benchmark/results/transfer.py) and the ``poisonbench transfer`` command."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from poisonbench.cli import cli
from poisonbench.results.transfer import table, transferability


class Constant(nn.Module):
    """Always predicts ``label`` (a stand-in for a clean-trained victim)."""

    def __init__(self, label: int, classes: int = 4):
        super().__init__()
        self.label, self.classes = label, classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.classes)
        logits[:, self.label] = 1.0
        return logits + 0 * self.dummy


def test_transferability_is_the_misclassified_fraction():
    images = torch.zeros(8, 4, 4, 3, dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    got = transferability({"zero": Constant(0), "three": Constant(3)}, images, labels, mean=(0.5,) * 3,
                          std=(0.2,) * 3)
    assert got == {"zero": pytest.approx(5 / 8), "three": pytest.approx(6 / 8)}
    assert transferability(Constant(1), images, labels, mean=(0.5,) * 3, std=(0.2,) * 3) == pytest.approx(6 / 8)


def test_table_layout():
    rows = [{"poison": {"name": p, "params": {}}, "victim": {"name": v, "params": {}}, "seed": s,
             "misclassified": value}
            for p, v, s, value in [("P10", "a", 0, 0.1), ("P10", "a", 1, 0.3), ("P10", "b", 0, 0.5),
                                   ("P10", "b", 1, 0.5)]]
    header, body = table({"rows": rows})
    assert header == ["poison", "a", "b", "avg"]
    assert body == [["P10", "20.00", "50.00", "35.00"]]


SUITE = """\
suite: tiny-transfer
dataset:
  name: synthetic
  params: {n_train: 96, n_test: 48, num_classes: 4, image_size: 8, channels: 1}
victims: [small_cnn]
poisons:
  - clean
  - {name: pgd, params: {surrogate: small_cnn, steps: 3, restarts: 1, step_size: 0.01,
                         surrogate_epochs: 1, surrogate_batch_size: 48}}
seeds: [0]
train: {epochs: 2, batch_size: 48, lr: 0.05, milestones: [1]}
"""


def test_transfer_command_writes_rows_and_resumes(cli_runner, tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    args = ["--cache-dir", str(tmp_path / "cache"), "transfer", str(suite), "--out", str(out), "--quiet",
            "--device", "cpu"]
    result = cli_runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["poison"]["name"] for r in data["rows"]] == ["clean", "pgd"]
    assert all(0.0 <= r["misclassified"] <= 1.0 for r in data["rows"])
    assert data["victims"][0]["epochs"] == 2
    assert json.loads((out / "transfer.json").read_text())["rows"] == data["rows"]
    again = cli_runner.invoke(cli, args)  # the finished victim is reused from its checkpoint
    assert again.exit_code == 0, again.output
    assert "clean test accuracy of small_cnn" in again.output
    assert f"{data['rows'][1]['misclassified'] * 100:.2f}" in again.output
