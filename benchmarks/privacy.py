"""Accuracy against the record-level privacy budget ε on heart-disease (FLamby split).

FedAvg, 20 rounds, 1 local epoch of DP-SGD per round (batch 32 → sampling rate 32/rows per site,
clip 1.0, δ = 1e-5), lr 0.1, for ε ∈ {∞ (no DP), 10, 3, 1}, 5 seeds each, 2 processes. Fixed
settings chosen before looking at test results; nothing is tuned here.

    python benchmarks/privacy.py [--seeds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor

import fedcare

SETTINGS = dict(rounds=20, local_epochs=1, lr=0.1, batch_size=32, baselines=False)
BUDGETS = [None, 10.0, 3.0, 1.0]


def one(job: tuple) -> tuple:
    eps, seed, out = job
    run = fedcare.simulate(dp_epsilon=eps, seed=seed, out=out, **SETTINGS)
    s = run.summary
    return eps, s["federated"]["mean"]["accuracy"], s["federated"]["worst_site"]["accuracy"], s["privacy"]["epsilon"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp()
    jobs = [(eps, seed, f"{scratch}/{eps}-{seed}") for eps in BUDGETS for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one, jobs))
    print("| ε budget | mean per-site accuracy | worst-site accuracy | largest ε spent by a site |")
    print("|---|---|---|---|")
    for eps in BUDGETS:
        rows = [r for r in results if r[0] == eps]
        mean = [r[1] for r in rows]
        worst = [r[2] for r in rows]
        spent = max((r[3] for r in rows if r[3] is not None), default=None)
        print(f"| {'∞ (no DP)' if eps is None else eps} | {statistics.mean(mean):.3f} ± {statistics.stdev(mean):.3f} | "
              f"{statistics.mean(worst):.3f} ± {statistics.stdev(worst):.3f} | "
              f"{'—' if spent is None else f'{spent:.3f}'} |")


if __name__ == "__main__":
    main()
