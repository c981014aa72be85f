"""Unattended agents: a hospital's approval policy, checked without a person before a run is
answered; the interactive --approve asks once per run; without a terminal it says what to do."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import HEART_SITES, run_cli
from netutil import Deployment

from fedcare.core.errors import ConfigError
from fedcare.transports.network.policy import Policy, load_policy

RUN = {"dataset": "heart-disease", "rounds": 2, "seed": 3, "lr": 0.05, "local_epochs": 1, "baselines": False,
       "personalization": "finetune", "finetune_epochs": 1}
PLAN = {"model": "linear", "algorithm": "fedavg", "personalization": "none", "rounds": 20, "local_epochs": 1,
        "label": "disease", "secure_aggregation": False, "dp_epsilon": None, "site_dp_epsilon": None}


@pytest.mark.parametrize(("policy", "changed", "says"), [
    ({"models": ["linear"]}, {"model": "mlp"}, "model 'mlp' is not one of the accepted linear"),
    ({"algorithms": ["fedavg", "fedprox"]}, {"algorithm": "scaffold"}, "algorithm 'scaffold' is not one of"),
    ({"personalization": ["none"]}, {"personalization": "ditto"}, "personalization 'ditto'"),
    ({"labels": ["disease"]}, {"label": "hiv_status"}, "learns column 'hiv_status'"),
    ({"labels": ["disease"]}, {"label": None}, "a built-in dataset's label"),
    ({"max_rounds": 10}, {}, "rounds 20 is more than the accepted 10"),
    ({"max_local_epochs": 1}, {"local_epochs": 3}, "local_epochs 3 is more than the accepted 1"),
    ({"secure_aggregation": True}, {}, "secure_aggregation is off"),
    ({"max_dp_epsilon": 8}, {}, "dp_epsilon is not set and this site requires it, at most 8"),
    ({"max_dp_epsilon": 8}, {"dp_epsilon": 10.0}, "dp_epsilon 10 is more than the accepted 8"),
    ({"max_site_dp_epsilon": 5}, {"site_dp_epsilon": 6.0}, "site_dp_epsilon 6 is more than the accepted 5"),
])
def test_each_setting_outside_the_policy_is_named(policy, changed, says):
    rules = Policy(**policy)
    assert says in rules.refusal({**PLAN, **changed})
    inside = {**PLAN, "rounds": 5, "dp_epsilon": 4.0, "site_dp_epsilon": 2.0, "secure_aggregation": True}
    assert rules.refusal(inside) is None


def test_a_policy_file_is_read_strictly(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("algorithms: fedavg\nmax_rounds: 30\n")
    assert load_policy(path) == Policy(algorithms=("fedavg",), max_rounds=30)
    for text, says in (("max_round: 30\n", "unknown key 'max_round'"), ("", "accepts everything"),
                       ("max_rounds: many\n", "max_rounds"), ("[1, 2\n", "not valid YAML")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=says):
            load_policy(path)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "nope.yaml")


def test_policy_approve_once_and_no_terminal_over_the_network(tmp_path):
    d = Deployment(tmp_path, HEART_SITES, RUN)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"models": ["linear"], "algorithms": ["fedavg"], "max_rounds": 3}))
    admin = ["--coordinator", d.url, "--credential", str(d.pki / "admin.json")]

    def start(rounds: int) -> str:
        path = tmp_path / f"run-{rounds}.yaml"
        path.write_text(yaml.safe_dump({**RUN, "rounds": rounds}))
        started = run_cli("admin", "start", *admin, "--config", str(path), cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        return started.stdout.split()[1]

    try:
        d.start_coordinator()
        person = d.start_agent("cleveland", "--approve", "--keep-running", stdin=subprocess.PIPE)
        person.stdin.write(b"y\n")  # one answer for the whole run: prepare, rounds, personalization
        person.stdin.flush()
        d.start_agent("hungarian", "--policy", str(policy), "--keep-running", stdin=subprocess.DEVNULL)
        for site in HEART_SITES[2:]:
            d.start_agent(site, "--keep-running")
        first = start(2)
        done = d.wait_completed()
        assert done["run_id"] == first
        assert (tmp_path / "cleveland.log").read_text().count("Approve this plan") == 1
        assert "Approve this plan" not in (tmp_path / "hungarian.log").read_text()

        second = start(5)  # more rounds than hungarian's policy accepts
        failed = d.wait_for(lambda s: s["run_id"] == second and s["status"] == "failed", what="the refusal")
        assert failed["reason"] == (f"site 'hungarian' declined the run: run {second} refused by policy.yaml: "
                                    "rounds 5 is more than the accepted 3")
        assert f"run {second} refused by policy.yaml: rounds 5 is more than the accepted 3" in d.log("hungarian")
        assert failed["rounds"] == []  # nothing trained

        person.stdin.close()  # nobody at the terminal any more
        start(2)
        assert person.wait(timeout=120) == 2
        last = d.log("cleveland").strip().splitlines()[-1]
        assert last.endswith("error: --approve needs a person at a terminal, and there is none (stdin is closed); "
                             "to run unattended give --policy policy.yaml with what this site accepts "
                             "(docs/deployment.md)")
    finally:
        d.close()
