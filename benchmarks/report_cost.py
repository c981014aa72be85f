"""What report.html's figures cost a run, and what the per-site intervals cost an evaluation.

One run folder per kind (heart-disease, 4 sites; a 200-site CSV cohort) is rendered with figures
and without (FEDCARE_REPORT_FIGURES=0), side by side in this process, best of REPEATS; and the
task's metrics of a binary split with and without intervals, at sizes a site's test split has.

    OMP_NUM_THREADS=1 python benchmarks/report_cost.py
"""

from __future__ import annotations

import json
import os
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


if __name__ == "__main__":
    main()
