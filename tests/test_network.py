"""The deployment with real processes: a coordinator and site agents on 127.0.0.1 over TLS.

Each test starts its own coordinator (`python -m fedcare coordinator`) and agents (`fedcare site`)
and stops them; nothing is mocked."""

from __future__ import annotations

import json
import subprocess

import numpy as np
from safetensors.numpy import save

from conftest import HEART_SITES
from fedcare.interfaces.api import simulate
from fedcare.core.serialization import load_params, params_from_bytes, update_to_bytes
from fedcare.core.update import Update

BASE = {"dataset": "heart-disease", "rounds": 4, "seed": 3, "lr": 0.05, "local_epochs": 1}


def _simulated(tmp_path, config: dict) -> dict:
    return simulate({**config, "out": str(tmp_path / "simulated")}).summary


def _federated_rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["model"] == "federated"]


def test_tls_run_equals_the_simulation(deployment, tmp_path):
    config = {**BASE, "personalization": "finetune", "finetune_epochs": 2}
    d = deployment(config)
    d.start_all()
    status = d.wait_completed()
    run_dir = d.run_dir(status)
    net = json.loads((run_dir / "summary.json").read_text())
    sim = _simulated(tmp_path, config)
    for block in ("federated", "personalized", "local"):
        assert net[block] == sim[block], block
    assert net["rounds"] == sim["rounds"] == 4
    assert net["bytes_sent"] == sim["bytes_sent"]
    assert _federated_rows(run_dir) == _federated_rows(tmp_path / "simulated")
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json",
                                                   "global.safetensors", "report.html"}
    for site in HEART_SITES:  # each hospital keeps its personalized model
        assert list((tmp_path / "agents" / site).glob("*/personalized.safetensors"))
    assert [r["round"] for r in status["rounds"]] == [1, 2, 3, 4]


def test_secure_aggregation_over_the_network_equals_the_simulation(deployment, tmp_path):
    config = {**BASE, "rounds": 3, "secure_aggregation": True, "secagg_max_dropouts": 1, "baselines": False}
    d = deployment(config)
    d.start_all()
    status = d.wait_completed()
    net = json.loads((d.run_dir(status) / "summary.json").read_text())
    sim = _simulated(tmp_path, config)
    assert net["federated"] == sim["federated"]
    assert net["privacy"] == sim["privacy"]
    rows = _federated_rows(d.run_dir(status))
    assert {r["site"] for r in rows if r["split"] == "train"} == set(HEART_SITES)  # each site's loss, in the clear
    audit = d.client.get("/v1/audit").json()
    assert not any(a["action"].startswith("update") for a in audit)  # no site ever uploaded a plain update


def test_site_level_dp_noise_added_by_the_sites_over_the_network(deployment, tmp_path):
    config = {**BASE, "rounds": 2, "secure_aggregation": True, "site_dp_epsilon": 20.0, "baselines": False}
    d = deployment(config)
    d.start_all()
    status = d.wait_completed()
    net = json.loads((d.run_dir(status) / "summary.json").read_text())
    sim = _simulated(tmp_path, config)
    assert net["privacy"] == sim["privacy"]  # the same accountant, the same ε spent
    assert net["privacy"]["site"]["epsilon"] <= 20.0
    # the sites draw their noise from the OS, not from the run's seed: the models differ
    assert net["federated"]["sites"] != sim["federated"]["sites"]


