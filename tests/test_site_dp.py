"""Site-level DP (DP-FedAvg) in a run: the ε reported is dp_accounting's for the mechanism the engine
runs (a fixed number of sites per round, without replacement), a run never exceeds its budget,
adaptive clipping moves C, bad combinations are refused in one line, and the CLI flags work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import fedcare
from conftest import run_cli
from fedcare.algorithms.aggregators import weighted_mean
from fedcare.algorithms.accounting import FixedSizeSiteAccountant, fixed_size_epsilon
from fedcare.algorithms.pieces import RoundContext
from fedcare.algorithms.privacy import PrivacyBudgetSpent, SiteDPSettings, calibrate_site_dp, site_level_dp
from fedcare.core.config import resolve_config
from fedcare.transports.simulated import build_federation
from fedcare.interfaces.cli import app
from fedcare.core.errors import ConfigError
from fedcare.core.update import Update
from fedcare.data import load_dataset

dp_accounting = pytest.importorskip("dp_accounting")


def reference_epsilon(sigma, num_sites, per_round, rounds, delta):
    """dp_accounting itself: rounds × (k of N without replacement, Gaussian of σ/2), replace-one."""
    gaussian = dp_accounting.GaussianDpEvent(sigma / 2)  # replace-one: one site moves the clipped sum by 2C
    one = gaussian if per_round == num_sites else \
        dp_accounting.SampledWithoutReplacementDpEvent(num_sites, per_round, gaussian)
    acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc.compose(dp_accounting.SelfComposedDpEvent(one, rounds))
    return acc.get_epsilon(delta)


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_rows(run_dir):
    return [r for r in rows_of(run_dir) if r["model"] == "federated" and r["split"] == "train"]


# ---------------------------------------------------------------- accounting


@pytest.mark.parametrize("sigma,n,k,rounds", [(1.3, 10, 3, 40), (2.0, 4, 4, 25), (0.9, 7, 5, 12), (3.0, 4, 2, 1)])
def test_epsilon_is_dp_accountings_for_sampling_without_replacement(sigma, n, k, rounds):
    acc = FixedSizeSiteAccountant(sigma, n, k, 1e-5)
    assert acc.epsilon(rounds) == reference_epsilon(sigma, n, k, rounds, 1e-5)
    assert fixed_size_epsilon(sigma / 2, n, k, rounds, 1e-5) == acc.epsilon(rounds)
    assert acc.epsilon(0) == 0.0


def test_calibration_spends_just_under_the_budget():
    acc = FixedSizeSiteAccountant.calibrated(4.0, 1e-5, 10, 3, 30)
    assert 0.99 * 4.0 <= acc.epsilon(30) <= 4.0
    assert acc.rounds_affordable(4.0) >= 30
    settings, adaptive = calibrate_site_dp(4.0, 1e-5, 0.5, 0.5, 10, 3, 30)
    assert settings.adaptive and settings.noise_multiplier_count > 0
    assert adaptive.noise_multiplier >= acc.noise_multiplier  # the sum and the count together: no more ε
    assert adaptive.epsilon(30) <= 4.0


@pytest.mark.parametrize("fraction,secure", [(1.0, False), (0.5, False), (1.0, True)])
def test_a_runs_epsilon_is_dp_accountings_and_within_budget(tmp_path, fraction, secure):
    run = fedcare.simulate(rounds=3, baselines=False, site_dp_epsilon=6.0, fraction=fraction,
                           secure_aggregation=secure, out=str(tmp_path / "run"))
    privacy = run.summary["privacy"]
    assert privacy["level"] == "site" and privacy["delta"] == 1e-5 and privacy["budget"] == 6.0
    site = privacy["site"]
    per_round = 4 if fraction == 1.0 else 2
    expected = reference_epsilon(site["noise_multiplier"], 4, per_round, 3, 1e-5)
    assert privacy["epsilon"] == site["epsilon"] == expected
    assert 0.99 * 6.0 <= privacy["epsilon"] <= 6.0
    assert site["secure_aggregation"] is secure and site["clip"] == 0.1 and site["rounds"] == 3  # the default C
    # metrics.jsonl: ε after every round, rising to the reported figure
    by_round = {r["round"]: r["site_epsilon"] for r in train_rows(tmp_path / "run")}
    assert [by_round[r] for r in (1, 2, 3)] == [reference_epsilon(site["noise_multiplier"], 4, per_round, r, 1e-5)
                                                for r in (1, 2, 3)]
    assert by_round[1] < by_round[2] < by_round[3] == privacy["epsilon"]


def test_a_round_that_would_overspend_is_refused_before_anything_is_released():
    accountant = FixedSizeSiteAccountant(1.0, 4, 4, 1e-5)
    budget = accountant.epsilon(2)  # exactly two rounds fit
    settings = SiteDPSettings(1.0, 1.0)
    piece = site_level_dp(settings.central(), settings, accountant, budget)
    params = {"w": np.zeros(2, np.float32)}
    updates = [Update(s, {"w": np.array([0.1, 0.2], np.float32)}, 10) for s in "abcd"]
    state = piece.init(params)
    for r in (1, 2):
        _, state = piece.apply(updates, state, RoundContext(params, r, np.random.default_rng(r)))
        assert piece.round_metrics(state)["site_epsilon"] <= budget
    with pytest.raises(PrivacyBudgetSpent, match="past the budget") as info:
        piece.apply(updates, state, RoundContext(params, 3, np.random.default_rng(3)))
    assert "\n" not in str(info.value)
    assert piece.rounds(state) == 2


@pytest.mark.parametrize("budget", [1.0, 10.0])
def test_runs_never_exceed_their_budget(tmp_path, budget):
    run = fedcare.simulate(rounds=4, baselines=False, site_dp_epsilon=budget, out=str(tmp_path / "run"))
    assert all(r["site_epsilon"] <= budget for r in train_rows(tmp_path / "run"))
    assert run.summary["privacy"]["epsilon"] <= budget


def test_record_and_site_level_together(tmp_path):
    run = fedcare.simulate(rounds=2, baselines=False, batch_size=32, dp_epsilon=5.0, site_dp_epsilon=5.0,
                           out=str(tmp_path / "run"))
    privacy = run.summary["privacy"]
    assert privacy["level"] == "record+site"
    assert set(privacy["epsilon_per_site"]) == {"cleveland", "hungarian", "switzerland", "va"}
    assert privacy["site"]["epsilon"] <= 5.0


# ---------------------------------------------------------------- adaptive clipping


@pytest.mark.parametrize("secure", [False, True])
def test_adaptive_clipping_moves_the_clip_norm_over_rounds(tmp_path, secure):
    # update norms are about 0.1-0.3 here: starting at C = 5, the median quantile pulls C down
    run = fedcare.simulate(rounds=5, baselines=False, site_dp_epsilon=50.0, site_dp_clip=5.0,
                           site_dp_clip_quantile=0.5, secure_aggregation=secure, out=str(tmp_path / "run"))
    clips = [r["site_clip"] for r in sorted(train_rows(tmp_path / "run"), key=lambda r: r["round"])][::4]
    assert clips[0] == 5.0
    assert clips[-1] < 0.8 * clips[0]
    assert run.summary["privacy"]["site"]["clip_quantile"] == 0.5
    assert run.summary["privacy"]["site"]["clip"] == clips[-1]


# ---------------------------------------------------------------- refused combinations


@pytest.mark.parametrize("settings,words", [
    (dict(secure_aggregation=True, aggregator="median"), "needs each update"),
    (dict(secure_aggregation=True, aggregator="krum"), "aggregator mean"),
    (dict(secure_aggregation=True, norm_bound=2.0), "norm_bound"),
    (dict(secure_aggregation=True, algorithm="scaffold"), "scaffold"),
    (dict(secure_aggregation=True, algorithm="cyclic"), "cyclic"),
    (dict(secagg_max_dropouts=1), "needs secure_aggregation"),
    (dict(site_dp_clip_quantile=0.5), "needs site_dp_epsilon"),
    (dict(site_dp_epsilon=1.0, aggregator="trimmed-mean"), "aggregator mean"),
    (dict(site_dp_epsilon=1.0, algorithm="scaffold"), "scaffold"),
    (dict(site_dp_epsilon=1.0, algorithm="cyclic"), "cyclic"),
    (dict(site_dp_epsilon=1.0, site_weights={"va": 2.0}), "site_weights"),
    (dict(site_dp_epsilon=1.0, site_dp_clip_quantile=1.5), "site_dp_clip_quantile"),
])
def test_bad_combinations_are_refused_in_one_line(settings, words):
    with pytest.raises(ConfigError, match=words) as info:
        resolve_config({"rounds": 2, **settings})
    assert "\n" not in str(info.value)


def test_combinations_that_depend_on_the_sites_are_refused_when_the_federation_is_built():
    cfg = resolve_config({"rounds": 2, "secure_aggregation": True, "secagg_max_dropouts": 2})
    with pytest.raises(ConfigError, match="at most 1 dropped site") as info:
        build_federation(cfg, load_dataset(cfg.data))
    assert "\n" not in str(info.value)
    cfg = resolve_config({"rounds": 2, "secure_aggregation": True, "fraction": 0.25})  # one site per round
    with pytest.raises(ConfigError, match="at least 2 sites per round and this run selects 1"):
        build_federation(cfg, load_dataset(cfg.data))
    cfg = resolve_config({"rounds": 2, "site_dp_epsilon": 1.0})
    with pytest.raises(ConfigError, match="custom aggregator"):
        build_federation(cfg, load_dataset(cfg.data), aggregator=weighted_mean())


# ---------------------------------------------------------------- the command line


def test_cli_flags_run_site_level_dp_with_secure_aggregation(tmp_path):
    result = CliRunner().invoke(app, ["simulate", "--rounds", "2", "--no-baselines", "--site-dp-epsilon", "8",
                                      "--site-dp-delta", "1e-6", "--site-dp-clip", "0.5", "--site-dp-clip-quantile",
                                      "0.5", "--secure-aggregation", "--secagg-max-dropouts", "1",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    site = summary["privacy"]["site"]
    assert summary["privacy"]["level"] == "site" and site["secure_aggregation"] is True
    assert site["delta"] == 1e-6 and site["clip_quantile"] == 0.5 and site["epsilon"] <= 8.0
    assert math.isfinite(site["noise_multiplier"])
    config = (tmp_path / "run" / "config.yaml").read_text()
    for line in ("site_dp_epsilon: 8.0", "secure_aggregation: true", "secagg_max_dropouts: 1"):
        assert line in config
    rows = train_rows(tmp_path / "run")
    assert {r["site"] for r in rows} == {"cleveland", "hungarian", "switzerland", "va"}
    assert all("train_loss" in r and "site_epsilon" in r and "num_examples" not in r for r in rows)


def test_cli_refuses_a_bad_combination_with_one_line(tmp_path):
    proc = run_cli("simulate", "--rounds", "2", "--secure-aggregation", "--aggregator", "median", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "aggregator mean" in proc.stderr
    assert not np.any([p.name == "runs" for p in tmp_path.iterdir()])


def test_a_resumed_run_keeps_counting_the_budget_and_equals_an_uninterrupted_one(tmp_path):
    from fedcare.interfaces.api import resume

    class Crash(Exception):
        pass

    def crash_after_two(name, record):
        if name == "federated" and record.round == 2:
            raise Crash()

    settings = dict(rounds=4, baselines=False, site_dp_epsilon=20.0, site_dp_clip=0.5, site_dp_clip_quantile=0.5,
                    secure_aggregation=True)
    whole = fedcare.simulate(out=str(tmp_path / "whole"), **settings)
    with pytest.raises(Crash):
        fedcare.simulate(out=str(tmp_path / "cut"), progress=crash_after_two, **settings)
    resumed = resume(tmp_path / "cut")
    for k in whole.global_params:
        np.testing.assert_array_equal(resumed.global_params[k], whole.global_params[k])
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()
    assert resumed.summary["privacy"] == whole.summary["privacy"]
    assert resumed.summary["bytes_sent"] == whole.summary["bytes_sent"]


def test_site_dp_defaults_beat_the_constant_predictor_and_a_failing_run_warns(tmp_path):
    """The defaults chosen on validation rows (benchmarks/site_dp_defaults.py) learn at ε = 10; the old
    ones (C = 1, the server's full step) were worse than always predicting the majority class, and
    now say so."""
    good = fedcare.simulate(baselines=False, site_dp_epsilon=10.0, out=str(tmp_path / "good")).summary
    assert good["federated"]["mean"]["accuracy"] > good["constant"]["mean"]["accuracy"]
    assert good["warnings"] == []
    bad = fedcare.simulate(baselines=False, site_dp_epsilon=10.0, site_dp_clip=1.0, server_lr=1.0,
                           out=str(tmp_path / "bad")).summary
    assert bad["federated"]["mean"]["accuracy"] < bad["constant"]["mean"]["accuracy"]
    assert any(w.startswith("the federated model's mean test accuracy") for w in bad["warnings"])
    saved = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert saved["warnings"] == bad["warnings"]


def test_cli_prints_the_warning_of_a_model_worse_than_the_constant_predictor(tmp_path):
    result = CliRunner().invoke(app, ["simulate", "--no-baselines", "--site-dp-epsilon", "10", "--site-dp-clip", "1",
                                      "--server-lr", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "warning: the federated model's mean test accuracy" in " ".join(result.output.split())
