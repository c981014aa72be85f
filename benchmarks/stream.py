"""Streams: frozen, continued and retrained replayed over a real cohort in time order.

SurvSet's Dialysis (Sa Carvalho et al. 2003): 6,805 hemodialysis patients of the federally funded
clinics of Rio de Janeiro State; `begin` is the month treatment began (1 = January 1998, the study
ends in month 44); the sites are the real centres (those with at least MIN_PATIENTS patients); the
task is survival (time to death, censored), scored by the C-index of each window's new patients under
the previous window's model (prequential). Default settings throughout (FedAvg, lr 0.05, one local
epoch, the linear Cox model) except the ones named in SETTINGS (a 20 % validation split at each site,
which continued's per-window stop reads) and the continued strategy's budget: up to 25 rounds per
window, stopped after 3 without gain in the validation Cox loss (the mean over sites of
`neg_partial_loglik`; `--window-patience 0` for a fixed number of rounds); with `--window-lrs`,
continued trains each window once per learning rate from the same warm start and keeps the try with
the best validation Cox loss (every try's rounds counted). Nothing is tuned on the prequential scores.

    python benchmarks/stream.py [--seeds 3] [--windows 4] [--replay-windows N]
                                [--rounds-per-window 25] [--window-patience 3]
                                [--window-lrs 0.05 0.2 0.8]

Writes benchmarks/results/stream.md (stream-replayN.md with --replay-windows, stream-fixedN.md with
--window-patience 0, a -lrs suffix with --window-lrs; the tables of RESULTS §17) and stream.json (every run's `stream` and `drift`
blocks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import fedcare

MIN_PATIENTS = 150
SETTINGS = dict(time="time", event="event", site="center", categorical=["disease"], time_column="begin",
                rounds=50, val_fraction=0.2)
WINDOW_METRIC = "neg_partial_loglik"  # what continued's per-window stop reads: the validation Cox loss
STRATEGIES = ("frozen", "continued", "retrained")
OUT = Path(__file__).parent / "results"


def cohort(folder: Path) -> tuple[Path, int, int]:
    """The Dialysis table as a CSV, its centres of MIN_PATIENTS+ patients (count, patients)."""
    from SurvSet.data import SurvLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        frame = SurvLoader().load_dataset("Dialysis")["df"]
    frame = frame.rename(columns=lambda c: c.removeprefix("num_").removeprefix("fac_")).drop(columns=["pid"])
    sizes = frame["center"].value_counts()
    frame = frame[frame["center"].isin(sizes[sizes >= MIN_PATIENTS].index)]
    path = folder / "dialysis.csv"
    frame.to_csv(path, index=False)
    return path, int((sizes >= MIN_PATIENTS).sum()), len(frame)


def one(job: tuple) -> dict:
    path, windows, replay, per_window, patience, lrs, seed, out = job
    run = fedcare.simulate(data=[str(path)], windows=windows, replay_windows=replay, rounds_per_window=per_window,
                           window_patience=patience, window_metric=WINDOW_METRIC if patience else None,
                           window_lrs=lrs, seed=seed, out=out, **SETTINGS)
    return {"seed": seed, "stream": run.summary["stream"], "drift": run.summary["drift"],
            "wall_seconds": run.summary["wall_seconds"]}


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _range(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{statistics.mean(values):.0f}" + (f" ({low}–{high})" if low != high else "")


def tables(results: list[dict], sites: int, patients: int, windows: int) -> str:
    first = results[0]["stream"]
    replay = first["replay_windows"]
    stop = (f", stopped after {first['window_patience']} without gain in validation {first['window_metric']}"
            if first["window_patience"] else "")
    if first["window_lrs"]:
        stop += f", at each learning rate of {first['window_lrs']} (the best on validation kept)"
    lines = [(f"Dialysis, {sites} centres ({patients} patients), {windows} windows of `begin`, "
              f"{'all rows kept' if replay is None else f'sites keep their last {replay} window(s)'}, "
              f"continued: up to {first['rounds_per_window']} rounds per window{stop}, "
              f"{len(results)} seeds; prequential C-index (mean over centres), mean ± sd across seeds"), "",
             "| window | months | " + " | ".join(STRATEGIES) + " | continued − retrained |", "|---|---|---|---|---|---|"]
    for k, w in enumerate(first["windows"][1:], start=1):
        per = {s: [r["stream"]["windows"][k]["mean"][s] for r in results] for s in STRATEGIES}
        gap = [c - r for c, r in zip(per["continued"], per["retrained"])]
        lines.append(f"| {w['window']} | {w['from']}–{w['to']} | " + " | ".join(_ms(per[s]) for s in STRATEGIES)
                     + f" | {_ms(gap)} |")
    totals = {s: [r["stream"]["totals"][s]["mean_prequential"] for r in results] for s in STRATEGIES}
    gap = [c - r for c, r in zip(totals["continued"], totals["retrained"])]
    lines.append("| windows 2+ | | " + " | ".join(_ms(totals[s]) for s in STRATEGIES) + f" | {_ms(gap)} |")
    lines += ["", "Cost, mean over seeds (min–max):", "",
              "| strategy | rounds (all windows) | MB sent (all windows) | rounds in window 2, 3, 4 … |", "|---|---|---|---|"]
    for s in STRATEGIES:
        rounds = [r["stream"]["totals"][s]["rounds"] for r in results]
        mb = statistics.mean(r["stream"]["totals"][s]["bytes"] for r in results) / 1e6
        later = [_range([r["stream"]["windows"][k]["rounds"][s] for r in results]) for k in range(1, len(first["windows"]))]
        lines.append(f"| {s} | {_range(rounds)} | {mb:.2f} | {', '.join(later)} |")
    worst = {s: [min(v["prequential"][s] for v in r["stream"]["windows"][k]["sites"].values()
                     if v.get("prequential", {}).get(s) is not None)
                 for r in results for k in range(1, len(r["stream"]["windows"]))] for s in STRATEGIES}
    if first["window_lrs"]:
        kept = [" ".join(str(w["continued_lr"]) for w in r["stream"]["windows"][1:]) for r in results]
        lines += ["", "Continued's learning rate kept in windows 2+ (per seed): " + "; ".join(kept)]
    lines += ["", "Worst centre per window (min over centres, pooled over windows 2+ and seeds): "
              + ", ".join(f"{s} {_ms(worst[s])}" for s in STRATEGIES)]
    drift = results[0]["drift"]
    notices = [f"w{n['window']} {n['site_id']} ({'+'.join(n['tests'])}: {', '.join(n['shifted']) or n['metric']})"
               for n in drift["notices"]]
    lines += ["", (f"Drift notices (seed {results[0]['seed']}, continued model): {len(notices)} — {'; '.join(notices)}. "
                   f"Metric drops not judged (fewer than {drift['min_rows']} scored rows on a side, or no standard error): "
                   f"{len(drift['metric_not_judged'])} of {len(first['windows'][1:]) * sites} checks.")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--replay-windows", type=int, default=None, help="sites keep only their last N windows")
    parser.add_argument("--rounds-per-window", type=int, default=25, help="continued: at most this many rounds")
    parser.add_argument("--window-patience", type=int, default=3,
                        help="continued: stop a window after this many rounds without validation gain (0: never)")
    parser.add_argument("--window-lrs", type=float, nargs="+", default=None,
                        help="continued: train each window at each of these learning rates, keep the best on validation")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    path, sites, patients = cohort(scratch)
    patience = args.window_patience or None
    jobs = [(path, args.windows, args.replay_windows, args.rounds_per_window, patience, args.window_lrs, seed,
             str(scratch / f"seed{seed}")) for seed in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(one, jobs))
    text = tables(results, sites, patients, args.windows)
    OUT.mkdir(exist_ok=True)
    name = "stream" + (f"-replay{args.replay_windows}" if args.replay_windows else "") + (
        "" if patience else f"-fixed{args.rounds_per_window}") + ("-lrs" if args.window_lrs else "")
    (OUT / f"{name}.md").write_text(text)
    (OUT / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