def test_a_site_killed_mid_round_the_rounds_close_on_quorum(deployment):
    d = deployment({**BASE, "rounds": 3, "min_sites": 3, "baselines": False})
    d.start_coordinator("--start", "--deadline", "5")
    for site in HEART_SITES[:3]:
        d.start_agent(site)
    d.start_agent("va", "--approve", stdin=subprocess.PIPE)  # prepares, then holds round 1 open at its one prompt
    d.wait_for(lambda s: (s.get("open_task") or {}).get("id") == "1.fit", what="round 1")
    d.kill("va")  # mid-round, at its approval prompt: its update for round 1 never comes
    status = d.wait_completed()
    rounds = status["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    for r in rounds:
        assert r["answered"] == ["cleveland", "hungarian", "switzerland"]
        assert r["refused"] == {"va": "no update before the round's deadline"}
    summary = json.loads((d.run_dir(status) / "summary.json").read_text())
    assert summary["rounds"] == 3 and set(summary["federated"]["sites"]) == set(HEART_SITES) - {"va"}


def test_without_quorum_the_run_pauses_and_a_restarted_site_rejoins(deployment):
    d = deployment({**BASE, "rounds": 2, "min_sites": 4, "baselines": False, "deadline": 2})  # from the config
    d.start_coordinator("--start")
    for site in HEART_SITES[:3]:
        d.start_agent(site)
    d.start_agent("va", "--approve", stdin=subprocess.PIPE)  # asks once, before training: round 1 waits
    d.wait_for(lambda s: (s.get("open_task") or {}).get("id") == "1.fit", what="round 1")
    d.kill("va")  # its data is prepared and kept in its state folder
    paused = d.wait_for(lambda s: s["status"] == "paused" and s["reason"].endswith("waiting for va"),
                        what="the run to pause for va")
    assert paused["reason"] == "task 1.fit: 3 of 4 sites answered by the deadline and 4 are needed; waiting for va"
    d.start_agent("va")  # restarted: it rejoins at the round in progress
    status = d.wait_completed()
    assert [r["answered"] for r in status["rounds"]] == [HEART_SITES, HEART_SITES]


def test_coordinator_killed_and_restarted_resumes_without_losing_a_round(deployment, tmp_path):
    config = {**BASE, "rounds": 25, "local_epochs": 2, "baselines": False}
    d = deployment(config)
    va = d.start_held(hold=4)  # killed while round 4 waits for va
    before = d.status()
    d.kill("coordinator")
    killed = (d.run_dir(before) / "metrics.jsonl").read_text().splitlines()  # grown round by round
    assert {json.loads(line)["round"] for line in killed} == {1, 2, 3}
    d.start_coordinator()  # no --start: it finds the interrupted run and resumes it
    assert "resuming run" in d.log("coordinator")
    va.release()
    status = d.wait_completed()
    assert status["run_id"] == before["run_id"]
    assert [r["round"] for r in status["rounds"]] == list(range(1, 26))
    run_dir = d.run_dir(status)
    assert sorted(p.name for p in (run_dir / "checkpoints" / "rounds").iterdir()) == \
        sorted(f"round-{r}.safetensors" for r in range(1, 26))
    sim = _simulated(tmp_path, config)
    net = json.loads((run_dir / "summary.json").read_text())
    assert net["federated"] == sim["federated"]
    got, _ = load_params(run_dir / "global.safetensors")
    want, _ = load_params(tmp_path / "simulated" / "global.safetensors")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def _bad_updates(message: dict, site: str) -> dict[str, tuple[bytes, int]]:
    """Each malformed update and the status the coordinator must answer it with."""
    good = {k: np.zeros_like(v) for k, v in message.items()}
    name = next(iter(good))
    blob = update_to_bytes(Update(site, good, 10, {"train_loss": 0.5}), round_=1)
    nan = {**good, name: np.full_like(good[name], np.nan)}
    inf = {**good, name: np.full_like(good[name], np.inf)}
    renamed = {("other." + k if k == name else k): v for k, v in good.items()}
    reshaped = {**good, name: np.zeros(good[name].size + 1, good[name].dtype)}
    meta = {"fedcare": json.dumps({"site_id": site, "num_examples": 10, "metrics": {}, "round": 1})}
    return {
        "oversized": (b"\0" * 20_000, 413),
        "truncated": (blob[: len(blob) // 2], 422),
        "not safetensors": (b"this is not a safetensors file at all", 422),
        "wrong names": (update_to_bytes(Update(site, renamed, 10), round_=1), 422),
        "wrong shape": (update_to_bytes(Update(site, reshaped, 10), round_=1), 422),
        "wrong dtype": (save({k: v.astype(np.float16) for k, v in good.items()}, metadata=meta), 422),
        "NaN": (update_to_bytes(Update(site, nan, 10), round_=1), 422),
        "Inf": (update_to_bytes(Update(site, inf, 10), round_=1), 422),
        "another site's id": (update_to_bytes(Update("cleveland", good, 10), round_=1), 403),
    }


def test_bad_inputs_get_a_4xx_and_the_run_carries_on(deployment):
    d = deployment({**BASE, "rounds": 3, "baselines": False})
    d.start_coordinator("--start", "--max-body-mb", "0.01")
    for site in HEART_SITES[:3]:
        d.start_agent(site)
    # the last site asks for approval: while it waits, we send bad input in its name
    agent = d.start_agent("va", "--approve", stdin=subprocess.PIPE)  # asks once, before round 1
    d.wait_for(lambda s: (s.get("open_task") or {}).get("id") == "1.fit", what="round 1")
    va = d.site_client("va")
    task = va.get("/v1/task", params={"wait": 5}).json()
    assert task["id"] == "1.fit" and task["plan"]["config"]["rounds"] == 3
    message, _ = params_from_bytes(va.get("/v1/tasks/1.fit/params").content)
    for what, (body, code) in _bad_updates(message, "va").items():
        response = va.put("/v1/tasks/1.fit/update", content=body)
        assert response.status_code == code, (what, response.text)
        assert response.json()["detail"], what
    assert va.post("/v1/tasks/1.fit/answer", content=b"{not json").status_code == 400
    assert va.post("/v1/tasks/1.fit/answer", content=b'{"declined": 3}').status_code == 422
    zeros = update_to_bytes(Update("va", {k: np.zeros_like(v) for k, v in message.items()}, 10))
    assert va.put("/v1/tasks/0.fit/update", content=zeros).status_code == 409  # a stale round
    assert va.put("/v1/tasks/2.fit/update", content=zeros).status_code == 409
    intruder = d.site_client("va")
    intruder.headers["Authorization"] = "Bearer not-a-token"
    assert intruder.get("/v1/task").status_code == 401
    assert va.post("/v1/run").status_code == 401  # admin actions need the admin credential
    agent.stdin.write(b"y\n")  # approve training: the real agent sends its good update
    agent.stdin.flush()
    status = d.wait_completed()
    assert [r["round"] for r in status["rounds"]] == [1, 2, 3]
    assert "va" in status["rounds"][0]["answered"]
    late = va.put("/v1/tasks/1.fit/update", content=zeros)
    assert late.status_code == 409 and "late" in late.json()["detail"]
    audit = d.client.get("/v1/audit").json()
    refused = [a for a in audit if a["site_id"] == "va" and a["status"] >= 400]
    assert len(refused) >= 13
    assert any("NaN" in a["detail"] or "finite" in a["detail"] for a in refused)


def test_agent_and_coordinator_errors_are_one_line(tmp_path):
    from conftest import run_cli

    missing = run_cli("site", "--coordinator", "https://127.0.0.1:1", "--credential", "nope.json",
                      "--dataset", "heart-disease", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope.json" in missing.stderr
    plain = run_cli("site", "--coordinator", "http://127.0.0.1:1", "--credential", "nope.json",
                    "--dataset", "heart-disease", cwd=tmp_path)
    assert plain.returncode == 2 and "needs --insecure" in plain.stderr
    (tmp_path / "f.yaml").write_text("dataset: heart-disease\n")
    from fedcare.transports.network.credentials import init_authority

    init_authority(tmp_path / "pki")
    nosites = run_cli("coordinator", "--config", "f.yaml", "--credentials", "pki", cwd=tmp_path)
    assert nosites.returncode == 2 and "no sites" in nosites.stderr and nosites.stderr.count("\n") == 1


def test_admin_stops_a_run_and_the_agents_are_told(deployment, tmp_path):
    from conftest import run_cli

    d = deployment({**BASE, "rounds": 2})
    d.start_coordinator("--start")
    agent = d.start_agent("va")  # the others never come: the run waits for them
    d.wait_for(lambda s: (s.get("open_task") or {}).get("id") == "prepare.1", what="data preparation")
    admin = ["--coordinator", d.url, "--credential", str(d.pki / "admin.json")]
    site_token = ["--coordinator", d.url, "--credential", str(d.pki / "sites" / "va.json")]
    refused = run_cli("admin", "stop", *site_token, cwd=tmp_path)  # a site's credential is no admin's
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    stopped = run_cli("admin", "stop", *admin, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    status = d.wait_for(lambda s: s["status"] == "stopped", what="the run to stop")
    assert status["reason"] == "stopped by the admin"
    assert agent.wait(timeout=60) == 0 and "run over: stopped" in d.log("va")
