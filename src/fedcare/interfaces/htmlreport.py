"""report.html: what a run did, for a person: per-site results with intervals, every model's curves,
the training loss, the baselines, a live phase's drift notices, privacy spent, anomalies and attacks,
and the config.

One self-contained file (figures as PNG data URIs, no scripts, no external assets) so it opens
offline inside a hospital. Every number a table shows carries its exact value from summary.json in
`data-value`, so a test can check the page against the summary.
"""

from __future__ import annotations

import html
import importlib
import json
import os
from collections.abc import Iterable, Mapping

from fedcare.interfaces.htmlmodalities import modalities_html
from fedcare.interfaces.htmltreatment import treatment_html
from fedcare.interfaces.report import MODELS

e = html.escape
BAND_SITES, WORST_NAMED = 50, 3  # as in figures, for the captions (not imported: matplotlib loads only to draw)
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1200px}td,th{padding:3px 10px;text-align:right}"
         "table{border-collapse:collapse;margin:0.5em 0}tr:nth-child(even){background:#f3f3f3}"
         "td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%;height:auto}"
         "figcaption{color:#444;font-size:0.9em}.warn{color:#a40}.scroll{max-height:32em;overflow:auto;"
         "display:inline-block}")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _cell(values: Mapping, metric: str, model: str, site: str, note: str = "") -> str:
    """A value, with its 95 % interval when it has one (a site's, not a mean over sites)."""
    value = values.get(metric)
    low, high = values.get(f"{metric}_low"), values.get(f"{metric}_high")
    text = _fmt(value) + (f" [{low:.3f}, {high:.3f}]" if value is not None and low is not None else "")
    data = "" if value is None else f" data-value='{value!r}'"
    return f"<td data-model='{e(model)}' data-site='{e(site)}' data-metric='{e(metric)}'{data}>{text}{e(note)}</td>"


def figures_wanted() -> bool:
    """FEDCARE_REPORT_FIGURES=0 writes report.html with its tables only: the figures cost about a
    second of matplotlib per run, which sweeps and test suites of many small runs skip."""
    return os.environ.get("FEDCARE_REPORT_FIGURES", "1") != "0"


def _figure(name: str, caption: str, kind: str, *args, **kwargs) -> str:
    """One figure drawn by `figures.<kind>(*args)`; matplotlib is imported only when one is drawn."""
    if not figures_wanted():
        return ""
    figures = importlib.import_module("fedcare.interfaces.figures")
    uri = figures.data_uri(getattr(figures, kind)(*args, **kwargs))
    return (f"<figure id='fig-{name}'><img alt='{e(caption)}' src='{uri}'>"
            f"<figcaption>{e(caption)}</figcaption></figure>")


def _models(summary: Mapping) -> list[str]:
    return [m for m in (*MODELS, "constant") if m in summary and "mean" in summary[m]]


def site_table(summary: Mapping) -> str:
    metric, models = summary["metric"], _models(summary)
    sizes = summary.get("site_sizes", {})
    head = "".join(f"<th>{e(m)}</th>" for m in models)
    body = []
    for site in summary["federated"]["sites"]:
        cells = "".join(_cell(summary[m]["sites"].get(site, {}), metric, m, site) for m in models)
        body.append(f"<tr><td>{e(site)}</td><td>{sizes.get(site, {}).get('test', '')}</td>{cells}</tr>")
    body.append("<tr><th>mean</th><td></td>" + "".join(_cell(summary[m]["mean"], metric, m, "mean")
                                                      for m in models) + "</tr>")
    body.append("<tr><th>worst</th><td></td>" + "".join(
        _cell(summary[m]["worst_site"], metric, m, "worst", f" ({summary[m]['worst_site']['site_id']})") for m in models)
        + "</tr>")
    return (f"<h2>test {e(metric)} per site (95 % interval)</h2><div class='scroll'><table id='sites'>"
            f"<tr><th>site</th><th>test rows</th>{head}</tr>{''.join(body)}</table></div>")


def means_table(summary: Mapping) -> str:
    """Every metric's mean over sites, per model (Brier, log loss, ... beside the headline)."""
    models = _models(summary)
    names = sorted({k for m in models for k in summary[m]["mean"]})
    rows = "".join(f"<tr><td>{e(n)}</td>" + "".join(_cell(summary[m]["mean"], n, m, "mean") for m in models) + "</tr>"
                   for n in names)
    return (f"<h2>every test metric, mean over sites</h2><table id='means'><tr><th>metric</th>"
            f"{''.join(f'<th>{e(m)}</th>' for m in models)}</tr>{rows}</table>")


