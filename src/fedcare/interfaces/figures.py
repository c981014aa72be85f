"""The report's figures, drawn with matplotlib and handed back as PNG data URIs, so report.html and
the benchmark page stay one self-contained file (no scripts, no requests, opens offline).

Every legend sits outside its axes (it never covers a curve), round axes carry whole numbers, and
the figure is cropped to what it draws, so no label is clipped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display: reports are written by servers and test runners
import matplotlib.pyplot as plt
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLORS = {"federated": "#1f77b4", "local": "#ff7f0e", "pooled": "#2ca02c", "personalized": "#9467bd",
          "constant": "#7f7f7f"}
MAX_LEGEND = 12  # more series than this: no per-series legend, the caption says what a thin line is
BAND_SITES = 50  # more sites than this: their spread as a band and the worst few by name (`_many`)
WORST_NAMED = 3
Curve = Sequence[tuple[int, float]]


def data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def color(name: str, index: int) -> str:
    return COLORS.get(name, f"C{index % 10}")


def _rounds_axis(ax, ylabel: str) -> None:
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:  # one round: a whole-number tick, not matplotlib's fractions around it
        centre = round((lo + hi) / 2)
        ax.set_xlim(centre - 1, centre + 1)
        ax.set_xticks([centre])
    ax.grid(alpha=0.3)


def _legend(ax, count: int) -> None:
    if 0 < count <= MAX_LEGEND:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False, fontsize=8)


def per_site_rounds(series: Mapping[str, Mapping[str, Curve]], ylabel: str, higher_is_better: bool = True,
                    band_above: int = BAND_SITES) -> Figure:
    """One panel per model: each site's value per round (thin lines, labelled while few; a band beyond
    `band_above` sites, see `_many`) and the mean over sites (thick)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.6 * len(series) + 1.2, 3.2), squeeze=False,
                             sharey=True)
    for ax, (model, sites) in zip(axes[0], series.items(), strict=True):
        if len(sites) <= MAX_LEGEND:
            for i, (site, curve) in enumerate(sorted(sites.items())):
                rounds, values = zip(*curve, strict=True) if curve else ((), ())
                ax.plot(rounds, values, lw=1, alpha=0.8, color=f"C{i % 10}", label=site,
                        marker="o" if len(rounds) == 1 else None, ms=3)  # a one-round line is a point
        else:
            _many(ax, sites, color(model, 0), higher_is_better, band_above)
        mean = _mean_curve(sites.values())
        if mean:
            ax.plot(*zip(*mean, strict=True), lw=2.5, color="black", label="mean over sites",
                    marker="o" if len(mean) == 1 else None, ms=5)
        ax.set_title(model, fontsize=10)
        _rounds_axis(ax, ylabel)
    widest = max(range(len(series)), key=lambda k: len(list(series.values())[k]))
    handles, labels = axes[0][widest].get_legend_handles_labels()
    if len(handles) <= MAX_LEGEND + 1:  # the sites' names, once, right of the last panel
        axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                           frameon=False, fontsize=8)
    return fig


def _many(ax, curves: Mapping[str, Curve], tint: str, higher_is_better: bool, band_above: int) -> None:
    """Many sites' curves at a cost that grows with what is shown, not with the sites: up to
    `band_above` sites one LineCollection (one artist); beyond, the spread over sites per round as a
    band (min-max light, quartiles dark) and the WORST_NAMED worst sites by their last value, named."""
    drawn = {site: curve for site, curve in curves.items() if curve}
    if len(drawn) <= band_above:
        ax.add_collection(LineCollection([np.asarray(c, dtype=float) for c in drawn.values() if len(c) > 1],
                                         colors=tint, linewidths=1, alpha=0.25))
        points = [c[0] for c in drawn.values() if len(c) == 1]
        if points:  # a one-round line is a point
            ax.scatter(*zip(*points, strict=True), s=9, color=tint, alpha=0.25)
        ax.autoscale_view()
        return
    by_round: dict[int, list[float]] = {}
    for curve in drawn.values():
        for rnd, value in curve:
            by_round.setdefault(rnd, []).append(value)
    rounds = np.asarray(sorted(by_round), dtype=float)
    q = np.asarray([np.quantile(by_round[r], [0, 0.25, 0.75, 1]) for r in sorted(by_round)])
    if len(rounds) == 1:  # one round: a band needs a width to be seen
        rounds, q = np.array([rounds[0] - 0.15, rounds[0] + 0.15]), np.repeat(q, 2, axis=0)
    ax.fill_between(rounds, q[:, 0], q[:, 3], color=tint, alpha=0.18, lw=0, label="sites: min to max")
    ax.fill_between(rounds, q[:, 1], q[:, 2], color=tint, alpha=0.4, lw=0, label="sites: quartiles")
    worst = sorted(drawn, key=lambda s: drawn[s][-1][1], reverse=not higher_is_better)[:WORST_NAMED]
    for site in worst:
        curve = drawn[site]
        ax.plot(*zip(*curve, strict=True), lw=1, color="#d62728", marker="o" if len(curve) == 1 else None, ms=3)
    ax.text(0, -0.22, "worst sites (red): " + ", ".join(worst), transform=ax.transAxes, fontsize=7,
            color="#d62728", va="top")  # under the axes: names never cover the band or each other


