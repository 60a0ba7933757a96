"""``leaderboard/index.html``: one self-contained page (inline CSS, JS and SVG figures, no fetches).

The tables sort by clicking a column header (numeric columns by their ``data-value``; missing
values last) and filter by suite and by class-/sample-wise. Every name is HTML-escaped where it is
written and the script carries no data, so a poison named ``<script>…`` is only ever text. The
figures are SVG drawn here (not matplotlib) so the page is byte-stable across library versions.
"""

from __future__ import annotations

import html
from typing import Any

from poisonbench.leaderboard.render import MEASURED, Row

COLOURS = {"class": "#d62728", "sample": "#1f77b4"}
W, H, LEFT, BOTTOM, TOP, RIGHT = 600, 440, 50, 40, 20, 110  # SVG size and margins, px

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1500px;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}
th{cursor:pointer;background:#f4f4f4;user-select:none}
th[aria-sort=ascending]::after{content:" ▲"} th[aria-sort=descending]::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto}
.filters label{margin-right:1.5em} .figures{display:flex;flex-wrap:wrap;gap:1em}
.status-verified{color:#2a7d2a;font-weight:600} .status-reported{color:#8a6d00}
figure{margin:0} figcaption{font-weight:600}
"""

SCRIPT = """
(function () {
  function key(row, col, numeric) {
    var cell = row.cells[col];
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var x = parseFloat(raw);
    return isNaN(x) ? null : x;
  }
  function sortBy(table, col, th) {
    var numeric = th.getAttribute("data-type") === "num";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col, numeric), y = key(b, col, numeric);
      if (x === null || y === null) return (x === null) - (y === null);  // missing values last
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.addEventListener("click", function () { sortBy(table, col, th); });
    });
  });
  function applyFilters() {
    var suite = document.getElementById("filter-suite").value;
    var applied = document.getElementById("filter-applied").value;
    document.querySelectorAll("[data-suite]").forEach(function (el) {
      var own = el.getAttribute("data-applied");
      var show = (!suite || el.getAttribute("data-suite") === suite) && (!applied || !own || own === applied);
      el.style.display = show ? "" : "none";
    });
  }
  document.getElementById("filter-suite").addEventListener("change", applyFilters);
  document.getElementById("filter-applied").addEventListener("change", applyFilters);
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _cell(text: str, value: float | None = None, *, numeric: bool = False) -> str:
    attrs = f' data-value="{_num(value)}"' if numeric else ""
    return f"<td{attrs}{' class=num' if numeric else ''}>{esc(text)}</td>"


def _table(rows: list[Row], *, table_id: str, reported: bool) -> str:
    thr = rows[0].loss_threshold if rows else 0.5
    if reported:
        columns = [("#", True), ("suite", False), ("poison", False), ("detail", False), ("kind", False),
                   ("applied", False), ("victim", False), ("peak %", True), ("final %", True),
                   ("source", False)]
    else:
        columns = [("#", True), ("suite", False), ("poison", False), ("kind", False), ("applied", False),
                   ("victim", False), ("defense", False), ("peak %", True), ("final %", True),
                   ("val-selected %", True), (f"epochs to loss<{thr:g}", True), ("seeds", True),
                   ("status", False), ("artifact", False), ("date", False)]
    head = "".join(f'<th scope="col"{" data-type=num" if num else ""}>{esc(name)}</th>'
                   for name, num in columns)
    body = []
    for rank, row in enumerate(rows, start=1):
        cells = [_cell(str(rank), rank, numeric=True), _cell(row.suite), _cell(row.poison)]
        if reported:
            cells.append(_cell(row.detail))
        cells += [_cell(row.kind), _cell(row.applied), _cell(row.victim)]
        if not reported:
            cells.append(_cell(row.defense))
        cells += [_cell(row.acc_text("peak_test_acc"), row.summary["peak_test_acc"]["mean"], numeric=True),
                  _cell(row.acc_text("final_test_acc"), row.summary["final_test_acc"]["mean"], numeric=True)]
        if reported:
            cells.append(_cell(row.reference))
        else:
            speed = None if row.never == row.n_seeds else row.summary["epochs_to_loss_threshold"]["mean"]
            cells += [_cell(row.acc_text("selected_test_acc"), row.summary["selected_test_acc"]["mean"],
                            numeric=True),
                      _cell(row.speed_text(), speed, numeric=True),
                      _cell(str(row.n_seeds), row.n_seeds, numeric=True),
                      f'<td class="status-{esc(row.status)}">{esc(row.status)}</td>',
                      f'<td title="{esc(row.path)}"><code>{esc(row.artifact)}</code></td>', _cell(row.date)]
        body.append(f'<tr data-suite="{esc(row.suite)}" data-applied="{esc(row.applied)}">'
                    + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            '\n<tbody>\n' + "\n".join(body) + "\n</tbody></table></div>")


