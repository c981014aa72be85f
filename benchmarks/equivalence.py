"""Same config, same result: re-run a fixed set of federations and compare them with stored ones.

Each case is a config (the benchmark configs in benchmarks/configs/, the default run, and one run
for each algorithm, personalization, task kind, data layout and privacy setting). For every case the
script keeps what a run folder says about its result: summary.json without `wall_seconds`, and the
SHA-256 of metrics.jsonl and of the final global params. `--write` stores them in
benchmarks/results/equivalence.json; `--check` (the default) runs the cases again and names every
case whose summary, metric rows or model differ, so a change to fedcare's internals that should not
change any result can prove it did not.

    python benchmarks/equivalence.py --check            # all cases (about 2 minutes on 2 cores)
    python benchmarks/equivalence.py --check --only default heart
    python benchmarks/equivalence.py --write            # record the current results

The CSV cohorts are generated here from fixed seeds, so every machine runs on the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
STORED = HERE / "results" / "equivalence.json"


def cohort(task: str, sites: int = 3, rows_per_site: int = 60, seed: int = 0) -> pd.DataFrame:
    """A made-up hospital cohort: id and site columns, numeric and categorical features, missing ages."""
    rng = np.random.default_rng(seed)
    n = sites * rows_per_site
    age = rng.normal(55, 12, n).round(0)
    bp = rng.normal(130, 15, n).round(1)
    sex = rng.choice(["F", "M"], n)
    signal = (age - 55) / 12 + (bp - 130) / 15 + np.where(sex == "M", 0.5, -0.5) + rng.normal(0, 0.5, n)
    frame = pd.DataFrame({"patient_id": [f"P{i:05d}" for i in range(n)],
                          "hospital": np.repeat([f"H{i + 1}" for i in range(sites)], rows_per_site)})
    age_text = age.astype(int).astype(str).astype(object)
    age_text[rng.choice(n, size=n // 10, replace=False)] = ""
    frame["age"], frame["bp"], frame["sex"] = age_text, bp, sex
    if task == "binary":
        frame["y"] = (signal > 0).astype(int)
    elif task == "multiclass":
        frame["y"] = np.digitize(signal, [-0.6, 0.6])
    elif task == "regression":
        frame["y"] = (3.0 * signal + 20.0).round(3)
    else:  # survival: exponential times with a hazard rising with the signal, random censoring
        time_ = rng.exponential(12.0 * np.exp(-0.7 * signal)).round(2) + 0.01
        frame["months"], frame["relapsed"] = time_, (rng.random(n) < 0.7).astype(int)
    return frame


def write_files(folder: Path) -> dict[str, str]:
    """The cohorts the CSV cases read; returns name -> path."""
    paths = {}
    for task in ("binary", "multiclass", "regression", "survival"):
        path = folder / f"cohort-{task}.csv"
        cohort(task).to_csv(path, index=False)
        paths[task] = str(path)
    whole = cohort("regression", sites=2, rows_per_site=80, seed=1)
    for site in ("H1", "H2"):
        path = folder / f"{'north' if site == 'H1' else 'south'}.csv"
        whole[whole["hospital"] == site].drop(columns=["hospital"]).to_csv(path, index=False)
        paths[path.stem] = str(path)
    return paths


def cases(files: dict[str, str]) -> dict[str, dict]:
    """Case name -> config values."""
    out: dict[str, dict] = {"default": {}}
    for path in sorted((HERE / "configs").glob("*.yaml")):
        out[path.stem] = yaml.safe_load(path.read_text())
    short = {"rounds": 8}
    mlp = {"model": "mlp", "hidden": [16]}
    for algorithm in ("fedsgd", "fedprox", "scaffold", "cyclic", "fedadam", "fedyogi", "fedadagrad"):
        out[f"heart-{algorithm}"] = {**short, "algorithm": algorithm}
    for personalization in ("finetune", "fedper", "fedrep", "ditto"):
        out[f"heart-mlp-{personalization}"] = {**short, **mlp, "personalization": personalization}
    out["heart-mlp-fedbn"] = {**short, **mlp, "batch_norm": True, "personalization": "fedbn"}
    out["heart-adam-momentum"] = {**short, "optimizer": "adam", "server_momentum": 0.5, "local_epochs": 2}
    out["heart-uniform-weights"] = {**short, "weighting": "uniform", "site_weights": {"switzerland": 0.5}}
    out["heart-fraction"] = {**short, "fraction": 0.5, "min_sites": 2, "seed": 3}
    for rule in ("median", "trimmed-mean", "krum", "centered-clip"):
        out[f"heart-attack-{rule}"] = {**short, "aggregator": rule, "attack": "sign-flip", "attackers": 1,
                                       **({"krum_f": 0, "krum_m": 1} if rule == "krum" else {})}  # 4 sites: f = 0
    out["heart-label-flip-norm-bound"] = {**short, "attack": "label-flip", "norm_bound": 2.0}
    out["heart-nan-attack"] = {**short, "attack": "nan", "attackers": ["va"]}
    out["heart-record-dp"] = {"rounds": 5, "dp_epsilon": 3.0}
    out["heart-site-dp"] = {"rounds": 5, "site_dp_epsilon": 10.0, "site_dp_clip_quantile": 0.5}
    out["heart-secure-site-dp"] = {"rounds": 4, "site_dp_epsilon": 10.0, "secure_aggregation": True,
                                   "secagg_max_dropouts": 1}
    out["heart-secure"] = {"rounds": 4, "secure_aggregation": True}
    out["heart-patience"] = {"rounds": 30, "val_fraction": 0.2, "patience": 3, **mlp}
    out["csv-binary"] = {"data": [files["binary"]], "site": "hospital", "label": "y", "drop": ["patient_id"],
                         "categorical": ["sex"], "rounds": 10, "val_fraction": 0.2}
    out["csv-multiclass-dirichlet"] = {"data": [files["multiclass"]], "label": "y", "drop": ["patient_id", "hospital"],
                                       "partition": "dirichlet", "num_sites": 3, "alpha": 1.0, "rounds": 10, **mlp}
    out["csv-regression-files"] = {"data": [files["north"], files["south"]], "label": "y",
                                   "drop": ["patient_id"], "rounds": 10, "lr": 0.01}
    out["csv-regression-quantity"] = {"data": [files["regression"]], "label": "y",
                                      "drop": ["patient_id", "hospital"], "partition": "quantity", "num_sites": 3,
                                      "rounds": 6, "lr": 0.01}
    out["csv-survival"] = {"data": [files["survival"]], "site": "hospital", "time": "months", "event": "relapsed",
                           "drop": ["patient_id"], "rounds": 10, "lr": 0.01}
    out["csv-survival-iid-mlp"] = {"data": [files["survival"]], "time": "months", "event": "relapsed",
                                   "drop": ["patient_id", "hospital"], "partition": "iid", "num_sites": 2,
                                   "rounds": 6, **mlp}
    out["ovarian-fedper"] = {"dataset": "ovarian-genomics", "rounds": 5, "batch_size": 64, **mlp,
                             "personalization": "fedper"}
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def params_digest(path: Path) -> str:
    """Of the arrays alone (names, dtypes, shapes, bytes), so metadata written beside them may change."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for name, array in sorted(load_file(str(path)).items()):
        h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _portable(summary: dict, folder: Path) -> dict:
    """summary.json without wall_seconds, the scratch folder spelled as <files>."""
    summary.pop("wall_seconds", None)
    return json.loads(json.dumps(summary).replace(str(folder), "<files>"))


