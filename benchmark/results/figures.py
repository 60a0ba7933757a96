"""The paper's figures 1, 2 and 5 for any run, as PNG and SVG under ``RUN_DIR/figures/``.

fig1: epochs until the training loss falls below the threshold vs peak test accuracy, coloured by
      class-/sample-wise and marked by kind (the paper's Fig. 1: faster-learned poisons are
      stronger). Groups that never reached the threshold sit at the right edge, hollow.
fig2: final vs peak test accuracy with the y = x line (distance below it is what early stopping
      recovers from the poison).
fig5: mean training-loss and test-accuracy curves per poison.

Matplotlib's object API with the Agg canvas (no pyplot, no global backend switch); files are
written to a temporary name and renamed, and SVGs are deterministic (fixed hash salt, no date).
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from poisonbench.results.report import Group, distinct_trainings, label, short_label

COLOURS = {"class": "#d62728", "sample": "#1f77b4"}
MARKERS = {"max": "o", "min": "s", "random": "^", "baseline": "*"}
FORMATS = ("png", "svg")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        metadata = {"Date": None} if fmt == "svg" else {}
        with matplotlib.rc_context({"svg.hashsalt": "poisonbench", "svg.fonttype": "none"}):
            fig.savefig(buffer, format=fmt, metadata=metadata)
        target = out_dir / f"{stem}.{fmt}"
        write_atomic(target, buffer.getvalue())
        paths.append(target)
    return paths


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _point_labels(groups: list[Group]) -> list[str]:
    """The poison label, plus victim/defense when the run has more than one of them."""
    many_victims = len({label(g.victim) for g in groups}) > 1
    many_defenses = len({label(g.defense) for g in groups}) > 1
    labels = []
    for group in groups:
        parts = [label(group.poison)]
        if many_victims:
            parts.append(label(group.victim))
        if many_defenses:
            parts.append(label(group.defense))
        labels.append(short_label(" / ".join(parts), 40))
    return labels


def _legend_handles():
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{a}-wise") for a, c in COLOURS.items()]
    handles += [Line2D([], [], ls="", marker=m, color="grey", label=k) for k, m in MARKERS.items()]
    return handles


def fig1_speed_vs_peak(groups: list[Group], *, threshold: float, corr: dict[str, Any]):
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(7.0, 5.0)
    ax = fig.add_subplot()
    reached = [g.stats["epochs_to_loss_threshold"].mean for g in groups if not g.never_reached]
    epochs = max((len((r.get("history") or {}).get("train_loss") or []) for g in groups for r in g.records),
                 default=0)
    edge = max(reached + [float(epochs)]) + 1.0  # "never (within the run's epochs)" is drawn here
    for group, text in zip(groups, _point_labels(groups), strict=True):
        peak = group.stats["peak_test_acc"]
        if peak.mean is None:
            continue
        speed = group.stats["epochs_to_loss_threshold"]
        never = group.never_reached > 0
        x = edge if never or speed.mean is None else speed.mean
        colour = COLOURS.get(group.poison.get("applied"), "grey")
        ax.errorbar(x, 100 * peak.mean, yerr=100 * (peak.std or 0.0),
                    xerr=0.0 if never else (speed.std or 0.0),
                    marker=MARKERS.get(group.poison.get("kind"), "D"), ms=7, ls="", capsize=2,
                    color=colour, mfc="none" if never else colour)
        ax.annotate(text, (x, 100 * peak.mean), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if any(g.never_reached for g in groups):
        ax.axvline(edge, color="grey", lw=0.6, ls=":")
        ax.text(edge, ax.get_ylim()[1], f" never\n (in {epochs})", fontsize=7, va="top", color="grey")
    title = f"Learning speed vs peak accuracy (loss < {threshold:g})"
    if corr.get("spearman_r") is not None:
        title += f"\nSpearman ρ = {corr['spearman_r']:.2f} (p = {corr['spearman_p']:.2g}, n = {corr['n']})"
    ax.set(title=title, xlabel=f"epochs until training loss < {threshold:g}", ylabel="peak test accuracy (%)")
    ax.legend(handles=_legend_handles(), fontsize=7, loc="best")
    ax.set_xlim(0, edge + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig


def fig2_final_vs_peak(groups: list[Group]):
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    for group, text in zip(groups, _point_labels(groups), strict=True):
        peak, final = group.stats["peak_test_acc"].mean, group.stats["final_test_acc"].mean
        if peak is None or final is None:
            continue
        colour = COLOURS.get(group.poison.get("applied"), "grey")
        ax.plot(100 * peak, 100 * final, marker=MARKERS.get(group.poison.get("kind"), "D"), ls="",
                color=colour, ms=7)
        ax.annotate(text, (100 * peak, 100 * final), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.plot([0, 100], [0, 100], color="black", lw=0.8, ls="--", label="y = x")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="peak test accuracy (%)",
           ylabel="final test accuracy (%)", title="Final vs peak test accuracy")
    ax.legend(handles=_legend_handles(), fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def _mean_curve(group: Group, key: str) -> list[float]:
    """Per-epoch mean over seeds (NaN where a seed's value is missing or non-finite)."""
    curves = [(r.get("history") or {}).get(key) or [] for r in group.records]
    length = max((len(c) for c in curves), default=0)
    out = []
    for epoch in range(length):
        values = [float(c[epoch]) for c in curves
                  if epoch < len(c) and c[epoch] is not None and math.isfinite(float(c[epoch]))]
        out.append(sum(values) / len(values) if values else float("nan"))
    return out


def fig5_curves(groups: list[Group], *, threshold: float):
    fig = _new_figure(11.0, 4.5)
    loss_ax, acc_ax = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for i, (group, text) in enumerate(zip(groups, _point_labels(groups), strict=True)):
        style = {"color": f"C{i % 10}", "ls": styles[(i // 10) % len(styles)], "lw": 1.2}
        loss = _mean_curve(group, "train_loss")
        acc = [100 * a for a in _mean_curve(group, "test_acc")]
        loss_ax.plot(range(1, len(loss) + 1), loss, label=text, **style)
        acc_ax.plot(range(1, len(acc) + 1), acc, label=text, **style)
    loss_ax.axhline(threshold, color="black", lw=0.7, ls=":")
    loss_ax.set(xlabel="epoch", ylabel="training loss (poisoned, augmented)", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="clean test accuracy (%)", title="Test accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=6, ncol=2 if len(groups) > 12 else 1, loc="best")
    return fig


def write_figures(groups: list[Group], out_dir: str | Path, *, threshold: float,
                  corr: dict[str, Any]) -> list[Path]:
    """Draw fig1, fig2 and fig5 for ``groups`` into ``out_dir``; returns the files written.

    Peak, final and the curves do not depend on a defense that only selects an epoch, so each
    distinct training is drawn once.
    """
    groups = distinct_trainings(groups)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    paths += _save(fig1_speed_vs_peak(groups, threshold=threshold, corr=corr), out, "fig1_speed_vs_peak")
    paths += _save(fig2_final_vs_peak(groups), out, "fig2_final_vs_peak")
    paths += _save(fig5_curves(groups, threshold=threshold), out, "fig5_curves")
    return paths
