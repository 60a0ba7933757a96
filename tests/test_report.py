"""`poisonbench report`: ranking by peak accuracy, mean ± std (n), the correlation, figures, --json."""

from __future__ import annotations

import json
import statistics

import pytest
from scipy import stats

from poisonbench.cli import main
from poisonbench.results.report import (
    build_report,
    correlation,
    group_records,
    load_run,
    rank_groups,
)

from .helpers_report import POISONS, FakePoison, fake_record, write_run

EXPECTED_ORDER = ["R4", "CU", "LF3", "P250[surrogate=resnet18]", "FC", "clean"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run")


def test_ranking_is_by_mean_peak_ascending(run_dir):
    report = build_report(load_run(run_dir))
    assert [row["poison"] for row in report["ranking"]] == EXPECTED_ORDER
    assert [row["rank"] for row in report["ranking"]] == list(range(1, 7))


def test_every_metric_has_mean_std_n_over_seeds(run_dir):
    run = load_run(run_dir)
    row = build_report(run)["ranking"][0]
    peaks = [r["metrics"]["peak_test_acc"] for r in run.records if r["poison"]["name"] == "R4"]
    assert row["seeds"] == [0, 1, 2] and row["n"] == 3
    assert row["metrics"]["peak_test_acc"]["mean"] == pytest.approx(statistics.fmean(peaks))
    assert row["metrics"]["peak_test_acc"]["std"] == pytest.approx(statistics.stdev(peaks))
    assert row["metrics"]["peak_test_acc"]["n"] == 3
    assert set(row["metrics"]) == {"peak_test_acc", "peak_epoch", "val_selected_test_acc", "final_test_acc",
                                   "selected_test_acc",
                                   "selected_epoch", "epochs_to_loss_threshold", "early_loss",
                                   "epochs_to_clean_level", "peak_minus_final", "val_selected_minus_final"}


def test_single_seed_has_null_std(tmp_path):
    run = load_run(write_run(tmp_path / "run", seeds=(0,)))
    stat = build_report(run)["ranking"][0]["metrics"]["peak_test_acc"]
    assert stat["n"] == 1 and stat["std"] is None


def test_diverged_cell_is_never_ranked_first(tmp_path):
    collapsed = FakePoison("BLOWUP", "regions", "random", "class", 0.9, 0.10, 0.10)
    records = [fake_record(p, seed=0, epochs=12) for p in POISONS]
    bad = fake_record(collapsed, seed=0, epochs=12)
    bad["diverged"] = True
    records.append(bad)
    report = build_report(load_run(write_run(tmp_path / "run", seeds=(0,), records=records)))
    assert report["ranking"][0]["poison"] == "R4"  # BLOWUP has the lowest peak but diverged
    assert report["ranking"][-1]["poison"] == "BLOWUP"
    assert report["ranking"][-1]["diverged"] is True
    assert "diverged" in {e["reason"] for e in report["correlation"]["excluded"]}


def test_nan_training_loss_counts_as_diverged(tmp_path):
    record = fake_record(POISONS[1], seed=0, epochs=6)
    record["history"]["train_loss"][-1] = float("nan")
    path = tmp_path / "run"
    write_run(path, seeds=(0,), records=[record, fake_record(POISONS[2], seed=0, epochs=6)])
    report = build_report(load_run(path))
    ranking = report["ranking"]
    assert [r["poison"] for r in ranking] == ["LF3", "R4"] and ranking[1]["diverged"]
    json.dumps(report, allow_nan=False)  # a NaN loss must not leak into the JSON report


def test_correlation_equals_scipy_on_the_same_points(run_dir):
    run = load_run(run_dir)
    corr = build_report(run)["correlation"]
    # Poisons that reached the threshold in every seed: R4, CU, LF3, P250 (FC never; clean is no poison).
    xs, ys = [], []
    for name in ("R4", "LF3", "P250", "CU"):
        recs = [r for r in run.records if r["poison"]["name"] == name]
        xs.append(statistics.fmean(r["metrics"]["epochs_to_loss_threshold"] for r in recs))
        ys.append(statistics.fmean(r["metrics"]["peak_test_acc"] for r in recs))
    spearman, pearson = stats.spearmanr(xs, ys), stats.pearsonr(xs, ys)
    assert corr["n"] == 4
    assert corr["spearman_r"] == pytest.approx(spearman.statistic)
    assert corr["spearman_p"] == pytest.approx(spearman.pvalue)
    assert corr["pearson_r"] == pytest.approx(pearson.statistic)
    assert corr["pearson_p"] == pytest.approx(pearson.pvalue)
    reasons = {e["poison"]: e["reason"] for e in corr["excluded"]}
    assert reasons["clean"].startswith("baseline")
    assert "never fell below" in reasons["FC"] and "3/3" in reasons["FC"]


def test_defenses_sharing_a_training_count_once(tmp_path):
    records = []
    for poison in POISONS:
        for seed in (0, 1):
            for victim in ("tiny_cnn", "other_cnn"):
                for defense in ({"name": "none", "params": {}}, None):  # None: early_stopping[select=val]
                    records.append(fake_record(poison, seed=seed, epochs=12, victim=victim, defense=defense))
    run = load_run(write_run(tmp_path / "run", seeds=(0, 1), records=records))
    report = build_report(run)
    assert len(report["ranking"]) == len(POISONS) * 4
    corr = report["correlation"]
    assert corr["n"] == 8  # 4 poisons that reached the threshold × 2 victims, not × 2 defenses
    assert corr["by_victim"]["tiny_cnn"]["n"] == 4
    single = correlation(group_records(load_run(write_run(tmp_path / "one", seeds=(0, 1))).records))
    assert corr["by_victim"]["tiny_cnn"]["spearman_r"] == pytest.approx(single["spearman_r"])


def test_correlation_needs_three_points(tmp_path):
    run = load_run(write_run(tmp_path / "run", poisons=POISONS[:3]))
    corr = correlation(rank_groups(group_records(run.records)))
    assert corr["n"] == 2 and corr["spearman_r"] is None and corr["pearson_p"] is None


def test_unterminated_last_line_is_ignored(run_dir):
    with open(run_dir / "cells.jsonl", "a") as handle:
        handle.write('{"cell_id": "half-writ')
    assert len(load_run(run_dir).records) == len(POISONS) * 3


def test_report_json_and_figure_files(run_dir, capsys):
    code, out, _ = run_cli(capsys, "report", str(run_dir), "--json")
    assert code == 0
    data = json.loads(out)
    assert {"ranking", "correlation", "figures"} <= set(data)
    assert {"spearman_r", "spearman_p", "pearson_r", "pearson_p", "n"} <= set(data["correlation"])
    assert [r["poison"] for r in data["ranking"]] == EXPECTED_ORDER
    names = sorted(p.rsplit("/", 1)[1] for p in data["figures"])
    assert names == sorted(f"{stem}.{ext}" for stem in ("fig1_speed_vs_peak", "fig1_early_loss_vs_peak",
                                                       "fig2_final_vs_peak", "fig5_curves")
                           for ext in ("png", "svg"))
    figures = run_dir / "figures"
    for stem in ("fig1_speed_vs_peak", "fig2_final_vs_peak", "fig5_curves"):
        png = (figures / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        svg = (figures / f"{stem}.svg").read_text()
        assert "<svg" in svg and "</svg>" in svg
    assert "R4" in (figures / "fig1_speed_vs_peak.svg").read_text()
    assert not list(figures.glob(".*.tmp"))


def test_table_lists_poisons_in_rank_order_with_never(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(capsys, "report", str(run_dir), "--no-figures")
    assert code == 0
    positions = [out.index(f" {name} ") for name in ("R4", "CU", "LF3", "FC", "clean")]
    assert positions == sorted(positions)
    assert "never" in out and "Spearman" in out
    assert not (run_dir / "figures").exists()


def test_missing_run_dir_is_bad_input(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "report", str(tmp_path / "empty"))
    assert code == 2 and "cells.jsonl" in err



def test_table_shows_one_row_per_training_with_the_three_selections(tmp_path, capsys):
    """Selection is a metric, not a defense: one row per training, peak / val-selected / final columns."""
    from .helpers_report import POISONS, fake_record, write_run

    records = [fake_record(p, seed=0, epochs=6, defense={"name": "none", "params": {}}) for p in POISONS]
    run_dir = write_run(tmp_path / "run", seeds=(0,), epochs=6, records=records)
    code, out, _ = run_cli(capsys, "report", str(run_dir), "--no-figures")
    assert code == 0, out
    header = " ".join(out.split())  # headers may wrap inside their column
    assert "peak" in header and "val-selected" in header and "final" in header, out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    for poison in POISONS:
        assert sum(row[1] == poison.name for row in rows) == 1, out
    code, out, _ = run_cli(capsys, "report", str(run_dir), "--no-figures", "--json")
    by_name = {row["name"]: row for row in json.loads(out)["ranking"]}
    for record in records:  # the column is the test accuracy at the best validation epoch
        shown = by_name[record["poison"]["name"]]["metrics"]["val_selected_test_acc"]["mean"]
        history = record["history"]  # derived here, not by the code under test
        best = history["val_acc"].index(max(history["val_acc"]))
        assert shown == pytest.approx(history["test_acc"][best])
