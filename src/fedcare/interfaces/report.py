"""The per-site table a person reads at the end of a run (terminal), built from summary.json."""

from __future__ import annotations

from collections.abc import Mapping

from rich.table import Table

MODELS = ("local", "federated", "personalized", "pooled")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def site_table(summary: Mapping) -> Table:
    """Rows: each site, the mean over sites, the worst site; columns: local / federated / pooled."""
    metric = summary["metric"]
    models = [m for m in MODELS if m in summary]
    table = Table(title=f"{summary['dataset']} · {summary['algorithm']} · test {metric} per site")
    table.add_column("site")
    table.add_column("test rows", justify="right")
    for model in models:
        table.add_column(model, justify="right")
    sizes = summary.get("site_sizes", {})
    for site in summary["federated"]["sites"]:
        cells = [_fmt(summary[m]["sites"].get(site, {}).get(metric)) for m in models]
        table.add_row(site, str(sizes.get(site, {}).get("test", "")), *cells)
    table.add_section()
    table.add_row("mean", "", *[_fmt(summary[m]["mean"].get(metric)) for m in models])
    worst = [f"{_fmt(summary[m]['worst_site'].get(metric))} ({summary[m]['worst_site']['site_id']})" for m in models]
    table.add_row("worst", "", *worst)
    return table


def interval(entry: Mapping | None) -> str:
    """An estimate with its 95 % interval, "—" without an estimate (the terminal and report.html alike)."""
    if not entry or entry.get("estimate") is None:
        return "—"
    if not entry.get("ci95"):
        return f"{entry['estimate']:+.3f}"
    low, high = entry["ci95"]
    return f"{entry['estimate']:+.3f} [{low:+.3f}, {high:+.3f}]"


def heterogeneity_text(h: Mapping) -> str:
    """Cochran's Q, its degrees of freedom and p-value, and I²; "—" with fewer than two sites' estimates."""
    return "—" if h["q"] is None else f"Q {h['q']:.2f}, df {h['df']}, p {h['p_value']:.3f}, I² {h['i2']:.0%}"


def treatment_table(block: Mapping) -> Table:
    """Each treated arm's effect against the control: federated, pooled and each site's own, with 95 % intervals."""
    table = Table(title=f"effect against control '{block['control']}' ({block['control_from']}) · "
                        f"{block['outcome']} · 95 % interval")
    table.add_column("site")
    for arm in block["effects"]:
        table.add_column(f"{arm} (rows {block['control']}/{arm})", justify="right")
    effects = list(block["effects"].values())
    for site in effects[0]["sites"]:
        cells = []
        for e in effects:
            entry = e["sites"][site]
            cells.append(f"{interval(entry)}  {'/'.join(str(n) for n in entry['rows'].values())}")
        table.add_row(site, *cells)
    table.add_section()
    table.add_row("federated", *[interval(e["ate"]) for e in effects])
    table.add_row("pooled", *[interval(e["pooled"]) for e in effects])
    learned = block.get("cate", {}).get("ate_with_learned_models")
    if learned:
        table.add_row("federated, DR-learner's models", *[interval(learned[arm]) for arm in block["effects"]])
    table.add_row("heterogeneity", *[heterogeneity_text(e["heterogeneity"]) for e in effects])
    return table


def cate_table(block: Mapping) -> Table:
    """Each learner and model on every site's held-out rows together: the recommended policy's value
    against treat-none and treat-all, and the Qini coefficient per treated arm (95 % intervals)."""
    table = Table(title=f"individual effects on held-out rows · policy = the arm with the {block['better']} "
                        "predicted outcome · 95 % interval")
    for column in ("learner", "model", "policy value", "treat-none", "treat-all", "Qini"):
        table.add_column(column, justify="left" if column in ("learner", "model") else "right")
    for learner, modes in block["learners"].items():
        for mode, result in modes.items():
            if result["all_sites"] is None:
                table.add_row(learner.upper(), mode, "no model at any site", "", "", "")
                continue
            pv, uplift = result["all_sites"]["policy_value"], result["all_sites"]["uplift"]
            treat_all = "  ".join(f"{arm} {interval(v)}" for arm, v in pv["treat_all"].items())
            qinis = "  ".join("—" if q is None else f"{arm} {q['qini']:+.3f} [{q['qini_ci95'][0]:+.3f}, "
                              f"{q['qini_ci95'][1]:+.3f}]" for arm, q in uplift.items())
            table.add_row(learner.upper(), mode, interval(pv["policy"]), interval(pv["treat_none"]), treat_all, qinis)
    return table
