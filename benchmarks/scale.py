"""Scale: `fedcare.simulate` (each backend) against a plain PyTorch loop, from 10 to 10,000 sites.

Workload (issue #17, the same as Flower's benchmark and benchmarks/overhead.py): a made-up two-class
problem, 500 rows per site, 20 features, MLP 20→32→2, FedAvg, 1 local epoch of minibatch SGD
(batch 16, lr 0.05), every site evaluated on its test split after every round, at 10×20, 100×5,
1,000×2 and 10,000×1 sites × rounds. One CSV per case, with a site column, written once.

Both sides start from that CSV and end with a trained model, so both are timed end to end:
- **plain**: what a researcher writes by hand: pandas reads the CSV, each site is split with
  scikit-learn as fedcare splits it (test 0.34, seed 43, stratified), features are standardised with
  the pooled training mean and std, then FedAvg in PyTorch with fedcare's shuffling seeds.
- **fedcare**: `fedcare.simulate` at its defaults (baselines off, like the plain loop): the CSV read
  and typed, the federated preparation, the rounds with every message serialized and
  validated, four metrics per site per round, a checkpoint every round, the run folder. The report's
  matplotlib figures are left out (FEDCARE_REPORT_FIGURES=0; RESULTS §15 times them) unless
  `--figures`: the plain loop draws none.
The parent checks that both end with the same global model (within float32 rounding): the same
arithmetic. Every run is its own subprocess (so a peak is that run's), the runs alternate within
each repeat, and wall time includes starting Python and the imports. Peak memory is the largest
resident size of the run's process tree, sampled every 0.1 s, or the process's own ru_maxrss if
larger. CPU seconds are user + system of the run and its children.

    python benchmarks/scale.py [--cases 10x20,100x5,1000x2,10000x1] [--repeats 3]
                               [--backends in-process[,processes,...]] [--workers 2] [--also OTHER/src]
                               [--figures]

`--backends` takes any name `fedcare.simulate(..., backend=NAME, workers=N)` accepts (NAME+batched adds
`batched=True`); a name this fedcare does not know is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROWS, FEATURES, HIDDEN, BATCH, LR, SEED, SPLIT_SEED, TEST_FRACTION = 500, 20, 32, 16, 0.05, 0, 43, 0.34
UNKNOWN_BACKEND = 3  # a child's exit code: this fedcare has no such backend


# ----- the data -------------------------------------------------------------------------------------


def make_csv(path: Path, sites: int) -> None:
    """Sites with their own feature shifts around one linear rule (timing only: no claim on accuracy).
    Numbers written as '%.6g', a batch of sites at a time (10,000 sites are 5 million rows)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES)
    names = [f"f{i}" for i in range(FEATURES)]
    with open(path, "w") as out:
        out.write(",".join([*names, "site", "y"]) + "\n")
        for first in range(0, sites, 100):
            parts = []
            for s in range(first, min(first + 100, sites)):
                x = rng.normal(loc=rng.normal(scale=0.5, size=FEATURES), size=(ROWS, FEATURES))
                y = (x @ w + rng.normal(scale=2.0, size=ROWS) > 0).astype(int)
                parts.append(pd.DataFrame(x, columns=names).assign(site=f"site{s:05d}", y=y))
            pd.concat(parts).to_csv(out, header=False, index=False, float_format="%.6g", lineterminator="\n")


# ----- the runs (each in its own subprocess) ----------------------------------------------------------


def run_plain(csv: Path, rounds: int, out: Path) -> None:
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(csv)
    features = [f"f{i}" for i in range(FEATURES)]
    sites = []
    for _, rows in frame.groupby("site", sort=False):
        x, y = rows[features].to_numpy(np.float64), rows["y"].to_numpy(np.int64)
        train, test = train_test_split(np.arange(len(y)), test_size=1 - round(1 - TEST_FRACTION, 12),
                                       train_size=round(1 - TEST_FRACTION, 12), random_state=SPLIT_SEED,
                                       shuffle=True, stratify=y)
        sites.append((x[train], y[train], x[test], y[test]))
    pooled = np.concatenate([s[0] for s in sites])
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    data = [(torch.as_tensor(((xt - mean) / std).astype(np.float32)), torch.as_tensor(yt),
             torch.as_tensor(((xs - mean) / std).astype(np.float32)), ys) for xt, yt, xs, ys in sites]
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 2))
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for rnd in range(1, rounds + 1):
        total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        n_total = 0
        for i, (x, y, _, _) in enumerate(data):
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=LR)
            seed = int(np.random.SeedSequence([SEED, rnd, i]).generate_state(1)[0])  # fedcare's site_seed
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(y), BATCH):
                idx = order[start:start + BATCH]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                total[k] += len(y) * (global_state[k] - v).double()
            n_total += len(y)
        global_state = {k: global_state[k] - (total[k] / n_total).float() for k in global_state}
        model.load_state_dict(global_state)
        with torch.no_grad():
            for _, _, xs, ys in data:
                float(np.mean(model(xs).argmax(1).numpy() == ys))
    np.savez(out, **{k: v.numpy() for k, v in global_state.items()})


