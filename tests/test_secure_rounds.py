"""Secure aggregation in simulated rounds: the engine gets only the sum, the result equals plain
FedAvg's (with and without a dropped site), the coordinator holds no individual update, sites'
metrics still reach metrics.jsonl, bytes are counted, and site-level DP noises at the sites."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import fedcare
from fedcare.algorithms.secagg import (
    SUM_SITE_ID,
    KeyAdvert,
    MaskedInput,
    Roster,
    SealedShares,
    SecAggCoordinator,
    SecAggError,
    SecAggSite,
    UnmaskRequest,
    UnmaskResponse,
    decode_fixed_point,
    decode_message,
    encode_message,
)
from fedcare.core.config import resolve_config
from fedcare.transports.simulated import build_federation
from fedcare.core.errors import ConfigError, SiteDeclined
from fedcare.data import load_dataset
from fedcare.federation.engine import RoundEngine
from fedcare.transports.secure import SecureAggregation, SecurePlan, secure_transport
from fedcare.transports.simulation import SimulationTransport

ROUNDS = 3


def federation(**overrides):
    cfg = resolve_config({"rounds": ROUNDS, "baselines": False, "checkpoint_every": 0, **overrides})
    return build_federation(cfg, load_dataset(cfg.data))


class Recording:
    """A site that keeps a copy of every update it sends (what the coordinator must never see)."""

    def __init__(self, site):
        self.site, self.site_id, self.sent = site, site.site_id, []

    def fit(self, params, request):
        update = self.site.fit(params, request)
        self.sent.append(update)
        return update

    def evaluate(self, params, splits):
        return self.site.evaluate(params, splits)


class Absent:
    """A site that never answers: the plain run's counterpart of a site that drops after masking."""

    def __init__(self, site):
        self.site, self.site_id = site, site.site_id

    def fit(self, params, request):
        self.site.fit(params, request)  # it trains (same local state as in the secure run), then is lost
        raise SiteDeclined("gone")

    def evaluate(self, params, splits):
        return self.site.evaluate(params, splits)


def eval_rows(history):
    return {(r.round, sid, split, m): v for r in history for sid, splits in r.evaluation.items()
            for split, values in splits.items() for m, v in values.items() if v is not None}


FIXED_POINT = ROUNDS * 2.0 ** -16  # each round's mean is off by at most 2^-17 per coordinate (16 fraction bits)


def assert_same_run(plain, secure, atol=1e-4):
    a, b = eval_rows(plain.history), eval_rows(secure.history)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=atol), key
    for name in plain.params:
        np.testing.assert_allclose(secure.params[name], plain.params[name], atol=FIXED_POINT)


# ---------------------------------------------------------------- equal to plain FedAvg


def test_a_secure_fedavg_run_equals_the_plain_one(tmp_path):
    plain = fedcare.simulate(rounds=ROUNDS, baselines=False, out=str(tmp_path / "plain"))
    secure = fedcare.simulate(rounds=ROUNDS, baselines=False, secure_aggregation=True, out=str(tmp_path / "secure"))
    for model in ("federated",):
        for site, values in plain.summary[model]["sites"].items():
            for metric, value in values.items():
                assert secure.summary[model]["sites"][site][metric] == pytest.approx(value, abs=1e-4)
    rows = [json.loads(line) for line in (tmp_path / "secure" / "metrics.jsonl").read_text().splitlines()]
    plain_rows = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    train = {(r["round"], r["site"]): r for r in rows if r["split"] == "train"}
    plain_train = {(r["round"], r["site"]): r for r in plain_rows if r["split"] == "train"}
    assert train.keys() == plain_train.keys()  # every site's train_loss reached metrics.jsonl
    for key, row in plain_train.items():
        assert train[key]["train_loss"] == pytest.approx(row["train_loss"], abs=1e-4)
        assert train[key]["num_examples"] == row["num_examples"]
    # the coordinator saw one summed update per round: the anomaly report can only describe the sum
    assert {r["site"] for r in rows if r["split"] == "update"} == {SUM_SITE_ID}
    assert secure.summary["privacy"] == {"epsilon": None, "delta": None, "secure_aggregation": True}
    assert secure.summary["bytes_sent"] > plain.summary["bytes_sent"]


