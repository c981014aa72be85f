"""Shared helpers for the end-to-end tests: small seeded CSV cohorts and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

# The models here are tiny: torch's intra-op thread pool only adds contention (10-20x slower runs on
# a busy 2-core runner), so the in-process tests and the CLI subprocesses use one thread.
torch.set_num_threads(1)

SRC = str(Path(__file__).resolve().parents[1] / "src")
HEART_SITES = ["cleveland", "hungarian", "switzerland", "va"]


def cohort_frame(task: str = "binary", sites: int = 3, rows_per_site: int = 60, seed: int = 0) -> pd.DataFrame:
    """A hospital cohort: id column, site column, numeric + categorical features, some missing ages."""
    rng = np.random.default_rng(seed)
    n = sites * rows_per_site
    age = rng.normal(55, 12, n).round(0)
    bp = rng.normal(130, 15, n).round(1)
    sex = rng.choice(["F", "M"], n)
    signal = (age - 55) / 12 + (bp - 130) / 15 + np.where(sex == "M", 0.5, -0.5) + rng.normal(0, 0.5, n)
    if task == "binary":
        y: np.ndarray = (signal > 0).astype(int)
    elif task == "multiclass":
        y = np.digitize(signal, [-0.6, 0.6])  # classes 0, 1, 2
    else:
        y = (3.0 * signal + 20.0).round(3)
    age_text = age.astype(int).astype(str).astype(object)
    age_text[rng.choice(n, size=n // 10, replace=False)] = ""  # missing values -> indicator column
    return pd.DataFrame({
        "patient_id": [f"P{i:05d}" for i in range(n)],
        "hospital": np.repeat([f"H{i + 1}" for i in range(sites)], rows_per_site),
        "age": age_text,
        "bp": bp,
        "sex": sex,
        "y": y,
    })


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def cohort_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "cohort.csv", cohort_frame("binary"))


def summary_without_wall(run_dir: Path) -> dict:
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    summary.pop("wall_seconds")
    return summary


def run_cli(*args: str, cwd: Path, path: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m fedcare ...` as a real process; works installed or from the source tree. `path`:
    more folders for its PYTHONPATH (an installed plugin, say)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, *path, env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "80"  # rich sizes its output from COLUMNS when not on a terminal: make it fixed
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "fedcare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def named(site, split: str) -> dict[str, np.ndarray]:
    """A prepared site's named arrays (inputs and targets) of one split."""
    from fedcare.data import array

    examples = site.splits[split]
    return {name: array(examples, name) for name in examples.names}


def examples(**arrays: np.ndarray):
    """In-memory examples from named arrays, e.g. examples(tabular=x, label=y)."""
    from fedcare.data import ArrayExamples

    return ArrayExamples(arrays)


TARGETS = ("label", "time", "event")


def site_x(site, split: str) -> np.ndarray:
    """A prepared site's encoded inputs of one split, side by side in model order (as the linear and
    mlp models see them)."""
    arrays = named(site, split)
    return np.concatenate([a for name, a in arrays.items() if name not in TARGETS], axis=1)


def site_y(site, split: str) -> np.ndarray:
    """A prepared site's encoded labels of one split."""
    return named(site, split)["label"]

# report.html without its matplotlib figures (~1 s a run) in every run of the suite, this process's
# and its subprocesses' alike; the page tests (test_report_pages.py) turn them back on.
os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")

# Generated demo data (synthetic-scans) goes to a cache of the tests' own, never the user's home.
os.environ.setdefault("FEDCARE_CACHE", str(Path(tempfile.gettempdir()) / "fedcare-test-cache"))


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """The folder `name` that `build(folder)` fills, built once per test session: under pytest-xdist the
    first worker to ask builds it in the session's shared folder and the others wait and read it (an
    expensive reference run otherwise trains on every worker). Treat it as read-only: copy it first."""
    if worker_id == "master":
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, above each worker's own
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture
def deployment(tmp_path):
    """`make(config, sites)`: a coordinator and agents on 127.0.0.1 (tests/netutil.py); every process
    the test started is stopped at its end."""
    from netutil import Deployment

    made = []

    def make(config: dict, sites: list[str] = HEART_SITES):
        d = Deployment(tmp_path, sites, config)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
