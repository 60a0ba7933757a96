"""``leaderboard/index.html``: one self-contained page (inline CSS, JS and SVG, no fetches).

What a reader sees first, at a laptop's 1280 px: per row the short poison name (the params that
differ from the preset's defaults in small type below it, the paper in the tooltip and the last
column), victim and training-side defense, then the numbers — peak (oracle), val-selected, final,
"final flatters by" (peak − final), n — and a small curve of test accuracy per epoch with the peak
epoch marked. Three tabs: the board, the poison × defense matrix (per suite and victim, switchable
between the three selections) and the summary figures. Filters by suite, victim, defense, threat
model, status and class-/sample-wise apply to every tab. Tables sort by clicking a column header
(numeric columns by their ``data-value``; missing values last). Every name is HTML-escaped where it
is written and the script carries no data, so a poison named ``<script>…`` is only ever text.
"""

from __future__ import annotations

from poisonbench.leaderboard.rows import MEASURED, Row
from poisonbench.leaderboard.svg import esc, scatter, sparkline

SELECTIONS = (("peak", "peak_test_acc"), ("val-selected", "val_selected_test_acc"), ("final", "final_test_acc"))
FILTERS = (("suite", "Suite"), ("victim", "Victim"), ("defense", "Defense"), ("threat", "Threat model"),
           ("status", "Status"), ("applied", "Applied"))

STYLE = """
body{font:14px/1.35 system-ui,sans-serif;margin:1em auto;max-width:1500px;padding:0 1em;color:#222}
h1{font-size:1.4em;margin:.2em 0} h2{font-size:1.15em} p.lead{margin:.3em 0 .6em;max-width:70em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top;white-space:nowrap}
th{cursor:pointer;background:#f4f4f4;user-select:none;white-space:nowrap;font-weight:600}
th[aria-sort=ascending]::after{content:" ▲"} th[aria-sort=descending]::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.key{font-weight:600;background:#fffbe6}
td.name,td.def{white-space:normal;min-width:5em;max-width:14em}
td.name small,td.def small{display:block;color:#666;font-weight:400;font-size:11px;overflow-wrap:anywhere}
td.spark{padding:1px 4px} .scroll{overflow-x:auto}
.filters{display:flex;flex-wrap:wrap;gap:.3em 1.2em;margin:.4em 0}
.tabs{margin:.6em 0 0;border-bottom:2px solid #ccc} .tabs button{font:inherit;border:1px solid #ccc;
  border-bottom:none;background:#f4f4f4;padding:4px 12px;cursor:pointer;margin-right:3px}
.tabs button[aria-selected=true]{background:#fff;font-weight:600;position:relative;top:2px}
.status-verified{color:#2a7d2a;font-weight:600} .status-measured{color:#1f4e9c}
.status-reported{color:#8a6d00} .figures{display:flex;flex-wrap:wrap;gap:1em}
figure{margin:0} figcaption{font-weight:600} a{color:#1f4e9c}
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
  var names = ["suite", "victim", "defense", "threat", "status", "applied"];
  function applyFilters() {
    var want = {};
    names.forEach(function (n) { want[n] = document.getElementById("filter-" + n).value; });
    document.querySelectorAll("[data-suite]").forEach(function (el) {
      var show = names.every(function (n) {
        var own = el.getAttribute("data-" + n);
        return !want[n] || own === null || own === want[n];
      });
      el.style.display = show ? "" : "none";
    });
  }
  names.forEach(function (n) { document.getElementById("filter-" + n).addEventListener("change", applyFilters); });
  var tabs = document.querySelectorAll(".tabs button");
  tabs.forEach(function (tab) {
    tab.addEventListener("click", function () {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
    });
  });
  var shown = document.getElementById("matrix-selection");
  if (shown) shown.addEventListener("change", function () {
    document.querySelectorAll("td[data-peak]").forEach(function (td) {
      td.textContent = td.getAttribute("data-" + shown.value) || "–";
    });
  });
})();
"""


