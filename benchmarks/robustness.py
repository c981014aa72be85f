"""Robust aggregation under simulated attacks: heart-disease on its 4 real hospitals and on a
10-site Dirichlet(0.5) label-skew split of the same patients.

For each rule (fedavg's weighted mean and each robust rule), each attack (sign-flip, scale ×10,
gaussian σ=10, label-flip, nan) and each number of attackers (the first K sites), the script runs
FedAvg with the hyperparameters chosen on validation in benchmarks/heart_disease.py (lr 0.01,
5 local epochs, 50 rounds) for several seeds, and reports the mean per-site test accuracy of the
global model (mean ± sd across seeds) and how often the anomaly report named the attackers.

    python benchmarks/robustness.py [--seeds 3] [--workers 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import pandas as pd

import fedcare
from fedcare.core.errors import FedcareError

TRAINING = dict(algorithm="fedavg", lr=0.01, local_epochs=5, rounds=50, baselines=False)
ATTACKS = ["sign-flip", "scale", "gaussian", "label-flip", "nan"]
COLUMNS = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak",
           "slope", "ca", "thal", "num"]


def rules(num_sites: int) -> dict[str, dict]:
    """The aggregation rules compared, with their knobs set from the number of sites only."""
    out = {"fedavg (mean)": {"aggregator": "mean"},
           "median": {"aggregator": "median"},
           "trimmed mean": {"aggregator": "trimmed-mean", "trim_beta": 0.2 if num_sites >= 10 else 0.25},
           "centered clip": {"aggregator": "centered-clip"},
           "norm bound + mean": {"aggregator": "mean", "norm_bound": 1.0}}
    out["krum" if num_sites < 10 else "multi-krum (f=3)"] = (
        {"aggregator": "krum", "krum_f": 0, "krum_m": 1} if num_sites < 10
        else {"aggregator": "krum", "krum_f": 3})
    return out


def pooled_heart_csv(folder: Path) -> Path:
    """All four hospitals' patients in one file without a site column (FLamby's row filtering)."""
    frames = []
    for name in ("cleveland", "hungarian", "switzerland", "va"):
        text = resources.files("fedcare.data.heart_disease").joinpath(f"processed.{name}.data").read_text()
        frame = pd.read_csv(pd.io.common.StringIO(text), header=None, names=COLUMNS, na_values="?")
        frames.append(frame.drop(columns=["slope", "ca", "thal"]).dropna())
    pooled = pd.concat(frames, ignore_index=True)
    pooled["disease"] = (pooled.pop("num") > 0).astype(int)
    path = folder / "heart_pooled.csv"
    pooled.to_csv(path, index=False)
    return path


def one_run(job: tuple[tuple, dict, int, str]) -> tuple[tuple, dict]:
    key, config, seed, out = job
    try:
        run = fedcare.simulate(seed=seed, out=out, **TRAINING, **config)
    except FedcareError as exc:  # e.g. Krum when refused updates leave too few: the run stops, say so
        return key, {"accuracy": None, "error": str(exc), "attackers": [], "flagged": []}
    return key, {"accuracy": run.summary["federated"]["mean"]["accuracy"],
                 "attackers": run.summary["attack"]["sites"],
                 "flagged": run.summary["anomalies"]["flagged_sites"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    datasets = {
        "heart-disease, 4 real hospitals": ({"dataset": "heart-disease"}, 4, [1, 2]),
        "heart-disease, 10-site Dirichlet(0.5) split": (
            {"data": [str(pooled_heart_csv(scratch))], "label": "disease", "categorical": ["cp", "restecg"],
             "partition": "dirichlet", "num_sites": 10, "alpha": 0.5}, 10, [1, 2, 3]),
    }
    jobs = []
    for (ds_name, (data, n, counts)), seed in itertools.product(datasets.items(), range(args.seeds)):
        for rule, knobs in rules(n).items():
            cases = [("clean", 0)] + [(a, k) for a in ATTACKS for k in counts]
            for attack, k in cases:
                config = {**data, **knobs}
                if k:
                    config.update(attack=attack, attackers=k)
                jobs.append(((ds_name, rule, attack, k), config, seed, str(scratch / f"run-{len(jobs)}")))
    results: dict[tuple, list[dict]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for key, value in pool.map(one_run, jobs, chunksize=4):
            results.setdefault(key, []).append(value)
    lines = [f"Mean per-site test accuracy of the global model, {args.seeds} seeds (mean ± sd); "
             "attackers are the K sites with the most training rows; **bold**: flagged by the anomaly report in every seed.", ""]
    for ds_name, (_, n, counts) in datasets.items():
        header = ["clean"] + [f"{a} ×{k}" for a in ATTACKS for k in counts]
        lines += [f"### {ds_name}", "", "| rule | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
        for rule in rules(n):
            cells = []
            for attack, k in [("clean", 0)] + [(a, k) for a in ATTACKS for k in counts]:
                runs = results[(ds_name, rule, attack, k)]
                if any(r["accuracy"] is None for r in runs):
                    cells.append("stops¹")
                    continue
                acc = [r["accuracy"] for r in runs]
                text = f"{statistics.mean(acc):.3f} ± {statistics.stdev(acc) if len(acc) > 1 else 0:.3f}"
                caught = k and all(set(r["attackers"]) <= set(r["flagged"]) for r in runs)
                cells.append(f"**{text}**" if caught else text)
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        lines.append("")
    errors = sorted({r["error"] for rs in results.values() for r in rs if r["accuracy"] is None})
    if errors:
        lines += ["¹ the run stopped with an error: " + "; ".join(errors), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
