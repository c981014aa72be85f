"""Framework overhead: `fedcare.simulate` against a plain PyTorch loop doing the same arithmetic.

Setup (issue #2): 10 sites × 500 rows, 20 features, MLP 20→32→2, 20 rounds of FedAvg, 1 local epoch
of minibatch SGD, every site evaluated on its test split after every round. The plain loop uses the
same preprocessed arrays, the same initial weights and the same per-site shuffling seeds, so both
must end with the same global model — the script checks it, which proves the arithmetic is the same.

Two ratios are reported. *Simulation*: fedcare's round engine, simulation transport and sites on
data already loaded (what the plain loop does too), including serialization and validation of every
message and all metrics. *End to end*: `fedcare.simulate` as a user calls it (read the CSV,
federated preprocessing, the run, writing the run folder), against the same plain loop. The runs
alternate in one process, `--repeats` times, after one warm-up each; the ratio of medians is reported.

    python benchmarks/overhead.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import fedcare
from fedcare.core.config import resolve_config
from fedcare.data import array, load_dataset
from fedcare.federation.engine import RoundEngine, site_seed
from fedcare.learning.models import build_model, initial_model
from fedcare.learning.tasks import make_task
from fedcare.transports.simulated import build_federation
from fedcare.transports.simulation import SimulationTransport

SITES, ROWS, FEATURES, ROUNDS = 10, 500, 20, 20


def make_csv(folder: Path) -> Path:
    """A made-up two-class problem with site-specific shifts (timing only; no claim on accuracy)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=FEATURES)
    frames = []
    for s in range(SITES):
        x = rng.normal(loc=rng.normal(scale=0.5, size=FEATURES), size=(ROWS, FEATURES))
        y = (x @ w + rng.normal(scale=2.0, size=ROWS) > 0).astype(int)
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
        frame["site"], frame["y"] = f"site{s:02d}", y
        frames.append(frame)
    path = folder / "synthetic.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def simulation(cfg, dataset) -> tuple[dict[str, np.ndarray], float]:
    """fedcare's engine + simulation transport on loaded data; returns final params and seconds."""
    fed = build_federation(cfg, dataset)
    started = time.perf_counter()
    result = RoundEngine(fed.plan.algorithm, SimulationTransport(fed.sites), fed.plan.settings).run(fed.initial)
    return result.params, time.perf_counter() - started


def plain_loop(cfg, dataset) -> tuple[dict[str, np.ndarray], float]:
    """FedAvg written directly in PyTorch on the same arrays; returns final params and seconds."""
    def tensors(site, split):
        examples = site.splits[split]
        return torch.as_tensor(array(examples, "tabular")), array(examples, "label")

    data = [(*map(torch.as_tensor, tensors(s, "train")), *tensors(s, "test")) for s in dataset.sites]
    task = make_task(dataset.shape)
    fed_model = initial_model(lambda inputs, task: build_model(cfg.model, inputs, task), dataset.shape.inputs, task,
                              cfg.run.seed)
    model = torch.nn.Sequential(*fed_model)  # the same layers and weights, fed a plain tensor
    started = time.perf_counter()
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    for rnd in range(1, ROUNDS + 1):
        total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in global_state.items()}
        n_total = 0
        for i, (x, y, _, _) in enumerate(data):
            model.load_state_dict(global_state)
            opt = torch.optim.SGD(model.parameters(), lr=cfg.training.lr)
            gen = torch.Generator().manual_seed(site_seed(cfg.run.seed, rnd, i))
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), cfg.training.batch_size):
                idx = order[start:start + cfg.training.batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            for k, v in model.state_dict().items():
                total[k] += len(y) * (global_state[k] - v).double()
            n_total += len(y)
        global_state = {k: (global_state[k] - (total[k] / n_total).float()) for k in global_state}
        model.load_state_dict(global_state)
        with torch.no_grad():
            for _, _, xt, yt in data:
                pred = model(xt).argmax(1).numpy()
                float(np.mean(pred == yt))
    return {k: v.numpy() for k, v in global_state.items()}, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    csv = make_csv(folder)
    cfg = resolve_config(dict(data=[str(csv)], site="site", label="y", task="multiclass", model="mlp",
                              hidden=[32], rounds=ROUNDS, local_epochs=1, batch_size=16, lr=0.05,
                              baselines=False, out=str(folder / "run")))
    dataset = load_dataset(cfg.data)
    fedcare.simulate(cfg), simulation(cfg, dataset), plain_loop(cfg, dataset)  # warm-up
    sim_times, e2e_times, plain_times = [], [], []
    for _ in range(args.repeats):
        sim_params, seconds = simulation(cfg, dataset)
        sim_times.append(seconds)
        t0 = time.perf_counter()
        run = fedcare.simulate(cfg)
        e2e_times.append(time.perf_counter() - t0)
        plain_params, seconds = plain_loop(cfg, dataset)
        plain_times.append(seconds)
    for k, v in run.global_params.items():
        np.testing.assert_allclose(v, plain_params[k], rtol=1e-4, atol=1e-6, err_msg=f"{k} differs")
        np.testing.assert_array_equal(v, sim_params[k], err_msg=f"{k} differs")
    plain = statistics.median(plain_times)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} alternating repeats")
    print("| what | median s | min s | max s | ratio to plain (median) |")
    print("|---|---|---|---|---|")
    for name, times in [("plain PyTorch loop", plain_times), ("fedcare simulation (engine + transport + sites)", sim_times),
                        ("fedcare.simulate end to end (CSV → run folder)", e2e_times)]:
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | "
              f"{statistics.median(times) / plain:.2f}x |")
    print("final global params: fedcare equal to the plain loop within float32 rounding (checked)")

if __name__ == "__main__":
    main()
