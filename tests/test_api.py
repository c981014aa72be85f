"""End to end through `fedcare.simulate`: the run folder contract, determinism, re-runs from the
written config, the FedSGD = pooled gradient descent identity, plug-ins, weighting and user CSVs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import fedcare
from conftest import HEART_SITES, cohort_frame, site_x, site_y, summary_without_wall, write_csv
from fedcare.core.errors import ConfigError
from fedcare.core.serialization import load_params
from fedcare.data import DataSpec, load_dataset
from fedcare.transports.simulated import build_federation

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "global.safetensors")


def assert_params_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def params_differ(a: dict, b: dict) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def heart_run(tmp_path_factory):
    """One full heart-disease run with both baselines, shared by the read-only checks below."""
    out = tmp_path_factory.mktemp("heart") / "run"
    return fedcare.simulate(out=str(out), rounds=5)


# ----- the run folder ---------------------------------------------------------------------------


def test_run_folder_has_the_four_files(heart_run):
    """Reports and benchmarks read exactly these files; a missing one breaks them."""
    for name in RUN_FILES:
        assert (heart_run.path / name).is_file(), name
    assert not list(heart_run.path.glob(".*.tmp")), "temporary files left behind"


def test_summary_shape_and_blocks(heart_run):
    """Every model block lists the four hospitals, their mean and the worst one."""
    s = json.loads((heart_run.path / "summary.json").read_text())
    assert s == heart_run.summary
    for key in ("dataset", "task", "algorithm", "rounds", "metric", "local", "federated", "pooled",
                "wall_seconds", "bytes_sent"):
        assert key in s, key
    assert (s["dataset"], s["task"], s["algorithm"], s["rounds"], s["metric"]) == \
        ("heart-disease", "binary", "fedavg", 5, "accuracy")
    assert s["bytes_sent"] > 0 and s["wall_seconds"] > 0
    for model in ("local", "federated", "pooled"):
        block = s[model]
        assert list(block["sites"]) == HEART_SITES
        accs = {site: m["accuracy"] for site, m in block["sites"].items()}
        assert all(0.0 <= a <= 1.0 for a in accs.values())
        worst = block["worst_site"]
        assert accs[worst["site_id"]] == min(accs.values())
        assert worst["accuracy"] == min(accs.values())
        assert block["mean"]["accuracy"] == pytest.approx(np.mean(list(accs.values())), abs=1e-12)
        losses = [m["log_loss"] for m in block["sites"].values()]
        assert block["mean"]["log_loss"] == pytest.approx(np.mean(losses), abs=1e-12)


def test_summary_site_sizes_match_the_data(heart_run):
    """site_sizes must describe the split the models were trained and tested on."""
    ds = load_dataset(DataSpec(dataset="heart-disease"))
    expected = {sd.site_id: {"train": len(site_y(sd, "train")), "val": 0, "test": len(site_y(sd, "test"))} for sd in ds.sites}
    assert heart_run.summary["site_sizes"] == expected
    assert sum(v["train"] + v["test"] for v in expected.values()) == 303 + 261 + 46 + 130


def test_metrics_jsonl_rows(heart_run):
    """One row per (round, model, site, split), for all three models."""
    rows = [json.loads(line) for line in (heart_run.path / "metrics.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        assert {"round", "model", "site", "split"} <= set(row)
        assert 1 <= row["round"] <= 5
        assert row["split"] in ("train", "val", "test", "update", "bytes")
    assert {r["model"] for r in rows} == {"federated", "local", "pooled"}
    sent = [r for r in rows if r["model"] == "federated" and r["split"] == "bytes"]  # each round, each way
    assert [r["round"] for r in sent] == [1, 2, 3, 4, 5] and all(r["upload"] > 0 < r["broadcast"] for r in sent)
    assert sum(r["upload"] + r["broadcast"] for r in sent) == heart_run.summary["bytes_sent"]
    fed_train = [r for r in rows if r["model"] == "federated" and r["split"] == "train"]
    assert len(fed_train) == 5 * 4 and all("train_loss" in r and "num_examples" in r for r in fed_train)
    fed_test = [r for r in rows if r["model"] == "federated" and r["split"] == "test"]
    assert {(r["round"], r["site"]) for r in fed_test} == {(r, s) for r in range(1, 6) for s in HEART_SITES}
    # the last round's federated test rows are the numbers in the summary
    last = {r["site"]: r["accuracy"] for r in fed_test if r["round"] == 5}
    assert last == {s: m["accuracy"] for s, m in heart_run.summary["federated"]["sites"].items()}
    # each local baseline trains only on its own site
    local_train = {r["site"] for r in rows if r["model"] == "local" and r["split"] == "train"}
    assert local_train == set(HEART_SITES)
    assert {r["site"] for r in rows if r["model"] == "pooled" and r["split"] == "train"} == {"pooled"}


def test_global_safetensors_is_the_returned_model(heart_run):
    params, meta = load_params(heart_run.path / "global.safetensors", heart_run.global_params)
    assert_params_equal(params, heart_run.global_params)
    assert meta["dataset"] == "heart-disease" and meta["algorithm"] == "fedavg"
    assert len(meta["feature_names"]) == heart_run.summary["num_features"]
    assert params["weight"].shape == (1, heart_run.summary["num_features"])


def test_switzerland_local_model_predicts_disease_for_everyone(heart_run):
    """Switzerland's training rows are all 'disease', so its local model can only learn that class:
    its local test accuracy is the share of disease in its test split."""
    swiss = load_dataset(DataSpec(dataset="heart-disease")).site("switzerland")
    assert set(np.unique(site_y(swiss, "train")).tolist()) == {1.0}
    share = float(np.mean(site_y(swiss, "test") == 1))
    assert share < 1.0  # the test split holds the healthy patient, so the check is not vacuous
    local = heart_run.summary["local"]["sites"]["switzerland"]
    assert local["accuracy"] == pytest.approx(share)
    assert local["balanced_accuracy"] == pytest.approx(0.5)
    x = torch.as_tensor(site_x(swiss, "test"))
    params = heart_run.local_params["switzerland"]
    logits = x @ torch.as_tensor(params["weight"]).T + torch.as_tensor(params["bias"])
    assert bool((logits > 0).all())


# ----- determinism and re-runs ------------------------------------------------------------------


def test_same_seed_same_run_other_seed_other_model(tmp_path):
    a = fedcare.simulate(out=str(tmp_path / "a"), rounds=3, seed=7)
    b = fedcare.simulate(out=str(tmp_path / "b"), rounds=3, seed=7)
    assert summary_without_wall(a.path) == summary_without_wall(b.path)
    assert (a.path / "metrics.jsonl").read_bytes() == (b.path / "metrics.jsonl").read_bytes()
    assert_params_equal(a.global_params, b.global_params)
    c = fedcare.simulate(out=str(tmp_path / "c"), rounds=3, seed=8, baselines=False)
    assert params_differ(a.global_params, c.global_params)


def test_rerun_from_written_config(tmp_path):
    """config.yaml alone reproduces a run."""
    first = fedcare.simulate(out=str(tmp_path / "first"), rounds=3, algorithm="fedsgd", lr=0.3, seed=3)
    again = fedcare.simulate(first.path / "config.yaml", out=str(tmp_path / "again"))
    assert again.config.algorithm.name == "fedsgd" and again.config.training.lr == 0.3 and again.config.run.seed == 3
    assert summary_without_wall(first.path) == summary_without_wall(again.path)
    assert_params_equal(first.global_params, again.global_params)


def test_rerun_csv_from_written_config_elsewhere(tmp_path, monkeypatch):
    """Data paths are written absolute, so the config re-runs from another working directory."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_csv(data_dir / "cohort.csv", cohort_frame("binary"))
    monkeypatch.chdir(data_dir)
    first = fedcare.simulate(data="cohort.csv", label="y", site="hospital", drop=["patient_id"],
                             out=str(tmp_path / "first"), rounds=3)
    written = yaml.safe_load((first.path / "config.yaml").read_text())
    assert written["data"] == [str((data_dir / "cohort.csv").resolve())]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = fedcare.simulate(first.path / "config.yaml", out=str(tmp_path / "again"))
    assert summary_without_wall(first.path) == summary_without_wall(again.path)
    assert_params_equal(first.global_params, again.global_params)


