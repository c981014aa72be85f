"""Results people can use: a model that scores new patients (predict, load_model, export), the
clinical metrics and --metric, tracking (metrics.jsonl as the run goes, MLflow, TensorBoard), and
the CLI's manners. One small trained run on a user's own CSV serves most tests."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import SRC, cohort_frame, named, run_cli

import fedcare
from fedcare.core.config import make_config
from fedcare.core.errors import ConfigError
from fedcare.data import DataSpec, load_dataset
from fedcare.data.preprocessing import transform_from_json
from fedcare.data.splitting import split_site
from fedcare.learning import metrics as M
from fedcare.learning.baseline_hazard import GRID_POINTS

SITE = "H2"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A user's own CSV (not a bundled name), a 3-round federated run with fine-tuned site models,
    tracked to MLflow (SQLite store) and TensorBoard."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    folder = tmp_path_factory.mktemp("use")
    frame = cohort_frame("binary", sites=3, rows_per_site=60, seed=3)
    frame.to_csv(folder / "my_ward.csv", index=False)
    run = fedcare.simulate(data=[str(folder / "my_ward.csv")], site="hospital", label="y", drop=["patient_id"],
                           rounds=3, personalization="finetune", finetune_epochs=2, baselines=False,
                           out=str(folder / "run"), track=[f"mlflow:sqlite:///{folder / 'mlflow.db'}", "tensorboard"])
    return folder, frame, run


def test_predict_gives_the_runs_own_probabilities(trained):
    folder, frame, run = trained
    rows = frame[frame["hospital"] == SITE].reset_index(drop=True)
    split = split_site(SITE, len(rows), rows["y"].to_numpy(), 0.34, 0.0, 43)  # the run's own split of the site
    new = rows.iloc[split.test].drop(columns=["y"])  # new patients: no outcome column
    new.to_csv(folder / "new_patients.csv", index=False)
    y = rows["y"].to_numpy()[split.test]
    done = run_cli("predict", str(run.path), "--data", "new_patients.csv", "--out", "preds.csv", cwd=folder)
    assert done.returncode == 0, done.stderr
    preds = pd.read_csv(folder / "preds.csv")
    personal = fedcare.load_model(run.path / "sites" / f"{SITE}.safetensors")(new)  # the site's own model
    for model, table in (("federated", preds), ("personalized", personal)):
        p = table["probability:1"].to_numpy()
        np.testing.assert_allclose(table["probability:0"] + p, 1.0)
        assert (table["predicted"].astype(str) == np.where(p >= 0.5, "1", "0")).all()
        # every test metric the run computed for this site, from these probabilities: equal, not close
        reported = run.summary[model]["sites"][SITE]
        assert M.binary_metrics(y, p) == {k: reported[k] for k in M.binary_metrics(y, p)}
        calibrated = run.summary["calibration"][model]["sites"][SITE]  # what the reliability plot draws
        assert calibrated["brier"] == reported["brier"] and calibrated["count"] == M.reliability(y, p)["count"]
    loaded = fedcare.load_model(run.path)  # the run folder means its global model
    assert np.array_equal(loaded(new)["probability:1"].to_numpy(), preds["probability:1"].to_numpy())
    assert loaded.card.shape.classes == ("0", "1") and loaded.card.label["column"] == "y"
    # summary.json's preprocessing loads back and is the transform that encoded the rows
    pre = json.loads((run.path / "summary.json").read_text())["preprocessing"]
    assert list(transform_from_json(pre).feature_names) == pre["feature_names"]


@pytest.fixture(scope="module")
def survival_run(tmp_path_factory):
    """A user's own survival CSV (hazard rising with bp), a 3-round federated run."""
    folder = tmp_path_factory.mktemp("cox")
    frame = cohort_frame("binary", sites=3, rows_per_site=50, seed=7).drop(columns=["y"])
    rng = np.random.default_rng(7)
    hazard = np.exp((frame["bp"].to_numpy() - 130) / 15)
    event_time, censor = rng.exponential(12 / hazard), rng.uniform(2, 40, len(frame))
    frame["months"] = np.round(np.minimum(event_time, censor), 2)
    frame["died"] = (event_time <= censor).astype(int)
    frame.to_csv(folder / "cohort.csv", index=False)
    run = fedcare.simulate(data=[str(folder / "cohort.csv")], site="hospital", time="months", event="died",
                           drop=["patient_id"], rounds=3, baselines=False, out=str(folder / "run"))
    return folder, frame, run


