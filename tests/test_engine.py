"""The round engine driven by the real simulation transport and real sites (no mocks): site
selection, per-site seeds, the quorum rule, early stopping and the byte count of what was sent."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import fedcare
from conftest import HEART_SITES, site_y
from fedcare.core.config import resolve_config
from fedcare.transports.simulated import build_federation
from fedcare.core.params import zeros_like
from fedcare.core.serialization import params_to_bytes, update_to_bytes
from fedcare.core.update import Update
from fedcare.data import DataSpec, load_dataset
from fedcare.federation.engine import EngineSettings, QuorumError, RoundEngine, select_sites, site_seed
from fedcare.transports.simulation import SimulationTransport


@pytest.fixture(scope="module")
def heart():
    return load_dataset(DataSpec(dataset="heart-disease"))


def federation(heart, **cfg):
    return build_federation(resolve_config(cfg), heart)


def run_engine(fed, **settings):
    transport = SimulationTransport(fed.sites)
    result = RoundEngine(fed.plan.algorithm, transport, replace(fed.plan.settings, **settings)).run(fed.initial)
    return result, transport


# ----- selection and seeds ----------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "min_sites", "expected"), [
    (1.0, 1, 4), (0.5, 1, 2), (0.25, 1, 1), (0.1, 1, 1), (0.5, 3, 3), (0.3, 2, 2), (0.26, 1, 2), (0.5, 9, 4),
])
def test_select_sites_count(fraction, min_sites, expected):
    """k = min(n, max(min_sites, ceil(fraction·n))), chosen without repeats, in site order."""
    for rnd in range(1, 6):
        chosen = select_sites(HEART_SITES, fraction, min_sites, np.random.default_rng([0, rnd]))
        assert len(chosen) == expected
        assert len(set(chosen)) == expected
        assert chosen == [s for s in HEART_SITES if s in chosen]


def test_select_sites_deterministic_per_seed_and_round_and_varies():
    def pick(seed, rnd):
        return select_sites(HEART_SITES, 0.5, 1, np.random.default_rng([seed, rnd]))

    assert all(pick(3, r) == pick(3, r) for r in range(1, 20))
    over_rounds = {tuple(pick(3, r)) for r in range(1, 20)}
    assert len(over_rounds) >= 3  # 6 possible pairs; the same pair every round would be a bug
    over_seeds = {tuple(pick(s, 1)) for s in range(20)}
    assert len(over_seeds) >= 3


def test_site_seed_differs_per_site_round_and_run():
    seeds = {(r, i): site_seed(0, r, i) for r in range(1, 11) for i in range(4)}
    assert len(set(seeds.values())) == len(seeds)
    assert site_seed(0, 1, 0) == site_seed(0, 1, 0)
    assert site_seed(0, 1, 0) != site_seed(1, 1, 0)
    assert all(0 <= s < 2**32 for s in seeds.values())


def test_engine_trains_only_selected_sites_and_evaluates_all(heart):
    """With fraction 0.5 two of four sites train each round, yet every site scores the new model."""
    fed = federation(heart, rounds=6, fraction=0.5)
    result, _ = run_engine(fed)
    assert result.rounds_run == 6
    for rnd, rec in enumerate(result.history, start=1):
        assert len(rec.selected) == 2
        assert set(rec.train) == set(rec.selected)
        assert rec.selected == select_sites(HEART_SITES, 0.5, 1, np.random.default_rng([0, rnd]))
        assert set(rec.evaluation) == set(HEART_SITES)
        assert all(rec.train[s]["num_examples"] == len(site_y(heart.site(s), "train")) for s in rec.selected)
    assert len({tuple(r.selected) for r in result.history}) > 1


def test_fraction_in_metrics_jsonl(tmp_path):
    """The run folder records which sites trained: exactly two train rows per round."""
    run = fedcare.simulate(out=str(tmp_path / "run"), rounds=5, fraction=0.5, baselines=False)
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    for rnd in range(1, 6):
        train = [r["site"] for r in rows if r["round"] == rnd and r["split"] == "train"]
        assert len(train) == 2 and len(set(train)) == 2
        test = [r["site"] for r in rows if r["round"] == rnd and r["split"] == "test"]
        assert sorted(test) == sorted(HEART_SITES)


def test_different_local_seeds_give_different_fedavg_runs(heart):
    """The run seed reaches the sites' minibatch shuffling (same start, different order)."""
    fed = federation(heart, rounds=2)
    a, _ = run_engine(fed, seed=0)
    b, _ = run_engine(fed, seed=1)
    a2, _ = run_engine(fed, seed=0)
    assert all(np.array_equal(a.params[k], a2.params[k]) for k in a.params)
    assert any(not np.array_equal(a.params[k], b.params[k]) for k in a.params)


