"""report.html's treatment section: each arm's effect against the control (federated, pooled, per
site, with the heterogeneity test) and the CATE learners' held-out evaluation. Plain HTML, no scripts."""

from __future__ import annotations

import html
from collections.abc import Mapping

from fedcare.interfaces.report import heterogeneity_text, interval


def treatment_html(summary: Mapping) -> str:
    block = summary.get("treatment")
    if not block:
        return ""
    e = html.escape
    parts = [(f"<h2>treatment effects against '{e(block['control'])}' ({e(block['control_from'])})</h2>"
              f"<p>{e(block['outcome'])} · 95 % intervals</p>")]
    for arm, effect in block["effects"].items():
        rows = "".join(f"<tr><td>{e(site)}</td><td>{interval(v)}</td><td>{e(str(v['rows']))}</td>"
                       f"<td>{e(v.get('note', ''))}</td></tr>" for site, v in effect["sites"].items())
        het = heterogeneity_text(effect["heterogeneity"])
        parts.append(f"<h3>{e(arm)}</h3><table><tr><th>site</th><th>effect</th><th>rows</th><th></th></tr>{rows}"
                     f"<tr><th>federated</th><td>{interval(effect['ate'])}</td><td>{effect['ate']['n']}</td><td></td></tr>"
                     f"<tr><th>pooled</th><td>{interval(effect['pooled'])}</td><td></td><td></td></tr>"
                     f"<tr><th>heterogeneity</th><td colspan='3'>{het}</td></tr></table>"
                     f"<p>{e(effect['ate']['method'])}</p>")
    if block.get("missing_arms"):
        parts.append("<p>sites without a patient in an arm: " + e("; ".join(
            f"{s}: {', '.join(a)}" for s, a in block["missing_arms"].items())) + "</p>")
    cate = block.get("cate")
    if cate:
        rows = []
        for learner, modes in cate["learners"].items():
            for mode, result in modes.items():
                if result["all_sites"] is None:
                    rows.append(f"<tr><td>{learner.upper()}</td><td>{mode}</td><td colspan='4'>no model at any site"
                                "</td></tr>")
                    continue
                pv = result["all_sites"]["policy_value"]
                fixed = " ".join(f"{e(a)} {interval(v)}" for a, v in pv["treat_all"].items())
                qini = " ".join("—" if q is None else f"{e(a)} {q['qini']:+.3f}" for a, q in
                                result["all_sites"]["uplift"].items())
                rows.append(f"<tr><td>{learner.upper()}</td><td>{mode}</td><td>{interval(pv['policy'])}</td>"
                            f"<td>{interval(pv['treat_none'])}</td><td>{fixed}</td><td>{qini}</td></tr>")
        parts.append(f"<h2>individual effects on held-out rows (the {e(cate['better'])} outcome is better)</h2>"
                     "<table><tr><th>learner</th><th>model</th><th>policy value</th><th>treat-none</th>"
                     f"<th>treat-all</th><th>Qini</th></tr>{''.join(rows)}</table>")
    return "".join(parts)