def test_predict_writes_survival_curves_from_the_federated_breslow_hazard(survival_run):
    folder, frame, run = survival_run
    frame.drop(columns=["months", "died"]).to_csv(folder / "new.csv", index=False)
    done = run_cli("predict", str(run.path), "--data", "new.csv", "--out", "preds.csv", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "no baseline hazard" not in done.stdout
    preds = pd.read_csv(folder / "preds.csv")
    model = fedcare.load_model(run.path)
    baseline = model.card.baseline_hazard
    grid = np.asarray(baseline["times"])
    columns = [c for c in preds.columns if c.startswith("survival@")]
    assert len(columns) == len(grid) == GRID_POINTS and np.allclose([float(c[9:]) for c in columns], grid)
    # (1) probabilities, non-increasing in t for each patient, lower for a higher risk
    curves, risk = preds[columns].to_numpy(), preds["risk"].to_numpy()
    assert ((curves >= 0) & (curves <= 1)).all() and (np.diff(curves, axis=1) <= 0).all()
    order = np.argsort(risk)
    assert (np.diff(curves[order], axis=0) <= 1e-12).all()
    assert curves[:, -1].min() < 1.0  # the curves do fall
    np.testing.assert_allclose(curves, np.exp(-np.outer(np.exp(risk), baseline["cumulative_hazard"])))
    # (2) the federated H0 is Breslow's (events binned to the grid) on all sites' training rows pooled,
    # the grid running to the longest training follow-up, with the final model's risks
    ds = load_dataset(DataSpec(data=(str(folder / "cohort.csv"),), site="hospital", time="months", event="died",
                               drop=("patient_id",)))
    pooled = [named(site, "train") for site in ds.sites]
    time = np.concatenate([a["time"] for a in pooled]).astype(np.float64)
    event = np.concatenate([a["event"] for a in pooled]).astype(np.float64)
    w = np.exp(np.concatenate([model.raw({k: v for k, v in a.items() if k not in ("time", "event")})
                               .squeeze(-1).double().numpy() for a in pooled]))
    expected = time.max() * np.arange(1, GRID_POINTS + 1) / GRID_POINTS
    np.testing.assert_allclose(grid, expected, rtol=0, atol=1e-12)
    h, total = [], 0.0
    for k, t in enumerate(grid):
        start = grid[k - 1] if k else -np.inf
        d = event[(time > start) & (time <= t)].sum()
        total += d / w[time > start].sum() if d else 0.0
        h.append(total)
    np.testing.assert_allclose(baseline["cumulative_hazard"], h, rtol=0, atol=1e-9)


def test_sites_in_worker_processes_give_the_same_baseline_hazard(survival_run, tmp_path):
    folder = survival_run[0]

    def card(**backend):
        run = fedcare.simulate(data=[str(folder / "cohort.csv")], site="hospital", time="months", event="died",
                               drop=["patient_id"], rounds=1, baselines=False, out=str(tmp_path / "run"), **backend)
        return fedcare.load_model(run.path).card.baseline_hazard

    here = card()
    assert here is not None and card(backend="processes", workers=1) == here


def test_a_card_without_baseline_hazard_predicts_risk_only(survival_run, tmp_path):
    from fedcare.core.serialization import load_params, save_params

    _, frame, run = survival_run
    params, meta = load_params(run.path / "global.safetensors")
    card = json.loads(meta["model"]) if isinstance(meta["model"], str) else dict(meta["model"])
    card.pop("baseline_hazard")  # as a networked run's card is
    bare = tmp_path / "run"
    bare.mkdir()
    save_params(bare / "global.safetensors", params, {**meta, "model": card})
    frame.drop(columns=["months", "died"]).to_csv(tmp_path / "new.csv", index=False)
    done = run_cli("predict", str(bare), "--data", "new.csv", "--out", "preds.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert list(pd.read_csv(tmp_path / "preds.csv").columns) == ["risk"]
    assert sum("no baseline hazard" in line for line in done.stdout.splitlines()) == 1


def test_model_files_refused_in_one_line(trained, tmp_path):
    _, frame, run = trained
    (tmp_path / "junk.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    for path, said in ((tmp_path / "junk.safetensors", "not a readable model file"),
                       (run.path / "checkpoints" / "coordinator.safetensors", "not a model file this fedcare"),
                       (tmp_path / "absent.safetensors", "no model file")):
        with pytest.raises(ConfigError, match=said):
            fedcare.load_model(path)
    with pytest.raises(ConfigError, match="holds no personalized model for site 'H9'; sites with one: H1, H2, H3"):
        from fedcare.interfaces.modelcli import model_path
        model_path(run.path, "H9")
    from fedcare.core.errors import DataError
    with pytest.raises(DataError, match="lacks column 'bp'"):
        fedcare.load_model(run.path)(frame.drop(columns=["bp"]))


def test_export_onnx_and_torchscript_score_as_the_model(trained):
    ort = pytest.importorskip("onnxruntime")
    import torch

    from fedcare.learning.export import export_model

    folder, frame, run = trained
    model = fedcare.load_model(run.path)
    x = model.inputs(frame.head(7))
    expected = model(frame.head(7))[["probability:0", "probability:1"]].to_numpy()
    onnx_file = export_model(model, "onnx", folder / "model.onnx")
    session = ort.InferenceSession(str(onnx_file))
    got = session.run(None, {name: x[name].astype(np.float32) for name in x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    scripted = torch.jit.load(str(export_model(model, "torchscript", folder / "model.pt")))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(*(torch.as_tensor(a) for a in x.values())).numpy(), expected, rtol=1e-5,
                                   atol=1e-6)
    with pytest.raises(ConfigError, match="unknown export format 'pmml'"):
        export_model(model, "pmml", folder / "model.pmml")


def test_mlflow_and_tensorboard_hold_the_runs_metrics(trained):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _, run = trained
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    wanted = {(r["round"], r["site"]): r["accuracy"] for r in rows
              if r["model"] == "federated" and r["split"] == "test" and "accuracy" in r}
    assert {rnd for rnd, _ in wanted} == {1, 2, 3}
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("fedcare").experiment_id])
    assert found.info.status == "FINISHED" and found.data.params["rounds"] == "3"
    for site in ("H1", "H2", "H3"):
        history = client.get_metric_history(found.info.run_id, f"federated/{site}/test/accuracy")
        assert {(m.step, site): m.value for m in history} == {k: v for k, v in wanted.items() if k[1] == site}
    assert {"summary.json", "config.yaml", "global.safetensors"} <= {a.path for a in client.list_artifacts(found.info.run_id)}
    events = EventAccumulator(str(run.path / "tensorboard")).Reload()
    for site in ("H1", "H2", "H3"):
        scalars = events.Scalars(f"federated/test/accuracy/{site}")
        assert {(s.step, site): s.value for s in scalars} == pytest.approx({k: v for k, v in wanted.items() if k[1] == site})
    assert "config" in events.Tags()["tensors"] or "config/text_summary" in events.Tags()["tensors"]


def test_killed_run_leaves_its_history_and_prints_a_line_per_round(tmp_path):
    """metrics.jsonl grows round by round: a run killed mid-way leaves its finished rounds, whole."""
    frame = cohort_frame("binary", sites=2, rows_per_site=40, seed=1)
    frame.to_csv(tmp_path / "ward.csv", index=False)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fedcare", "simulate", "--data", "ward.csv", "--site", "hospital",
                             "--label", "y", "--drop", "patient_id", "--rounds", "10000", "--no-baselines",
                             "--val-fraction", "0.2", "--metric", "roc_auc", "--out", "run"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and sum(1 for _ in log.open()) >= 3 * 4 * 2:  # three rounds of 2 sites × 4 splits
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    rounds = sorted({r["round"] for r in rows})
    assert len(rounds) >= 3 and rounds == list(range(1, rounds[-1] + 1))
    lines = [line for line in out.splitlines() if line.startswith("federated round")]
    assert lines[0].startswith("federated round 1/10000 · val roc_auc ") and "train loss" in lines[0]
    assert len(lines) >= 3


def test_metric_chooses_the_headline_and_is_refused_where_it_does_not_fit(tmp_path):
    frame = cohort_frame("binary", sites=2, rows_per_site=40, seed=2)
    frame.to_csv(tmp_path / "ward.csv", index=False)
    run = fedcare.simulate(data=[str(tmp_path / "ward.csv")], site="hospital", label="y", drop=["patient_id"],
                           rounds=2, baselines=False, metric="log_loss", threshold=0.3, out=str(tmp_path / "run"))
    s = run.summary
    assert s["metric"] == "log_loss" and s["higher_is_better"] is False
    sites = s["federated"]["sites"]
    assert s["federated"]["worst_site"]["site_id"] == max(sites, key=lambda k: sites[k]["log_loss"])
    model = fedcare.load_model(run.path)
    rows = frame[frame["hospital"] == "H1"].reset_index(drop=True)
    test = split_site("H1", len(rows), rows["y"].to_numpy(), 0.34, 0.0, 43).test
    p = model(rows.iloc[test])["probability:1"].to_numpy()
    y = rows["y"].to_numpy()[test]
    assert sites["H1"]["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= 0.3))  # at the threshold asked for
    for values, said in (({"metric": "c_index"}, "metric 'c_index' does not fit the binary task"),
                         ({"metric": "accuracy", "threshold": 0.3, "task": "regression"}, "a binary task's setting")):
        with pytest.raises(ConfigError, match=said):
            fedcare.simulate(data=[str(tmp_path / "ward.csv")], site="hospital", label="y", drop=["patient_id"],
                             rounds=1, baselines=False, out=str(tmp_path / "refused"), **values)
    with pytest.raises(ConfigError, match="did you mean 'rounds'"):
        make_config({"roundz": 3})


def test_clinical_metrics_agree_with_scikit_learn():
    from sklearn.metrics import brier_score_loss, recall_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 300), 0, 1)
    m = M.binary_metrics(y, p, threshold=0.4)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["sensitivity"] == pytest.approx(recall_score(y, p >= 0.4))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, p < 0.4))
    proba = rng.dirichlet(np.ones(3), 50)
    labels = rng.integers(0, 3, 50)
    assert M.brier(labels, proba) == pytest.approx(np.mean(np.sum((proba - np.eye(3)[labels]) ** 2, axis=1)))
    bins = M.reliability(y, p)
    assert sum(bins["count"]) == 300 and sum(bins["sum_observed"]) == y.sum()
    assert bins["count"] == np.histogram(p, bins=np.linspace(0, 1, 11))[0].tolist()
    assert M.sensitivity_specificity(np.zeros(4), np.ones(4), 0.5)["sensitivity"] is None