def _num(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _cell(text: str, value: float | None = None, *, numeric: bool = False, cls: str = "") -> str:
    attrs = f' data-value="{_num(value)}"' if numeric else ""
    classes = " ".join(c for c in ("num" if numeric else "", cls) if c)
    return f'<td{attrs}{f" class={chr(34)}{classes}{chr(34)}" if classes else ""}>{esc(text)}</td>'


def _name(name: str, detail: str, *, cls: str, tip: str = "") -> str:
    """A short name with its differing params in small type under it (and as a tooltip)."""
    title = " — ".join(x for x in (detail, tip) if x)
    small = f"<small>{esc(detail)}</small>" if detail else ""
    return f'<td class="{cls}" data-value="{esc(name.lower())}"{f" title={chr(34)}{esc(title)}{chr(34)}" if title else ""}>{esc(name)}{small}</td>'


def _paper(row: Row) -> str:
    if not row.paper or not row.paper.get("url"):
        return f"<td>{esc(row.cite())}</td>"
    return (f'<td><a href="{esc(row.paper["url"])}" title="{esc(row.paper.get("title", ""))}" '
            f'rel="noopener">{esc(row.cite())}</a></td>')


def _attrs(row: Row) -> str:
    return (f'data-suite="{esc(row.suite)}" data-victim="{esc(row.victim)}" data-defense="{esc(row.defense)}" '
            f'data-threat="{esc(row.threat_model)}" data-status="{esc(row.status)}" data-applied="{esc(row.applied)}"')


def _table(rows: list[Row], *, table_id: str, reported: bool) -> str:
    thr = rows[0].loss_threshold if rows else 0.5
    columns = [("#", True), ("poison", False), ("victim", False)]
    if not reported:
        columns.append(("defense", False))
    columns += [("peak %", True), ("val-selected %", True), ("final %", True), ("final flatters by", True)]
    columns += [("n", True), ("test acc. per epoch", False)] if not reported else []
    columns += [("status", False)]
    columns += [(f"epochs to loss<{thr:g}", True)] if not reported else []
    columns += [("threat model", False), ("kind", False), ("applied", False), ("suite", False), ("paper", False)]
    columns += [("source", False)] if reported else [("artifact", False), ("date", False)]
    head = "".join(f'<th scope="col"{" data-type=num" if num else ""}>{esc(name)}</th>' for name, num in columns)
    body = []
    for rank, row in enumerate(rows, start=1):
        cells = [_cell(str(rank), rank, numeric=True),
                 _name(row.poison, row.poison_detail, cls="name", tip=str((row.paper or {}).get("title", ""))),
                 _name(row.victim, row.victim_detail, cls="def")]
        if not reported:
            cells.append(_name(row.defense, row.defense_detail, cls="def"))
        for _, key in SELECTIONS:
            cells.append(_cell(row.acc_text(key), row.mean(key), numeric=True, cls="key" if key == "peak_test_acc" else ""))
        gap = row.mean("final_flatters_by")
        cells.append(_cell("–" if gap is None else row.acc_text("final_flatters_by") + " pt", gap, numeric=True))
        if not reported:
            cells += [_cell(str(row.n_seeds), row.n_seeds, numeric=True), f'<td class="spark">{sparkline(row.curve)}</td>']
        cells.append(f'<td class="status-{esc(row.status)}">{esc(row.status)}</td>')
        if not reported:
            speed = None if row.never == row.n_seeds else row.summary["epochs_to_loss_threshold"]["mean"]
            cells.append(_cell(row.speed_text(), speed, numeric=True))
        cells += [_cell(row.threat_model), _cell(row.kind), _cell(row.applied), _cell(row.suite), _paper(row)]
        if reported:
            cells.append(_cell(" ".join(x for x in (row.reference, row.detail) if x)))
        else:
            cells += [f'<td title="{esc(row.path)}"><code>{esc(row.artifact)}</code></td>', _cell(row.date)]
        body.append(f"<tr {_attrs(row)}>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
            '\n<tbody>\n' + "\n".join(body) + "\n</tbody></table></div>")


def _matrix(rows: list[Row]) -> str:
    """Per (suite, victim): poisons down, training-side defenses across, one selection per cell."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.suite, row.victim), []).append(row)
    out = []
    for (suite, victim), group in groups.items():
        column = lambda r: (r.defense, r.defense_detail)  # noqa: E731
        defenses = list(dict.fromkeys(column(r) for r in sorted(group, key=lambda r: r.defense != "none")))
        undefended = {r.poison_key: r.peak for r in group if r.defense == "none" and r.peak is not None}
        poisons = sorted(dict.fromkeys(r.poison_key for r in group),  # by undefended peak, then as ranked
                         key=lambda k: (k not in undefended, undefended.get(k, 0.0)))
        by_key = {(r.poison_key, column(r)): r for r in group}
        names = {r.poison_key: r for r in group}
        head = "".join(f'<th scope="col" data-type="num"{f" title={chr(34)}{esc(d)}{chr(34)}" if d else ""}>'
                       f'{esc(n)}{"*" if d else ""}</th>' for n, d in defenses)
        lines = []
        for poison in poisons:
            first = names[poison]
            cells = [_name(first.poison, first.poison_detail, cls="name")]
            for defense in defenses:
                row = by_key.get((poison, defense))
                if row is None:
                    cells.append('<td class="num" data-value=""></td>')
                    continue
                texts = {name: (row.acc_text(key) if row.mean(key) is not None else "") for name, key in SELECTIONS}
                data = "".join(f' data-{n.split("-")[0]}="{esc(t)}"' for n, t in texts.items())
                cells.append(f'<td class="num" data-value="{_num(row.peak)}"{data}>{esc(texts["peak"] or "–")}</td>')
            lines.append(f'<tr data-suite="{esc(suite)}" data-victim="{esc(victim)}" '
                         f'data-applied="{esc(first.applied)}" data-threat="{esc(first.threat_model)}">'
                         + "".join(cells) + "</tr>")
        out.append(f'<section data-suite="{esc(suite)}" data-victim="{esc(victim)}"><h3>{esc(suite)} · {esc(victim)}</h3>'
                   f'<div class="scroll"><table class="sortable matrix"><thead><tr><th scope="col">poison</th>{head}</tr>'
                   "</thead><tbody>" + "".join(lines) + "</tbody></table></div></section>")
    return "\n".join(out)


def _figures(rows: list[Row]) -> str:
    by_suite: dict[tuple[str, bool], list[Row]] = {}
    for row in rows:
        by_suite.setdefault((row.suite, row.status == "reported"), []).append(row)
    out = []
    for (suite, reported), group in by_suite.items():
        tag = " (reported)" if reported else ""
        plain = [r for r in group if r.defense == "none"]  # one point per poison: the undefended victim
        group = plain or group
        tag += ", undefended" if plain and len(plain) < len(by_suite[(suite, reported)]) else ""
        caption = "peak vs final accuracy (points above the line: keeping the best epoch helps)"
        figures = [(caption, scatter(group, x_key="final_test_acc", x_label="final test accuracy (%)",
                                     title=f"{suite}{tag}: {caption}", diagonal=True))]
        if any(r.summary["epochs_to_loss_threshold"]["mean"] is not None for r in group):
            thr = group[0].loss_threshold
            caption = "learning speed vs peak accuracy (the paper's Fig. 1)"
            figures.insert(0, (caption, scatter(group, x_key="epochs_to_loss_threshold",
                                                x_label=f"epochs until loss < {thr:g}",
                                                title=f"{suite}{tag}: {caption}", diagonal=False)))
        body = "".join(f"<figure><figcaption>{esc(caption)}</figcaption>{svg}</figure>" for caption, svg in figures)
        out.append(f'<section data-suite="{esc(suite)}"><h3>Suite {esc(suite)}{tag}</h3>'
                   f'<div class="figures">{body}</div></section>')
    return "\n".join(out)


def _filters(rows: list[Row]) -> str:
    values = {"suite": lambda r: r.suite, "victim": lambda r: r.victim, "defense": lambda r: r.defense,
              "threat": lambda r: r.threat_model, "status": lambda r: r.status, "applied": lambda r: r.applied}
    parts = []
    for key, title in FILTERS:
        options = "".join(f'<option value="{esc(v)}">{esc(v)}{"-wise" if key == "applied" else ""}</option>'
                          for v in sorted({values[key](r) for r in rows}))
        parts.append(f'<label>{title} <select id="filter-{key}"><option value="">all</option>{options}</select></label>')
    return '<div class="filters">' + "".join(parts) + "</div>"


def render_html(rows: list[Row]) -> str:
    measured = [r for r in rows if r.status in MEASURED]
    reported = [r for r in rows if r.status == "reported"]
    tabs = [("tab-board", "Board"), ("tab-matrix", "Poison × defense"), ("tab-figures", "Figures")]
    tab_bar = "".join(f'<button type="button" role="tab" aria-controls="{i}" aria-selected="{str(n == 0).lower()}">'
                      f"{t}</button>" for n, (i, t) in enumerate(tabs))
    matrix_choice = ('<p><label>Show <select id="matrix-selection">'
                     + "".join(f'<option value="{n.split("-")[0]}">{n}</option>' for n, _ in SELECTIONS)
                     + "</select></label> test accuracy (%), mean over seeds.</p>")
    sections = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>poisonbench leaderboard</title>", f"<style>{STYLE}</style></head><body>",
        "<!-- generated by `poisonbench leaderboard render`; do not edit -->",
        "<h1>poisonbench leaderboard</h1>",
        '<p class="lead">One row per poison × victim × training-side defense, ranked by <b>peak</b> clean test '
        "accuracy (lower = stronger poison). One training, three readings: <b>peak</b> (best epoch, an oracle — "
        "the paper's number), <b>val-selected</b> (best epoch on a clean validation split — what a defender "
        "keeps), <b>final</b> (last epoch — what most papers report); <b>final flatters by</b> = peak − final. "
        "Accuracies in %, mean ± std over n seeds; the curve is test accuracy per epoch, peak in red. "
        "Click a header to sort.</p>",
        _filters(rows), f'<div class="tabs" role="tablist">{tab_bar}</div>',
        '<section id="tab-board" role="tabpanel">',
        "<h2>Measured and verified</h2>",
        _table(measured, table_id="measured", reported=False) if measured else "<p>No measured entries yet.</p>",
        "<h2>Reported (copied from papers, not measured here)</h2>",
        _table(reported, table_id="reported", reported=True) if reported else "<p>No reported entries.</p>",
        "</section>",
        '<section id="tab-matrix" role="tabpanel" hidden><h2>Poison × defense</h2>', matrix_choice,
        _matrix(measured) or "<p>No measured entries yet.</p>", "</section>",
        '<section id="tab-figures" role="tabpanel" hidden><h2>Figures</h2>', _figures(rows) or "<p>No entries.</p>",
        "</section>", f"<script>{SCRIPT}</script>", "</body></html>",
    ]
    return "\n".join(sections) + "\n"