def result(values: dict, out: Path, files_dir: Path) -> dict:
    import fedcare

    run = fedcare.simulate({**values, "out": str(out)})
    return {"summary": _portable(json.loads((run.path / "summary.json").read_text()), files_dir),
            "metrics_sha256": digest(run.path / "metrics.jsonl"),
            "global_sha256": params_digest(run.path / "global.safetensors")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"store the results in {STORED.name}")
    mode.add_argument("--check", action="store_true", help="compare with the stored results (default)")
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's notes on orders it skips
    stored = json.loads(STORED.read_text()) if STORED.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        todo = cases(write_files(folder))
        names = args.only or list(todo)
        unknown = [n for n in names if n not in todo]
        if unknown:
            sys.exit(f"unknown case '{unknown[0]}'; cases are: {', '.join(todo)}")
        differ = []
        for name in names:
            started = time.perf_counter()
            got = result(todo[name], folder / "runs" / name, folder)
            took = time.perf_counter() - started
            if args.write:
                stored[name] = got
                print(f"{name}: recorded ({took:.1f} s)")
                continue
            want = stored.get(name)
            same = {part: want is not None and want[part] == got[part] for part in got}
            verdict = "same" if all(same.values()) else "DIFFERENT: " + ", ".join(p for p, ok in same.items() if not ok)
            if want is None:
                verdict = "no stored result"
            print(f"{name}: {verdict} ({took:.1f} s)")
            if verdict != "same":
                differ.append(name)
    if args.write:
        STORED.write_text(json.dumps(dict(sorted(stored.items())), indent=1, sort_keys=True) + "\n")
        print(f"written: {STORED}")
    elif differ:
        sys.exit(f"{len(differ)} of {len(names)} cases differ: {', '.join(differ)}")
    else:
        print(f"all {len(names)} cases give the stored results")


if __name__ == "__main__":
    main()
