"""The benchmark's page (report.html beside table.md): the evidence table and, per entry, the metric
per round as the mean over seeds with a band of ± one sd across seeds, for the mean over sites and
for the worst site. One self-contained file, like a run's report.html."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedcare.interfaces import figures
from fedcare.interfaces.htmlreport import STYLE

Band = Sequence[tuple[int, float, float]]  # (round, mean over seeds, sd over seeds)


@dataclass(frozen=True)
class BenchPage:
    html: str
    curves_svg: str


def _figure(bands: Mapping[str, Band], ylabel: str):
    return figures.banded({k: [(r, m) for r, m, _ in b] for k, b in bands.items()},
                          {k: [(r, s) for r, _, s in b] for k, b in bands.items()}, ylabel)


def render(metric: str, header: Sequence[str], rows: Sequence[Sequence[str]], bands: Mapping[str, Mapping[str, Band]],
           seeds: int) -> BenchPage:
    e = html.escape
    table = ("<table id='evidence'><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>")
    parts = []
    for kind, label in (("curve", f"mean test {metric} over sites"), ("worst", f"worst site's test {metric}")):
        uri = figures.data_uri(_figure(bands[kind], label))
        caption = f"{label} per round: mean over {seeds} seeds, band ± one sd across seeds"
        parts.append(f"<figure id='fig-{kind}'><img alt='{e(caption)}' src='{uri}'><figcaption>{e(caption)}"
                     "</figcaption></figure>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>benchmark · {e(metric)}</title>"
            f"<style>{STYLE}</style></head><body><h1>benchmark: test {e(metric)}</h1>"
            f"<p>mean over sites and worst site of each entry's model, mean ± sd across {seeds} seeds</p>"
            f"{table}{''.join(parts)}</body></html>\n")
    return BenchPage(page, figures.svg_text(_figure(bands["curve"], f"mean test {metric} over sites")))
