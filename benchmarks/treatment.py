"""Treatment effects, two ways (RESULTS.md section 10).

1. The CGD trial (128 patients, 13 hospitals, gamma interferon against placebo): the federated AIPW
   risk difference of a serious infection and its interval, beside the pooled estimate and the
   published figure (14/63 against 30/65).
2. Semi-synthetic: the real covariates of the four heart-disease hospitals (their encoded training
   and test rows as fedcare prepares them), a simulated treatment whose propensity depends on age
   differently at each hospital (site-specific confounding) and a continuous outcome whose effect
   varies with age, sex and ST depression. PEHE (root mean squared error of the predicted individual
   effect) and ATE bias on every hospital's test rows for the T-, S- and DR-learners trained
   locally, federated and pooled; 5 seeds (the simulation and the training seed). Nothing is tuned:
   the settings below are fixed.

    python benchmarks/treatment.py [--seeds 5] [--rounds 50] [--patience 5] [--out benchmarks/results/treatment.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

from fedcare.core.config import resolve_config
from fedcare.data import FederatedDataset, SiteData, load_dataset
from fedcare.data.dataset import DataShape
from fedcare.data.examples import ArrayExamples, array
from fedcare.transports.cate import LEARNERS, MODES, Learners
from fedcare.transports.effects import treatment_block

SETTINGS = {"model": "mlp", "hidden": [32], "rounds": 50, "lr": 0.05, "baselines": False}  # the default rounds and lr
# site-specific confounding: P(treated) = sigmoid(offset + slope · age), different at every hospital
CONFOUNDING = {"cleveland": (0.5, 0.5), "hungarian": (-0.5, 1.0), "switzerland": (1.0, -0.5), "va": (-1.0, 0.8)}


def cgd_trial(folder: Path) -> dict:
    from fedcare.data.trials import cgd_frame, published_risk_difference

    path = folder / "cgd.csv"
    cgd_frame().to_csv(path, index=False)
    cfg = resolve_config({"data": [str(path)], "site": "center", "label": "infection", "treatment": "treat",
                              "propensity": 0.5})
    block = treatment_block(load_dataset(cfg.data), cfg.data)
    arm = block["effects"]["rIFN-g"]
    cfg_learned = cfg.replace(propensity=None)
    learned = treatment_block(load_dataset(cfg_learned.data), cfg_learned.data)["effects"]["rIFN-g"]
    dataset = load_dataset(cfg.data)
    models = {name: Learners(cfg.replace(**settings), dataset).ate()["rIFN-g"]
              for name, settings in (("linear", {}), ("mlp", {"model": "mlp", "hidden": [32]}))}
    return {"federated": arm["ate"], "pooled": arm["pooled"], "learned_propensity": learned["ate"],
            "dr_learner_models": models,
            "heterogeneity": arm["heterogeneity"], "published": published_risk_difference(),
            "sites": {s: {k: v.get(k) for k in ("estimate", "ci95", "rows")} for s, v in arm["sites"].items()}}


def truth(x: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(μ0(x), τ(x)) on standardised covariates."""
    c = {n: x[:, names.index(n)] for n in ("age", "sex", "oldpeak", "thalach", "chol")}
    tau = 1.0 + 0.8 * c["age"] - 0.6 * c["sex"] + 0.5 * np.tanh(2 * c["oldpeak"])
    mu0 = 0.5 * c["thalach"] - 0.4 * c["chol"] + 0.3 * c["age"] ** 2 + 0.4 * c["age"]
    return mu0, tau


def semi_synthetic(seed: int, val_fraction: float = 0.0) -> tuple[FederatedDataset, dict[str, np.ndarray]]:
    """The heart-disease sites' encoded rows with a simulated arm and outcome; the true τ on test rows."""
    real = load_dataset(resolve_config({"val_fraction": val_fraction}).data)
    names = real.feature_names
    rng = np.random.default_rng(seed)
    sites, tau_test = [], {}
    for sd in real.sites:
        offset, slope = CONFOUNDING[sd.site_id]
        splits = {}
        for split, ex in sd.splits.items():
            x = array(ex, "tabular").astype(np.float64)
            mu0, tau = truth(x, names) if len(x) else (np.zeros(0), np.zeros(0))
            p = 1 / (1 + np.exp(-(offset + slope * x[:, names.index("age")]))) if len(x) else np.zeros(0)
            t = (rng.random(len(x)) < p).astype(np.int64)
            y = mu0 + t * tau + rng.normal(scale=0.5, size=len(x))
            splits[split] = ArrayExamples({"tabular": x.astype(np.float32), "label": y.astype(np.float32),
                                           "treatment": t})
            if split == "test":
                tau_test[sd.site_id] = tau
        sites.append(SiteData(sd.site_id, splits))
    arms = {"column": "arm", "arms": ["control", "treated"], "control_from": "first in sorted order"}
    shape = DataShape("regression", (), real.shape.inputs)
    return FederatedDataset("heart-semi-synthetic", shape, tuple(sites), {**real.preprocessing, "treatment": arms}), \
        tau_test


