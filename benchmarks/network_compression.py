"""The network benchmark with compression on: round time, coordinator CPU and upload throughput of
the same coordinator with uncompressed and compressed messages, interleaved.

Each run is one `benchmarks/network.py --repeats 1 --no-what-if --no-profile` (the real coordinator,
4 non-training sites over TLS, a 999,920-parameter model; see that script) with the run's
compression flags. A repeat runs every setting once, in an order shuffled per repeat (seeded), so no
setting always meets the machine's load first or last; ratios against the uncompressed run are
paired by repeat. What is compared, per round (round 1 of each run not counted):

* round time: fit task open → next fit task open (the concurrent pass, 4 sites uploading at once);
* the coordinator process's CPU time (user + sys, /proc ticks) and the 4 client threads' CPU;
* one PUT of an update: its time with 4 at once, and alone (the serial pass), and bytes / time, both
  of the bytes on the wire and of the float32 parameters the update stands for (4 bytes each);
* what crossed: one update's bytes and one params download's (the broadcast; the final
  evaluation's full-precision model is not counted).

    PYTHONPATH=src python benchmarks/network_compression.py [--rounds 20] [--repeats 4]

Writes benchmarks/results/network-compression.md (the table) and network-compression.json (each
run's summary and its load average); each run's own tables stay in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
MB = 1e6
#: label -> network.py flags; fixed before any run
SETTINGS = {
    "uncompressed": [],
    "topk:0.01+int8": ["--compress-updates", "topk:0.01+int8"],
    "int8": ["--compress-updates", "int8"],
    "topk:0.01+int8, broadcast int8": ["--compress-updates", "topk:0.01+int8", "--compress-broadcast", "int8"],
}


def one_run(label: str, rounds: int, folder: Path) -> dict:
    """One network.py run of a setting; its summary (times in seconds)."""
    folder.mkdir(parents=True)
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(HERE / "network.py"), "--rounds", str(rounds), "--repeats", "1", "--no-what-if",
           "--no-profile", "--out", str(folder), *SETTINGS[label]]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{label}: network.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    data = json.loads(next(folder.glob("*.json")).read_text())
    conc, serial = ([r for r in run["rounds"] if r["round"] >= 2] for run in data["runs"][:2])
    assert data["runs"][0]["mode"] == "concurrent" and data["runs"][1]["mode"] == "serial"
    alone = [v for r in serial for v in r["uploads"].values()]
    return {"label": label, "load": load, "load_after": os.getloadavg()[0], "update_bytes": data["update_bytes"],
            "download_bytes": data["download_bytes"], "params": data["params"], "rounds": len(conc),
            "round": [r["period"] for r in conc],
            "coordinator_cpu": [r["coordinator_cpu"] for r in conc],
            "clients_cpu": [r["clients_cpu"] for r in conc],
            "fit_transfers": [r["fit_transfers"] for r in conc],
            "evaluate_task": [r["evaluate_task"] for r in conc],
            "put_concurrent": [v for r in conc for v in r["uploads"].values()],
            "put_alone": alone,
            "eval_downloads": [v for r in conc for v in r["eval_downloads"].values()],
            "commit": data["git"]["commit"], "src_uncommitted": data["git"]["src_uncommitted"]}


def _q(xs: list[float], scale: float = 1e3) -> str:
    q1, med, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return f"{scale * med:,.0f} ({scale * q1:,.0f}–{scale * q3:,.0f})"


def table(runs: list[dict]) -> str:
    labels = [s for s in SETTINGS if any(r["label"] == s for r in runs)]
    repeats = sorted({r["repeat"] for r in runs})
    loads = [r["load"] for r in runs]
    lines = [(f"{len(repeats)} repeats × {len(labels)} settings, interleaved (order shuffled per repeat); "
              f"{runs[0]['rounds']} measured rounds a run; 1-minute load average {min(loads):.1f}–{max(loads):.1f} "
              "at the starts of the runs."), "",
             ("| setting | update on the wire | broadcast on the wire | median round ms (IQR) | round vs uncompressed, "
              "paired (median, range) | coordinator CPU ms / round (mean) | coordinator CPU vs uncompressed, paired "
              "| clients' CPU ms / round (mean) | one PUT, 4 at once, median ms | one PUT alone, median ms | "
              "upload alone, median MB/s on the wire | the same as float32 parameters, median MB/s |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {r["repeat"]: r for r in runs if r["label"] == "uncompressed"}

    def paired(rs: list[dict], key: str, f) -> str:
        ratios = [f(r[key]) / f(base[r["repeat"]][key]) for r in rs if r["repeat"] in base]
        return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "—"

    for label in labels:
        rs = [r for r in runs if r["label"] == label]
        pooled = {k: [x for r in rs for x in r[k]] for k in ("round", "coordinator_cpu", "clients_cpu",
                                                              "put_concurrent", "put_alone")}
        size = rs[0]["update_bytes"]
        mbps = [size / MB / t for t in pooled["put_alone"]]
        dense = [4 * rs[0]["params"] / MB / t for t in pooled["put_alone"]]  # what the update stands for
        lines.append(
            f"| {label} | {size / MB:.3f} MB | {rs[0]['download_bytes'] / MB:.3f} MB | {_q(pooled['round'])} | "
            f"{paired(rs, 'round', statistics.median)} | {1e3 * statistics.fmean(pooled['coordinator_cpu']):.0f} | "
            f"{paired(rs, 'coordinator_cpu', statistics.fmean)} | {1e3 * statistics.fmean(pooled['clients_cpu']):.0f} | "
            f"{1e3 * statistics.median(pooled['put_concurrent']):.1f} | {1e3 * statistics.median(pooled['put_alone']):.1f} | "
            f"{statistics.median(mbps):.1f} | {statistics.median(dense):,.0f} |")
    lines += ["", "Median round of each run (ms), by repeat:", ""]
    lines += [f"- {label}: " + ", ".join(f"{1e3 * statistics.median(r['round']):,.0f} (load {r['load']:.1f})"
                                         for r in sorted((r for r in runs if r["label"] == label),
                                                         key=lambda r: r["repeat"])) for label in labels]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per run")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="LABEL")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: write the table from network-compression.json (e.g. of a cut run)")
    args = parser.parse_args()
    if args.report:
        saved = json.loads((OUT / "network-compression.json").read_text())
        write(table(saved["runs"]), saved["rounds"], max(r["repeat"] for r in saved["runs"]) + 1)
        return
    if "uncompressed" not in args.settings:
        parser.error("the uncompressed setting is the reference of every ratio: keep it in --settings")
    runs: list[dict] = []
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedcare-network-compression-") as tmp:
        for k in range(args.repeats):
            order = args.settings[:]
            random.Random(k).shuffle(order)
            for label in order:
                print(f"repeat {k + 1}/{args.repeats}: {label} ...", flush=True)
                run = one_run(label, args.rounds, Path(tmp) / f"{k}-{len(runs)}")
                run["repeat"] = k
                runs.append(run)
                print(f"  median round {1e3 * statistics.median(run['round']):.0f} ms, load {run['load']:.1f}",
                      flush=True)
                # written after every run: a cut benchmark keeps what it measured
                (OUT / "network-compression.json").write_text(json.dumps({"rounds": args.rounds, "runs": runs}))
    write(table(runs), args.rounds, args.repeats)


def write(text: str, rounds: int, repeats: int) -> None:
    command = f"python benchmarks/network_compression.py --rounds {rounds} --repeats {repeats}"
    (OUT / "network-compression.md").write_text(f"<!-- {command} -->\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
