"""Membership-inference AUC against the record-level privacy budget ε on heart-disease (FLamby split).

For ε ∈ {∞ (no DP), 10, 3, 1} and several seeds: run `fedcare.simulate`, then
`fedcare.interfaces.audit.audit_membership` on the global model (loss-threshold and shadow-model attacks), and
report mean ± sd over seeds. Two recipes, both FedAvg over the 4 hospitals:

* logistic: exactly benchmarks/privacy.py's settings (the accuracy-against-ε table), logistic model;
* overfit MLP: the same settings but an MLP with two hidden layers of 256 units and 20 local epochs
  per round, chosen to memorise its training patients so that there is leakage for DP to remove.

Training seed = audit seed = 0..seeds-1; 4 shadow federations per audit. Settings fixed in advance.

    python benchmarks/membership.py [--seeds 5] [--workers 2] [--shadows 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from privacy import BUDGETS, SETTINGS  # noqa: E402  (the accuracy-against-ε recipe, reused as is)

import fedcare  # noqa: E402
from fedcare.interfaces.audit import audit_membership  # noqa: E402

RECIPES = {
    "logistic": dict(SETTINGS),
    "overfit MLP": {**SETTINGS, "model": "mlp", "hidden": [256, 256], "local_epochs": 20},
}


def one(job: tuple) -> dict:
    """Simulate one (recipe, ε, seed), audit its global model, keep the figures the table needs."""
    recipe, eps, seed, shadows, out = job
    started = time.perf_counter()
    run = fedcare.simulate(dp_epsilon=eps, seed=seed, out=out, **RECIPES[recipe])
    result = audit_membership(out, shadows=shadows, seed=seed, model="global")
    loss, shadow = result["attacks"]["loss_threshold"]["global"], result["attacks"]["shadow"]["global"]
    return {"recipe": recipe, "epsilon_budget": eps, "seed": seed,
            "accuracy": run.summary["federated"]["mean"]["accuracy"],
            "epsilon_spent": run.summary["privacy"]["epsilon"],
            "loss_auc": loss["auc"], "loss_advantage": loss["advantage"],
            "loss_worst_site": loss["worst_site"]["site_id"], "loss_worst_auc": loss["worst_site"]["auc"],
            "shadow_auc": shadow["auc"], "shadow_worst_site": shadow["worst_site"]["site_id"],
            "shadow_worst_auc": shadow["worst_site"]["auc"],
            "members": loss["members"], "non_members": loss["non_members"], "shadow_non_members": shadow["non_members"],
            "seconds": round(time.perf_counter() - started, 1)}


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(rows: list[dict]) -> str:
    lines = ["| recipe | ε budget | mean per-site accuracy | loss-threshold AUC | loss-threshold advantage | "
             "worst-site loss AUC | shadow AUC | worst-site shadow AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for recipe in RECIPES:
        for eps in BUDGETS:
            cell = [r for r in rows if r["recipe"] == recipe and r["epsilon_budget"] == eps]
            if not cell:
                continue
            col = {k: [r[k] for r in cell] for k in ("accuracy", "loss_auc", "loss_advantage", "loss_worst_auc",
                                                      "shadow_auc", "shadow_worst_auc")}
            lines.append(f"| {recipe} | {'∞ (no DP)' if eps is None else eps} | {_ms(col['accuracy'])} | "
                         f"{_ms(col['loss_auc'])} | {_ms(col['loss_advantage'])} | {_ms(col['loss_worst_auc'])} | "
                         f"{_ms(col['shadow_auc'])} | {_ms(col['shadow_worst_auc'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp()
    # the slowest jobs (DP-SGD on the MLP) first, so the two workers finish together
    jobs = [(recipe, eps, seed, args.shadows, f"{scratch}/{recipe.replace(' ', '-')}-{eps}-{seed}")
            for recipe in reversed(RECIPES) for eps in reversed(BUDGETS) for seed in range(args.seeds)]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, jobs))
    wall = time.perf_counter() - started
    text = table(rows)
    print(text)
    print(f"{len(rows)} runs, {args.seeds} seeds, {args.shadows} shadows, {args.workers} workers, {wall:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "membership.md").write_text(text + "\n")
    record = {"seeds": args.seeds, "shadows": args.shadows, "wall_seconds": round(wall, 1), "runs": rows}
    (args.out / "membership.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
