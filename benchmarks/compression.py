"""Communication: bytes per round and the final metric under each compression scheme, with and without
error feedback, on heart-disease (logistic and MLP), ovarian-genomics and synthetic-scans.

Every run is `fedcare.simulate` with the dataset's own defaults (data/defaults.py, chosen on
validation rows) and only the compression keys changed (synthetic-scans: 5 rounds, to keep it small).
Bytes are what the run counts (summary.json `communication`: every message's safetensors bytes, as
sent); per round = total / rounds. The metric is the federated model's mean test headline over the
sites (accuracy; C-index for ovarian-genomics survival), at full precision as saved. Nothing here is
tuned: the schemes were fixed before any run. Seeds 0, 1, 2: mean ± sd (n−1).

    python benchmarks/compression.py              # 3 seeds, 4 datasets, 14 schemes: about 20 min on 2 cores
    python benchmarks/compression.py --seeds 0 --datasets heart-logistic   # a quick look
    python benchmarks/compression.py --report     # the tables from compression-runs.jsonl, running nothing

Writes benchmarks/results/compression.md (the table) and compression.json (every run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path

DATASETS = {  # name -> the keys beside the dataset's defaults
    "heart-logistic": {"dataset": "heart-disease", "model": "linear"},
    "heart-mlp": {"dataset": "heart-disease", "model": "mlp"},
    "ovarian-genomics": {"dataset": "ovarian-genomics"},
    "synthetic-scans": {"dataset": "synthetic-scans", "rounds": 5},
}
#: Fixed before any run (never tuned): the quantizers alone, int4 in blocks of 64 (as FLARE's 4-bit),
#: and top-k at three fractions with int8, each without and with error feedback.
_UPDATES = ("fp16", "int8", "int4:64", "topk:0.1+int8", "topk:0.05+int8", "topk:0.01+int8")
SCHEMES = {"none": {}}  # label -> compression keys
SCHEMES |= {u: {"compress_updates": u} for u in _UPDATES}
SCHEMES |= {f"{u} +EF": {"compress_updates": u, "error_feedback": True} for u in _UPDATES}
SCHEMES["topk:0.05+int8 +EF, broadcast int8"] = {"compress_updates": "topk:0.05+int8", "error_feedback": True,
                                                 "compress_broadcast": "int8"}


def run_one(job: tuple[str, str, int]) -> dict:
    dataset, scheme, seed = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")  # each run's report.html figures: CPU, no bytes or metrics
    import fedcare

    with tempfile.TemporaryDirectory() as out:
        run = fedcare.simulate({**DATASETS[dataset], **SCHEMES[scheme], "seed": seed, "baselines": False}, out=out)
    s, c = run.summary, run.summary["communication"]
    return {"dataset": dataset, "scheme": scheme, "seed": seed, "metric": s["metric"], "rounds": s["rounds"],
            "value": s["federated"]["mean"][s["metric"]], "upload": c["upload"] / s["rounds"],
            "broadcast": c["broadcast"] / s["rounds"], "sites": len(s["site_sizes"]),
            "array_bytes": sum(v.nbytes for v in run.global_params.values())}


def _ms(values: list[float], digits: int = 3) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def table(runs: list[dict]) -> tuple[str, dict]:
    lines, verdict = [], {}
    for dataset in DATASETS:
        mine = [r for r in runs if r["dataset"] == dataset]
        if not mine:
            continue
        base = [r for r in mine if r["scheme"] == "none"]
        base_up = statistics.mean(r["upload"] for r in base)
        base_value = statistics.mean(r["value"] for r in base)
        lines += [f"\n**{dataset}** ({mine[0]['metric']}, {mine[0]['rounds']} rounds, {mine[0]['sites']} sites)\n",
                  "| scheme | upload bytes / round | × fewer | broadcast bytes / round | test metric | Δ vs none |",
                  "|---|---:|---:|---:|---:|---:|"]
        sites, arrays = base[0]["sites"], base[0]["array_bytes"]
        lines.insert(len(lines) - 2, f"One uncompressed update: {base_up / sites:,.0f} bytes, of which {arrays:,} are "
                     f"its arrays and {base_up / sites - arrays:,.0f} the safetensors framing (names, shapes, offsets, "
                     "site, round, metrics).\n")
        ok = []
        for scheme in SCHEMES:
            rs = [r for r in mine if r["scheme"] == scheme]
            if not rs:
                continue
            up = statistics.mean(r["upload"] for r in rs)
            value = statistics.mean(r["value"] for r in rs)
            ratio = base_up / up
            if ratio >= 10 and value >= base_value - 0.01:
                ok.append(scheme)
            lines.append(f"| {scheme} | {up:,.0f} | {ratio:.1f} | {statistics.mean(r['broadcast'] for r in rs):,.0f} | "
                         f"{_ms([r['value'] for r in rs])} | {value - base_value:+.3f} |")
        verdict[dataset] = ok
    lines.append("\nSchemes with ≥ 10× fewer upload bytes and a mean test metric within 0.01 of uncompressed: "
                 + "; ".join(f"{d}: {', '.join(v) or 'none'}" for d, v in verdict.items()))
    return "\n".join(lines), verdict


def complete(runs: list[dict], seeds: list[int]) -> list[dict]:
    """The runs of the (dataset, scheme) pairs that have every seed: a mean over fewer is not in the tables."""
    have: dict[tuple[str, str], set[int]] = {}
    for r in runs:
        have.setdefault((r["dataset"], r["scheme"]), set()).add(r["seed"])
    return [r for r in runs if have[r["dataset"], r["scheme"]] >= set(seeds)]


def not_run(runs: list[dict], seeds: list[int]) -> str:
    """What the tables leave out, dataset by dataset: schemes not run, or not for every seed."""
    lines = []
    for dataset in DATASETS:
        missing = []
        for scheme in SCHEMES:
            have = {r["seed"] for r in runs if r["dataset"] == dataset and r["scheme"] == scheme}
            if not have >= set(seeds):
                missing.append(scheme + (f" ({len(have & set(seeds))} of {len(seeds)} seeds)" if have else ""))
        if missing:
            lines.append(f"- {dataset}: {'; '.join(missing)}")  # '; ': a label has a comma
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES), metavar="LABEL",
                        help="a subset of the schemes (labels as in the table; 'none' is always run)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--append", action="store_true", help="keep the runs already in compression-runs.jsonl "
                        "(a cut run goes on where it stopped)")
    parser.add_argument("--report", action="store_true", help="run nothing: write the tables from the runs in "
                        "compression-runs.jsonl (every dataset and scheme, as the runs that wrote them were cut or not)")
    args = parser.parse_args()
    schemes = ["none", *(s for s in args.schemes if s != "none")]
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    log_path = out / "compression-runs.jsonl"
    keep = (args.append or args.report) and log_path.exists()
    runs = [json.loads(line) for line in log_path.read_text().splitlines()] if keep else []
    done = {(r["dataset"], r["scheme"], r["seed"]) for r in runs}
    # scheme by scheme, in the order given, every dataset at each: a cut run has the first schemes everywhere
    jobs = [(d, s, seed) for s in schemes for d in args.datasets for seed in args.seeds if (d, s, seed) not in done]
    if not args.report:
        with multiprocessing.get_context("spawn").Pool(args.workers, maxtasksperchild=4) as pool, \
                open(log_path, "a" if args.append else "w") as log:  # each run as it ends: a cut run keeps its rows
            for run in pool.imap(run_one, jobs, chunksize=1):
                runs.append(run)
                log.write(json.dumps(run) + "\n")
                log.flush()
    text, verdict = table(complete(runs, args.seeds))
    if missing := not_run(runs, args.seeds):
        text += "\n\nNot in the tables (not run, or not for every seed):\n\n" + missing
    (out / "compression.md").write_text(text + "\n")
    (out / "compression.json").write_text(json.dumps({"runs": runs, "meets_target": verdict}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
