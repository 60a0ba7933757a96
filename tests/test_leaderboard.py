"""Leaderboard: add (validation), schema problems, verify (tampering), render (escaping, --check)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from poisonbench.cli import main
from poisonbench.leaderboard.schema import consistency_problems, validate_entry
from poisonbench.leaderboard.store import read_entry, write_entry

from .helpers_board import add_run, empty_board, run_cli, tiny_suite_text
from .helpers_report import POISONS, fake_record, write_run

REPO = Path(__file__).resolve().parents[1]
NASTY = ["<script>alert(1)</script>", "a|b", "two\nlines"]


@pytest.fixture
def board(tmp_path) -> Path:
    return empty_board(tmp_path)


@pytest.fixture
def added(tmp_path, board, capsys) -> list[Path]:
    """Entries added from a fabricated 3-seed run of the six fake poisons."""
    add_run(capsys, board, write_run(tmp_path / "run"))
    return sorted((board / "entries" / "fake").glob("*.json"))


def entry_files(board: Path) -> list[Path]:
    return sorted((board / "entries").glob("*/*.json"))


# -- add ----------------------------------------------------------------------------------------

def test_add_writes_one_valid_entry_per_group(added):
    assert len(added) == len(POISONS)
    entry = read_entry(next(p for p in added if p.name.startswith("R4__")))
    assert entry["status"] == "measured" and entry["seeds"] == [0, 1, 2]
    assert [item["seed"] for item in entry["per_seed"]] == [0, 1, 2]
    assert entry["poison"]["plugin"]["distribution"] == "poisonbench"
    assert entry["versions"]["torch"] and entry["hardware"]["threads"] == 2
    assert entry["protocol"]["train"]["epochs"] == 12
    assert validate_entry(entry) == [] and consistency_problems(entry) == []


def test_add_only_named_poisons_and_refuses_to_overwrite(tmp_path, board, capsys):
    run = write_run(tmp_path / "run")
    code, _, _ = run_cli(capsys, "leaderboard", "add", run, "--dir", board, "--poison", "R4", "--poison", "LF3")
    assert code == 0 and len(entry_files(board)) == 2
    code, _, err = run_cli(capsys, "leaderboard", "add", run, "--dir", board, "--poison", "R4")
    assert code == 2 and "--replace" in err
    code, _, _ = run_cli(capsys, "leaderboard", "add", run, "--dir", board, "--poison", "R4", "--replace")
    assert code == 0
    code, _, err = run_cli(capsys, "leaderboard", "add", run, "--dir", board, "--poison", "R5")
    assert code == 2 and "'R5'" in err


def _nan(records):
    records[1]["history"]["test_acc"][3] = float("nan")
    records[1]["metrics"]["peak_test_acc"] = float("nan")
    return records, "$.per_seed[1].history.test_acc[3]: must be finite"


def _out_of_range(records):
    records[0]["history"]["test_acc"][-1] = 1.5
    records[0]["metrics"]["final_test_acc"] = 1.5
    return records, "$.per_seed[0].metrics.final_test_acc: must be in [0, 1], got 1.5"


def _missing(records):
    return records[:2], "seed 2 is listed in $.seeds but has no per-seed data (missing seed)"


def _duplicate(records):
    again = copy.deepcopy(records[1])
    again["cell_id"] += "-again"
    return records[:2] + [again], "$.per_seed[2].seed: duplicate seed 1"


@pytest.mark.parametrize("corrupt", [_nan, _out_of_range, _missing, _duplicate])
def test_add_rejects_bad_runs_and_writes_nothing(tmp_path, board, capsys, corrupt):
    records = [fake_record(POISONS[1], seed=s, epochs=8) for s in (0, 1, 2)]
    records, expected = corrupt(records)
    run = write_run(tmp_path / "run", epochs=8, poisons=POISONS[1:2], records=records)
    code, _, err = run_cli(capsys, "leaderboard", "add", run, "--dir", board)
    assert code == 2
    assert expected in err and str(run) in err  # names the run (file) and the JSON path
    assert entry_files(board) == []


# -- the schema -----------------------------------------------------------------------------------

def test_schema_lists_every_problem_with_its_path(added):
    entry = read_entry(added[0])
    entry["per_seed"][0]["metrics"]["peak_test_acc"] = "0.5"  # numbers must be numbers
    entry["per_seed"][1]["metrics"]["peak_epoch"] = True
    entry["per_seed"][2]["artifact_sha256"] = "abc"
    entry["status"] = "claimed"
    entry["surprise"] = 1
    del entry["date"]
    paths = {path for path, _ in validate_entry(entry)}
    assert {"$.per_seed[0].metrics.peak_test_acc", "$.per_seed[1].metrics.peak_epoch",
            "$.per_seed[2].artifact_sha256", "$.status", "$.surprise", "$.date"} <= paths


def test_only_reported_entries_may_lack_an_artifact(added):
    entry = read_entry(added[0])
    entry["per_seed"][0]["artifact_sha256"] = None
    assert "$.per_seed[0].artifact_sha256" in {p for p, _ in validate_entry(entry)}
    paper = read_entry(next((REPO / "leaderboard" / "entries" / "paper").glob("R4__*.json")))
    assert validate_entry(paper) == []
    paper["per_seed"] = entry["per_seed"]
    assert "$.per_seed" in {p for p, _ in validate_entry(paper)}


def test_render_reports_bad_files_with_file_and_path(added, board, capsys):
    text = added[0].read_text().replace('"peak_epoch": 7', '"peak_epoch": "7"', 1)
    added[0].write_text(text)
    code, _, err = run_cli(capsys, "leaderboard", "render", "--dir", board)
    assert code == 2
    assert f"{added[0]}: $.per_seed[0].metrics.peak_epoch: must be an integer" in err


# -- verify without training: the entry's own numbers must agree --------------------------------

@pytest.mark.parametrize("field", ["per_seed", "summary"])
def test_verify_catches_an_edited_metric(added, capsys, field):
    path = next(p for p in added if p.name.startswith("LF3__"))
    entry = read_entry(path)
    if field == "per_seed":
        entry["per_seed"][2]["metrics"]["peak_test_acc"] -= 0.1
        expected = "$.per_seed[2].metrics.peak_test_acc"
    else:
        entry["summary"]["final_test_acc"]["mean"] -= 0.01
        expected = "$.summary.final_test_acc.mean"
    write_entry(path, entry)
    code, _, err = run_cli(capsys, "leaderboard", "verify", path)
    assert code == 1 and expected in err


# -- render: escaping and --check ---------------------------------------------------------------

class _Cells(HTMLParser):
    """Text of every table cell, and how many <script> elements the page has."""

    def __init__(self):
        super().__init__()
        self.cells, self.scripts, self._cell = [], 0, None

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        if tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_names_with_markup_pipes_and_newlines_render_as_text(added, board, capsys):
    template = read_entry(added[0])
    for i, name in enumerate(NASTY):
        entry = copy.deepcopy(template)
        entry["poison"]["name"] = name
        entry["victim"]["name"] = f"victim {name}"
        for part in ("poison", "victim"):  # no stored short label: the board falls back to the name
            entry[part].pop("label", None)
            entry[part].pop("detail", None)
        write_entry(board / "entries" / "fake" / f"nasty{i}.json", entry)
    assert run_cli(capsys, "leaderboard", "render", "--dir", board)[0] == 0
    readme = (board / "README.md").read_text()
    assert "<script" not in readme
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in readme
    assert "a\\|b" in readme and "two<br>lines" in readme
    table = [line for line in readme.splitlines() if line.startswith("| ")]
    cells_per_row = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
    assert len(cells_per_row) == 1  # no name added or removed a column
    page = (board / "index.html").read_text()
    parser = _Cells()
    parser.feed(page)
    assert parser.scripts == 1  # only the page's own sorting/filter script
    for name in NASTY:
        assert name in parser.cells and f"victim {name}" in parser.cells
    assert "<script>alert" not in page


def test_render_check_detects_stale_files(added, board, capsys):
    code, _, err = run_cli(capsys, "leaderboard", "render", "--dir", board, "--check")
    assert code == 1 and "README.md" in err  # never rendered
    assert run_cli(capsys, "leaderboard", "render", "--dir", board)[0] == 0
    assert run_cli(capsys, "leaderboard", "render", "--dir", board, "--check")[0] == 0
    first = (board / "index.html").read_text()
    assert run_cli(capsys, "leaderboard", "render", "--dir", board)[0] == 0
    assert (board / "index.html").read_text() == first  # deterministic: no timestamps
    entry = read_entry(added[0])
    entry["date"] = "2030-01-01"
    write_entry(added[0], entry)
    code, _, err = run_cli(capsys, "leaderboard", "render", "--dir", board, "--check")
    assert code == 1 and "stale" in err


def test_rendered_leaderboard_in_the_repo_is_up_to_date(tmp_path, capsys):
    code, out, err = run_cli(capsys, "leaderboard", "render", "--check", "--dir", REPO / "leaderboard")
    assert code == 0, err + " (run `poisonbench leaderboard render` and commit the result)"
    # and the check can fail: a copy with one reported number changed is stale
    copy_root = tmp_path / "lb"
    shutil.copytree(REPO / "leaderboard", copy_root)
    path = next((copy_root / "entries" / "paper").glob("R4__*.json"))
    entry = json.loads(path.read_text())
    entry["summary"]["peak_test_acc"]["mean"] = 0.2
    write_entry(path, entry)
    assert run_cli(capsys, "leaderboard", "render", "--check", "--dir", copy_root)[0] == 1


def test_reported_entries_are_listed_apart(added, board, capsys):
    shutil.copytree(REPO / "leaderboard" / "entries" / "paper", board / "entries" / "paper")
    assert run_cli(capsys, "leaderboard", "render", "--dir", board)[0] == 0
    readme = (board / "README.md").read_text()
    measured, reported = readme.split("## Reported")
    assert "| R4 | tiny_cnn | none |" in measured.replace("\\_", "_")
    assert "24.51" in reported and "24.51" not in measured
    page = (board / "index.html").read_text()
    assert page.index('id="measured"') < page.index('id="reported"')
    assert "24.51" not in page.split('id="reported"')[0]


# -- verify with re-training: a real (tiny) run, its entry, its artifact --------------------------

TINY_SUITE = tiny_suite_text(defenses="[{name: early_stopping, params: {select: val}}]")


def _main(*args) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """(entry file, cache dir, artifact file) of a one-cell run added to a fresh leaderboard."""
    import hashlib

    base = tmp_path_factory.mktemp("measured")
    (base / "tiny.yaml").write_text(TINY_SUITE)
    cache, board = base / "cache", base / "board"
    (board / "entries").mkdir(parents=True)
    assert _main("--cache-dir", cache, "run", base / "tiny.yaml", "--out", base / "run") == 0
    assert _main("leaderboard", "add", base / "run", "--dir", board) == 0
    entry = next(board.glob("entries/tiny/*.json"))
    sha = read_entry(entry)["per_seed"][0]["artifact_sha256"]
    artifact = next(p for p in cache.rglob("*.safetensors")
                    if hashlib.sha256(p.read_bytes()).hexdigest() == sha)
    return entry, cache, artifact


@pytest.fixture
def tiny(measured, tmp_path):
    """A private copy of the measured entry (tests edit it)."""
    entry, cache, artifact = measured
    copy_path = tmp_path / entry.name
    shutil.copy(entry, copy_path)
    return copy_path, cache, artifact


def test_verify_retrains_exactly_and_update_marks_verified(tiny, capsys):
    entry, cache, artifact = tiny
    code, out, err = run_cli(capsys, "--cache-dir", cache, "leaderboard", "verify", entry,
                             "--artifact", artifact, "--update", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["same_machine"] is True and result["max_abs_diff_pt"] == 0.0
    assert all(row["ok"] and row["tolerance"] == "exact" for row in result["compared"])
    assert "$.per_seed[0].metrics.peak_test_acc" in {row["field"] for row in result["compared"]}
    updated = read_entry(entry)
    assert updated["status"] == "verified" and updated["verification"]["seed"] == 0


def test_verify_catches_curves_and_metrics_edited_together(tiny, capsys):
    """Consistent edits pass the bookkeeping checks; only re-training exposes them."""
    from poisonbench.leaderboard.schema import METRICS, derive_metrics
    from poisonbench.results.report import Stat

    entry_path, cache, artifact = tiny
    entry = read_entry(entry_path)
    item = entry["per_seed"][0]
    item["history"]["test_acc"] = [max(0.0, a - 0.2) for a in item["history"]["test_acc"]]
    item["metrics"] = derive_metrics(item["history"], loss_threshold=entry["loss_threshold"])
    entry["summary"] = {m: Stat.of([item["metrics"][m]]).to_json() for m in METRICS}
    assert consistency_problems(entry) == []
    write_entry(entry_path, entry)
    code, _, err = run_cli(capsys, "--cache-dir", cache, "leaderboard", "verify", entry_path,
                           "--artifact", artifact)
    assert code == 1 and "$.per_seed[0].metrics.peak_test_acc" in err and "re-training gave" in err


@pytest.mark.parametrize("with_artifact", [True, False])
def test_verify_catches_an_edited_hash(tiny, capsys, with_artifact):
    entry_path, cache, artifact = tiny
    entry = read_entry(entry_path)
    entry["per_seed"][0]["artifact_sha256"] = "0" * 64
    write_entry(entry_path, entry)
    extra = ["--artifact", artifact] if with_artifact else []  # else: from the cache / re-crafted
    code, _, err = run_cli(capsys, "--cache-dir", cache, "leaderboard", "verify", entry_path, *extra)
    assert code == 1 and "$.per_seed[0].artifact_sha256" in err


def test_verify_catches_one_flipped_artifact_byte(tiny, capsys, tmp_path):
    entry, cache, artifact = tiny
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # one pixel of one image
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "--cache-dir", cache, "leaderboard", "verify", entry, "--artifact", forged)
    assert code == 1 and "$.per_seed[0].artifact_sha256" in err and "forged.safetensors" in err