def run_semi_synthetic(seeds: int, rounds: int, patience: int | None) -> dict:
    """With `patience`, every model stops early on its validation rows (a fifth of each site's training rows)."""
    rows = []
    stopping = {"patience": patience, "val_fraction": 0.2} if patience else {}
    for seed in range(seeds):
        dataset, tau = semi_synthetic(seed, stopping.get("val_fraction", 0.0))
        cfg = resolve_config(dict(SETTINGS, rounds=rounds, seed=seed, data=["unused.csv"], label="y",
                                  treatment="arm", **stopping))
        learners = Learners(cfg, dataset)
        for learner in LEARNERS:
            for mode in MODES:
                started = time.perf_counter()
                pred = learners.effects(learner, mode)
                for site, t in tau.items():
                    if pred[site] is None:  # a local model diverged: counted, not averaged
                        rows.append({"seed": seed, "learner": learner, "mode": mode, "site": site, "n": len(t),
                                     "pehe": None, "ate_bias": None})
                        continue
                    err = pred[site][:, 0] - t
                    rows.append({"seed": seed, "learner": learner, "mode": mode, "site": site, "n": len(t),
                                 "pehe": float(np.sqrt(np.mean(err ** 2))), "ate_bias": float(err.mean()),
                                 "seconds": time.perf_counter() - started})
                print(f"seed {seed} {learner} {mode}: " + ", ".join(
                    f"{r['site']} {'—' if r['pehe'] is None else format(r['pehe'], '.3f')}" for r in rows if r["seed"] == seed and r["learner"] == learner
                    and r["mode"] == mode), file=sys.stderr)
    return {"settings": {**SETTINGS, "rounds": rounds, **stopping}, "confounding": CONFOUNDING, "rows": rows}


def table(result: dict) -> str:
    failed = [r for r in result["rows"] if r["pehe"] is None]
    rows = [r for r in result["rows"] if r["pehe"] is not None]
    sites = sorted({r["site"] for r in rows}, key=lambda s: -next(r["n"] for r in rows if r["site"] == s))
    lines = ["| learner | model | " + " | ".join(f"PEHE {s} (n={next(r['n'] for r in rows if r['site'] == s)})"
                                               for s in sites) + " | PEHE mean of sites | ATE bias (mean of sites) |"
             " no model (site × seed) |",
             "|---|---|" + "---:|" * (len(sites) + 3)]
    for learner in LEARNERS:
        for mode in MODES:
            mine = [r for r in rows if r["learner"] == learner and r["mode"] == mode]
            cells = []
            for s in sites:
                v = np.array([r["pehe"] for r in mine if r["site"] == s])
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" if len(v) else "—")
            per_seed = [np.mean([r["pehe"] for r in mine if r["seed"] == k]) for k in sorted({r["seed"] for r in mine})]
            bias = [np.mean([r["ate_bias"] for r in mine if r["seed"] == k]) for k in sorted({r["seed"] for r in mine})]
            lines.append(f"| {learner.upper()} | {mode} | " + " | ".join(cells)
                         + f" | {np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1):.3f}"
                         + f" | {np.mean(bias):+.3f} ± {np.std(bias, ddof=1):.3f}"
                         + f" | {sum(r['learner'] == learner and r['mode'] == mode for r in failed)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--patience", type=int, default=None,
                        help="stop each model early on validation rows (a fifth of each site's training rows)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/treatment.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        cgd = cgd_trial(Path(folder))
    synthetic = run_semi_synthetic(args.seeds, args.rounds, args.patience)
    result = {"cgd": cgd, "semi_synthetic": synthetic, "seconds": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    f, p = cgd["federated"], cgd["pooled"]
    print(f"CGD: federated {f['estimate']:+.4f} [{f['ci95'][0]:+.4f}, {f['ci95'][1]:+.4f}]  pooled {p['estimate']:+.4f} "
          f"[{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}]  learned propensity {cgd['learned_propensity']['estimate']:+.4f} "
          f"[{cgd['learned_propensity']['ci95'][0]:+.4f}, {cgd['learned_propensity']['ci95'][1]:+.4f}]  "
          f"published {cgd['published']:+.4f}  Q p={cgd['heterogeneity']['p_value']:.3f}  DR-learner models: "
          + "  ".join(f"{k} {v['estimate']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"
                      for k, v in cgd["dr_learner_models"].items()))
    print(table(synthetic))
    print(f"{result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
