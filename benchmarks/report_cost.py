"""What report.html's figures cost a run, and what the per-site intervals cost an evaluation.

One run folder per kind (heart-disease, 4 sites; a 200-site CSV cohort) is rendered with figures
and without (FEDCARE_REPORT_FIGURES=0), side by side in this process, best of REPEATS; and the
task's metrics of a binary split with and without intervals, at sizes a site's test split has.

    OMP_NUM_THREADS=1 python benchmarks/report_cost.py
    OMP_NUM_THREADS=1 python benchmarks/report_cost.py --many 1000 [--rounds 3] [--before REV]

`--many N` instead times the figures of one N-site run folder: the per-round figures as this
fedcare draws them (one LineCollection up to figures.BAND_SITES sites, a band beyond) against the same
functions loaded from git revision REV (default: the last one that drew one line per site), on the same
series side by side, best of REPEATS; then the whole report.html with and without figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fedcare
from fedcare.interfaces import htmlreport
from fedcare.learning import intervals, metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import cohort_frame, write_csv  # noqa: E402

REPEATS = 3
ONE_LINE_PER_SITE = "d7888b0777dfa26d83f075e47d91ffabc89919a0"  # figures.py before LineCollection and bands


def best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    out = Path(tempfile.mkdtemp())
    os.environ["FEDCARE_REPORT_FIGURES"] = "0"
    runs = {"heart-disease, 4 sites, 5 rounds": {"rounds": 5},
            "CSV cohort, 200 sites, 2 rounds": {"data": str(write_csv(out / "c.csv", cohort_frame(sites=200, rows_per_site=20))),
                                                "label": "y", "site": "hospital", "drop": ["patient_id"], "rounds": 2}}
    print("| run | render without figures (s) | with figures (s) | run itself (s) | figures / run |\n|---|---|---|---|---|")
    for name, settings in runs.items():
        started = time.perf_counter()
        fedcare.simulate(out=str(out / "run"), **settings)
        run_seconds = time.perf_counter() - started
        summary = json.loads((out / "run" / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
        os.environ["FEDCARE_REPORT_FIGURES"] = "1"
        htmlreport.render(summary, rows)  # matplotlib's import, once
        with_figures = best(lambda: htmlreport.render(summary, rows))
        os.environ["FEDCARE_REPORT_FIGURES"] = "0"
        without = best(lambda: htmlreport.render(summary, rows))
        print(f"| {name} | {without:.3f} | {with_figures:.2f} | {run_seconds:.1f} | {with_figures / run_seconds:.0%} |")
    rng = np.random.default_rng(0)
    print("\n| test rows | binary metrics (ms) | + intervals (ms) | C-index (ms) | + interval (ms) |\n|---|---|---|---|---|")
    for n in (16, 100, 1000, 3000):
        y = rng.integers(0, 2, n)
        p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)
        t, ev, risk = rng.exponential(1, n), rng.integers(0, 2, n), rng.normal(0, 1, n)
        plain = best(lambda: metrics.binary_metrics(y, p))
        plus = best(lambda: (metrics.binary_metrics(y, p), intervals.classification_intervals(y, (p >= 0.5) == y, p)))
        ci = best(lambda: metrics.c_index(t, ev, risk))
        ci_plus = best(lambda: (metrics.c_index(t, ev, risk), intervals.survival_intervals(t, ev, risk)))
        print(f"| {n} | {plain * 1e3:.2f} | {plus * 1e3:.2f} | {ci * 1e3:.2f} | {ci_plus * 1e3:.2f} |")


def figures_at(rev: str):
    """figures.py as it was at git revision `rev`, imported under its own name."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:src/fedcare/interfaces/figures.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "figures_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("figures_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def many(sites: int, rounds: int, before: str) -> None:
    from fedcare.interfaces import figures

    old = figures_at(before)
    out = Path(tempfile.mkdtemp())
    os.environ["FEDCARE_REPORT_FIGURES"] = "0"  # the run writes its tables only; the figures are timed below
    csv = write_csv(out / "c.csv", cohort_frame(sites=sites, rows_per_site=20))
    started = time.perf_counter()
    fedcare.simulate(out=str(out / "run"), data=str(csv), label="y", site="hospital", drop=["patient_id"],
                     rounds=rounds)
    run_seconds = time.perf_counter() - started
    summary = json.loads((out / "run" / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    panels = {"test " + summary["metric"]: htmlreport._series(rows, "test", summary["metric"]),
              "train loss": htmlreport._series(rows, "train", "train_loss")}
    print(f"{sites} sites, {rounds} rounds, the run itself {run_seconds:.1f} s, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print(f"| per-round figure | models × sites | one line per site ({before[:7]}) (s) | LineCollection (s) | "
          "band + worst sites (s) | band / one line per site |\n|---|---|---|---|---|---|")
    for name, series in panels.items():
        size = f"{len(series)} × {max(len(s) for s in series.values())}"
        reference = best(lambda: old.data_uri(old.per_site_rounds(series, name)))
        collection = best(lambda: figures.data_uri(figures.per_site_rounds(series, name, band_above=sites + 1)))
        band = best(lambda: figures.data_uri(figures.per_site_rounds(series, name)))
        print(f"| {name} | {size} | {reference:.2f} | {collection:.2f} | {band:.2f} | {band / reference:.2f} |")
    os.environ["FEDCARE_REPORT_FIGURES"] = "1"
    with_figures = best(lambda: htmlreport.render(summary, rows))
    os.environ["FEDCARE_REPORT_FIGURES"] = "0"
    without = best(lambda: htmlreport.render(summary, rows))
    print(f"\nreport.html: {without:.2f} s without figures, {with_figures:.2f} s with "
          f"({with_figures / run_seconds:.0%} of the run)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--many", type=int, help="time the figures of one run folder of this many sites")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default=ONE_LINE_PER_SITE, help="git revision of the reference figures.py")
    args = parser.parse_args()
    many(args.many, args.rounds, args.before) if args.many else main()