def test_yaml_data_paths_are_relative_to_the_yaml_file(tmp_path, monkeypatch):
    """A hand-written config names its CSV relative to itself, wherever it is run from."""
    project = tmp_path / "study"
    project.mkdir()
    write_csv(project / "cohort.csv", cohort_frame("binary"))
    (project / "exp.yaml").write_text(yaml.safe_dump({
        "data": "cohort.csv", "label": "y", "site": "hospital", "drop": ["patient_id"], "rounds": 2,
        "baselines": False, "out": str(tmp_path / "run")}))
    monkeypatch.chdir(tmp_path)
    run = fedcare.simulate("study/exp.yaml")
    assert run.config.data.files == (str((project / "cohort.csv").resolve()),)
    assert list(run.summary["federated"]["sites"]) == ["H1", "H2", "H3"]
    override = fedcare.simulate(project / "exp.yaml", rounds=1, out=str(tmp_path / "run1"))
    assert override.summary["rounds"] == 1  # keyword overrides win over the file


# ----- algorithms -------------------------------------------------------------------------------


def test_fedsgd_equals_pooled_gradient_descent(tmp_path):
    """FedSGD with example weighting and every site every round is full-batch gradient descent on
    the pooled training rows: Σ nᵢ·∇Lᵢ / Σ nᵢ is the pooled mean gradient."""
    run = fedcare.simulate(out=str(tmp_path / "run"), algorithm="fedsgd", rounds=3, lr=0.5)
    assert run.pooled_params is not None
    initial = build_federation(run.config, load_dataset(DataSpec(dataset="heart-disease"))).initial
    assert params_differ(run.global_params, initial)  # it did move, so the equality means something
    for k in run.global_params:
        np.testing.assert_allclose(run.global_params[k], run.pooled_params[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_fedavg_is_not_pooled_descent(tmp_path):
    """The identity above is specific to FedSGD: several local steps make FedAvg differ."""
    run = fedcare.simulate(out=str(tmp_path / "run"), algorithm="fedavg", rounds=3)
    assert not all(np.allclose(run.global_params[k], run.pooled_params[k], rtol=1e-4, atol=1e-6)
                   for k in run.global_params)


class SmallNet(torch.nn.Module):
    """A user's own model: it gets the input shapes and the task, and takes the batch's inputs by name."""

    def __init__(self, inputs, task):
        super().__init__()
        d = inputs["tabular"].shape[0]
        self.layers = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, task.num_outputs))

    def forward(self, batch):
        return self.layers(batch["tabular"])