def run_fedcare(csv: Path, rounds: int, out: Path, backend: str, workers: int) -> None:
    import numpy as np

    import fedcare
    from fedcare.core.errors import ConfigError

    cfg = {"data": [str(csv)], "site": "site", "label": "y", "task": "multiclass", "model": "mlp",
           "hidden": [HIDDEN], "rounds": rounds, "local_epochs": 1, "batch_size": BATCH, "lr": LR, "seed": SEED,
           "baselines": False, "out": str(out.with_suffix(""))}
    backend, _, batched = backend.partition("+")  # processes+batched: the workers train their sites batched
    hosts = {} if backend == "in-process" else {"workers": workers}  # the in-process backend is one process
    try:
        run = fedcare.simulate(cfg, backend=backend, **hosts, **({"batched": True} if batched else {}))
    except ConfigError as exc:
        if "backend" not in str(exc) and "batched" not in str(exc):
            raise
        if backend != "in-process" or batched:  # no backends in this fedcare: only its one in-process loop
            print(f"fedcare has no backend '{backend}': {exc}", file=sys.stderr)
            sys.exit(UNKNOWN_BACKEND)
        run = fedcare.simulate(cfg)
    np.savez(out, **run.global_params)


def child_main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    out = Path(args.out)
    if args.child == "plain":
        run_plain(Path(args.csv), args.rounds, out)
    else:
        run_fedcare(Path(args.csv), args.rounds, out, args.child, args.workers)
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"inner_s": time.perf_counter() - started,
                      "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "maxrss_mb": max(me.ru_maxrss, kids.ru_maxrss) / 1024}))


# ----- the parent: runs, samples memory, checks, prints ------------------------------------------------


def tree_rss_mb(root: int) -> float:
    """Resident memory of `root` and every process below it (from /proc), in MB."""
    parents, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        parents[int(entry)] = int(fields["PPid"])
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    tree, grew = {root}, True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(rss.get(p, 0.0) for p in tree)


def measure(runner: str, csv: Path, rounds: int, out: Path, workers: int, cap_mb: float,
            figures: bool = False) -> dict | None:
    """One run in its own process; `runner` is plain, a backend, or SRC:backend (fedcare from SRC)."""
    src, _, child = runner.rpartition(":")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", child, "--csv", str(csv), "--rounds",
           str(rounds), "--out", str(out), "--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"PYTHONPATH": src} if src else {}),
           **({} if figures else {"FEDCARE_REPORT_FIGURES": "0"})}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(proc.pid))
            if peak[0] > cap_mb:  # the machine is shared: stop the run rather than swap others out
                os.killpg(proc.pid, 9)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode == UNKNOWN_BACKEND:
        print(f"skipped backend '{runner}': {stderr.strip().splitlines()[-1]}")
        return None
    if peak[0] > cap_mb:
        print(f"  {runner} stopped after {wall:.0f} s: its memory passed --memory-cap-mb {cap_mb:.0f}")
        return {"wall_s": float("nan"), "cpu_s": float("nan"), "peak_mb": peak[0], "stopped": True}
    if proc.returncode != 0:
        raise SystemExit(f"{runner} failed:\n{stderr}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "cpu_s": report["cpu_s"], "peak_mb": max(peak[0], report["maxrss_mb"])}


def same_model(a: Path, b: Path) -> float:
    """The largest absolute difference between two saved global models (same names)."""
    import numpy as np

    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files), (x.files, y.files)
        return max(float(np.max(np.abs(x[k] - y[k]))) for k in x.files)


