"""report.html's modality section: per site, the fused models' headline metric against each
single-input model, and every model on the test patients grouped by the inputs they have. Plain
HTML, no scripts; every number carries summary.json's value in `data-value`."""

from __future__ import annotations

import html
from collections.abc import Mapping


def _cell(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "<td>–</td>"
    return f"<td data-value='{value!r}'>{value:.3f}</td>"


def modalities_html(summary: Mapping) -> str:
    block = summary.get("modalities")
    if not block:
        return ""
    e, metric = html.escape, summary["metric"]
    sites = list(block["patients"])
    head = "".join(f"<th>{e(s)}</th>" for s in sites)
    rows = [f"<tr><th>fused, {e(model)}</th>" + "".join(_cell(summary[model]["sites"].get(s, {}).get(metric))
                                                       for s in sites) + "</tr>"
            for model in ("federated", "personalized", "local", "pooled") if model in summary]
    rows += [f"<tr><th>{e(name)} only, federated</th>" + "".join(_cell(per_site.get(s, {}).get(metric))
                                                               for s in sites) + "</tr>"
             for name, per_site in block["single"].items()]
    parts = [(f"<h2>by modality</h2><p>inputs: {e(', '.join(block['inputs']))} · {e(metric)} on each site's test "
              f"patients</p><table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"),
             f"<h3>test patients by the inputs they have ({e(metric)}; patients)</h3>"]
    groups = sorted({g for per_site in block["patients"].values() for g in per_site})
    for site in sites:
        lines = "".join(f"<tr><th>{e(model)}</th>" + "".join(_cell(per_site.get(site, {}).get(g, {}).get(metric))
                                                             for g in groups) + "</tr>"
                        for model, per_site in block["by_inputs"].items())
        counts = "".join(f"<td>{block['patients'][site].get(g, 0)}</td>" for g in groups)
        parts.append(f"<h4>{e(site)}</h4><table><tr><th>model</th>{''.join(f'<th>{e(g)}</th>' for g in groups)}</tr>"
                     f"<tr><th>patients</th>{counts}</tr>{lines}</table>")
    return "".join(parts)
