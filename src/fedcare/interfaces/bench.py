"""`fedcare benchmark`: a grid of algorithms × seeds on one dataset, run in parallel, summarised as
the evidence table a clinical researcher reads (Markdown and CSV) and a page (report.html) with the
metric per round, mean over seeds with a band of ± one sd across seeds.

An entry is ALGORITHM[+PERSONALIZATION][@AGGREGATOR], e.g. `fedavg`, `fedavg+ditto`,
`fedavg@median`. With `tune`, each entry's learning rates are chosen on validation rows carved from
each site's training split (never the test split); the chosen values are then trained on the full
training split for every seed.
"""

from __future__ import annotations

import csv
import itertools
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fedcare.core.config import FederationConfig, make_config
from fedcare.core.errors import ConfigError
from fedcare.interfaces import benchpage

# Candidates tried on validation with `tune`: small on purpose (every point costs seeds × a run).
GRIDS: dict[str, dict[str, list]] = {
    "fedsgd": {"lr": [0.1, 0.3, 1.0]},
    "fedadam": {"server_lr": [0.003, 0.01, 0.03]},
    "fedyogi": {"server_lr": [0.003, 0.01, 0.03]},
    "fedadagrad": {"server_lr": [0.01, 0.03, 0.1]},
}
PERSONAL_GRIDS: dict[str, dict[str, list]] = {
    "ditto": {"lr": [0.01, 0.03, 0.1], "ditto_lambda": [0.01, 0.1, 1.0]},
    "finetune": {"lr": [0.01, 0.03, 0.1], "finetune_epochs": [1, 5]},
}
DEFAULT_GRID = {"lr": [0.01, 0.03, 0.1]}


@dataclass(frozen=True)
class Entry:
    algorithm: str
    personalization: str = "none"
    aggregator: str = "mean"

    @classmethod
    def parse(cls, text: str) -> Entry:
        rest, _, aggregator = text.partition("@")
        algorithm, _, personalization = rest.partition("+")
        return cls(algorithm.strip(), personalization.strip() or "none", aggregator.strip() or "mean")

    @property
    def name(self) -> str:
        return (self.algorithm + (f"+{self.personalization}" if self.personalization != "none" else "")
                + (f"@{self.aggregator}" if self.aggregator != "mean" else ""))

    @property
    def model(self) -> str:
        """Which summary block holds this entry's result."""
        return "personalized" if self.personalization != "none" else "federated"

    def overrides(self) -> dict:
        return {"algorithm": self.algorithm, "personalization": self.personalization, "aggregator": self.aggregator}


def _run(job: tuple[dict, str]) -> dict:
    """One simulation in a worker process; returns only JSON-able figures."""
    from fedcare.interfaces.api import simulate

    values, model = job
    started = time.perf_counter()
    os.environ["FEDCARE_REPORT_FIGURES"] = "0"  # each run's own figures: the benchmark page draws them all
    run = simulate(values)
    s = run.summary
    curve: dict[int, list[float]] = {}
    metric = s["metric"]
    for rec in run.history:
        for splits in rec.evaluation.values():
            value = splits.get("test", {}).get(metric)
            if value is not None:
                curve.setdefault(rec.round, []).append(value)
    if model == "personalized":  # judge personalization by the sites' own models
        val = run.personal_val_score
    else:
        val = run.history[-1].val_score if run.history else None
    worst = min if s["higher_is_better"] else max
    return {"summary": {k: s[k] for k in ("task", "metric", "higher_is_better", "rounds", "bytes_sent", "local", "pooled",
                                          model) if k in s},
            "curve": {r: statistics.mean(v) for r, v in curve.items()},
            "worst": {r: worst(v) for r, v in curve.items()}, "val": val,
            "seconds": time.perf_counter() - started}


def _grid(entry: Entry) -> list[dict]:
    grid = PERSONAL_GRIDS.get(entry.personalization) or GRIDS.get(entry.algorithm, DEFAULT_GRID)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def run_benchmark(base: FederationConfig, entries: Sequence[str], seeds: int, workers: int, out: Path,
                  tune: bool = False, progress=None) -> dict:
    """Run every entry × seed (after tuning, if asked) and write table.md, table.csv, report.html and
    curves.svg."""
    parsed = [Entry.parse(e) for e in entries]
    if not parsed:
        raise ConfigError("benchmark needs at least one entry, e.g. --algorithms fedavg,fedprox")
    out.mkdir(parents=True, exist_ok=True)
    base_values = base.flat(mode="json")

    def config(entry: Entry, extra: dict, seed: int, folder: str, **more) -> dict:
        values = {**base_values, **entry.overrides(), **extra, "seed": seed, "out": str(out / "runs" / folder), **more}
        make_config(values)  # refuse a bad entry before any process starts
        return values

    chosen: dict[str, dict] = {e.name: {} for e in parsed}
    tuning_rows = []
    with ProcessPoolExecutor(workers) as pool:
        if tune:
            jobs = [(e, point, config(e, point, s, f"tune/{e.name}-{i}-seed{s}", val_fraction=0.2,
                                      baselines=False))
                    for e in parsed for i, point in enumerate(_grid(e)) for s in range(seeds)]
            results = list(pool.map(_run, [(values, e.model) for e, _, values in jobs]))
            scores: dict[tuple[str, str], list[float]] = {}
            for (e, point, _), res in zip(jobs, results, strict=True):
                scores.setdefault((e.name, repr(point)), []).append(res["val"] if res["val"] is not None else float("nan"))
            higher = results[0]["summary"]["higher_is_better"]
            for e in parsed:
                best = None
                for point in _grid(e):
                    value = statistics.mean(scores[(e.name, repr(point))])
                    tuning_rows.append((e.name, point, value))
                    if best is None or (value > best[1] if higher else value < best[1]):
                        best = (point, value)
                chosen[e.name] = best[0] if best else {}
        jobs = [(e, config(e, chosen[e.name], s, f"{e.name}-seed{s}")) for e in parsed for s in range(seeds)]
        results = list(pool.map(_run, [(values, e.model) for e, values in jobs]))
    return _write(parsed, jobs, results, chosen, tuning_rows, out)


