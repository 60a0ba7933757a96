"""Inline SVG for the HTML board: a per-row accuracy curve and the two summary scatters.

Drawn here rather than by matplotlib so the page is byte-stable across library versions and
needs no fetches. Every name is HTML-escaped where it is written; coordinates are rounded to 0.1
px so output is deterministic.
"""

from __future__ import annotations

import html
import math
from typing import Any

from poisonbench.leaderboard.rows import Row

COLOURS = {"class": "#d62728", "sample": "#1f77b4"}
W, H, LEFT, BOTTOM, TOP, RIGHT = 600, 440, 50, 40, 20, 110  # scatter size and margins, px
SPARK_W, SPARK_H, SPARK_PAD = 120, 30, 3  # curve size and inner padding, px


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def sparkline(curve: tuple[float, ...] | list[float]) -> str:
    """Clean test accuracy per epoch, scaled to the row's own range (the numbers are in the row; the
    shape is what matters here), the peak epoch marked with a red dot and the final epoch with a
    grey one; the tooltip gives both with the range."""
    if not curve:
        return ""
    n = len(curve)
    low, high = min(curve), max(curve)
    span = high - low or 1.0
    x = lambda e: SPARK_PAD + (SPARK_W - 2 * SPARK_PAD) * (e / (n - 1) if n > 1 else 0.5)  # noqa: E731
    y = lambda v: SPARK_H - SPARK_PAD - (SPARK_H - 2 * SPARK_PAD) * (v - low) / span  # noqa: E731
    peak = max(range(n), key=lambda e: (curve[e], -e))
    points = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in enumerate(curve))
    tip = (f"test accuracy per epoch (mean over seeds; axis {100 * low:.0f}–{100 * high:.0f}%): "
           f"peak {100 * curve[peak]:.1f}% at epoch {peak + 1}, final {100 * curve[-1]:.1f}% at epoch {n}")
    return (f'<svg class="spark" width="{SPARK_W}" height="{SPARK_H}" viewBox="0 0 {SPARK_W} {SPARK_H}" '
            f'role="img" aria-label="{esc(tip)}"><title>{esc(tip)}</title>'
            f'<polyline points="{points}" fill="none" stroke="#444" stroke-width="1.2"/>'
            f'<circle cx="{x(n - 1):.1f}" cy="{y(curve[-1]):.1f}" r="2" fill="#999"/>'
            f'<circle class="peak" cx="{x(peak):.1f}" cy="{y(curve[peak]):.1f}" r="2.6" fill="#d62728"/></svg>')


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 × 10^k that is ≥ ``raw`` (axis tick spacing)."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def scatter(rows: list[Row], *, x_key: str, x_label: str, title: str, diagonal: bool) -> str:
    """An SVG scatter of ``x_key`` (a summary metric) against peak accuracy, one point per row,
    labelled with the short name where the label does not overlap another (every point has a
    tooltip); the legend sits right of the axes, never over the points."""
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
    placed: list[tuple[float, float, float, float]] = []  # label boxes already drawn
    for x, y, row in sorted(points, key=lambda p: (p[1], p[0])):  # strongest poisons get labels first
        colour = COLOURS.get(row.applied, "#777")
        tip = f"{row.poison} ({row.victim}, {row.defense}): peak {y:.2f}%, {x_label} {x:.2f}"
        text = row.poison[:16]
        box = (sx(x) + 6, sy(y) - 13, sx(x) + 6 + 5.5 * len(text), sy(y) - 2)
        free = all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed)
        label_svg = ""
        if free:  # a label that would overlap another is left out (the tooltip still names the point)
            placed.append(box)
            label_svg = f'<text x="{box[0]:.1f}" y="{sy(y) - 4:.1f}" font-size="9">{esc(text)}</text>'
        parts.append(f'<g data-suite="{esc(row.suite)}" data-applied="{esc(row.applied)}" '
                     f'data-victim="{esc(row.victim)}" data-defense="{esc(row.defense)}" '
                     f'data-threat="{esc(row.threat_model)}" data-status="{esc(row.status)}">'
                     f'<title>{esc(tip)}</title><circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"/>'
                     f'{label_svg}</g>')
    legend = "".join(f'<circle cx="{W - RIGHT + 12}" cy="{TOP + 10 + 16 * i}" r="4" fill="{c}"/>'
                     f'<text x="{W - RIGHT + 20}" y="{TOP + 14 + 16 * i}" font-size="10">{a}-wise</text>'
                     for i, (a, c) in enumerate(COLOURS.items()))
    return "".join(parts) + legend + "</svg>"