def compile_fedcare(srcs: list[str | None]) -> None:
    """Byte-compile each measured fedcare tree once, as `pip install` does for an installed package: a
    source tree imported with PYTHONDONTWRITEBYTECODE set would otherwise compile its modules again
    in every run (about 0.4 CPU s), a cost no installed copy pays and the plain loop does not have."""
    import compileall
    import importlib.util

    for src in srcs:
        folder = Path(src) / "fedcare" if src else Path(importlib.util.find_spec("fedcare").origin).parent
        compileall.compile_dir(str(folder), quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="10x20,100x5,1000x2,10000x1", help="sites x rounds, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="in-process", help="comma-separated fedcare backends")
    parser.add_argument("--also", default=None, metavar="SRC",
                        help="also time the in-process run of the fedcare in SRC (a src/ folder of another tree)")
    parser.add_argument("--workers", type=int, default=2, help="workers for a backend that takes them")
    parser.add_argument("--data-dir", default=None, help="where the CSVs are kept between runs (default: temp)")
    parser.add_argument("--memory-cap-mb", type=float, default=8000,
                        help="stop a run whose processes pass this much resident memory")
    parser.add_argument("--json", default=None, help="write every measurement to this file")
    parser.add_argument("--figures", action="store_true", help="let fedcare draw its report's figures")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--csv", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    import torch

    folder = Path(args.data_dir or tempfile.mkdtemp(prefix="fedcare-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    runners = ["plain", *[b.strip() for b in args.backends.split(",") if b.strip()]]
    if args.also:
        runners.append(f"{Path(args.also).resolve()}:in-process")
    compile_fedcare([None, *([str(Path(args.also).resolve())] if args.also else [])])
    results: dict[str, dict[str, list[dict]]] = {}
    print(f"torch {torch.__version__}, OMP_NUM_THREADS=1, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the start; {args.repeats} repeats, runs alternating within each")
    for case in args.cases.split(","):
        sites, rounds = (int(v) for v in case.lower().split("x"))
        csv = folder / f"scale-{sites}.csv"
        if not csv.is_file():
            make_csv(csv, sites)
        results[case] = {r: [] for r in runners}
        for repeat in range(args.repeats):
            for runner in list(runners):
                out = folder / f"{runner.replace('/', '_').replace(':', '_')}-{case}-{repeat}.npz"
                measured = measure(runner, csv, rounds, out, args.workers, args.memory_cap_mb, args.figures)
                if measured is None:
                    runners.remove(runner)
                    del results[case][runner]
                    continue
                if runner != "plain" and not measured.get("stopped"):
                    measured["max_param_diff"] = same_model(out, folder / f"plain-{case}-{repeat}.npz")
                results[case][runner].append(measured)
                print(f"  {case} repeat {repeat + 1} {runner}: " + ", ".join(f"{k} {v:.4g}" for k, v in measured.items()),
                      flush=True)
    print("\n| sites × rounds | run | wall s (median, min–max) | wall ratio to plain | CPU s | CPU ratio | "
          "peak MB | largest param difference to plain |")
    print("|---|---|---|---|---|---|---|---|")
    for case, by_runner in results.items():
        plain = statistics.median(m["wall_s"] for m in by_runner["plain"])
        plain_cpu = statistics.median(m["cpu_s"] for m in by_runner["plain"])
        for runner, runs in by_runner.items():
            walls = [m["wall_s"] for m in runs]
            ratios = [m["wall_s"] / p["wall_s"] for m, p in zip(runs, by_runner["plain"])]
            diff = max((m.get("max_param_diff", 0.0) for m in runs), default=0.0)
            src, _, child = runner.rpartition(":")
            label = f"{child} ({Path(src).parent.name})" if src else runner
            print(f"| {case} | {label} | {statistics.median(walls):.2f} ({min(walls):.2f}–{max(walls):.2f}) | "
                  f"{statistics.median(walls) / plain:.2f}× (paired {min(ratios):.2f}–{max(ratios):.2f}) | "
                  f"{statistics.median(m['cpu_s'] for m in runs):.1f} | "
                  f"{statistics.median(m['cpu_s'] for m in runs) / plain_cpu:.2f}× | "
                  f"{max(m['peak_mb'] for m in runs):.0f} | {'—' if runner == 'plain' else f'{diff:.1e}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
