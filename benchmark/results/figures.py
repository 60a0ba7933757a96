"""The paper's figures 1, 2 and 5 for any run, as PNG and SVG under ``RUN_DIR/figures/``.

fig1: epochs until the training loss falls below the threshold vs peak test accuracy, coloured by
      class-/sample-wise and marked by kind (the paper's Fig. 1: faster-learned poisons are
      stronger). Groups that never reached the threshold sit at the right edge, hollow.
      fig1_early_loss_vs_peak: the same against the threshold-free mean training loss of the
      first k epochs (every training has a value); fig1_clean_level_vs_peak when configured.
fig2: final vs peak test accuracy with the y = x line (distance below it is what early stopping
      recovers from the poison).
fig5: mean training-loss and test-accuracy curves per poison.

Matplotlib's object API with the Agg canvas (no pyplot, no global backend switch); files are
written to a temporary name and renamed, and SVGs are deterministic (fixed hash salt, no date).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from poisonbench.results.report import Group, distinct_trainings, label, short_label
from poisonbench.util.files import atomic_write_bytes

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
        atomic_write_bytes(target, buffer.getvalue())
        paths.append(target)
    return paths


def _point_labels(groups: list[Group]) -> list[str]:
    """Short labels that fit next to a point: the poison's preset name (never its full params), plus
    victim/defense when the run has more than one; equal names are numbered (``pgd``, ``pgd #2``)."""
    many_victims = len({label(g.victim) for g in groups}) > 1
    many_defenses = len({label(g.defense) for g in groups}) > 1
    labels, seen = [], {}
    for group in groups:
        parts = [short_label(group.poison, 16)]
        if many_victims:
            parts.append(short_label(group.victim, 12))
        if many_defenses:
            parts.append(short_label(group.defense, 12))
        text = " / ".join(parts)
        seen[text] = seen.get(text, 0) + 1
        labels.append(text if seen[text] == 1 else f"{text} #{seen[text]}")
    return labels


def _declutter(fig, ax) -> None:
    """Move each point label (right of its point, else left of it; a line up or down) until it stays
    inside the axes and overlaps no earlier label, in drawn pixels; a label with no free place is
    hidden — the point stays, and the tables name it."""
    from matplotlib.text import Annotation

    fig.canvas.draw()  # the final layout, so the label extents are the drawn ones
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    for note in [t for t in ax.texts if isinstance(t, Annotation)]:
        for dx, dy in ((4, 3), (4, 11), (4, -9), (-4, 3), (-4, 11), (-4, -9), (4, 19), (4, -17)):  # points
            note.xyann = (dx, dy)
            note.set_horizontalalignment("left" if dx > 0 else "right")
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                placed.append(box)
                break
        else:
            note.set_visible(False)


def _legend_outside(ax, **kwargs) -> None:
    """A legend right of the axes, so it never covers a point or a curve."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def _legend_handles():
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{a}-wise") for a, c in COLOURS.items()]
    handles += [Line2D([], [], ls="", marker=m, color="grey", label=k) for k, m in MARKERS.items()]
    return handles


def fig1_speed_vs_peak(groups: list[Group], *, threshold: float, corr: dict[str, Any],
                       measure: str = "epochs_to_loss_threshold", speed_epochs: int = 5,
                       clean_epoch: int | None = None):
    """Fig. 1 against ``measure``: the paper's epochs-to-threshold (default) or ``early_loss`` /
    ``epochs_to_clean_level`` (``poisonbench.results.speed``)."""
    if measure != "epochs_to_loss_threshold":
        return _fig1_by_measure(groups, corr=corr, measure=measure, speed_epochs=speed_epochs,
                                threshold=threshold, clean_epoch=clean_epoch)
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(8.0, 5.0)  # the legend sits right of the axes
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
    _legend_outside(ax, handles=_legend_handles(), fontsize=7)
    ax.set_xlim(0, edge + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _declutter(fig, ax)
    return fig


def _fig1_by_measure(groups: list[Group], *, corr: dict[str, Any], measure: str, speed_epochs: int,
                     threshold: float, clean_epoch: int | None):
    """Fig. 1 with another speed measure on x; a group lacking a value in some seed is not drawn."""
    from poisonbench.results.speed import measure_label

    fig = _new_figure(8.0, 5.0)  # the legend sits right of the axes
    ax = fig.add_subplot()
    for group, text in zip(groups, _point_labels(groups), strict=True):
        peak, speed = group.stats["peak_test_acc"], group.stats[measure]
        if peak.mean is None or speed.mean is None or speed.n < len(group.records):
            continue
        colour = COLOURS.get(group.poison.get("applied"), "grey")
        ax.errorbar(speed.mean, 100 * peak.mean, yerr=100 * (peak.std or 0.0), xerr=speed.std or 0.0,
                    marker=MARKERS.get(group.poison.get("kind"), "D"), ms=7, ls="", capsize=2,
                    color=colour)
        ax.annotate(text, (speed.mean, 100 * peak.mean), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    xlabel = measure_label(measure, k=speed_epochs, threshold=threshold, clean_epoch=clean_epoch)
    title = "Learning speed vs peak accuracy"
    if corr.get("spearman_r") is not None:
        title += f"\nSpearman ρ = {corr['spearman_r']:.2f} (p = {corr['spearman_p']:.2g}, n = {corr['n']})"
    ax.set(title=title, xlabel=xlabel + " (lower = learned faster)", ylabel="peak test accuracy (%)")
    _legend_outside(ax, handles=_legend_handles(), fontsize=7)
    ax.grid(alpha=0.3)
    _declutter(fig, ax)
    return fig


def fig2_final_vs_peak(groups: list[Group]):
    fig = _new_figure(6.6, 5.0)  # the legend sits right of the axes
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
    _legend_outside(ax, handles=_legend_handles(), fontsize=7)
    ax.grid(alpha=0.3)
    _declutter(fig, ax)
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
    fig = _new_figure(12.5 if len(groups) > 12 else 11.5, 4.5)  # room for the legend beside the axes
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
    _legend_outside(acc_ax, fontsize=6, ncol=2 if len(groups) > 12 else 1)
    return fig


def write_figures(groups: list[Group], out_dir: str | Path, *, threshold: float,
                  corr: dict[str, Any], corrs: dict[str, dict[str, Any]] | None = None,
                  speed_epochs: int = 5, clean_epoch: int | None = None) -> list[Path]:
    """Draw fig1, fig2 and fig5 for ``groups`` into ``out_dir``; returns the files written.

    ``corrs`` (the report's ``correlations``) adds Fig. 1 against each other learning-speed
    measure: ``fig1_early_loss_vs_peak`` (threshold-free) and ``fig1_clean_level_vs_peak``.

    Peak, final and the curves do not depend on a defense that only selects an epoch, so each
    distinct training is drawn once.
    """
    groups = distinct_trainings(groups)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    paths += _save(fig1_speed_vs_peak(groups, threshold=threshold, corr=corr), out, "fig1_speed_vs_peak")
    for measure, stem in (("early_loss", "fig1_early_loss_vs_peak"),
                          ("epochs_to_clean_level", "fig1_clean_level_vs_peak")):
        if corrs and measure in corrs:
            fig = fig1_speed_vs_peak(groups, threshold=threshold, corr=corrs[measure], measure=measure,
                                     speed_epochs=speed_epochs, clean_epoch=clean_epoch)
            paths += _save(fig, out, stem)
    paths += _save(fig2_final_vs_peak(groups), out, "fig2_final_vs_peak")
    paths += _save(fig5_curves(groups, threshold=threshold), out, "fig5_curves")
    return paths
