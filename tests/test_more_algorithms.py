"""FedProx, Cyclic and the adaptive server optimizers, wired through the real round engine."""

import json

import numpy as np
import pytest

import fedcare
from fedcare.algorithms.recipes import build_algorithm
from fedcare.core import ConfigError


def rows(run, split):
    return [r for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_cyclic_trains_one_site_per_round_in_turn(tmp_path):
    run = fedcare.simulate(algorithm="cyclic", rounds=6, baselines=False, out=str(tmp_path / "c"))
    order = [r["site"] for r in sorted(rows(run, "train"), key=lambda r: r["round"])]
    assert order == ["cleveland", "hungarian", "switzerland", "va", "cleveland", "hungarian"]


def test_fedprox_keeps_local_models_closer_to_the_global_one(tmp_path):
    def norms(mu):
        run = fedcare.simulate(algorithm="fedprox", prox_mu=mu, rounds=2, local_epochs=5, lr=0.05, baselines=False,
                               out=str(tmp_path / f"p{mu}"))
        return np.array([r["norm"] for r in rows(run, "update")])

    assert np.all(norms(10.0) < 0.5 * norms(0.0))  # a strong proximal term shrinks every update


def test_fedprox_with_mu_zero_is_fedavg(tmp_path):
    a = fedcare.simulate(algorithm="fedprox", prox_mu=0.0, rounds=3, baselines=False, out=str(tmp_path / "a"))
    b = fedcare.simulate(algorithm="fedavg", rounds=3, baselines=False, out=str(tmp_path / "b"))
    for k in a.global_params:
        np.testing.assert_array_equal(a.global_params[k], b.global_params[k])


@pytest.mark.parametrize("name, rule", [("fedadam", "adam"), ("fedyogi", "yogi"), ("fedadagrad", "adagrad")])
def test_adaptive_algorithms_use_their_server_optimizer_with_a_small_default_lr(name, rule):
    algo = build_algorithm(name, lr=0.05)
    server = algo.strategy.pieces[-1]
    assert server.rule == rule and server.lr == 0.01 and algo.site_mode == "local_epochs"
    assert build_algorithm(name, lr=0.05, server_lr=0.5).strategy.pieces[-1].lr == 0.5


def test_unknown_algorithm_lists_the_choices():
    with pytest.raises(ConfigError, match="fedadagrad"):
        build_algorithm("fedfoo", lr=0.1)