def _stats(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f}"


def _write(parsed, jobs, results, chosen, tuning_rows, out: Path) -> dict:
    metric = results[0]["summary"]["metric"]
    by_entry: dict[str, list[dict]] = {}
    for (e, _), res in zip(jobs, results, strict=True):
        by_entry.setdefault(e.name, []).append(res)
    rows = []
    for e in parsed:
        runs = by_entry[e.name]
        blocks = [r["summary"][e.model] for r in runs]
        rows.append({"entry": e.name, "hyperparameters": chosen[e.name],
                     "mean": _stats([b["mean"].get(metric) for b in blocks]),
                     "worst_site": _stats([b["worst_site"].get(metric) for b in blocks]),
                     "worst_sites": ", ".join(sorted({str(b["worst_site"]["site_id"]) for b in blocks})),
                     "rounds": statistics.mean(r["summary"]["rounds"] for r in runs),
                     "mb_sent": statistics.mean(r["summary"]["bytes_sent"] for r in runs) / 1e6,
                     "seconds": statistics.mean(r["seconds"] for r in runs)})
    # baselines come with every run; show those of the fedavg entry (same training budget), else the first
    reference = next((e for e in parsed if e.name == "fedavg"), parsed[0])
    first = by_entry[reference.name]
    for baseline in ("local", "pooled"):
        blocks = [r["summary"][baseline] for r in first if baseline in r["summary"]]
        if blocks:
            rows.append({"entry": f"({baseline} baseline, as {reference.name})", "hyperparameters": chosen[reference.name],
                         "mean": _stats([b["mean"].get(metric) for b in blocks]),
                         "worst_site": _stats([b["worst_site"].get(metric) for b in blocks]),
                         "worst_sites": ", ".join(sorted({str(b["worst_site"]["site_id"]) for b in blocks})),
                         "rounds": "", "mb_sent": "", "seconds": ""})
    header = ["entry", "hyperparameters", f"mean {metric}", f"worst-site {metric}", "worst sites", "rounds",
              "MB sent", "seconds per run"]
    md = [f"Test {metric} per site of each entry's model: mean over sites and worst site, "
          f"mean ± sd across {len(first)} seeds.", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        md.append("| " + " | ".join(_cells(r)) + " |")
    if tuning_rows:
        md += ["", "Validation score of each candidate (val = 20 % of each site's training rows):", "",
               "| entry | candidate | mean validation " + metric + " |", "|---|---|---|"]
        md += [f"| {name} | {point} | {value:.3f} |" for name, point, value in tuning_rows]
    (out / "table.md").write_text("\n".join(md) + "\n")
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "hyperparameters": repr(r["hyperparameters"])})
    bands = {kind: {e.name: _band(by_entry[e.name], kind) for e in parsed} for kind in ("curve", "worst")}
    page = benchpage.render(metric, header, [_cells(r) for r in rows], bands, len(first))
    (out / "report.html").write_text(page.html)
    (out / "curves.svg").write_text(page.curves_svg)
    return {"rows": rows, "table": "\n".join(md)}


def _band(runs: list[dict], key: str) -> list[tuple[int, float, float]]:
    """(round, mean over seeds, sd over seeds) for the rounds every seed ran."""
    rounds = sorted(set.intersection(*(set(r[key]) for r in runs)))
    out = []
    for rnd in rounds:
        values = [r[key][rnd] for r in runs]
        out.append((rnd, statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0))
    return out


def _cells(r: dict) -> list[str]:
    return [r["entry"], str(r["hyperparameters"] or "defaults"), r["mean"], r["worst_site"], r["worst_sites"],
            _num(r["rounds"], 0), _num(r["mb_sent"], 2), _num(r["seconds"], 1)]


def _num(value, digits: int) -> str:
    return "" if value == "" else f"{value:.{digits}f}"