def _scatter(rows: list[Row], *, x_key: str, x_label: str, title: str, diagonal: bool) -> str:
    """A small SVG scatter of ``x_key`` (a summary metric) against peak accuracy, one point per row."""
    points = []
    for row in rows:
        x, y = row.summary[x_key]["mean"], row.peak
        if x is not None and y is not None:
            points.append((100 * x if diagonal else x, 100 * y, row))
    x_max = 100.0 if diagonal else 5 * _nice_step(max([p[0] for p in points] + [1.0]) / 5)
    sx = lambda v: LEFT + (W - LEFT - RIGHT) * v / x_max  # noqa: E731
    sy = lambda v: H - BOTTOM - (H - TOP - BOTTOM) * v / 100.0  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img"><title>{esc(title)}</title>',
             f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
             'fill="none" stroke="#999"/>']
    for i in range(6):  # y ticks every 20 %, x ticks at 5 even steps
        parts.append(f'<text x="{LEFT - 6}" y="{sy(20 * i) + 4:.1f}" font-size="10" text-anchor="end">{20 * i}</text>')
        xv = x_max * i / 5
        parts.append(f'<text x="{sx(xv):.1f}" y="{H - BOTTOM + 14}" font-size="10" text-anchor="middle">{xv:.0f}</text>')
    if diagonal:
        parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(100):.1f}" y2="{sy(100):.1f}" '
                     'stroke="#555" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2:.1f}" y="{H - 6}" font-size="11" text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<text x="12" y="{(TOP + H - BOTTOM) / 2:.1f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(TOP + H - BOTTOM) / 2:.1f})">peak test accuracy (%)</text>')
    for x, y, row in points:
        colour = COLOURS.get(row.applied, "#777")
        tip = f"{row.poison} ({row.victim}, {row.defense}): peak {y:.2f}%, {x_label} {x:.2f}"
        parts.append(f'<g data-suite="{esc(row.suite)}" data-applied="{esc(row.applied)}"><title>{esc(tip)}</title>'
                     f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"/>'
                     f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 4:.1f}" font-size="9">{esc(row.poison[:24])}</text></g>')
    legend = "".join(f'<circle cx="{W - RIGHT + 12}" cy="{TOP + 10 + 16 * i}" r="4" fill="{c}"/>'
                     f'<text x="{W - RIGHT + 20}" y="{TOP + 14 + 16 * i}" font-size="10">{a}-wise</text>'
                     for i, (a, c) in enumerate(COLOURS.items()))
    return "".join(parts) + legend + "</svg>"


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is ≥ ``raw`` (axis tick spacing)."""
    import math

    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _figures(rows: list[Row]) -> str:
    by_suite: dict[tuple[str, bool], list[Row]] = {}
    for row in rows:
        by_suite.setdefault((row.suite, row.status == "reported"), []).append(row)
    out = []
    for (suite, reported), group in by_suite.items():
        tag = " (reported)" if reported else ""
        caption = "peak vs final accuracy (points above the line: early stopping helps)"
        figures = [(caption, _scatter(group, x_key="final_test_acc", x_label="final test accuracy (%)",
                                      title=f"{suite}{tag}: {caption}", diagonal=True))]
        if any(r.summary["epochs_to_loss_threshold"]["mean"] is not None for r in group):
            thr = group[0].loss_threshold
            caption = "learning speed vs peak accuracy (the paper's Fig. 1)"
            figures.insert(0, (caption, _scatter(group, x_key="epochs_to_loss_threshold",
                                                 x_label=f"epochs until loss < {thr:g}",
                                                 title=f"{suite}{tag}: {caption}", diagonal=False)))
        body = "".join(f"<figure><figcaption>{esc(caption)}</figcaption>{svg}</figure>"
                       for caption, svg in figures)
        out.append(f'<section data-suite="{esc(suite)}"><h3>Suite {esc(suite)}{tag}</h3>'
                   f'<div class="figures">{body}</div></section>')
    return "\n".join(out)


def render_html(rows: list[Row]) -> str:
    measured = [r for r in rows if r.status in MEASURED]
    reported = [r for r in rows if r.status == "reported"]
    suites = sorted({r.suite for r in rows})
    options = "".join(f'<option value="{esc(s)}">{esc(s)}</option>' for s in suites)
    sections = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>poisonbench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
        "<!-- generated by `poisonbench leaderboard render`; do not edit -->",
        "<h1>poisonbench leaderboard</h1>",
        "<p>Poisons ranked by the victim's <b>peak</b> clean test accuracy (lower = stronger poison). "
        "Accuracies in %, mean ± std (n seeds). Click a column header to sort.</p>",
        '<div class="filters"><label>Suite <select id="filter-suite"><option value="">all</option>'
        f"{options}</select></label>"
        '<label>Applied <select id="filter-applied"><option value="">all</option>'
        '<option value="class">class-wise</option><option value="sample">sample-wise</option>'
        "</select></label></div>",
        "<h2>Measured and verified</h2>",
        _table(measured, table_id="measured", reported=False) if measured else "<p>No measured entries yet.</p>",
        "<h2>Reported (copied from papers, not measured here)</h2>",
        _table(reported, table_id="reported", reported=True) if reported else "<p>No reported entries.</p>",
        "<h2>Figures</h2>", _figures(rows) or "<p>No entries.</p>",
        f"<script>{SCRIPT}</script>", "</body></html>",
    ]
    return "\n".join(sections) + "\n"
