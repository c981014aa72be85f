"""Multimodal patients (RESULTS.md §16): the fusion model against a model of each single input, each
local, federated and pooled, per site, over seeds (each seed also draws its own train/test split).

  ovarian          ovarian-genomics (real): clinical (debulking status, `tabular`) and 158 genes
                   (`omics`) for every patient, 4 studies; its dataset defaults (30 rounds, lr 0.01).
  ovarian-missing  the same rows with the genes hidden for 30 % of each study's patients and for
                   all of study-9 (zeros and `omics.present` = 0, as the data layer marks a patient
                   without an input): a simulated missingness pattern on real rows.
  synthetic        synthetic-multimodal and its -missing variant (GENERATED: tabular + omics + image,
                   each carrying one effect of the outcome), 20 rounds.

The single-input models are the same fusion model over that input alone. Both fusion modes run; the
validation rows (val_fraction 0.2, carved from each site's training split) say which is the default.
Nothing is tuned on test rows.

    python benchmarks/multimodal.py --suite ovarian --seeds 5 --out /tmp/mm-ovarian
    python benchmarks/multimodal.py --suite synthetic --seeds 3 --out /tmp/mm-synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")

from fedcare import simulate
from fedcare.data import DataSpec, load_dataset
from fedcare.data.dataset import FederatedDataset, SiteData
from fedcare.data.examples import ArrayExamples, array
from fedcare.learning.fusion import present_name
from fedcare.transports.modalities import only_inputs


def blank_input(dataset: FederatedDataset, name: str, fraction: float, without: tuple[str, ...] = (),
                seed: int = 0) -> FederatedDataset:
    """The dataset with input `name` hidden for a seeded `fraction` of each site's patients and for
    every patient of the sites in `without`: zeros, and `<name>.present` 0.0 for them, 1.0 for the rest."""
    rng = np.random.default_rng(seed)
    sites = []
    for site in dataset.sites:
        splits = {}
        for split, examples in site.splits.items():
            arrays = {n: array(examples, n) for n in examples.names}
            n = len(examples)
            present = (rng.random(n) >= fraction).astype(np.float32) if site.site_id not in without \
                else np.zeros(n, np.float32)
            arrays[name] = arrays[name] * present[:, None]
            arrays[present_name(name)] = present
            splits[split] = ArrayExamples(arrays)
        sites.append(SiteData(site.site_id, splits))
    return replace(dataset, sites=tuple(sites))




def _ovarian(seed: int, missing: bool) -> FederatedDataset:
    data = load_dataset(DataSpec(dataset="ovarian-genomics", split_seed=43 + seed, val_fraction=0.2))
    return blank_input(data, "omics", 0.3, ("study-9",), seed=seed) if missing else data


def _synthetic(seed: int, missing: bool) -> FederatedDataset:
    name = "synthetic-multimodal" + ("-missing" if missing else "")
    return load_dataset(DataSpec(dataset=name, split_seed=43 + seed, val_fraction=0.2))


SUITES = {"ovarian": (("ovarian", _ovarian, False, {}), ("ovarian-missing", _ovarian, True, {})),
          "synthetic": (("synthetic", _synthetic, False, {"rounds": 20}),
                        ("synthetic-missing", _synthetic, True, {"rounds": 20}))}


def one_run(data: FederatedDataset, inputs: tuple[str, ...], fusion: str, seed: int, extra: dict, out: Path) -> dict:
    """Test metrics per site of the federated, local and pooled models, and the mean validation score."""
    dataset = data.name
    started = time.perf_counter()
    simulate({"dataset": dataset, "model": "fusion", "fusion": fusion, "seed": seed, "val_fraction": 0.2,
              "split_seed": 43 + seed, "out": str(out), **extra}, prepared=only_inputs(data, inputs))
    return {"wall_seconds": time.perf_counter() - started, **from_folder(out)}


def from_folder(out: Path) -> dict:
    """A run folder's figures: each model's test metric per site, and the federated model's mean
    validation metric over sites in its last round."""
    s = json.loads((out / "summary.json").read_text())
    metric = s["metric"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r[metric] for r in rows if r["model"] == "federated" and r.get("split") == "val"
            and r["round"] == s["rounds"] and r.get(metric) is not None]
    return {"metric": metric, "val": statistics.fmean(last) if last else None,
            **{model: {sid: m.get(metric) for sid, m in s[model]["sites"].items()}
               for model in ("federated", "local", "pooled")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=list(SUITES), default="ovarian")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variant", action="append", help="run only these of the suite's variants")
    parser.add_argument("--fusion", action="append", choices=("late", "intermediate"),
                        help="the fusion modes to run (default both)")
    parser.add_argument("--rounds", type=int, help="instead of the suite's rounds (a quicker run)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fedcare-multimodal"))
    parser.add_argument("--table", action="store_true", help="only print the table of the run folders in --out")
    args = parser.parse_args()
    if args.table:  # <variant>-<model>-<seed> folders, from this or an interrupted run
        found = []
        for folder in sorted(p for p in args.out.iterdir() if (p / "summary.json").is_file()):
            rest, seed = folder.name.rsplit("-", 1)
            variant = next(v for v, *_ in sorted(SUITES[args.suite], key=lambda v: -len(v[0])) if rest.startswith(v + "-"))
            found.append({"variant": variant, "model": rest[len(variant) + 1:], "seed": int(seed), **from_folder(folder)})
        print(table(found))
        return
    results = []
    for variant, load, missing, extra in SUITES[args.suite]:
        if args.variant and variant not in args.variant:
            continue
        extra = {**extra, **({"rounds": args.rounds} if args.rounds else {})}
        for seed in range(args.seeds):
            data = load(seed, missing)
            inputs = tuple(data.shape.inputs)
            models = {**{f"fused-{mode}": (inputs, mode) for mode in args.fusion or ("late", "intermediate")},
                      **{f"{name}-only": ((name,), "intermediate") for name in inputs}}
            for model, (used, fusion) in models.items():
                row = one_run(data, used, fusion, seed, extra, args.out / f"{variant}-{model}-{seed}")
                results.append({"variant": variant, "model": model, "seed": seed, **row})
                print(json.dumps({k: results[-1][k] for k in ("variant", "model", "seed", "val", "wall_seconds")}),
                      flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))


def table(results: list[dict]) -> str:
    """Markdown: per variant and model, mean ± sd over seeds of each site's test metric and of the
    site mean, for federated, local and pooled; and the mean validation score of the federated model."""
    lines = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        rows = [r for r in results if r["variant"] == variant]
        sites = list(rows[0]["federated"])
        lines += [f"\n**{variant}** ({rows[0]['metric']}, test rows; mean ± sd over {len({r['seed'] for r in rows})} seeds)\n",
                  "| model | training | val (fed) | " + " | ".join(sites) + " | site mean | worst site |",
                  "|---|---|---|" + "---|" * (len(sites) + 2)]
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            for training in ("federated", "local", "pooled"):
                cells = [_ms([r[training][s] for r in mine]) for s in sites]
                means = [statistics.fmean(v for v in r[training].values() if v is not None) for r in mine]
                worst = [min(v for v in r[training].values() if v is not None) for r in mine]
                val = _ms([r["val"] for r in mine]) if training == "federated" else ""
                lines.append(f"| {model} | {training} | {val} | " + " | ".join(cells) + f" | {_ms(means)} | {_ms(worst)} |")
    return "\n".join(lines)


def _ms(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


if __name__ == "__main__":
    main()
