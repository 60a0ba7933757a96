"""Render the leaderboard: ``README.md`` (Markdown tables) and ``index.html`` (see ``page``).

Entries are grouped by suite and ranked by mean peak test accuracy (lower = stronger poison).
Measured and verified entries are listed apart from ``reported`` ones (a paper's numbers, never
measured here). Output depends only on the entries (no timestamps), so ``render --check`` can tell
whether the committed files are stale. Every name that reaches Markdown is escaped (``|``,
newlines, HTML and Markdown markup), so a poison called ``<script>`` is shown as text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonbench.leaderboard.store import load_entries
from poisonbench.results.figures import write_atomic
from poisonbench.results.report import format_stat, label

README = "README.md"
INDEX = "index.html"
MEASURED = ("measured", "verified")


@dataclass(frozen=True)
class Row:
    """One entry, flattened for tables."""

    suite: str
    suite_version: int
    status: str
    poison: str
    kind: str
    applied: str
    victim: str
    defense: str
    summary: dict[str, dict[str, Any]]
    never: int | None  # seeds that never reached the loss threshold (None: unknown, reported)
    n_seeds: int | None
    loss_threshold: float
    artifact: str
    date: str
    reference: str
    detail: str
    path: str

    @property
    def peak(self) -> float | None:
        return self.summary["peak_test_acc"]["mean"]

    def speed_text(self) -> str:
        stat = self.summary["epochs_to_loss_threshold"]
        if self.never is not None and self.n_seeds and self.never == self.n_seeds:
            return "never"
        text = format_stat(stat, percent=False)
        return text + (f"; never in {self.never}/{self.n_seeds}" if self.never else "")

    def acc_text(self, key: str) -> str:
        stat = self.summary[key]
        if self.status == "reported" and stat["mean"] is not None:
            return f"{100 * stat['mean']:.2f}"
        return format_stat(stat, percent=True)


def make_row(path: Path, entry: dict[str, Any], root: Path) -> Row:
    per_seed = entry["per_seed"]
    hashes = sorted({item["artifact_sha256"] for item in per_seed})
    artifact = hashes[0][:12] if len(hashes) == 1 else (f"{len(hashes)} artifacts" if hashes else "—")
    reported = entry["status"] == "reported"
    source = entry.get("source") or {}
    return Row(
        suite=entry["suite"]["name"], suite_version=entry["suite"]["version"], status=entry["status"],
        poison=label(entry["poison"]), kind=entry["poison"]["kind"], applied=entry["poison"]["applied"],
        victim=label(entry["victim"]), defense=label(entry["defense"]), summary=entry["summary"],
        never=None if reported else sum(i["metrics"]["epochs_to_loss_threshold"] is None for i in per_seed),
        n_seeds=None if reported else len(per_seed), loss_threshold=entry["loss_threshold"],
        artifact=artifact, date=entry["date"][:10],
        reference=str(source.get("reference") or ""), detail=str(source.get("detail") or ""), path=path.relative_to(root).as_posix())


def ranked(rows: list[Row]) -> list[Row]:
    """By suite, then ascending peak (missing peaks last), then names (a stable, total order)."""
    return sorted(rows, key=lambda r: (r.suite, r.peak is None, r.peak or 0.0, r.poison, r.victim,
                                       r.defense, r.path))


def load_rows(root: Path) -> list[Row]:
    root = Path(root)
    return ranked([make_row(path, entry, root) for path, entry in load_entries(root)])


# -- Markdown ---------------------------------------------------------------------------------

# Inside a table cell only these can form markup (or end the cell); `<`, `>` and `&` are HTML-escaped.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|])")


def md(text: Any) -> str:
    """A table cell that shows ``text`` literally: HTML escaped, Markdown markup and ``|`` backslashed,
    newlines as ``<br>``."""
    escaped = html.escape(str(text), quote=False)
    escaped = _MD_SPECIAL.sub(r"\\\1", escaped)
    return re.sub(r"\r\n|\r|\n", "<br>", escaped)


def _md_table(rows: list[Row], *, reported: bool) -> list[str]:
    thr = rows[0].loss_threshold
    if reported:
        head = ["#", "poison", "detail", "kind", "applied", "victim", "peak %", "final %", "source"]
    else:
        head = ["#", "poison", "kind", "applied", "victim", "defense", "peak % (n)", "final %",
                "val-selected %", f"epochs to loss<{thr:g}", "status", "artifact", "date"]
    lines = ["| " + " | ".join(md(h) for h in head) + " |", "|" + "---|" * len(head)]
    for rank, row in enumerate(rows, start=1):
        if reported:
            cells = [rank, row.poison, row.detail, row.kind, row.applied, row.victim,
                     row.acc_text("peak_test_acc"), row.acc_text("final_test_acc"), row.reference]
        else:
            cells = [rank, row.poison, row.kind, row.applied, row.victim, row.defense,
                     row.acc_text("peak_test_acc"), row.acc_text("final_test_acc"),
                     row.acc_text("selected_test_acc"), row.speed_text(), row.status,
                     row.artifact, row.date]
        lines.append("| " + " | ".join(md(c) for c in cells) + " |")
    return lines


def _by_suite(rows: list[Row]) -> dict[tuple[str, int], list[Row]]:
    out: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        out.setdefault((row.suite, row.suite_version), []).append(row)
    return out


def render_markdown(rows: list[Row]) -> str:
    lines = [
        "# poisonbench leaderboard", "",
        "<!-- generated by `poisonbench leaderboard render` from entries/; do not edit -->", "",
        "Poisons ranked by the victim's **peak** clean test accuracy (lower = stronger poison): the",
        "accuracy a victim who keeps its best epoch gets. Accuracies in %, mean ± std (n seeds).",
        "*measured* entries come from `poisonbench leaderboard add RUN_DIR`; *verified* ones were",
        "re-trained from their artifact by `poisonbench leaderboard verify --update` and matched.",
        "Interactive version: [index.html](index.html).", "",
    ]
    measured = [r for r in rows if r.status in MEASURED]
    reported = [r for r in rows if r.status == "reported"]
    lines += ["## Measured and verified", ""]
    if not measured:
        lines += ["No measured entries yet.", ""]
    for (suite, version), group in _by_suite(measured).items():
        lines += [f"### Suite {md(suite)} (version {version})", "", *_md_table(group, reported=False), ""]
    lines += ["## Reported (copied from papers, not measured here)", ""]
    if not reported:
        lines += ["No reported entries.", ""]
    for (suite, version), group in _by_suite(reported).items():
        lines += [f"### Suite {md(suite)} (version {version})", "", *_md_table(group, reported=True), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# -- writing and checking ---------------------------------------------------------------------

def render_all(root: Path) -> dict[str, str]:
    """File name (relative to ``root``) → rendered text, for every generated file."""
    from poisonbench.leaderboard.page import render_html

    rows = load_rows(root)
    return {README: render_markdown(rows), INDEX: render_html(rows)}


def write_rendered(root: Path) -> list[Path]:
    written = []
    for name, text in render_all(root).items():
        target = Path(root) / name
        write_atomic(target, text.encode("utf-8"))
        written.append(target)
    return written


def stale_files(root: Path) -> list[Path]:
    """Generated files whose content differs from a fresh render (or that are missing)."""
    stale = []
    for name, text in render_all(root).items():
        target = Path(root) / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            stale.append(target)
    return stale
