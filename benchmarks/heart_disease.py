"""Heart-disease on FLamby's fixed split: fedsgd and fedavg against the local and pooled baselines.

Hyperparameters are chosen on validation rows carved from each site's *training* split
(val_fraction 0.2, 5 seeds); the test split is touched only by the final runs, which train on the
full training split with the chosen values, 5 training seeds each.

    python benchmarks/heart_disease.py [--seeds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from pathlib import Path

import fedcare
from fedcare.data import load_dataset
from fedcare.transports.simulated import build_federation
from fedcare.transports.simulation import SimulationTransport

GRIDS = {  # per algorithm: the candidates tried on validation
    "fedavg": {"lr": [0.01, 0.03, 0.1], "local_epochs": [1, 5], "rounds": [50]},
    "fedsgd": {"lr": [0.3, 1.0, 3.0], "rounds": [200]},
}
FLAMBY = [  # du Terrail et al., NeurIPS 2022 Datasets & Benchmarks, Fed-Heart-Disease, mean per-site accuracy
    ("pooled", "0.735"), ("FedAvg", "0.685"), ("FedProx", "0.685"), ("SCAFFOLD", "0.684"), ("Cyclic", "0.718"),
    ("FedAdam", "0.726"), ("FedYogi", "0.731"), ("FedAdagrad", "0.731"), ("local (per client)", "0.567–0.722"),
]


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def local_models_across_sites(run) -> dict[str, float]:
    """FLamby's reading of a local model: trained at one site, judged on every site's test split."""
    fed = build_federation(run.config, load_dataset(run.config.data))
    transport = SimulationTransport(fed.sites)
    out = {}
    for site_id, params in run.local_params.items():
        metrics = transport.evaluate(params, transport.site_ids(), ["test"])
        out[site_id] = statistics.mean(m["test"]["accuracy"] for m in metrics.values())
    return out


def tune(algorithm: str, seeds: list[int], scratch: Path) -> tuple[dict, list[str]]:
    """Pick the grid point with the best mean validation accuracy (last round's global model)."""
    grid = GRIDS[algorithm]
    lines, best, best_score = [], None, -1.0
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        scores = []
        for seed in seeds:
            run = fedcare.simulate(algorithm=algorithm, val_fraction=0.2, baselines=False, seed=seed,
                                   out=str(scratch / "tune"), **point)
            scores.append(run.history[-1].val_score)
        score = statistics.mean(scores)
        lines.append(f"| {algorithm} | {point} | {score:.3f} |")
        if score > best_score:
            best, best_score = point, score
    return best, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    scratch = Path(tempfile.mkdtemp())
    tuning_lines, rows, per_site, raw = [], [], {}, {}
    for algorithm in GRIDS:
        chosen, lines = tune(algorithm, seeds, scratch)
        tuning_lines += lines
        runs = [fedcare.simulate(algorithm=algorithm, seed=s, out=str(scratch / f"{algorithm}-{s}"), **chosen)
                for s in seeds]
        raw[algorithm] = {"chosen": chosen, "summaries": [r.summary for r in runs]}
        for model in ("local", "federated", "pooled"):
            means = [r.summary[model]["mean"]["accuracy"] for r in runs]
            worst = [r.summary[model]["worst_site"]["accuracy"] for r in runs]
            worst_ids = sorted({r.summary[model]["worst_site"]["site_id"] for r in runs})
            rows.append(f"| {algorithm} ({chosen}) | {model} | {mean_sd(means)} | {mean_sd(worst)} "
                        f"({', '.join(worst_ids)}) |")
        cross = [local_models_across_sites(r) for r in runs]
        by_site = {site: statistics.mean(c[site] for c in cross) for site in cross[0]}
        rows.append(f"| {algorithm} | local, judged on every site (FLamby's reading) | "
                    f"{min(by_site.values()):.3f}–{max(by_site.values()):.3f} | "
                    + ", ".join(f"{k} {v:.3f}" for k, v in by_site.items()) + " |")
        sites = runs[0].summary["federated"]["sites"]
        per_site[algorithm] = {
            site: {m: mean_sd([r.summary[m]["sites"][site]["accuracy"] for r in runs])
                   for m in ("local", "federated", "pooled")} for site in sites}
        rows.append(f"| {algorithm} | rounds run, bytes sent | {runs[0].summary['rounds']} | "
                    f"{runs[0].summary['bytes_sent'] / 1e6:.2f} MB |")
    text = ["## Heart-disease (FLamby split): mean per-site test accuracy, "
            f"{len(seeds)} training seeds (mean ± sd across seeds)", "",
            "| algorithm (chosen on validation) | model | mean over sites | worst site (which) |",
            "|---|---|---|---|", *rows, "", "Per site (accuracy, mean ± sd across seeds):", ""]
    for algorithm, sites in per_site.items():
        text += [f"| {algorithm} | site | local | federated | pooled |", "|---|---|---|---|---|"]
        text += [f"| | {site} | {v['local']} | {v['federated']} | {v['pooled']} |" for site, v in sites.items()]
        text.append("")
    text += ["FLamby's published Fed-Heart-Disease figures (mean per-site accuracy):", "",
             "| FLamby strategy | accuracy |", "|---|---|", *[f"| {n} | {v} |" for n, v in FLAMBY], "",
             "Validation accuracy of each grid point (val = 20 % of each site's training rows):", "",
             "| algorithm | hyperparameters | mean validation accuracy |", "|---|---|---|", *tuning_lines]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "heart_disease.md").write_text("\n".join(text) + "\n")
    (args.out / "heart_disease.json").write_text(json.dumps(raw, indent=1) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
