"""Leaderboard rows: one per training with three selections, schema-1 entries, labels, papers, the page."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from poisonbench.leaderboard.rows import load_rows
from poisonbench.leaderboard.schema import validate_entry
from poisonbench.leaderboard.store import read_entry, write_entry
from poisonbench.leaderboard.svg import sparkline
from poisonbench.results.labels import display, format_value, label, preset_defaults

from .helpers_board import add_run, empty_board, run_cli, tiny_suite_text
from .helpers_report import POISONS, fake_record, write_run

REPO = Path(__file__).resolve().parents[1]
SELECTION_RULES = [{"name": "early_stopping", "params": {"select": "test"}},
                   {"name": "early_stopping", "params": {"select": "val"}}, {"name": "none", "params": {}}]


@pytest.fixture
def board(tmp_path, capsys) -> Path:
    """Three selection rules (one training) and one training-side defense, three seeds, six poisons."""
    defenses = SELECTION_RULES + [{"name": "cutout", "params": {}}]
    records = [fake_record(p, seed=s, epochs=10, defense=d) for p in POISONS for d in defenses for s in (0, 1, 2)]
    root = empty_board(tmp_path)
    add_run(capsys, root, write_run(tmp_path / "run", epochs=10, records=records))
    return root


def test_one_row_per_training_with_the_selections_as_columns(board):
    files = sorted((board / "entries" / "fake").glob("*.json"))
    assert len(files) == 2 * len(POISONS)  # none and cutout; the three selection rules are one training
    entry = read_entry(next(p for p in files if p.name.startswith("P250") and "__none" in p.name))
    assert entry["schema"] == 2 and entry["defense"]["name"] == "none" and entry["seeds"] == [0, 1, 2]
    for item in entry["per_seed"]:
        acc, val, metrics = item["history"]["test_acc"], item["history"]["val_acc"], item["metrics"]
        assert metrics["peak_test_acc"] == max(acc) and metrics["final_test_acc"] == acc[-1]
        assert metrics["val_selected_epoch"] == val.index(max(val)) + 1
        assert metrics["val_selected_test_acc"] == acc[metrics["val_selected_epoch"] - 1]
        assert metrics["final_flatters_by"] == pytest.approx(max(acc) - acc[-1])
    assert entry["summary"]["final_flatters_by"]["n"] == 3 and entry["summary"]["final_flatters_by"]["mean"] > 0.4
    rows = load_rows(board)
    assert len(rows) == 2 * len(POISONS) and {r.defense for r in rows} == {"none", "cutout"}


def _as_schema_1(entry: dict, defense: dict) -> dict:
    """The same entry as schema 1 wrote it: the selection rule in the defense slot."""
    old = copy.deepcopy(entry)
    old["schema"], old["defense"] = 1, defense
    for part in ("poison", "victim", "defense"):
        for key in ("label", "detail", "paper", "threat_model"):
            old[part].pop(key, None)
    for item in old["per_seed"]:
        m = item["metrics"]
        item["metrics"] = {"peak_test_acc": m["peak_test_acc"], "peak_epoch": m["peak_epoch"],
                           "final_test_acc": m["final_test_acc"], "selected_test_acc": m["peak_test_acc"],
                           "selected_epoch": m["peak_epoch"],
                           "epochs_to_loss_threshold": m["epochs_to_loss_threshold"]}
    old["summary"] = {k: v for k, v in old["summary"].items() if k in ("peak_test_acc", "peak_epoch",
                                                                        "final_test_acc", "epochs_to_loss_threshold")}
    old["summary"]["selected_test_acc"] = old["summary"]["peak_test_acc"]
    old["summary"]["selected_epoch"] = old["summary"]["peak_epoch"]
    return old


def test_schema_1_entries_are_upgraded_on_reading_and_shown_once(board, capsys):
    path = next((board / "entries" / "fake").glob("LF3__*__none.json"))
    entry = read_entry(path)
    for rule in SELECTION_RULES:  # three old files, one per selection rule
        target = board / "entries" / "fake" / f"old-{rule['params'].get('select', 'none')}.json"
        target.write_text(json.dumps(_as_schema_1(entry, rule)))
    path.unlink()
    upgraded = read_entry(board / "entries" / "fake" / "old-val.json")
    assert upgraded["schema"] == 2 and upgraded["defense"] == {"name": "none", "params": {}}
    assert upgraded["per_seed"] == entry["per_seed"] and upgraded["summary"] == entry["summary"]
    assert sum(r.poison == "LF3" for r in load_rows(board)) == 2  # none (once) and cutout
    assert run_cli(capsys, "leaderboard", "render", "--dir", board)[0] == 0


def test_reported_paper_entries_are_schema_2_with_their_paper():
    files = sorted((REPO / "leaderboard" / "entries" / "paper").glob("*.json"))
    assert len(files) == 25
    for path in files:
        entry = json.loads(path.read_text())
        assert entry["schema"] == 2 and entry["status"] == "reported" and validate_entry(entry) == []
        assert entry["defense"]["name"] == "none" and entry["poison"]["paper"]["url"].startswith("https://")
    su = json.loads((REPO / "leaderboard" / "entries" / "paper" / "SU__resnet18__none.json").read_text())
    assert su["summary"]["final_flatters_by"]["mean"] == pytest.approx(0.3377 - 0.3283)


def test_short_labels_show_only_params_that_differ_from_the_preset(catalog):
    pgd = {"name": "pgd", "params": {"steps": 20, "step_size": 1 / 255, "eps": 8 / 255, "surrogate": "small_cnn"}}
    shown = display(pgd, defaults=preset_defaults(catalog, "poisons", "pgd"))
    assert shown.name == "pgd" and shown.detail == "step_size=1/255, steps=20, surrogate=small_cnn"
    assert display({"name": "P-cpu", "params": {}}, defaults=preset_defaults(catalog, "poisons", "P-cpu")).text == "P-cpu"
    assert display({"name": "R4", "params": {"distinct": True}, "label": "R4*"}).text == "R4* (distinct=true)"
    assert label(pgd).startswith("pgd[eps=0.0313") and format_value([5, 8]) == "[5,8]"


def test_a_suite_label_names_the_poison_everywhere(tmp_path, catalog):
    from poisonbench.errors import ValidationFailed
    from poisonbench.suite import load_suite

    base = ("suite: s\ndataset: {name: synthetic}\nvictims: [small_cnn]\ndefenses: [none]\npoisons:\n")
    good = tmp_path / "good.yaml"
    good.write_text(base + "  - {name: pgd, params: {steps: 2}, label: PGD-2}\n  - R4\n")
    suite = load_suite(good, catalog)
    assert suite.poisons[0].display == "PGD-2" and suite.resolved["poisons"][0]["label"] == "PGD-2"
    assert "label" not in suite.resolved["poisons"][1] and "PGD" not in suite.cells()[0].cell_id
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "  - {name: R4, label: same}\n  - {name: R2, label: same}\n  - {name: R1, label: ''}\n")
    with pytest.raises(ValidationFailed) as err:
        load_suite(bad, catalog)
    assert "label 'same' is already used" in str(err.value) and "label must be non-empty" in str(err.value)


def test_the_curve_marks_the_peak_epoch():
    svg = sparkline((0.2, 0.5, 0.9, 0.4))
    assert "peak 90.0% at epoch 3" in svg and "final 40.0% at epoch 4" in svg
    peak_x = float(svg.split('class="peak" cx="')[1].split('"')[0])
    assert peak_x == pytest.approx(3 + (120 - 6) * 2 / 3, abs=0.1)
    assert sparkline(()) == ""


def test_list_shows_each_plugins_paper(capsys):
    code, out, _ = run_cli(capsys, "list", "poisons", "CU", "--json")
    assert code == 0
    paper = json.loads(out)[0]["paper"]
    assert paper["venue"] == "ICLR" and paper["year"] == 2021 and "arxiv.org" in paper["url"]


def test_page_and_markdown_renderers_do_not_import_each_other():
    code = ("import sys, poisonbench.leaderboard.page as p; "
            "assert 'poisonbench.leaderboard.render' not in sys.modules, 'page imports render'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_matrix_and_paper_links_are_on_the_page(board, capsys):
    assert run_cli(capsys, "leaderboard", "render", "--dir", board)[0] == 0
    page = (board / "index.html").read_text()
    assert page.count("<td class=\"num\" data-value=") >= 12 and 'id="tab-matrix"' in page
    assert page.count('<svg class="spark"') == 2 * len(POISONS)
    readme = (board / "README.md").read_text()
    assert "final flatters by" in readme and "val-selected %" in readme


DEFENDED_SUITE = tiny_suite_text(defenses="[none, jpeg10]")


def test_verify_retrains_with_the_entrys_defense(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(DEFENDED_SUITE)
    cache, board = tmp_path / "cache", tmp_path / "board"
    assert run_cli(capsys, "--cache-dir", cache, "run", tmp_path / "tiny.yaml", "--out", tmp_path / "run")[0] == 0
    assert run_cli(capsys, "leaderboard", "add", tmp_path / "run", "--dir", board)[0] == 0
    defended = next(board.glob("entries/tiny/*__jpeg10.json"))
    code, out, err = run_cli(capsys, "--cache-dir", cache, "leaderboard", "verify", defended, "--json")
    assert code == 0 and json.loads(out)["same_machine"] is True, err
    entry = read_entry(defended)  # the same numbers claimed for plain training: re-training disagrees
    entry["defense"] = {"name": "none", "params": {}}
    write_entry(defended, entry)
    code, _, err = run_cli(capsys, "--cache-dir", cache, "leaderboard", "verify", defended)
    assert code == 1 and "re-training gave" in err


def test_the_repository_board_measures_every_builtin_poison_family(catalog):
    """leaderboard/ holds measured (or verified) entries for every built-in poison family."""
    families = {e.cls.family or e.cls.name for e in catalog.poisons.entries()
                if ":" not in e.provider and e.cls.kind != "baseline"}
    entries = [json.loads(p.read_text()) for p in (REPO / "leaderboard" / "entries").glob("*/*.json")]
    measured = [e for e in entries if e["status"] in ("measured", "verified")]
    assert families - {e["poison"]["family"] for e in measured} == set()
    assert any(e["status"] == "verified" for e in measured)
    assert {e["defense"]["name"] for e in measured} > {"none"}  # and training-side defenses beside it
