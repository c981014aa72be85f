"""Record-level DP at each site: DP-SGD under the site's own accountant, a budget that is never
exceeded, and the ε reported equal to dp-accounting's for the same mechanism."""

import numpy as np
import pytest
import torch

import fedcare
import fedcare.core
from fedcare.algorithms.accounting import epsilon
from fedcare.core.messages import FitRequest
from conftest import examples
from fedcare.learning import LocalSite, make_task
from fedcare.learning.batches import Batches
from fedcare.learning.models import LinearModel
from fedcare.learning.dpsgd import dp_steps, train_dp
from fedcare.learning.site import BudgetExhausted


def _site(n=40):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    empty = examples(tabular=np.zeros((0, 3), np.float32), label=np.zeros(0, np.float32))
    rows = examples(tabular=x, label=y)
    return LocalSite("s", make_task("binary"), LinearModel(["tabular"], 3, 1),
                     {"train": rows, "val": empty, "test": rows})


def _request(round_, planned, eps=2.0):
    return FitRequest(round_, "local_epochs", 1, 0.1, 8, "sgd", round_, dp_epsilon=eps, dp_delta=1e-5,
                      dp_clip=1.0, planned_rounds=planned)


def test_the_site_spends_exactly_its_budget_and_refuses_more():
    site = _site()
    params = {"weight": np.zeros((1, 3), np.float32), "bias": np.zeros(1, np.float32)}
    spent = [site.fit(params, _request(r, planned=3)).metrics["epsilon"] for r in (1, 2, 3)]
    assert spent == sorted(spent) and spent[-1] <= 2.0 and spent[-1] > 1.99
    with pytest.raises(BudgetExhausted, match="would exceed its privacy budget"):
        site.fit(params, _request(4, planned=3))
    # the reported ε is dp-accounting's for the same (σ, q, steps, δ)
    sigma, steps = float(site.dp["noise_multiplier"][0]), int(site.dp["steps"][0])
    assert steps == 3 * dp_steps(1, 8 / 40)
    assert spent[-1] == pytest.approx(epsilon(sigma, 8 / 40, steps, 1e-5))


def test_a_run_reports_each_sites_epsilon_within_budget(tmp_path):
    run = fedcare.simulate(dp_epsilon=3.0, rounds=3, batch_size=32, baselines=False, out=str(tmp_path / "dp"))
    privacy = run.summary["privacy"]
    assert privacy["level"] == "record" and privacy["delta"] == 1e-5
    assert set(privacy["epsilon_per_site"]) == {"cleveland", "hungarian", "switzerland", "va"}
    assert all(0 < e <= 3.0 for e in privacy["epsilon_per_site"].values())


def test_per_patient_clipping_bounds_one_patients_influence():
    # with no noise, one step moves the weights by at most lr·C·(rows in batch)/(q·n) = lr·C in expectation;
    # a patient with a huge feature value cannot move them further than C allows
    torch.manual_seed(0)
    model = LinearModel(["tabular"], 1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    data = Batches(examples(tabular=np.array([[1000.0]], np.float32), label=np.array([1.0], np.float32)),
                   make_task("binary"), ["tabular"])
    train_dp(model, data, epochs=1, lr=1.0, batch_size=1, clip=0.5, noise_multiplier=0.0, seed=0)
    assert abs(float(model.weight.detach())) == pytest.approx(0.5, rel=1e-5)  # clipped gradient norm 0.5, lr 1, q·n = 1


@pytest.mark.parametrize("settings", [{"algorithm": "fedsgd"}, {"algorithm": "scaffold"}, {"algorithm": "fedprox"},
                                      {"personalization": "fedrep"}, {"optimizer": "adam"}])
def test_dp_refuses_what_would_train_without_it(tmp_path, settings):
    with pytest.raises(fedcare.core.ConfigError, match="record-level DP"):
        fedcare.simulate(dp_epsilon=1.0, rounds=1, baselines=False, out=str(tmp_path / "x"), **settings)
