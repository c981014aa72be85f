"""Choose site-level DP's defaults on heart-disease's VALIDATION rows (never its test rows).

Grid over the clip bound C (`site_dp_clip`), the server learning rate and adaptive clipping, at the
budget users ask for most (ε = 10, δ = 1e-5, the default 50 rounds, 4 hospitals, all of them every
round, heart-disease's own defaults for everything else), 3 seeds each (the seed drives the DP noise). Each run keeps 20 % of every site's training
rows for validation; the score is the mean over sites of the validation accuracy of the final model.
The test rows are not looked at here.

    python benchmarks/site_dp_defaults.py            # about 2 minutes on one core
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile

import numpy as np

import fedcare

EPSILON = 10.0
SEEDS = (0, 1, 2)
GRID = {"site_dp_clip": (0.05, 0.1, 0.2, 0.5, 1.0), "server_lr": (0.1, 0.3, 1.0), "site_dp_clip_quantile": (None, 0.5)}


def validation_score(out: str, seed: int, **settings) -> float:
    run = fedcare.simulate(out=out, baselines=False, val_fraction=0.2, seed=seed, site_dp_epsilon=EPSILON,
                           **{k: v for k, v in settings.items() if v is not None})
    return float(run.history[-1].val_score)


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = [validation_score(tmp, s, site_dp_clip=1.0, server_lr=1.0) for s in SEEDS]  # the old defaults
        for values in itertools.product(*GRID.values()):
            settings = dict(zip(GRID, values))
            scores = [validation_score(tmp, s, **settings) for s in SEEDS]
            results.append({**settings, "val_accuracy": float(np.mean(scores)), "sd": float(np.std(scores))})
            print(json.dumps(results[-1]), file=sys.stderr)
    results.sort(key=lambda r: -r["val_accuracy"])
    print(f"reference (C 1.0, server lr 1.0): mean validation accuracy {np.mean(reference):.3f} "
          f"(sd {np.std(reference):.3f} over seeds {SEEDS})")
    print("| site_dp_clip | server_lr | clip quantile | val accuracy (mean ± sd, 3 seeds) |\n|---|---|---|---|")
    for r in results[:8]:
        print(f"| {r['site_dp_clip']} | {r['server_lr']} | {r['site_dp_clip_quantile']} | "
              f"{r['val_accuracy']:.3f} ± {r['sd']:.3f} |")


if __name__ == "__main__":
    main()
