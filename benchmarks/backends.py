"""Backends side by side: in-process, worker processes, batched sites, Ray, on one workload.

The workload of benchmarks/overhead.py (a made-up two-class problem, 20 features, MLP 20→32→2, 500
rows per site, FedAvg, 1 local epoch of SGD, batch 16), at a few sites×rounds sizes, every site
evaluated every round, no baselines, no checkpoints. Each backend runs `fedcare.simulate` end to
end; `start` is the part spent starting the workers and giving them their sites (open_backend),
`rounds` the rest (loading the data, the rounds, writing the run folder), `steady round` the median
time of a round after the first (from the progress callback). The backends alternate within each
repeat. The script checks that every unbatched backend ends with the in-process backend's global
model bit for bit, and reports how far the batched one is from it.

    python benchmarks/backends.py [--sizes 10x5 100x2] [--repeats 2] [--no-ray]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import fedcare
from fedcare.interfaces import api

FEATURES, ROWS = 20, 500


def make_csv(folder: Path, sites: int) -> Path:
    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES)
    frames = []
    for s in range(sites):
        x = rng.normal(loc=rng.normal(scale=0.5, size=FEATURES), size=(ROWS, FEATURES))
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
        frame["site"], frame["y"] = f"site{s:04d}", (x @ w + rng.normal(scale=2.0, size=ROWS) > 0).astype(int)
        frames.append(frame)
    path = folder / f"synthetic-{sites}.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


class StartClock:
    """Times open_backend inside fedcare.simulate (worker start and sending them their sites)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._open = api.open_backend

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        backend = self._open(*args, **kwargs)
        self.seconds = time.perf_counter() - t
        return backend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["10x5", "100x2"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    backends = {"in-process": {}, "processes, 2 workers": dict(backend="processes", workers=2),
                "processes, 1 worker, batched": dict(backend="processes", workers=1, batched=True),
                "processes, 2 workers, batched": dict(backend="processes", workers=2, batched=True)}
    if not args.no_ray and importlib.util.find_spec("ray"):
        backends["ray (local, 2 workers)"] = dict(backend="ray", workers=2)
    clock = StartClock()
    api.open_backend = clock
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; {args.repeats} alternating repeats")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            sites, rounds = map(int, size.split("x"))
            csv = make_csv(Path(tmp), sites)
            base = dict(data=[str(csv)], site="site", label="y", model="mlp", hidden=[32], rounds=rounds,
                        optimizer="sgd", lr=0.05, batch_size=16, local_epochs=1, baselines=False,
                        checkpoint_every=0, out=str(Path(tmp) / "run"))
            times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in backends}
            finals: dict[str, dict] = {}
            for _ in range(args.repeats):
                for name, extra in backends.items():
                    stamps: list[float] = []
                    t = time.perf_counter()
                    run = fedcare.simulate(**base, **extra,
                                           progress=lambda _, __, s=stamps: s.append(time.perf_counter()))
                    wall = time.perf_counter() - t
                    steady = statistics.median(np.diff(stamps)) if len(stamps) > 1 else float("nan")
                    times[name].append((wall, clock.seconds, steady))
                    finals[name] = run.global_params
            ref = finals["in-process"]
            ref_wall = statistics.median(w for w, _, _ in times["in-process"])
            print(f"\n{sites} sites × {rounds} rounds")
            print("| backend | wall s (median) | min–max | start s | rounds s | steady round s | ratio to in-process "
                  "| final model |")
            print("|---|---|---|---|---|---|---|---|")
            for name, samples in times.items():
                walls = [w for w, _, _ in samples]
                start = statistics.median(s for _, s, _ in samples)
                steady = statistics.median(r for _, _, r in samples)
                wall = statistics.median(walls)
                diff = max(float(np.max(np.abs(ref[k] - finals[name][k]))) for k in ref)
                same = "identical" if diff == 0 else f"max abs diff {diff:.1e}"
                print(f"| {name} | {wall:.2f} | {min(walls):.2f}–{max(walls):.2f} | {start:.2f} | "
                      f"{wall - start:.2f} | {steady:.3f} | {wall / ref_wall:.2f}× | {same} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