def test_cli_version_and_defaults_in_help(tmp_path):
    version = run_cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"fedcare {fedcare.__version__}"
    helped = run_cli("simulate", "--help", cwd=tmp_path)
    text = re.sub(r"[│\s]+", " ", helped.stdout)  # the help's table, its wrapped cells joined
    assert "maximum rounds (default 50)" in text and "(default 0.05)" in text


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)
    from fedcare.interfaces.cliout import OUTPUT

    OUTPUT.quiet = OUTPUT.verbose = False


def test_dp_accounting_noise_goes_to_the_log_file_not_the_terminal(tmp_path, capfd, restored_logging):
    from fedcare.algorithms.accounting import epsilon
    from fedcare.interfaces.cliout import setup

    setup(quiet=False, verbose=False, log_file=tmp_path / "run.log")
    epsilon(1.0, 0.41, 1, 1e-5)  # the RDP orders dp-accounting warns about (a DP-SGD run's accounting)
    logging.getLogger("fedcare.test").warning("a warning of our own")
    err = capfd.readouterr().err
    assert "absl" not in err and "a warning of our own" in err
    log = (tmp_path / "run.log").read_text()
    assert "WARNING absl: _compute_log_a_frac failed to converge" in log and "a warning of our own" in log


def test_progress_is_a_line_per_round_off_a_terminal_and_nothing_when_quiet(tmp_path, capsys, restored_logging):
    import io

    from rich.console import Console

    from fedcare.federation.engine import RoundRecord
    from fedcare.interfaces.cliout import RoundProgress, setup

    record = RoundRecord(2, ["a", "b"], {"a": {"train_loss": 0.5}, "b": {"train_loss": 0.7}}, {}, 0.8125)
    piped = Console(file=io.StringIO())  # not a terminal
    setup(quiet=False, verbose=False, log_file=None)
    RoundProgress(piped, 5, "roc_auc")("federated", record)
    assert capsys.readouterr().out == "federated round 2/5 · val roc_auc 0.812 · train loss 0.600\n"
    setup(quiet=True, verbose=False, log_file=None)
    RoundProgress(piped, 5)("federated", record)
    assert capsys.readouterr().out == ""
