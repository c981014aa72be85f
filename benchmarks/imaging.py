"""Imaging on synthetic-scans across scanners: local, FedAvg, FedProx, FedBN, Ditto and pooled.

For each task (classification: lesion present; segmentation: organ and lesion masks) and each seed:
  fedavg with baselines   -> local, FedAvg (the global model), pooled
  fedprox                 -> FedProx (global model)
  fedavg + fedbn          -> FedBN (each site's model: shared weights, its own batch norm)
  fedavg + ditto          -> Ditto (each site's personal model)
Every run uses the same splits, rounds and hyperparameters (set here before any result was seen,
not tuned: Adam 1e-3, batch 16, 1 local epoch). Seconds per round are the time between the federated
model's rounds (every selected site trains, every site evaluates), also as ratios to FedAvg's of the
same seed, measured side by side in this script (2 runs at a time on a shared machine: noisy). Peak memory per
site is the growth of the resident set of a fresh process while one site trains one round.

    python benchmarks/imaging.py                    # 3 seeds, 20 rounds, 32 x 32: about 15 min on 2 cores
    python benchmarks/imaging.py --seeds 0 --rounds 3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADLINES = {"binary": ("accuracy", "roc_auc"), "segmentation": ("dice", "iou")}
METHODS = {  # name -> (config overrides, summary block)
    "fedavg": ({"algorithm": "fedavg", "baselines": True}, "federated"),
    "fedprox": ({"algorithm": "fedprox", "prox_mu": 0.01}, "federated"),
    "fedbn": ({"algorithm": "fedavg", "personalization": "fedbn"}, "personalized"),
    "ditto": ({"algorithm": "fedavg", "personalization": "ditto", "ditto_lambda": 0.1}, "personalized"),
}
COLUMNS = ("local", "fedavg", "fedprox", "fedbn", "ditto", "pooled")


def run_one(job: tuple[str, str, int, int, int]) -> dict:
    task, method, seed, rounds, size = job
    import fedcare

    overrides, block = METHODS[method]
    config = {"dataset": "synthetic-scans", "task": None if task == "binary" else task, "rounds": rounds,
              "image_size": [size, size], "optimizer": "adam", "lr": 0.001, "batch_size": 16, "seed": seed,
              "baselines": False, **overrides}
    stamps: list[float] = []

    def progress(name: str, record: object) -> None:  # after each round of the federated model
        if name == "federated":
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = fedcare.simulate(config, out=out, progress=progress)
        wall = time.perf_counter() - started
    s = run.summary
    keys = HEADLINES[task]
    pick = {method: block, **({"local": "local", "pooled": "pooled"} if method == "fedavg" else {})}
    figures = {name: {site: {k: s[b]["sites"][site].get(k) for k in keys} for site in s[b]["sites"]}
               for name, b in pick.items()}
    per_round = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    return {"task": task, "method": method, "seed": seed, "figures": figures, "wall_seconds": wall,
            "rounds": s["rounds"], "seconds_per_round": per_round}


MEMORY_PROBE = """
import resource, sys, fedcare
from fedcare.core.config import make_config
from fedcare.data import load_dataset
from fedcare.federation.plan import make_plan
from fedcare.core.messages import FitRequest
task, site, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = make_config({"dataset": "synthetic-scans", "task": None if task == "binary" else task,
                   "image_size": [size, size], "batch_size": 16})
data = load_dataset(cfg.data)
plan = make_plan(cfg, data.shape, [s.site_id for s in data.sites])
local = plan.local_site(data.site(site))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
local.fit(plan.initial_params(), FitRequest(1, "local_epochs", 1, 0.001, 16, "adam", 0))
local.evaluate(plan.initial_params(), ["train", "test"])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before // 1024, after // 1024)
"""


def site_memory(task: str, size: int) -> dict[str, dict[str, int]]:
    from fedcare.data.builtin import get_builtin

    out = {}
    for site in get_builtin("synthetic-scans").site_ids:
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, task, site, str(size)], capture_output=True,
                              text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        before, after = (int(x) for x in proc.stdout.split()[-2:])
        out[site] = {"rss_mb_before_round": before, "rss_mb_peak": after, "round_growth_mb": after - before}
    return out


def table(results: list[dict], task: str) -> str:
    import numpy as np

    key = HEADLINES[task][0]
    rows = [r for r in results if r["task"] == task]
    seeds = sorted({r["seed"] for r in rows})
    per: dict[str, dict[str, list[float]]] = {c: {} for c in COLUMNS}
    for r in rows:
        for name, sites in r["figures"].items():
            for site, metrics in sites.items():
                per[name].setdefault(site, []).append(metrics[key])
    sites = sorted(per["local"])
    lines = [f"| site | {' | '.join(COLUMNS)} |", "|---" * (len(COLUMNS) + 1) + "|"]

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    for site in sites:
        lines.append(f"| {site} | " + " | ".join(cell(per[c][site]) for c in COLUMNS) + " |")
    means = {c: [np.mean([per[c][s][i] for s in sites]) for i in range(len(seeds))] for c in COLUMNS}
    worst = {c: [min(per[c][s][i] for s in sites) for i in range(len(seeds))] for c in COLUMNS}
    lines.append("| **mean** | " + " | ".join(cell(means[c]) for c in COLUMNS) + " |")
    lines.append("| **worst site** | " + " | ".join(cell(worst[c]) for c in COLUMNS) + " |")
    second = HEADLINES[task][1]
    extra = {c: [np.mean([r["figures"][c][s][second] for s in sites if r["figures"][c][s][second] is not None])
                 for r in rows if c in r["figures"]] for c in COLUMNS}
    lines.append(f"| mean {second} | " + " | ".join(cell(extra[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--tasks", nargs="+", default=["binary", "segmentation"])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/imaging.json")
    args = parser.parse_args()
    from fedcare.data import synthetic_scans

    synthetic_scans.ensure()  # once, before the workers start
    jobs = [(t, m, s, args.rounds, args.image_size) for t in args.tasks for s in args.seeds for m in METHODS]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
    memory = {t: site_memory(t, args.image_size) for t in args.tasks}
    for r in results:  # each federated round (training and evaluating every site), as a ratio to fedavg's
        ref = next(x for x in results if x["task"] == r["task"] and x["seed"] == r["seed"] and x["method"] == "fedavg")
        r["time_ratio_to_fedavg"] = r["seconds_per_round"] / ref["seconds_per_round"]
    report = {"command": " ".join(["python", *sys.argv]), "rounds": args.rounds, "image_size": args.image_size,
              "seeds": args.seeds, "total_seconds": time.perf_counter() - started, "results": results,
              "site_memory": memory, "cpus": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for task in args.tasks:
        print(f"\n### {task} ({HEADLINES[task][0]}, mean ± sd over seeds {args.seeds})\n")
        print(table(results, task))
        timing = {m: [r["seconds_per_round"] for r in results if r["task"] == task and r["method"] == m]
                  for m in METHODS}
        print("\nseconds per round: " + ", ".join(f"{m} {sum(v) / len(v):.2f}" for m, v in timing.items()))
        print("peak memory per site (MB, one round): " + ", ".join(
            f"{s} {m['rss_mb_peak']} (+{m['round_growth_mb']})" for s, m in memory[task].items()))
    print(f"\ntotal {report['total_seconds']:.0f} s; written {args.out}")


if __name__ == "__main__":
    main()
