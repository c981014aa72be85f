"""Survival task: Cox loss, C-index, and --time/--event data loading."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import fedcare

from fedcare.core.errors import ConfigError, DataError
from fedcare.data import DataSpec, load_dataset
from fedcare.learning.metrics import c_index, neg_partial_loglik, survival_metrics
from conftest import named
from fedcare.learning.tasks import make_task
from fedcare.learning.tasks.cox import cox_loss

# ---------------------------------------------------------------- plain references (O(n²), loops)


def cox_reference(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Breslow: each event's risk set is everyone with time >= its time; mean over events."""
    total, n_events = 0.0, 0
    for i in range(len(time)):
        if event[i]:
            denom = sum(math.exp(risk[j]) for j in range(len(time)) if time[j] >= time[i])
            total += risk[i] - math.log(denom)
            n_events += 1
    return -total / n_events


def c_index_reference(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float | None:
    score, pairs = 0.0, 0
    for i in range(len(time)):
        for j in range(len(time)):
            if event[i] and time[i] < time[j]:
                pairs += 1
                if risk[i] > risk[j]:
                    score += 1.0
                elif risk[i] == risk[j]:
                    score += 0.5
    return score / pairs if pairs else None


def random_survival(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer times and rounded risks, so both have many ties; about 40% censored."""
    time = rng.integers(1, 15, size=n).astype(np.float64)
    event = (rng.random(n) < 0.6).astype(np.float64)
    risk = np.round(rng.normal(size=n), 1)
    return time, event, risk


# ---------------------------------------------------------------- Cox loss


def test_cox_loss_hand_computed_with_tie():
    # patient  time  event  exp(risk)
    #   A       1     1       1
    #   B       2     1       2     } tied at time 2: both use the risk set {B, C, D}
    #   C       2     1       3     }
    #   D       3     0       4       (censored: only in risk sets)
    # A: risk set {A,B,C,D}, sum 10 -> log(1/10);  B: {B,C,D}, sum 9 -> log(2/9);  C: log(3/9)
    # loss = -(log(1/10) + log(2/9) + log(3/9)) / 3 = log(10 * 9 * 9 / (1 * 2 * 3)) / 3 = log(135) / 3
    order = [2, 0, 3, 1]  # shuffled: the loss must sort by itself
    exp_risk = np.array([1.0, 2.0, 3.0, 4.0])[order]
    time = np.array([1.0, 2.0, 2.0, 3.0])[order]
    event = np.array([1.0, 1.0, 1.0, 0.0])[order]
    loss = cox_loss(torch.tensor(np.log(exp_risk)), torch.tensor(time), torch.tensor(event))
    assert float(loss) == pytest.approx(math.log(135) / 3, rel=1e-12)
    assert neg_partial_loglik(time, event, np.log(exp_risk)) == pytest.approx(math.log(135) / 3, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_cox_loss_matches_double_loop(seed):
    rng = np.random.default_rng(seed)
    time, event, _ = random_survival(rng, 60)
    risk = rng.normal(scale=2.0, size=60)
    expected = cox_reference(risk, time, event)
    got = cox_loss(torch.tensor(risk), torch.tensor(time), torch.tensor(event))
    assert float(got) == pytest.approx(expected, rel=1e-10)
    assert neg_partial_loglik(time, event, risk) == pytest.approx(expected, rel=1e-10)
    got32 = cox_loss(torch.tensor(risk, dtype=torch.float32), torch.tensor(time, dtype=torch.float32),
                     torch.tensor(event, dtype=torch.float32))
    assert float(got32) == pytest.approx(expected, rel=1e-5)


def test_cox_loss_gradient_flows_and_is_stable():
    rng = np.random.default_rng(1)
    time, event, _ = random_survival(rng, 40)
    risk = torch.tensor(rng.normal(size=40) * 500.0, requires_grad=True)  # exp() would overflow naively
    loss = cox_loss(risk, torch.tensor(time), torch.tensor(event))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(risk.grad).all() and risk.grad.abs().sum() > 0
    # the partial likelihood ignores a common shift of all risks
    base = cox_loss(risk.detach(), torch.tensor(time), torch.tensor(event))
    shifted = cox_loss(risk.detach() + 1000.0, torch.tensor(time), torch.tensor(event))
    assert float(shifted) == pytest.approx(float(base), rel=1e-9)


def test_cox_loss_without_events_is_zero_and_differentiable():
    risk = torch.randn(5, requires_grad=True)
    loss = cox_loss(risk, torch.arange(1.0, 6.0), torch.zeros(5))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(risk.grad, torch.zeros(5))
    assert neg_partial_loglik(np.arange(1.0, 6.0), np.zeros(5), np.zeros(5)) is None


# ---------------------------------------------------------------- C-index


@pytest.mark.parametrize("seed", range(8))
def test_c_index_matches_double_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    time, event, risk = random_survival(rng, 120)
    assert c_index(time, event, risk) == pytest.approx(c_index_reference(time, event, risk), abs=1e-12)


def test_c_index_perfect_reversed_and_undefined():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1, 1, 0, 1, 0])
    assert c_index(time, event, -time) == 1.0  # shorter time, higher risk
    assert c_index(time, event, time) == 0.0
    assert c_index(time, event, np.zeros(5)) == 0.5
    assert c_index(time, np.zeros(5), -time) is None  # no events: no comparable pair
    assert c_index(np.full(4, 3.0), np.ones(4), np.arange(4.0)) is None  # all tied times
    assert c_index(time[:1], event[:1], time[:1]) is None


def test_c_index_large_input_is_fast_and_exact():
    rng = np.random.default_rng(7)
    time, event, risk = random_survival(rng, 10_000)
    # vectorised O(n²) check in blocks (a different route to the same number)
    comparable = concordant = 0.0
    for start in range(0, len(time), 1000):
        ti, ei, ri = time[start:start + 1000, None], event[start:start + 1000, None], risk[start:start + 1000, None]
        mask = (ei == 1) & (ti < time[None, :])
        comparable += mask.sum()
        concordant += (mask & (ri > risk[None, :])).sum() + 0.5 * (mask & (ri == risk[None, :])).sum()
    assert c_index(time, event, risk) == pytest.approx(concordant / comparable, abs=1e-12)


def test_survival_task_wiring():
    task = make_task("survival")
    assert task.num_outputs == 1 and task.headline == "c_index" and task.higher_is_better
    assert task.targets == ("time", "event") and not task.per_example
    y = {"time": np.array([1.0, 2.0, 2.0, 3.0], dtype=np.float32),
         "event": np.array([1.0, 1.0, 1.0, 0.0], dtype=np.float32)}
    yt = task.target_tensors(y)
    assert all(t.dtype == torch.float32 and t.shape == (4,) for t in yt.values())
    out = torch.log(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert float(task.loss(out, yt)) == pytest.approx(math.log(135) / 3, rel=1e-6)
    metrics = task.metrics(out, y)
    assert set(metrics) == {"c_index", "neg_partial_loglik", "c_index_low", "c_index_high"}
    assert metrics["neg_partial_loglik"] == pytest.approx(math.log(135) / 3, rel=1e-6)
    # pairs: A<B, A<C, A<D, B<D, C<D; risk orders them wrongly except none -> all discordant
    assert metrics["c_index"] == 0.0
    assert survival_metrics(y["time"], y["event"], -out.squeeze(-1).numpy())["c_index"] == 1.0


def test_cox_training_learns_a_ranking():
    """Minibatch SGD on the Cox loss recovers the direction of a true log-hazard."""
    rng = np.random.default_rng(0)
    n, d = 400, 5
    x = rng.normal(size=(n, d))
    beta = np.array([1.0, -0.5, 0.0, 0.0, 0.5])
    event_time = rng.exponential(1.0 / np.exp(x @ beta))
    censor_time = rng.exponential(2.0, size=n)
    y = {"time": np.minimum(event_time, censor_time).astype(np.float32),
         "event": (event_time <= censor_time).astype(np.float32)}
    task = make_task("survival")
    torch.manual_seed(0)
    model = torch.nn.Linear(d, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xt, yt = torch.tensor(x, dtype=torch.float32), task.target_tensors(y)
    before = task.metrics(model(xt).detach(), y)["c_index"]
    for _ in range(20):
        for start in range(0, n, 32):
            opt.zero_grad()
            task.loss(model(xt[start:start + 32]), {k: v[start:start + 32] for k, v in yt.items()}).backward()
            opt.step()
    after = task.metrics(model(xt).detach(), y)
    assert after["c_index"] > 0.7 > before
    assert after["neg_partial_loglik"] < task.metrics(torch.zeros(n, 1), y)["neg_partial_loglik"]


# ---------------------------------------------------------------- data: --time / --event


def _write(tmp_path, rows: dict, name: str = "cohort.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _cohort(n: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "hospital": ["a"] * (n // 2) + ["b"] * (n - n // 2),
        "age": rng.integers(30, 80, size=n),
        "stage": rng.choice(["I", "II", "III"], size=n),
        "months": np.round(rng.uniform(0.5, 60, size=n), 1),
        "died": rng.choice(["no", "yes"], size=n),
    }


def test_time_event_make_a_survival_task(tmp_path):
    rows = _cohort()
    rows["months"] = rows["months"].astype(object)
    rows["months"][3] = ""  # missing time: dropped
    rows["died"][5] = "?"  # missing event: dropped
    path = _write(tmp_path, rows)
    ds = load_dataset(DataSpec(data=(str(path),), site="hospital", time="months", event="died"))
    assert ds.task == "survival" and ds.classes == ()
    assert "months" not in ds.feature_names and "died" not in ds.feature_names
    assert ds.preprocessing["rows_dropped_missing_time_or_event"] == {"cohort.csv": 2}
    assert ds.preprocessing["label"]["event_observed"] == "yes"
    total = 0
    for site in ds.sites:
        for split in ("train", "test"):
            y = named(site, split)
            assert all(y[k].dtype == np.float32 and y[k].ndim == 1 for k in ("time", "event"))
            assert (y["time"] > 0).all() and set(np.unique(y["event"])) <= {0.0, 1.0}
            total += len(y["time"])
    assert total == 38
    a = ds.site("a")
    expected_events = sum(d == "yes" for i, d in enumerate(rows["died"][:20]) if i not in (3, 5))
    assert int(named(a, "train")["event"].sum() + named(a, "test")["event"].sum()) == expected_events


@pytest.mark.parametrize("values, positive", [(["0", "1"], 1.0), (["False", "True"], 1.0), (["true", "FALSE"], 1.0),
                                              (["0.0", "1.0"], 1.0)])
def test_event_codings(tmp_path, values, positive):
    rows = _cohort(20)
    rows["died"] = [values[i % 2] for i in range(20)]
    path = _write(tmp_path, rows)
    ds = load_dataset(DataSpec(data=(str(path),), site="hospital", time="months", event="died"))
    events = np.concatenate([named(s, split)["event"] for split in ("train", "test") for s in ds.sites])
    assert events.sum() == 10  # half the rows hold the second (positive) value


def test_all_events_is_fine(tmp_path):
    rows = _cohort(20)
    rows["died"] = ["1"] * 20
    ds = load_dataset(DataSpec(data=(str(_write(tmp_path, rows)),), site="hospital", time="months", event="died"))
    assert all((named(s, "train")["event"] == 1).all() for s in ds.sites)


@pytest.mark.parametrize("column, cells, message", [
    ("months", {2: "soon"}, "time column 'months' must be numeric but row 3 of 'cohort.csv' holds 'soon'"),
    ("months", {4: "-3.5"}, "time column 'months' must be zero or more"),
    ("months", {4: "-3.5"}, "row 5 of 'cohort.csv' holds '-3.5'"),
    ("died", {1: "maybe"}, "event column 'died' must hold two values (1 = event, 0 = censored) but has 3"),
])
def test_bad_time_or_event_values(tmp_path, column, cells, message):
    rows = _cohort(20)
    rows[column] = list(rows[column])
    for i, v in cells.items():
        rows[column][i] = v
    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(data=(str(_write(tmp_path, rows)),), site="hospital", time="months", event="died"))
    assert message in str(exc.value)


def test_a_survival_time_of_zero_is_accepted_and_trains(tmp_path):
    """An event or censoring on the first day of follow-up (time 0) is a real observation."""
    rows = _cohort(40)
    rows["months"][[0, 4, 25]] = 0.0
    run = fedcare.simulate(data=[str(_write(tmp_path, rows))], site="hospital", time="months", event="died",
                           rounds=3, baselines=False, out=str(tmp_path / "run"))
    times = np.concatenate([named(s, split)["time"] for s in load_dataset(DataSpec(
        data=(str(tmp_path / "cohort.csv"),), site="hospital", time="months", event="died")).sites
        for split in ("train", "test")])
    assert (times == 0).sum() == 3
    assert run.summary["federated"]["mean"]["c_index"] is not None


@pytest.mark.parametrize("value", ["0", "no", "False"])
def test_no_events_at_all(tmp_path, value):
    rows = _cohort(20)
    rows["died"] = [value] * 20
    with pytest.raises(DataError, match="event column 'died' only holds .* no event was observed"):
        load_dataset(DataSpec(data=(str(_write(tmp_path, rows)),), site="hospital", time="months", event="died"))


def test_survival_flag_combinations(tmp_path):
    path = str(_write(tmp_path, _cohort(20)))
    with pytest.raises(ConfigError, match="--event is missing"):
        load_dataset(DataSpec(data=(path,), site="hospital", time="months"))
    with pytest.raises(ConfigError, match="--time is missing"):
        load_dataset(DataSpec(data=(path,), site="hospital", event="died", task="survival"))
    with pytest.raises(ConfigError, match="instead of --label"):
        load_dataset(DataSpec(data=(path,), site="hospital", label="died", time="months", event="died"))
    with pytest.raises(ConfigError, match="not binary"):
        load_dataset(DataSpec(data=(path,), site="hospital", time="months", event="died", task="binary"))
    with pytest.raises(DataError, match="column 'weeks' not found"):
        load_dataset(DataSpec(data=(path,), site="hospital", time="weeks", event="died"))
    with pytest.raises(ConfigError, match="--time applies to --data files"):
        load_dataset(DataSpec(dataset="heart-disease", time="months"))


def test_survival_partitions_and_split_stratified_by_event(tmp_path):
    rows = _cohort(200, seed=3)
    del rows["hospital"]
    path = str(_write(tmp_path, rows))
    for kind in ("iid", "dirichlet"):
        ds = load_dataset(DataSpec(data=(path,), time="months", event="died", partition=kind, num_sites=3))
        assert ds.task == "survival" and len(ds.sites) == 3
    ds = load_dataset(DataSpec(data=(path,), time="months", event="died", partition="iid", num_sites=1))
    (site,) = ds.sites
    # stratified: the test share of events matches the whole site's to within one row
    test_events = named(site, "test")["event"]
    events_all = named(site, "train")["event"].sum() + test_events.sum()
    assert abs(test_events.sum() - events_all * len(test_events) / 200) <= 1
    assert ds.preprocessing["split"]["stratified_by"] == "event"


def test_ovarian_without_survset(monkeypatch):
    import sys

    from fedcare.data import dataset_info

    monkeypatch.setitem(sys.modules, "SurvSet", None)  # makes `import SurvSet...` fail
    monkeypatch.setitem(sys.modules, "SurvSet.data", None)
    with pytest.raises(DataError) as exc:
        load_dataset(DataSpec(dataset="ovarian-genomics"))
    assert str(exc.value) == "dataset 'ovarian-genomics' needs the survset package: pip install 'fedcare[datasets]'"
    (info,) = [d for d in dataset_info() if d["name"] == "ovarian-genomics"]
    assert info["available"] is False and info["task"] == "survival"
    assert [s["rows"] for s in info["sites"]] == [None] * 4