def test_user_model_factory(tmp_path):
    run = fedcare.simulate(out=str(tmp_path / "run"), model_factory=SmallNet, rounds=2, baselines=False)
    d = run.summary["num_features"]
    assert {k: v.shape for k, v in run.global_params.items()} == {
        "layers.0.weight": (8, d), "layers.0.bias": (8,), "layers.2.weight": (1, 8), "layers.2.bias": (1,)}
    saved, _ = load_params(run.path / "global.safetensors", run.global_params)
    assert_params_equal(saved, run.global_params)


class CoordinateMedian:
    """A robust aggregator written by a user: the coordinate-wise median of the site updates."""

    stage = "aggregate_updates"

    def __init__(self):
        self.calls = 0
        self.sites_seen: list[list[str]] = []

    def init(self, params):
        return {}

    def apply(self, updates, state, ctx):
        updates = list(updates)
        self.calls += 1
        self.sites_seen.append(sorted(u.site_id for u in updates))
        out = {k: np.median(np.stack([u.grad[k] for u in updates]), axis=0).astype(ctx.params[k].dtype)
               for k in updates[0].grad}
        return out, state


def test_user_aggregator_is_called_every_round(tmp_path):
    median = CoordinateMedian()
    run = fedcare.simulate(out=str(tmp_path / "median"), aggregator=median, rounds=3, baselines=False)
    assert median.calls == 3
    assert median.sites_seen == [sorted(HEART_SITES)] * 3
    assert run.summary["rounds"] == 3
    default = fedcare.simulate(out=str(tmp_path / "mean"), rounds=3, baselines=False)
    assert params_differ(run.global_params, default.global_params)