def _mean_curve(curves) -> list[tuple[int, float]]:
    by_round: dict[int, list[float]] = {}
    for curve in curves:
        for rnd, value in curve:
            by_round.setdefault(rnd, []).append(value)
    return [(r, sum(v) / len(v)) for r, v in sorted(by_round.items())]


def lines(curves: Mapping[str, Curve], ylabel: str, budget: float | None = None,
          marks: Mapping[str, Sequence[tuple[int, float]]] | None = None, higher_is_better: bool = True,
          band_above: int = BAND_SITES) -> Figure:
    """One line per name (a site, a model; many as in `_many`); `budget` draws a dashed limit; `marks`
    red crosses (rounds where a site's update was flagged)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    if len(curves) > MAX_LEGEND:
        _many(ax, curves, "#1f77b4", higher_is_better, band_above)
    else:
        for i, (name, curve) in enumerate(sorted(curves.items())):
            if curve:
                ax.plot(*zip(*curve, strict=True), lw=1, alpha=0.9, color=color(name, i), marker="o", ms=3,
                        label=name)
    if budget is not None:
        ax.axhline(budget, ls="--", color="black", lw=1, label=f"budget {budget:g}")
    flagged = [p for points in (marks or {}).values() for p in points]
    if flagged:
        ax.plot(*zip(*flagged, strict=True), "x", color="red", ms=7, mew=2, ls="none", label="flagged")
    _rounds_axis(ax, ylabel)
    _legend(ax, len(curves) + (budget is not None) + bool(flagged))
    return fig


def banded(curves: Mapping[str, Curve], spread: Mapping[str, Curve], ylabel: str) -> Figure:
    """The benchmark's curves: mean over seeds per entry, a band of ± one sd across seeds."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for i, (name, curve) in enumerate(curves.items()):
        if not curve:
            continue
        rounds, mean = zip(*curve, strict=True)
        sd = dict(spread.get(name, ()))
        low = [m - sd.get(r, 0.0) for r, m in curve]
        high = [m + sd.get(r, 0.0) for r, m in curve]
        ax.plot(rounds, mean, lw=1.8, color=f"C{i % 10}", label=name)
        ax.fill_between(rounds, low, high, color=f"C{i % 10}", alpha=0.2, lw=0)
    _rounds_axis(ax, ylabel)
    _legend(ax, len(curves))
    return fig


def forest(sites: Sequence[str], values: Mapping[str, Sequence[tuple[float | None, float | None, float | None]]],
           xlabel: str) -> Figure:
    """Each site's final value per model (value, low, high) with its 95 % interval (a forest plot).
    With many sites they are ranked by the first model's value and drawn without names."""
    n, models = len(sites), list(values)
    named = n <= 40
    fig, ax = plt.subplots(figsize=(6.4, max(2.4, 0.28 * n * len(models) ** 0.5 + 1.0) if named else 3.6))
    offsets = [(k - (len(models) - 1) / 2) * 0.18 for k in range(len(models))]
    order = list(range(n)) if named else sorted(range(n), key=lambda i: (values[models[0]][i][0] is None,
                                                                        values[models[0]][i][0] or 0.0))
    for k, model in enumerate(models):
        points = [(pos, *values[model][i]) for pos, i in enumerate(order) if values[model][i][0] is not None]
        if not points:
            continue
        pos, value, low, high = zip(*points, strict=True)
        where = [p + offsets[k] for p in pos] if named else list(pos)
        spread = [[v - (lo if lo is not None else v) for v, lo in zip(value, low, strict=True)],
                  [(hi if hi is not None else v) - v for v, hi in zip(value, high, strict=True)]]
        xy = (value, where) if named else (where, value)
        ax.errorbar(*xy, **{"xerr" if named else "yerr": spread}, fmt="o", ms=3.5, lw=1 if named else 0.4,
                    color=color(model, k), label=model, alpha=1 if named else 0.6)
    if named:
        ax.set_yticks(range(n), list(sites), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
    else:
        ax.set_xlabel(f"sites, ranked by {models[0]} {xlabel}")
        ax.set_ylabel(xlabel)
    ax.grid(alpha=0.3)
    _legend(ax, len(models))
    return fig


def bars(groups: Mapping[str, Mapping[str, float | None]], ylabel: str) -> Figure:
    """Grouped bars: for each model (x), each statistic (mean over sites, worst site)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    stats = list(next(iter(groups.values())))
    width = 0.8 / len(stats)
    for k, stat in enumerate(stats):
        xs = [i + (k - (len(stats) - 1) / 2) * width for i in range(len(groups))]
        heights = [groups[m][stat] or 0.0 for m in groups]
        ax.bar(xs, heights, width, label=stat, color=f"C{k}")
        for x, h, model in zip(xs, heights, groups, strict=True):
            if groups[model][stat] is not None:
                ax.annotate(f"{h:.3f}", (x, h), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    _legend(ax, len(stats))
    return fig


def reliability(bins: Mapping[str, Sequence[Mapping]]) -> Figure:
    """Observed event rate against mean predicted probability per bin, one line per model."""
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for i, (model, rows) in enumerate(bins.items()):
        pts = [(b["mean_predicted"], b["observed"]) for b in rows if b.get("count")]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", ms=4, color=color(model, i), label=model)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed share of positives")
    ax.grid(alpha=0.3)
    _legend(ax, len(bins) + 1)
    return fig


def svg_text(fig: Figure) -> str:
    """A figure as a standalone SVG document."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
