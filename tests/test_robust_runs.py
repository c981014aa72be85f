"""Robust aggregation and simulated attacks inside real simulated runs, and the anomaly report."""

import json

import numpy as np
import pytest

import fedcare
from fedcare.algorithms import RoundContext, chain, krum, sgd, weighted_mean
from fedcare.core import ConfigError, Update
from fedcare.federation.anomalies import anomaly_report, flagged_sites


def run(tmp_path, name, **kw):
    kw.setdefault("rounds", 15)
    return fedcare.simulate(baselines=False, out=str(tmp_path / name), **kw)


def test_sign_flip_hurts_the_mean_and_the_median_resists_and_names_the_attacker(tmp_path):
    clean_run = run(tmp_path, "clean").summary
    clean = clean_run["federated"]["mean"]["accuracy"]
    mean = run(tmp_path, "mean", attack="sign-flip", attackers=1).summary
    median = run(tmp_path, "median", aggregator="median", attack="sign-flip", attackers=1).summary
    assert mean["attack"] == {"kind": "sign-flip", "sites": ["cleveland"]}
    assert mean["federated"]["mean"]["accuracy"] < clean - 0.1
    assert median["federated"]["mean"]["accuracy"] > mean["federated"]["mean"]["accuracy"] + 0.05
    assert median["anomalies"]["flagged_sites"] == ["cleveland"]
    # the report judges updates whatever rule combines them: the mean defends nothing, yet names the attacker
    assert mean["anomalies"]["flagged_sites"] == ["cleveland"]
    assert clean_run["anomalies"]["flagged_sites"] == []


@pytest.mark.parametrize("attack, attackers", [("gaussian", ["va"]), ("label-flip", 1)])
def test_the_plain_mean_run_names_a_noisy_or_label_flipping_attacker(tmp_path, attack, attackers):
    summary = run(tmp_path, attack, rounds=10, attack=attack, attackers=attackers).summary
    assert summary["anomalies"]["flagged_sites"] == summary["attack"]["sites"]


def test_honest_fedsgd_sites_are_not_named(tmp_path):
    """A small, skewed site's full gradient points its own way and is larger than the others':
    honest heterogeneity, which the report must not call an attack."""
    assert run(tmp_path, "fedsgd", rounds=30, algorithm="fedsgd", lr=0.3).summary["anomalies"]["flagged_sites"] == []


def test_report_judges_updates_against_their_consensus_without_any_decisions():
    ups = [Update(s, {"w": np.array(v, np.float32)}, 1) for s, v in
           [("a", [1, 1]), ("b", [1.2, 0.8]), ("c", [0.9, 1.1]), ("flip", [-1, -1]), ("big", [30, 25])]]
    report = anomaly_report(ups, {"w": np.ones(2)}, {}, {})
    assert {s for s, r in report.items() if r["flagged"]} == {"flip", "big"}
    assert report["flip"]["cosine_consensus"] < 0 < report["a"]["cosine_consensus"]
    assert report["big"]["norm_ratio"] > 10 and report["c"]["norm_ratio"] < 2
    # two updates have no consensus a minority cannot move: nothing is judged
    assert not any(r["flagged"] for r in anomaly_report(ups[2:4], {"w": np.ones(2)}, {}, {}).values())


def test_krum_refuses_a_federation_too_small_for_its_f(tmp_path):
    with pytest.raises(ConfigError, match=r"krum with krum_f=1 needs more than 4 sites per round .* has 4"):
        run(tmp_path, "k", rounds=1, aggregator="krum")
    with pytest.raises(ConfigError, match="a plain mean"):
        run(tmp_path, "k0", rounds=1, aggregator="krum", krum_f=0)
    summary = run(tmp_path, "k01", rounds=2, aggregator="krum", krum_f=0, krum_m=1).summary
    assert summary["aggregator"] == "krum"


def test_label_flip_trains_the_attacker_on_flipped_labels(tmp_path):
    honest = run(tmp_path, "honest", rounds=5)
    flipped = run(tmp_path, "flipped", rounds=5, attack="label-flip", attackers=["va"])
    assert flipped.summary["attack"]["sites"] == ["va"]
    assert not np.allclose(honest.global_params["weight"], flipped.global_params["weight"])


def test_anomaly_rows_in_metrics_jsonl(tmp_path):
    result = run(tmp_path, "rows", rounds=3, aggregator="trimmed-mean", trim_beta=0.25,
                 attack="scale", attackers=1)
    rows = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in rows if r["split"] == "update"]
    assert len(updates) == 3 * 4
    assert all({"norm", "cosine", "flagged", "weight/TrimmedMean"} <= set(r) for r in updates)
    scaled = [r["norm"] for r in updates if r["site"] == "cleveland"]
    others = [r["norm"] for r in updates if r["site"] != "cleveland"]
    assert min(scaled) > 3 * max(others)  # the attack multiplies cleveland's update by 10


def test_attackers_must_leave_an_honest_site_and_exist(tmp_path):
    with pytest.raises(ConfigError, match="leaves no honest site"):
        run(tmp_path, "x", attack="scale", attackers=4)
    with pytest.raises(ConfigError, match="unknown site 'mars'"):
        run(tmp_path, "y", attack="scale", attackers=["mars"])


def test_report_flags_what_krum_discards_and_what_was_refused():
    like = {"w": np.zeros(2, np.float32)}
    ups = [Update(s, {"w": np.array(v, np.float32)}, 1) for s, v in
           [("a", [1, 1]), ("b", [1.1, 0.9]), ("c", [0.9, 1.1]), ("d", [1, 1.05]), ("e", [-50, -40])]]
    outcome = chain(krum(f=1, m=3), sgd(1.0)).run(like, ups, [{}, {}], RoundContext(like, 1, np.random.default_rng(0)))
    report = anomaly_report(ups, outcome.aggregate, outcome.decisions, {"f": "update holds NaN"})
    assert report["e"]["flagged"] and report["e"]["weight/Krum"] == 0.0
    assert report["e"]["cosine"] < 0 < report["a"]["cosine"]
    assert report["f"] == {"flagged": True, "refused": "update holds NaN"}
    # krum m=3 keeps 3 of the 4 honest ones: the fourth is discarded too, in this round
    assert sum(not r["flagged"] for r in report.values()) == 3
    assert flagged_sites([report])["flagged_sites"] == sorted(s for s, r in report.items() if r["flagged"])
    # named only when flagged in MORE than half of the rounds the site took part in
    two_of_three = [{"x": {"flagged": True}}, {"x": {"flagged": True}}, {"x": {"flagged": False}}]
    assert flagged_sites(two_of_three)["flagged_sites"] == ["x"]
    assert flagged_sites(two_of_three[1:] + [{"x": {"flagged": False}}])["flagged_sites"] == []
    assert flagged_sites(two_of_three)["rounds_flagged"] == {"x": 2}


def test_a_generator_of_updates_streams_straight_into_the_mean():
    like = {"w": np.zeros(3, np.float32)}
    consumed = []

    def arriving():
        for i in range(5):
            consumed.append(i)
            yield Update(f"s{i}", {"w": np.full(3, float(i), np.float32)}, 1)

    outcome = chain(weighted_mean("uniform"), sgd(1.0)).run(like, arriving(), [{}, {}],
                                                             RoundContext(like, 1, np.random.default_rng(0)))
    np.testing.assert_allclose(outcome.params["w"], -2.0)  # θ − mean(0..4)
    assert consumed == [0, 1, 2, 3, 4] and outcome.decisions == {}