# ----- quorum -----------------------------------------------------------------------------------


def test_quorum_error_when_fewer_sites_than_min_sites(heart):
    fed = federation(heart, rounds=3)
    with pytest.raises(QuorumError, match=r"round 1: 4 of 4 selected sites answered; at least 5"):
        run_engine(fed, min_sites=5)


def test_quorum_error_reaches_simulate(tmp_path):
    """simulate must not silently run a federation smaller than the configured minimum."""
    with pytest.raises(QuorumError):
        fedcare.simulate(out=str(tmp_path / "run"), rounds=2, min_sites=5, baselines=False)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_min_sites_equal_to_site_count_runs(heart):
    fed = federation(heart, rounds=2)
    result, _ = run_engine(fed, min_sites=4, fraction=0.25)
    assert all(len(r.selected) == 4 for r in result.history)


def test_min_sites_does_not_break_the_baselines(tmp_path):
    run = fedcare.simulate(out=str(tmp_path / "run"), rounds=1, min_sites=2)
    assert set(run.summary["local"]["sites"]) == set(HEART_SITES)


# ----- early stopping in the engine -------------------------------------------------------------


def test_engine_returns_best_round_params_on_early_stop():
    """The engine keeps the params of the best validation round, not of the last one."""
    ds = load_dataset(DataSpec(dataset="heart-disease", val_fraction=0.2))
    fed = build_federation(resolve_config({"val_fraction": 0.2, "patience": 2, "rounds": 60, "lr": 0.05,
                                           "algorithm": "fedsgd"}), ds)
    result, _ = run_engine(fed)
    vals = [r.val_score for r in result.history]
    assert result.stopped_early and result.rounds_run < 60
    best = int(np.argmax(vals)) + 1  # first round reaching the maximum: later ties are not improvements
    assert result.best_round == best and 1 < best < result.rounds_run
    assert result.rounds_run == best + 2  # patience 2: two rounds without gain, then stop
    # re-running exactly best_round rounds without patience yields the returned params...
    upto, _ = run_engine(fed, rounds=best, patience=None)
    assert all(np.array_equal(result.params[k], upto.params[k]) for k in result.params)
    # ...which are not the last round's
    last, _ = run_engine(fed, rounds=result.rounds_run, patience=None)
    assert any(not np.array_equal(result.params[k], last.params[k]) for k in result.params)


# ----- bytes ------------------------------------------------------------------------------------


def expected_bytes(params, history, site_ids) -> int:
    """Per round: params to every selected site and to every evaluated site, plus each update."""
    blob = len(params_to_bytes(params))
    total = 0
    for rec in history:
        total += blob * (len(rec.selected) + len(site_ids))
        for sid in rec.selected:
            train = rec.train[sid]
            update = Update(sid, zeros_like(params), int(train["num_examples"]),
                            {k: v for k, v in train.items() if k != "num_examples"})
            total += len(update_to_bytes(update, round_=rec.round))
    return total


@pytest.mark.parametrize("algorithm", ["fedavg", "fedsgd"])
def test_bytes_sent_is_exactly_the_messages(heart, algorithm):
    fed = federation(heart, rounds=3, fraction=0.5, algorithm=algorithm)
    result, transport = run_engine(fed)
    assert transport.bytes_sent == expected_bytes(fed.initial, result.history, HEART_SITES)


def test_bytes_sent_grows_linearly_with_rounds(tmp_path):
    """Summary bytes cover the federation only (baselines excluded) and scale with rounds."""
    sent = {}
    for rounds in (2, 4):
        run = fedcare.simulate(out=str(tmp_path / f"r{rounds}"), rounds=rounds, baselines=rounds == 4)
        sent[rounds] = run.summary["bytes_sent"]
        initial = build_federation(run.config, load_dataset(DataSpec(dataset="heart-disease"))).initial
        assert sent[rounds] == expected_bytes(initial, run.history, HEART_SITES)
    # a few bytes of slack per update: the JSON-encoded train loss changes length between rounds
    assert abs(sent[4] - 2 * sent[2]) <= 4 * 4 * 16
    assert sent[2] > 2 * 8 * len(params_to_bytes(initial))


def test_engine_settings_defaults_are_the_config_defaults():
    """EngineSettings defaults mirror FederationConfig so engines built by hand behave like simulate."""
    cfg = resolve_config({})
    s = EngineSettings(rounds=cfg.algorithm.rounds)
    t, a = cfg.training, cfg.algorithm
    assert (s.local_epochs, s.lr, s.batch_size, s.optimizer, s.fraction, s.min_sites, s.patience, s.seed) == \
        (t.local_epochs, t.lr, t.batch_size, t.optimizer, a.fraction, a.min_sites, a.patience, cfg.run.seed)
