"""report.html: the run's per-site table and the headline metric per round, for a person.

Self-contained (inline SVG, no scripts, no external assets) so it opens offline inside a hospital.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable, Mapping

from fedcare.interfaces.htmltreatment import treatment_html
from fedcare.interfaces.report import MODELS

COLORS = {"federated": "#1f77b4", "local": "#ff7f0e", "pooled": "#2ca02c", "personalized": "#9467bd"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
W, H, PAD = 640, 280, 40


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _curves(rows: Iterable[Mapping], metric: str) -> dict[str, list[tuple[int, float]]]:
    """Mean over sites of the test metric, per round, for each model."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("split") == "test" and row.get(metric) is not None:
            acc[row["model"]][row["round"]].append(row[metric])
    return {m: sorted((r, sum(v) / len(v)) for r, v in by_round.items()) for m, by_round in acc.items()}


def svg_curves(curves: dict[str, list[tuple[int, float]]], metric: str) -> str:
    points = [p for c in curves.values() for p in c]
    if not points:
        return ""
    r_max = max(r for r, _ in points)
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    hi = hi if hi > lo else lo + 1e-9

    def xy(r: int, v: float) -> str:
        x = PAD + (W - 2 * PAD) * (r - 1) / max(r_max - 1, 1)
        y = H - PAD - (H - 2 * PAD) * (v - lo) / (hi - lo)
        return f"{x:.1f},{y:.1f}"

    height = max(H, 50 + 16 * len(curves))
    parts = [f'<svg width="{W}" height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">',
             f'<rect width="{W}" height="{height}" fill="white"/>',
             f'<text x="{PAD}" y="20">mean test {html.escape(metric)} over sites, per round</text>',
             f'<text x="4" y="{PAD}">{hi:.3f}</text><text x="4" y="{H - PAD}">{lo:.3f}</text>',
             f'<text x="{W - PAD}" y="{H - 10}">round {r_max}</text>']
    for i, (model, curve) in enumerate(sorted(curves.items())):
        color = COLORS.get(model, PALETTE[i % len(PALETTE)])
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{" ".join(xy(r, v) for r, v in curve)}"/>')
        parts.append(f'<text x="{W - 150}" y="{40 + 16 * i}" fill="{color}">{html.escape(model)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(summary: Mapping, rows: Iterable[Mapping]) -> str:
    metric = summary["metric"]
    models = [m for m in MODELS if m in summary]
    head = "".join(f"<th>{m}</th>" for m in models)
    body = []
    for site in summary["federated"]["sites"]:
        cells = "".join(f"<td>{_fmt(summary[m]['sites'].get(site, {}).get(metric))}</td>" for m in models)
        body.append(f"<tr><td>{html.escape(site)}</td>{cells}</tr>")
    body.append("<tr><th>mean</th>" + "".join(f"<td>{_fmt(summary[m]['mean'].get(metric))}</td>" for m in models) + "</tr>")
    body.append("<tr><th>worst</th>" + "".join(
        f"<td>{_fmt(summary[m]['worst_site'].get(metric))} ({html.escape(str(summary[m]['worst_site']['site_id']))})</td>"
        for m in models) + "</tr>")
    title = html.escape(f"{summary['dataset']} · {summary['algorithm']}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:right}"
            "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style></head><body>"
            f"<h1>{title}</h1><p>task {html.escape(summary['task'])} · {summary['rounds']} rounds · "
            f"{summary['bytes_sent'] / 1e6:.2f} MB sent · {summary['wall_seconds']:.1f} s</p>"
            f"<h2>test {html.escape(metric)} per site</h2><table><tr><th>site</th>{head}</tr>{''.join(body)}</table>"
            f"<h2>per round</h2>{svg_curves(_curves(rows, metric), metric)}{treatment_html(summary)}"
            "</body></html>\n")