def test_site_weights_and_uniform_weighting_change_the_model(tmp_path):
    base = fedcare.simulate(out=str(tmp_path / "base"), rounds=3, baselines=False)
    no_swiss = fedcare.simulate(out=str(tmp_path / "noswiss"), rounds=3, baselines=False,
                                site_weights={"switzerland": 0.0})
    uniform = fedcare.simulate(out=str(tmp_path / "uniform"), rounds=3, baselines=False, weighting="uniform")
    assert params_differ(base.global_params, no_swiss.global_params)
    assert params_differ(base.global_params, uniform.global_params)
    assert params_differ(no_swiss.global_params, uniform.global_params)
    # a weight of 1 for every site is the default
    ones = fedcare.simulate(out=str(tmp_path / "ones"), rounds=3, baselines=False,
                            site_weights={s: 1.0 for s in HEART_SITES})
    assert_params_equal(base.global_params, ones.global_params)


def test_site_weight_zero_equals_leaving_the_site_out():
    """A site with weight 0 must have no pull at all: the federation of four sites with
    switzerland weighted 0 reaches exactly the model of the three other sites alone."""
    from fedcare.core.config import resolve_config
    from fedcare.transports.simulated import build_federation
    from fedcare.federation.engine import RoundEngine
    from fedcare.transports.simulation import SimulationTransport

    dataset = load_dataset(DataSpec(dataset="heart-disease"))
    cfg = resolve_config({"algorithm": "fedsgd", "rounds": 3, "lr": 0.5, "site_weights": {"switzerland": 0.0}})
    fed = build_federation(cfg, dataset)
    weighted = RoundEngine(fed.plan.algorithm, SimulationTransport(fed.sites), fed.plan.settings).run(fed.initial)
    three = [site for site in fed.sites if site.site_id != "switzerland"]
    plain = build_federation(resolve_config({"algorithm": "fedsgd", "rounds": 3, "lr": 0.5}), dataset)
    left_out = RoundEngine(plain.plan.algorithm, SimulationTransport(three), plain.plan.settings).run(plain.initial)
    assert_params_equal(weighted.params, left_out.params)
    assert weighted.history[0].train.keys() == set(HEART_SITES)  # it still trained, it just did not count


# ----- user CSVs --------------------------------------------------------------------------------


def test_csv_binary_with_missing_categorical_and_id(tmp_path, cohort_csv):
    run = fedcare.simulate(data=str(cohort_csv), label="y", site="hospital", drop=["patient_id"],
                           out=str(tmp_path / "run"), rounds=3)
    s = run.summary
    assert s["task"] == "binary" and s["metric"] == "accuracy" and s["dataset"] == "cohort"
    assert list(s["federated"]["sites"]) == ["H1", "H2", "H3"]
    pre = s["preprocessing"]
    assert pre["missing_indicators"] == ["age__missing"]
    assert "age__missing" in pre["feature_names"]
    assert {"sex=F", "sex=M"} <= set(pre["feature_names"])
    assert not any("patient_id" in f or "hospital" in f for f in pre["feature_names"])
    assert pre["columns_dropped"] == ["patient_id"]
    assert s["num_features"] == len(pre["feature_names"]) == 5  # age, bp, sex=F, sex=M, age__missing
    assert all(v["train"] + v["test"] == 60 for v in s["site_sizes"].values())


def test_csv_regression_reports_rmse(tmp_path):
    path = write_csv(tmp_path / "reg.csv", cohort_frame("regression"))
    run = fedcare.simulate(data=str(path), label="y", site="hospital", drop=["patient_id"],
                           out=str(tmp_path / "run"), rounds=3)
    s = run.summary
    assert (s["task"], s["metric"]) == ("regression", "rmse")
    for model in ("local", "federated", "pooled"):
        rmse = {site: m["rmse"] for site, m in s[model]["sites"].items()}
        assert all(v > 0 for v in rmse.values())
        assert s[model]["worst_site"]["site_id"] == max(rmse, key=rmse.get)  # lower is better
    assert run.global_params["weight"].shape == (1, s["num_features"])