def _series(rows: list[Mapping], split: str, key: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """model -> site -> [(round, value)] of one metric on one split."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        if row.get("split") == split and row.get(key) is not None:
            out.setdefault(row["model"], {}).setdefault(row["site"], []).append((row["round"], row[key]))
    return {m: {s: sorted(c) for s, c in sites.items()} for m, sites in out.items()}


def _spread_note(curves: Iterable[Mapping]) -> str:
    """What a figure of many sites shows instead of one line per site (figures.BAND_SITES)."""
    if max((len(c) for c in curves), default=0) <= BAND_SITES:
        return ""
    return (f"; over {BAND_SITES} sites, their spread per round as a band (light: min to max, dark: quartiles) "
            f"and the {WORST_NAMED} worst sites by their last value, named in red")


def curves_html(summary: Mapping, rows: list[Mapping]) -> str:
    metric, better = summary["metric"], summary.get("higher_is_better", True)
    parts = ["<h2>per round</h2>"]
    test = _series(rows, "test", metric)
    if test:
        parts.append(_figure("rounds", f"test {metric} of each site per round (thick: mean over sites), for "
                             f"every model evaluated in rounds{_spread_note(test.values())}", "per_site_rounds",
                             test, f"test {metric}", higher_is_better=better))
    loss = _series(rows, "train", "train_loss")
    if loss:
        parts.append(_figure("train-loss", f"each site's training loss per round, as it reported it"
                             f"{_spread_note(loss.values())}", "per_site_rounds", loss, "train loss",
                             higher_is_better=False))
    return "".join(parts)


def forest_html(summary: Mapping) -> str:
    metric, models = summary["metric"], [m for m in _models(summary) if m != "constant"]
    sites = list(summary["federated"]["sites"])
    values = {m: [tuple(summary[m]["sites"].get(s, {}).get(k) for k in (metric, f"{metric}_low", f"{metric}_high"))
                  for s in sites] for m in models}
    return _figure("sites", f"each site's test {metric} with its 95 % interval (Wilson for accuracy, bootstrap "
                   "for ROC-AUC and C-index, computed at the site)", "forest", sites, values, f"test {metric}")


def baselines_html(summary: Mapping) -> str:
    metric, models = summary["metric"], _models(summary)
    groups = {m: {"mean over sites": summary[m]["mean"].get(metric), "worst site": summary[m]["worst_site"].get(metric)}
              for m in models}
    return _figure("baselines", f"test {metric} of every model and baseline: mean over sites and worst site",
                   "bars", groups, f"test {metric}")


def privacy_html(summary: Mapping, rows: list[Mapping]) -> str:
    p = summary.get("privacy") or {}
    if p.get("epsilon") is None:
        return ""
    key = "site_epsilon" if p.get("level") == "site" else "epsilon"
    spent = _series(rows, "train", key).get("federated", {})
    if key == "site_epsilon":  # one figure for the whole federation
        spent = {"federation": next(iter(spent.values()), [])}
    text = (f"<h2>privacy</h2><p id='privacy'>{e(str(p.get('level', 'record')))}-level DP: ε spent "
            f"<span data-value='{p['epsilon']!r}'>{p['epsilon']:.3f}</span> of {p.get('budget')}, δ {p.get('delta')}</p>")
    if not spent:
        return text
    return text + _figure("epsilon", "ε spent after each round (each site's own accountant, or the federation's "
                          f"under site-level DP){_spread_note([spent])}", "lines", spent, "ε spent",
                          budget=p.get("budget"), higher_is_better=False)


def anomalies_html(summary: Mapping, rows: list[Mapping]) -> str:
    updates = [r for r in rows if r.get("split") == "update" and r.get("model") == "federated"]
    attack, anomalies = summary.get("attack") or {}, summary.get("anomalies") or {}
    flagged = anomalies.get("flagged_sites", [])
    seen = anomalies.get("rounds_flagged", {})
    parts = ["<h2>updates, anomalies and attacks</h2>",
             f"<p id='attack'>simulated attack: {e(str(attack.get('kind') or 'none'))}"
             + (f" by {e(', '.join(attack.get('sites', [])))}" if attack.get("sites") else "")
             + f" · aggregator {e(str(summary.get('aggregator')))} · flagged sites: "
             + (", ".join(f"<b class='flagged'>{e(s)}</b>" for s in flagged) or "none") + "</p>"]
    if seen:
        parts.append("<div class='scroll'><table id='flags'><tr><th>site</th><th>rounds flagged</th>"
                     "<th>rounds seen</th></tr>" + "".join(
                         f"<tr><td>{e(s)}</td><td data-value='{n}'>{n}</td>"
                         f"<td>{anomalies.get('rounds_seen', {}).get(s, '')}</td></tr>" for s, n in seen.items())
                     + "</table></div>")
    for key, label, better in (("cosine_consensus", "cosine to the round's median update", True),
                               ("norm_ratio", "norm / median norm", False)):
        curves: dict[str, list[tuple[int, float]]] = {}
        marks: dict[str, list[tuple[int, float]]] = {}
        for r in updates:
            if r.get(key) is not None:
                curves.setdefault(r["site"], []).append((r["round"], r[key]))
                if r.get("flagged"):
                    marks.setdefault(r["site"], []).append((r["round"], r[key]))
        if curves:
            parts.append(_figure(f"anomaly-{key}", f"{label} of each site's update per round; red crosses: flagged"
                                 f"{_spread_note([curves])}", "lines", curves, label, marks=marks,
                                 higher_is_better=better))
    return "".join(parts) if updates or seen else ""


def reliability_html(summary: Mapping) -> str:
    """Drawn from summary.json's `calibration` (binary tasks): each model's bins pooled over the sites,
    and its Brier score in the caption."""
    calibration = {model: c for model, c in (summary.get("calibration") or {}).items() if c}
    bins = {model: [
                {"mean_predicted": m, "observed": o, "count": n}
                for m, o, n in zip(c["pooled"]["mean_predicted"], c["pooled"]["observed_rate"], c["pooled"]["count"],
                                   strict=True)]
            for model, c in calibration.items()}
    if not bins:
        return ""
    brier = ", ".join(f"{model} {c['pooled']['brier']:.3f}" for model, c in calibration.items())
    return _figure("reliability", "reliability on the test rows of every site: observed share of positives "
                   f"against the mean predicted probability, per bin (Brier: {brier})", "reliability", bins)


def drift_html(summary: Mapping) -> str:
    """A live phase's drift notices (summary.json's `drift`: one per site whose new rows drifted)."""
    if not isinstance(summary.get("drift"), list):
        return ""  # not a live phase (a stream replay's report lists its own notices)
    # imported here: it loads the learning layer (torch), which a report without drift does not need
    from fedcare.federation.drift import DriftNotice

    items = "".join(f"<li class='warn' data-site='{e(n['site_id'])}'>{e(DriftNotice.from_json(n).line())}</li>"
                    for n in summary["drift"])
    return ("<h2>drift</h2><p>before this phase trained, each site scored the version before it on its newly "
            "arrived rows and compared their inputs with its earlier rows</p>"
            + (f"<ul id='drift'>{items}</ul>" if items else "<p id='drift'>no drift notice</p>"))


def config_html(config: Mapping | None) -> str:
    if not config:
        return ""
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(json.dumps(v))}</td></tr>" for k, v in sorted(config.items()))
    return f"<h2>config</h2><details><summary>every setting of this run</summary><table id='config'>{rows}</table></details>"


def render(summary: Mapping, rows: Iterable[Mapping], config: Mapping | None = None) -> str:
    rows = list(rows)
    title = e(f"{summary['dataset']} · {summary['algorithm']}")
    warnings = "".join(f"<li class='warn'>{e(str(w))}</li>" for w in summary.get("warnings", []))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
            f"</head><body><h1>{title}</h1><p id='facts'>task {e(summary['task'])} · "
            f"<span data-value='{summary['rounds']}'>{summary['rounds']}</span> rounds · "
            f"{summary['bytes_sent'] / 1e6:.2f} MB sent · {summary['wall_seconds']:.1f} s</p>"
            + (f"<ul id='warnings'>{warnings}</ul>" if warnings else "")
            + ("" if figures_wanted() else "<p id='no-figures'>figures left out (FEDCARE_REPORT_FIGURES=0)</p>")
            + site_table(summary) + forest_html(summary) + baselines_html(summary) + means_table(summary)
            + drift_html(summary) + curves_html(summary, rows) + privacy_html(summary, rows) + anomalies_html(summary, rows)
            + reliability_html(summary) + treatment_html(summary) + modalities_html(summary) + config_html(config) + "</body></html>\n")