@pytest.mark.parametrize("weighting", ["examples", "uniform"])
def test_with_one_dropped_site_it_equals_plain_fedavg_without_that_site(weighting):
    plain_fed = federation(weighting=weighting)
    sites = [Absent(s) if s.site_id == "va" else s for s in plain_fed.federated_sites]
    plain = RoundEngine(plain_fed.plan.algorithm, SimulationTransport(sites), plain_fed.plan.settings).run(plain_fed.initial)

    fed = federation(weighting=weighting, secure_aggregation=True, secagg_max_dropouts=1)
    secure_agg = SecureAggregation(fed.federated_sites.secure.plan, dropouts=lambda rnd, ids: ["va"])
    transport = SimulationTransport(list(fed.federated_sites), secure=secure_agg)
    secure = RoundEngine(fed.plan.algorithm, transport, fed.plan.settings).run(fed.initial)
    assert_same_run(plain, secure)
    for record in secure.history:
        assert set(record.train) == {"cleveland", "hungarian", "switzerland"}  # the dropped site sent no metrics
        assert "dropped after masking" in record.anomalies["va"]["refused"]
    assert secure_agg.last_round is not None and secure_agg.last_round.threshold == 3


def test_too_many_dropouts_stop_the_round_in_one_line():
    fed = federation(secure_aggregation=True, secagg_max_dropouts=1)
    transport = SimulationTransport(list(fed.federated_sites), secure=SecureAggregation(
        fed.federated_sites.secure.plan, dropouts=lambda rnd, ids: ["va", "cleveland"]))
    with pytest.raises(SecAggError, match="fewer than the threshold 3") as info:
        RoundEngine(fed.plan.algorithm, transport, fed.plan.settings).run(fed.initial)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- what the coordinator holds


def test_the_coordinator_never_holds_an_individual_update():
    fed = federation(secure_aggregation=True)
    sites = [Recording(s) for s in fed.federated_sites]
    agg = SecureAggregation(fed.federated_sites.secure.plan)
    transport = SimulationTransport(sites, secure=agg)
    seen = []
    RoundEngine(fed.plan.algorithm, transport, fed.plan.settings,
                on_round=lambda rec: seen.append(dict(agg.last_round.masked_inputs))).run(fed.initial)
    layout = agg.last_round.layout
    for rnd, masked in enumerate(seen):
        assert set(masked) == {s.site_id for s in sites}
        for site in sites:
            update = site.sent[rnd]
            plain = layout.flatten(update.grad, {"weight": update.num_examples})
            weighted = np.concatenate([plain[:-1] * update.num_examples, plain[-1:]])
            held = decode_fixed_point(masked[site.site_id])
            for truth in (plain, weighted):
                assert not np.allclose(held, truth, atol=1.0)
                assert abs(np.corrcoef(held, truth)[0, 1]) < 0.9


def test_site_level_dp_noise_is_added_before_masking():
    """With site-level DP the unmasked sum already holds the noise: the coordinator never sees Σ clip(Δᵢ)."""
    fed = federation(secure_aggregation=True, site_dp_epsilon=50.0, site_dp_clip=0.05, rounds=1)
    sites = [Recording(s) for s in fed.federated_sites]
    agg = SecureAggregation(fed.federated_sites.secure.plan)
    got = []

    class Spy(SimulationTransport):
        def fit(self, params, requests, extras=None):
            result = super().fit(params, requests, extras)
            got.append(result.updates[0])
            return result

    RoundEngine(fed.plan.algorithm, Spy(sites, secure=agg), fed.plan.settings).run(fed.initial)
    (total,) = got
    plan = agg.plan
    layout = agg.last_round.layout
    clipped = np.zeros(layout.model_size)
    for site in sites:
        x = layout.flatten(site.sent[0].grad, {"weight": 0.0})[:-1]
        clipped += x * min(1.0, 0.05 / np.linalg.norm(x))
    noise = layout.flatten(total.grad, {"weight": 0.0})[:-1] - clipped
    expected_std = plan.dp.noise_multiplier * 0.05  # 4 shares of σ²C²/4 (threshold 4)
    assert 0.5 * expected_std < noise.std() < 1.6 * expected_std
    assert total.metrics["weight"] == 4.0


