"""Learning speed without a magic threshold: early_loss, the clean-relative level, flattery columns."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from poisonbench.cli import main
from poisonbench.results import cell_metrics
from poisonbench.results.report import build_report, load_run
from poisonbench.results.speed import annotate_clean_level, early_loss, epochs_to_level

from .helpers_report import FakePoison, fake_record, write_run

# Loss = 0.3 + 2·exp(−rate·epoch): with these rates no poison gets below 0.5 within 12 epochs.
SLOW = [
    FakePoison("clean", "clean", "baseline", "sample", 0.12, 0.90, 0.89),
    FakePoison("R4", "regions", "random", "class", 0.10, 0.25, 0.12),
    FakePoison("CU", "unlearnable", "min", "class", 0.08, 0.33, 0.19),
    FakePoison("LF3", "low_frequency", "random", "class", 0.06, 0.43, 0.40),
    FakePoison("P250", "pgd", "max", "sample", 0.04, 0.57, 0.08),
    FakePoison("FC", "functional", "max", "sample", 0.02, 0.87, 0.86),
]


def run_cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return exc.value.code, capsys.readouterr().out


def test_early_loss_is_the_mean_of_the_first_k_epochs():
    assert early_loss([2.0, 1.0, 0.6, 0.1], epochs=3) == (pytest.approx(1.2), 3)
    assert early_loss([2.0, 1.0], epochs=5) == (pytest.approx(1.5), 2)  # a shorter run uses what it has
    assert early_loss([2.0, math.nan, 1.0], epochs=3) == (None, 3)
    assert epochs_to_level([2.0, 1.0, 0.5, 0.4], 0.5) == 4
    assert epochs_to_level([2.0, 1.0, 0.5, 0.4], 0.5, strict=False) == 3


def test_cell_metrics_carry_early_loss():
    history = {"train_loss": [2.0, 1.5, 1.0, 0.9, 0.8, 0.1], "test_acc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
    metrics = cell_metrics(history, selected_epoch=6, loss_threshold=0.5, speed_epochs=5)
    assert metrics["early_loss"] == pytest.approx(1.24) and metrics["early_loss_epochs"] == 5
    assert metrics["epochs_to_loss_threshold"] == 6


def test_report_json_correlates_poisons_that_never_reach_the_threshold(tmp_path, capsys):
    run_dir = write_run(tmp_path / "slow", seeds=(0, 1), poisons=SLOW)
    code, out = run_cli(capsys, "report", str(run_dir), "--json", "--no-figures")
    assert code == 0
    report = json.loads(out)
    paper = report["correlations"]["epochs_to_loss_threshold"]
    assert paper["n"] == 0 and paper["spearman_r"] is None
    assert {e["poison"] for e in paper["excluded"]} == {"R4", "CU", "LF3", "P250", "FC", "clean"}
    free = report["correlations"]["early_loss"]
    poisons = [p for p in SLOW if p.kind != "baseline"]
    assert free["n"] == len(poisons)
    assert [e["poison"] for e in free["excluded"]] == ["clean"]  # only the baseline is left out
    rows = {r["poison"]: r for r in report["ranking"]}
    xs = [rows[p.name]["metrics"]["early_loss"]["mean"] for p in poisons]
    ys = [rows[p.name]["metrics"]["peak_test_acc"]["mean"] for p in poisons]
    expected = stats.spearmanr(xs, ys)
    assert free["spearman_r"] == pytest.approx(expected.statistic) and free["spearman_r"] > 0.9
    assert free["spearman_p"] == pytest.approx(expected.pvalue)
    assert report["correlation"] == paper  # the old key keeps the paper's measure


def test_text_report_prints_both_correlations_and_the_flattery_columns(tmp_path, capsys):
    run_dir = write_run(tmp_path / "slow", seeds=(0,), poisons=SLOW)
    code, out = run_cli(capsys, "report", str(run_dir))
    assert code == 0
    assert "threshold-free" in out and "n = 5" in out
    assert "needs ≥ 3 poisons with a value, have 0" in out
    assert "left out: R4" in out and "pk−fin" in out and "val−fin" in out and "loss 1–5" in out
    assert (run_dir / "figures" / "fig1_early_loss_vs_peak.png").is_file()
    assert (run_dir / "figures" / "fig1_speed_vs_peak.svg").is_file()


def test_flattery_is_peak_minus_final_and_val_selected_minus_final(tmp_path):
    run = load_run(write_run(tmp_path / "run", seeds=(0,), poisons=SLOW))
    for record in run.records:
        m, h = record["metrics"], record["history"]
        assert m["peak_minus_final"] == pytest.approx(max(h["test_acc"]) - h["test_acc"][-1])
        best = h["val_acc"].index(max(h["val_acc"]))
        assert m["val_selected_minus_final"] == pytest.approx(h["test_acc"][best] - h["test_acc"][-1])
    p250 = next(r for r in build_report(run)["ranking"] if r["poison"] == "P250")
    assert p250["metrics"]["peak_minus_final"]["mean"] == pytest.approx(0.57 - 0.08, abs=0.01)


def test_threshold_relative_to_the_clean_run(tmp_path):
    records = [fake_record(p, seed=0, epochs=12) for p in SLOW]
    annotate_clean_level(records, clean_epoch=4)
    by_name = {r["poison"]["name"]: r["metrics"] for r in records}
    assert by_name["clean"]["epochs_to_clean_level"] == 4  # the clean run meets its own level at E
    assert by_name["R4"]["epochs_to_clean_level"] is not None
    assert by_name["R4"]["epochs_to_clean_level"] > 4  # learned slower than clean here
    assert by_name["FC"]["epochs_to_clean_level"] is None  # never within 12 epochs
    other = fake_record(SLOW[1], seed=0, epochs=12, victim="other_net")
    annotate_clean_level([other], clean_epoch=4)
    assert other["metrics"]["epochs_to_clean_level"] is None  # no clean run of that victim


def test_clean_level_epoch_in_the_suite_adds_the_measure(tmp_path):
    run_dir = write_run(tmp_path / "rel", seeds=(0,), poisons=SLOW)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["suite"]["metrics"]["clean_level_epoch"] = 12
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    report = build_report(load_run(run_dir))
    rel = report["correlations"]["epochs_to_clean_level"]
    reached = [e["poison"] for e in rel["excluded"] if e["poison"] != "clean"]
    assert rel["n"] + len(reached) == 5 and "FC" in reached
