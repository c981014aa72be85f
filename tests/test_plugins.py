"""What the reshaped core promises to the next capabilities: a new task is one registered class and
runs through the same engine, transports and summary; examples read lazily from disk train and
evaluate as in memory, a batch at a time; gene expression is an input of its own."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import fedcare
from conftest import examples, named, run_cli
from fedcare.core.errors import ConfigError, DataError
from fedcare.core.messages import FitRequest
from fedcare.data import DataSpec, load_dataset
from fedcare.data.examples import concat, with_arrays
from fedcare.learning import LocalSite, make_task, register_task
from fedcare.learning.models import LinearModel, get_params


# ----- a task of our own: Poisson regression of counts -------------------------------------------

@register_task
@dataclass(frozen=True)
class Poisson:
    """Counts (visits, admissions): log-rate output, Poisson loss; mean deviance, lower is better."""

    name: ClassVar[str] = "poisson"
    targets: ClassVar[tuple[str, ...]] = ("label",)
    reads: ClassVar[str] = "numbers"
    headline: ClassVar[str] = "deviance"
    higher_is_better: ClassVar[bool] = False
    per_example: ClassVar[bool] = True
    classes: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        return 1

    def target_tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {"label": torch.as_tensor(arrays["label"], dtype=torch.float32)}

    def loss(self, out: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.poisson_nll_loss(out.squeeze(-1), targets["label"], log_input=True)

    def metrics(self, out: torch.Tensor, targets: Mapping[str, np.ndarray]) -> dict[str, float | None]:
        mu = torch.exp(out.squeeze(-1)).double().numpy()
        y = targets["label"].astype(np.float64)
        term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0) - (y - mu)
        return {"deviance": float(2 * np.mean(term)), "rmse": float(np.sqrt(np.mean((y - mu) ** 2)))}


def _counts(tmp_path: Path) -> Path:
    """Three hospitals' visit counts, rising with age: small integers, which on their own would be
    taken for classes (at most 20 distinct values)."""
    rng = np.random.default_rng(4)
    n = 150
    age = rng.normal(0, 1, n)
    visits = np.minimum(rng.poisson(np.exp(0.8 + 0.6 * age)), 19)
    frame = pd.DataFrame({"hospital": np.repeat(["H1", "H2", "H3"], n // 3), "age": age.round(3), "visits": visits})
    assert frame["visits"].nunique() <= 20
    path = tmp_path / "visits.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_registered_task_runs_through_the_same_engine_and_summary(tmp_path):
    path = _counts(tmp_path)
    ds = load_dataset(DataSpec(data=(str(path),), site="hospital", label="visits", task="poisson"))
    assert ds.task == "poisson" and ds.classes == ()
    assert named(ds.sites[0], "train")["label"].dtype == np.float32  # counts as numbers, not class indices
    run = fedcare.simulate(data=[str(path)], site="hospital", label="visits", task="poisson", rounds=30, lr=0.05,
                           out=str(tmp_path / "run"))
    s = run.summary
    assert (s["task"], s["metric"]) == ("poisson", "deviance")
    fed = s["federated"]
    deviances = {site: m["deviance"] for site, m in fed["sites"].items()}
    assert fed["worst_site"]["site_id"] == max(deviances, key=deviances.get)  # lower is better: worst = highest
    initial = fedcare.simulate(data=[str(path)], site="hospital", label="visits", task="poisson", rounds=1, lr=1e-9,
                               baselines=False, out=str(tmp_path / "untrained"))
    assert fed["mean"]["deviance"] < 0.8 * initial.summary["federated"]["mean"]["deviance"]
    assert {"local", "pooled"} <= set(s)
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "test" and "deviance" in r for r in rows)


def test_an_unknown_task_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'poison'.*registered one: poisson"):
        fedcare.simulate(data=[str(_counts(tmp_path))], site="hospital", label="visits", task="poison")


# ----- examples read from disk, a batch at a time ------------------------------------------------

class OnDisk:
    """Named arrays in .npy files, read row by row on demand; records the largest read."""

    def __init__(self, folder: Path, **arrays: np.ndarray) -> None:
        self.paths = {}
        for name, values in arrays.items():
            self.paths[name] = folder / f"{name}.npy"
            np.save(self.paths[name], values)
        self.n = len(next(iter(arrays.values())))
        self.largest = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.paths)

    @property
    def in_memory(self) -> bool:
        return False

    def __len__(self) -> int:
        return self.n

    def take(self, rows: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        rows = np.asarray(rows)
        wanted = list(names or self.names)
        if "tabular" in wanted:  # the input: what must never be read whole
            self.largest = max(self.largest, len(rows))
        return {n: np.array(np.load(self.paths[n], mmap_mode="r")[rows]) for n in wanted}


def _binary(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return {"tabular": x, "label": (x[:, 0] - x[:, 1] > 0).astype(np.float32)}


def _sites(tmp_path: Path, n: int) -> tuple[LocalSite, LocalSite, OnDisk]:
    arrays = _binary(n)
    none = {k: v[:0] for k, v in arrays.items()}
    disk = OnDisk(tmp_path, **arrays)
    task = make_task("binary")
    make = lambda splits: LocalSite("s", task, LinearModel(["tabular"], 4, 1), splits)  # noqa: E731
    memory = make({"train": examples(**arrays), "val": examples(**none), "test": examples(**arrays)})
    lazy = make({"train": disk, "val": examples(**none), "test": disk})
    return memory, lazy, disk


def test_examples_on_disk_train_as_in_memory_reading_one_batch_at_a_time(tmp_path):
    memory, lazy, disk = _sites(tmp_path, 90)
    params = get_params(memory.model)
    request = FitRequest(1, "local_epochs", 3, 0.1, 8, "sgd", seed=5)
    a, b = memory.fit(params, request), lazy.fit(params, request)
    for name in a.grad:
        np.testing.assert_array_equal(a.grad[name], b.grad[name])
    assert a.metrics == b.metrics
    assert 0 < disk.largest <= 8  # never more than a batch of inputs in memory
    assert memory.evaluate(a.grad, ["test"]) == lazy.evaluate(a.grad, ["test"])


def test_a_full_gradient_over_chunks_equals_the_one_in_memory(tmp_path):
    memory, lazy, disk = _sites(tmp_path, 600)  # three evaluation chunks of at most 256 rows
    params = get_params(memory.model)
    request = FitRequest(1, "gradient", 1, 0.1, 8, "sgd", seed=0)
    a, b = memory.fit(params, request), lazy.fit(params, request)
    for name in a.grad:
        np.testing.assert_allclose(a.grad[name], b.grad[name], rtol=1e-5, atol=1e-7)
    assert a.metrics["train_loss"] == pytest.approx(b.metrics["train_loss"], rel=1e-6)
    assert disk.largest == 256
    (tmp_path / "cox").mkdir()
    times = OnDisk(tmp_path / "cox", tabular=np.zeros((600, 4), np.float32), time=np.ones(600, np.float32),
                   event=np.ones(600, np.float32))
    survival = LocalSite("s", make_task("survival"), LinearModel(["tabular"], 4, 1), {"train": times})
    with pytest.raises(ConfigError, match="per-patient loss"):
        survival.fit(params, request)


def test_lazy_examples_stack_and_take_replaced_arrays(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = OnDisk(tmp_path / "a", **_binary(5, 1)), OnDisk(tmp_path / "b", **_binary(7, 2))
    both = concat([one, two])
    assert len(both) == 12 and not both.in_memory
    rows = np.array([11, 0, 6, 4, 5])
    got = both.take(rows)
    whole = {k: np.concatenate([one.take(np.arange(5))[k], two.take(np.arange(7))[k]]) for k in one.names}
    for k in whole:
        np.testing.assert_array_equal(got[k], whole[k][rows])
    flipped = with_arrays(both, label=1 - whole["label"])
    np.testing.assert_array_equal(flipped.take(rows)["label"], 1 - whole["label"][rows])
    np.testing.assert_array_equal(flipped.take(rows)["tabular"], whole["tabular"][rows])


# ----- gene expression as an input of its own ----------------------------------------------------

def _expression(tmp_path: Path, bad: bool = False) -> Path:
    rng = np.random.default_rng(7)
    n = 120
    genes = rng.normal(5, 2, size=(n, 6)).round(3)
    frame = pd.DataFrame(genes, columns=[f"gene_{i}" for i in range(6)]).astype(object)
    frame.insert(0, "hospital", np.repeat(["H1", "H2"], n // 2))
    frame["stage"] = rng.choice(["I", "II", "III"], n)
    frame["age"] = rng.normal(60, 9, n).round(0).astype(object)
    frame["y"] = (genes[:, 0] - genes[:, 1] + rng.normal(0, 1, n) > 0).astype(int)
    frame.loc[[3, 40], "gene_2"] = ""  # missing expression values
    frame.loc[range(5, n, 9), "age"] = ""
    if bad:
        frame.loc[70, "gene_4"] = "n.d."  # the file's 71st data row
    path = tmp_path / "expression.csv"
    frame.to_csv(path, index=False)
    return path


def test_omics_columns_form_an_input_of_their_own(tmp_path):
    spec = DataSpec(data=(str(_expression(tmp_path)),), site="hospital", label="y", omics_columns=("gene_*",))
    ds = load_dataset(spec)
    inputs = ds.shape.inputs
    assert list(inputs) == ["omics", "tabular"]  # in the order of their first column
    assert inputs["omics"].features == tuple(f"gene_{i}" for i in range(6))  # no missing indicator for genes
    assert "age__missing" in inputs["tabular"].features and "stage=II" in inputs["tabular"].features
    assert ds.feature_names == inputs["omics"].features + inputs["tabular"].features
    train = named(ds.sites[0], "train")
    assert train["omics"].shape[1] == 6 and train["omics"].dtype == np.float32
    pooled = np.concatenate([named(s, "train")["omics"] for s in ds.sites])
    complete = [0, 1, 3, 4, 5]  # gene_2 has missing values, imputed with its median
    np.testing.assert_allclose(pooled[:, complete].mean(axis=0), 0.0, atol=1e-5)  # standardised gene by gene
    np.testing.assert_allclose(pooled[:, complete].std(axis=0), 1.0, atol=1e-5)  # on the training rows
    run = fedcare.simulate(data=[str(_expression(tmp_path))], site="hospital", label="y", omics_columns=["gene_*"],
                           rounds=5, out=str(tmp_path / "run"))
    assert run.summary["num_features"] == len(ds.feature_names)
    assert run.global_params["weight"].shape == (1, len(ds.feature_names))


def test_text_in_an_omics_column_is_refused_naming_the_row(tmp_path):
    spec = DataSpec(data=(str(_expression(tmp_path, bad=True)),), site="hospital", label="y",
                    omics_columns=("gene_*",))
    with pytest.raises(DataError, match=r"column 'gene_4' is numeric but row 71 holds 'n.d.'"):
        load_dataset(spec)


def test_omics_patterns_that_match_nothing_are_refused(tmp_path):
    with pytest.raises(DataError, match="--omics-columns probe_\\* matches no feature column"):
        load_dataset(DataSpec(data=(str(_expression(tmp_path)),), site="hospital", label="y",
                              omics_columns=("probe_*",)))


def test_omics_columns_from_the_command_line(tmp_path):
    path = _expression(tmp_path)
    proc = run_cli("simulate", "--data", str(path), "--site", "hospital", "--label", "y", "--omics-columns", "gene_*",
                   "--rounds", "2", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["preprocessing"]["feature_names"][:6] == [f"gene_{i}" for i in range(6)]
    assert not any(f.startswith("gene_") and f.endswith("__missing") for f in summary["preprocessing"]["feature_names"])


# ----- a task from an installed package, for the fedcare command --------------------------------

def test_an_installed_packages_task_is_found_by_the_command(tmp_path):
    """A package declaring `fedcare.tasks` entry points: `fedcare simulate --task poisson` finds it."""
    plugins = tmp_path / "site-packages"
    plugins.mkdir()
    source = Path(__file__).read_text()
    task = source[source.index("@register_task\n"):source.index("def _counts(")]
    (plugins / "visit_counts.py").write_text(
        "from collections.abc import Mapping\nfrom dataclasses import dataclass\nfrom typing import ClassVar\n\n"
        "import numpy as np\nimport torch\nimport torch.nn.functional as F\n\n"
        "from fedcare.learning import register_task\n\n\n" + task)
    info = plugins / "visit_counts-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: visit-counts\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fedcare.tasks]\npoisson = visit_counts:Poisson\n")
    path = _counts(tmp_path)
    proc = run_cli("simulate", "--data", str(path), "--site", "hospital", "--label", "visits", "--task", "poisson",
                   "--rounds", "3", "--no-baselines", "--out", "run", cwd=tmp_path, path=(str(plugins),))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["task"], summary["metric"]) == ("poisson", "deviance")
    unknown = run_cli("simulate", "--data", str(path), "--site", "hospital", "--label", "visits", "--task", "poisson",
                      "--rounds", "1", "--out", "run2", cwd=tmp_path)  # without the package
    assert unknown.returncode == 2 and "unknown task 'poisson'" in unknown.stderr