def test_bytes_count_every_protocol_message():
    fed = federation()
    plain = SimulationTransport(list(fed.federated_sites))
    RoundEngine(fed.plan.algorithm, plain, fed.plan.settings).run(fed.initial)
    secure_fed = federation(secure_aggregation=True)
    secure = SimulationTransport(secure_fed.federated_sites)
    RoundEngine(secure_fed.plan.algorithm, secure, secure_fed.plan.settings).run(secure_fed.initial)
    length = sum(v.size for v in fed.initial.values()) + 1
    updates = plain.bytes_sent - 2 * ROUNDS * 4 * len(_params_blob(fed.initial))  # plain: broadcasts + updates
    protocol = secure.bytes_sent - 2 * ROUNDS * 4 * len(_params_blob(fed.initial))
    assert protocol > ROUNDS * 4 * 8 * length  # at least every masked vector
    assert protocol > updates
    # keys (64 bytes each way per pair of sites at least) and sealed shares (148 bytes each) are counted
    assert protocol >= ROUNDS * (4 * 8 * length + 4 * 3 * 148 * 2)


def _params_blob(params):
    from fedcare.core.serialization import params_to_bytes
    return params_to_bytes(params)


# ---------------------------------------------------------------- wire format


def test_every_protocol_message_round_trips_through_bytes_and_bad_bytes_are_refused():
    coord = SecAggCoordinator(7, 3, 2)
    sites = {s: SecAggSite(s, 7) for s in ("a", "b", "c")}
    for site in sites.values():
        coord.receive_keys(site.advertise())
    roster = coord.roster()
    batches = {s: site.share_keys(roster) for s, site in sites.items()}
    for batch in batches.values():
        coord.receive_shares(batch)
    for s, site in sites.items():
        site.receive_shares(coord.shares_for(s))
    masked = sites["a"].mask(np.arange(3.0))
    coord.receive_masked(masked)
    coord.receive_masked(sites["b"].mask(np.ones(3)))
    request = coord.unmask_request()
    response = sites["a"].unmask_response(request)
    messages = ((sites["a"].advertise(), KeyAdvert), (roster, Roster), (batches["a"], SealedShares),
                (masked, MaskedInput), (request, UnmaskRequest), (response, UnmaskResponse))
    for msg, kind in messages:
        blob = encode_message(msg)
        assert decode_message(blob, kind) == msg
        with pytest.raises(SecAggError):
            decode_message(blob[:-1], kind)
        with pytest.raises(SecAggError):
            decode_message(blob, MaskedInput if kind is KeyAdvert else KeyAdvert)


def test_the_same_seed_gives_the_same_secure_site_dp_run(tmp_path):
    settings = dict(rounds=2, baselines=False, secure_aggregation=True, site_dp_epsilon=20.0, site_dp_clip=0.2,
                    site_dp_clip_quantile=0.5, seed=5)
    a = fedcare.simulate(out=str(tmp_path / "a"), **settings)
    b = fedcare.simulate(out=str(tmp_path / "b"), **settings)
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    for name in a.global_params:
        assert np.array_equal(a.global_params[name], b.global_params[name])


def test_secure_transport_helper_and_threshold_rule():
    fed = federation(secure_aggregation=True, secagg_max_dropouts=1)
    transport = secure_transport(list(fed.federated_sites), SecurePlan(max_dropouts=1))
    result = RoundEngine(fed.plan.algorithm, transport, fed.plan.settings).run(fed.initial)
    assert result.rounds_run == ROUNDS and math.isfinite(float(result.params[next(iter(result.params))].sum()))


def test_the_plan_travels_as_json_without_its_noise_seed():
    from fedcare.algorithms.privacy import SiteDPSettings

    plan = SecurePlan(1, "uniform", {"va": 2.0}, SiteDPSettings(0.5, 2.0, 0.5, 3.0), noise_seed=7)
    back = SecurePlan.from_json(json.loads(json.dumps(plan.to_json())))
    assert back == SecurePlan(1, "uniform", {"va": 2.0}, SiteDPSettings(0.5, 2.0, 0.5, 3.0))
    with pytest.raises(ConfigError, match="malformed"):
        SecurePlan.from_json({"max_dropouts": 1})