def test_csv_multiclass_reports_accuracy(tmp_path):
    frame = cohort_frame("multiclass")
    assert sorted(frame["y"].unique().tolist()) == [0, 1, 2]
    path = write_csv(tmp_path / "multi.csv", frame)
    run = fedcare.simulate(data=str(path), label="y", site="hospital", drop=["patient_id"],
                           out=str(tmp_path / "run"), rounds=3, baselines=False)
    s = run.summary
    assert (s["task"], s["metric"]) == ("multiclass", "accuracy")
    assert s["preprocessing"]["label"]["classes"] == ["0", "1", "2"]
    assert run.global_params["weight"].shape == (3, s["num_features"])


def test_dirichlet_partition_of_one_file(tmp_path):
    path = write_csv(tmp_path / "pooled.csv", cohort_frame("binary").drop(columns=["hospital"]))
    run = fedcare.simulate(data=str(path), label="y", drop=["patient_id"], partition="dirichlet",
                           num_sites=3, out=str(tmp_path / "run"), rounds=2, baselines=False)
    s = run.summary
    assert list(s["federated"]["sites"]) == ["site-1", "site-2", "site-3"]
    assert sum(v["train"] + v["test"] for v in s["site_sizes"].values()) == 180
    assert s["preprocessing"]["partition"]["kind"] == "dirichlet"


# ----- early stopping ---------------------------------------------------------------------------


def test_patience_stops_when_validation_never_improves(tmp_path):
    """With lr 1e-12 float32 params cannot move, so validation accuracy never improves after round 1:
    patience 2 must stop at round 3 and keep round 1's model."""
    run = fedcare.simulate(out=str(tmp_path / "run"), val_fraction=0.2, patience=2, rounds=200, lr=1e-12,
                           baselines=False)
    s = run.summary
    assert s["stopped_early"] is True
    assert s["rounds"] == 3 and s["best_round"] == 1
    assert all(v["val"] > 0 for v in s["site_sizes"].values())
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert max(r["round"] for r in rows) == 3
    assert any(r["split"] == "val" for r in rows)


def test_patience_lets_an_improving_run_continue(tmp_path):
    """Without patience every round runs and stopped_early is False."""
    run = fedcare.simulate(out=str(tmp_path / "run"), val_fraction=0.2, rounds=4, baselines=False)
    assert run.summary["stopped_early"] is False and run.summary["rounds"] == 4


def test_patience_needs_a_validation_split(tmp_path):
    with pytest.raises(ConfigError, match="val_fraction"):
        fedcare.simulate(out=str(tmp_path / "run"), patience=2, rounds=5)
    assert not (tmp_path / "run").exists()


def test_simulate_accepts_pathlib_paths(tmp_path, cohort_csv):
    """The Python API should take the Path objects Python users naturally pass for out and data."""
    run = fedcare.simulate(data=cohort_csv, label="y", site="hospital", drop=["patient_id"],
                           out=tmp_path / "run", rounds=1, baselines=False)
    assert (tmp_path / "run" / "summary.json").is_file()
    assert run.config.data.files == (str(cohort_csv.resolve()),)


def test_unknown_site_in_site_weights_is_refused(tmp_path):
    """A typo in a site name must not silently fall back to weight 1."""
    with pytest.raises(ConfigError, match="unknown site 'switzerlnd'"):
        fedcare.simulate(site_weights={"switzerlnd": 0.0}, rounds=1, out=str(tmp_path / "run"))


def test_a_new_run_into_an_old_run_folder_leaves_none_of_its_files(tmp_path):
    out = tmp_path / "run"
    fedcare.simulate(model="mlp", hidden=[4], personalization="finetune", rounds=1, baselines=False, out=str(out))
    (out / "audit.json").write_text("{}")
    assert (out / "sites").is_dir()
    fedcare.simulate(rounds=1, baselines=False, out=str(out))
    assert not (out / "sites").exists() and not (out / "audit.json").exists()
    assert "personalized" not in json.loads((out / "summary.json").read_text())
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and not a fedcare run folder .*'notes.txt'"):
        fedcare.simulate(rounds=1, baselines=False, out=str(out))
    assert (out / "notes.txt").read_text() == "mine" and (out / "summary.json").is_file()  # nothing touched
