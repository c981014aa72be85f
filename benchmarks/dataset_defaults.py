"""Choose the bundled datasets' default settings on their VALIDATION rows, then show what the
defaults give on the test rows.

    python benchmarks/dataset_defaults.py --select   # the grid on validation rows (about 10 minutes, 1 core)
    python benchmarks/dataset_defaults.py --check    # `simulate(dataset=...)` with the defaults, on test rows

`--select`: for each dataset and each personalization mode, every candidate runs with 20 % of each
site's training rows held out for validation, for 3 seeds; the score is the mean over sites of the
task's headline metric on those validation rows (of the sites' own models under personalization,
of the global model otherwise), averaged over the seeds. The best candidate is printed; those are
the values in `fedcare/data/builtin.py` (`defaults`). No test row is looked at. (fedbn is not
searched: it needs batch_norm, which the config checks before a dataset's defaults apply.)
benchmarks/results/dataset_defaults_selection.txt is the output of the recorded selection (that run
also searched fedbn: lr 0.1 won, 0.831 on validation).

`--check`: the defaults as a user gets them (no flag but --dataset and --personalization), 3 seeds,
every site's full training split, with the local and pooled baselines: the test figures, mean and
worst site, beside each other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile

import numpy as np

import fedcare

SEEDS = (0, 1, 2)
LR = [0.01, 0.03, 0.1]
MLP = {"model": "mlp", "hidden": [16]}
# dataset -> personalization mode -> the grid (fixed settings, then the dimensions searched)
GRIDS: dict[str, dict[str, tuple[dict, dict]]] = {
    "heart-disease": {
        "none": ({}, {"lr": LR, "local_epochs": [1, 5]}),
        "finetune": ({"local_epochs": 5}, {"lr": LR, "finetune_epochs": [1, 5]}),
        "ditto": ({"local_epochs": 5}, {"lr": LR, "ditto_lambda": [0.01, 0.1, 1.0], "model": ["linear", "mlp"]}),
        "fedper": ({"local_epochs": 5, **MLP}, {"lr": LR}),
        "fedrep": ({"local_epochs": 5, **MLP}, {"lr": LR}),
    },
    "ovarian-genomics": {
        "none": ({"local_epochs": 1}, {"lr": LR, "rounds": [30, 50], "batch_size": [16, 64]}),
    },
}


def _settings(fixed: dict, point: dict) -> dict:
    out = {**fixed, **point}
    if out.get("model") == "mlp":
        out.setdefault("hidden", [16])
    return out


def select(out: str) -> dict:
    chosen: dict = {}
    for dataset, modes in GRIDS.items():
        for mode, (fixed, grid) in modes.items():
            scored = []
            for values in itertools.product(*grid.values()):
                settings = _settings(fixed, dict(zip(grid, values)))
                scores = []
                for seed in SEEDS:
                    run = fedcare.simulate(dataset=dataset, personalization=mode, val_fraction=0.2, seed=seed,
                                           baselines=False, out=out, **settings)
                    scores.append(run.personal_val_score if mode != "none" else run.history[-1].val_score)
                scored.append((float(np.mean(scores)), float(np.std(scores)), settings))
                print(json.dumps({"dataset": dataset, "mode": mode, **settings, "val": scored[-1][0]}), file=sys.stderr)
            scored.sort(key=lambda s: -s[0])
            best, sd, settings = scored[0]
            chosen.setdefault(dataset, {})[mode] = settings
            runner_up = f"; next {scored[1][0]:.3f} with {scored[1][2]}" if len(scored) > 1 else ""
            print(f"| {dataset} | {mode} | {settings} | {best:.3f} ± {sd:.3f}{runner_up} |")
    return chosen


def check(out: str) -> None:
    print("| dataset | personalization | model | mean (test) | worst site (test) | local mean / worst | "
          "federated mean / worst | pooled mean / worst |\n|---|---|---|---|---|---|---|---|")
    for dataset, modes in GRIDS.items():
        for mode in modes:
            model = "personalized" if mode != "none" else "federated"
            rows: dict[str, list[tuple[float, float]]] = {}
            for seed in SEEDS:
                s = fedcare.simulate(dataset=dataset, personalization=mode, seed=seed, out=out).summary
                metric = s["metric"]
                for name in (model, "local", "federated", "pooled"):
                    rows.setdefault(name, []).append((s[name]["mean"][metric], s[name]["worst_site"][metric]))

            def fmt(name: str, rows: dict = rows) -> str:
                a = np.array(rows[name])
                return f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.3f}"

            a = np.array(rows[model])
            print(f"| {dataset} | {mode} | {model} | {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f} | "
                  f"{a[:, 1].mean():.3f} ± {a[:, 1].std():.3f} | {fmt('local')} | {fmt('federated')} | {fmt('pooled')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--select", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args()
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        if args.select:
            print(json.dumps(select(tmp + "/run")))
        else:
            check(tmp + "/run")


if __name__ == "__main__":
    main()
