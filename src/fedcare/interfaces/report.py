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
