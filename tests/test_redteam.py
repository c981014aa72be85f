"""One site must not be able to stop or steer the federation.

A real coordinator process over TLS on 127.0.0.1 and real agents; the hostile sites are real agents
too (SiteAgent, in this process, with a real site credential) that send what an attacker would
before, or instead of, their honest answer. Nothing is mocked."""

from __future__ import annotations

import http.server
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from typing import ClassVar

import httpx
import numpy as np
import pytest
from conftest import HEART_SITES
from netutil import Deployment, ThreadAgent, _env, free_port

from fedcare.algorithms.aggregators import weighted_mean
from fedcare.algorithms.pieces import RoundContext
from fedcare.algorithms.secagg import KeyAdvert, encode_message
from fedcare.core.serialization import load_params, params_to_bytes, update_to_bytes
from fedcare.core.update import Update
from fedcare.federation.guard import REFUSED, trainable
from fedcare.transports.network.agent import AgentStopped, plain_id
from fedcare.transports.network.credentials import client_ssl_context
from fedcare.transports.network.secure import b64

BASE = {"dataset": "heart-disease", "seed": 3, "lr": 0.05, "local_epochs": 1}


class HostileAgent(ThreadAgent):
    """A real agent whose `attacks[kind](task, honest, agent)` runs before it answers a task of that
    kind; an attack returns True when its malicious answer replaces the honest one."""

    def __init__(self, d: Deployment, site: str, attacks: dict):
        super().__init__(d, site, d.root / "hostile" / site, poll_wait=2.0)
        self.raw = d.site_client(site)
        self.attacks = attacks
        self.statuses: list[tuple[str, int]] = []  # (what, HTTP status) of every malicious request
        self.details: dict[str, str] = {}

    def send(self, what: str, method: str, path: str, content: bytes) -> int:
        response = self.raw.request(method, path, content=content)
        self.statuses.append((what, response.status_code))
        self.details[what] = response.text[:300]
        return response.status_code

    def _attack(self, task: dict, honest: object) -> bool:
        attack = self.attacks.get(task["kind"])
        return bool(attack and attack(task, honest, self))

    def _post_json(self, task: dict, body: dict) -> None:
        if not self._attack(task, body):
            super()._post_json(task, body)

    def _put_update(self, task: dict, blob: bytes) -> None:
        if not self._attack(task, blob):
            super()._put_update(task, blob)


# ----- items 5, 7, 10, 11, 12: hostile answers in preparation, in a round and in the baselines ------

BAD_JSON = {  # each once produced a 500 with no audit line, or reached the run
    "400-digit integer": b'{"answer": {"rows": ' + b"9" * 400 + b"}}",
    "5,000-digit integer": b'{"answer": {"rows": ' + b"9" * 5000 + b"}}",
    "deeply nested": b'{"answer": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "Infinity": b'{"answer": {"rows": Infinity}}',
    "1e400": b'{"answer": {"rows": 1e400}}',
    "-1e400": b'{"answer": {"rows": -1e400}}',
    "NaN": b'{"answer": {"rows": NaN}}',
    "no answer object": b"{}",
    "answer not an object": b'{"answer": [1, 2]}',
    "6 MB of JSON, under the upload limit": b'{"answer": {"pad": "' + b"x" * (6 * 1024 * 1024) + b'"}}',
}


def _prepare_attack(task, honest, agent: HostileAgent) -> bool:
    if task["id"] != "prepare.1":
        return False
    path = f"/v1/tasks/{task['id']}/answer"
    for what, body in BAD_JSON.items():
        agent.send(what, "POST", path, body)
    agent.send("a malformed preparation answer", "POST", path, b'{"answer": {}}')  # accepted, then unreadable
    return True


def _update(message: dict, site: str, value: float, n: object, round_: object = 1, metrics: object = None) -> bytes:
    grad = {k: np.full_like(v, value) for k, v in message.items()}
    meta = {"site_id": site, "num_examples": n, "metrics": {"train_loss": 0.5} if metrics is None else metrics,
            "round": round_}
    return params_to_bytes(grad, meta)


def _fit_attack(task, honest: bytes, agent: HostileAgent) -> bool:
    from fedcare.core.serialization import params_from_bytes

    if task["id"] != "1.fit":
        return False
    message, meta = params_from_bytes(honest)
    site, rows = meta["site_id"], meta["num_examples"]
    path = f"/v1/tasks/{task['id']}/update"
    bad = {
        "1e39 examples": _update(message, site, 0.0, 1e39),
        "400-digit examples": _update(message, site, 0.0, 10 ** 400),
        "more examples than declared": _update(message, site, 0.0, rows + 1),
        "a round-2 update for round 1": _update(message, site, 0.0, rows, round_=2),
        "an update without its round": _update(message, site, 0.0, rows, round_=None),
        "train_loss 'nan'": _update(message, site, 0.0, rows, metrics={"train_loss": "nan"}),
        "1,000 invented metrics": _update(message, site, 0.0, rows, metrics={f"m{i}": 1.0 for i in range(1000)}),
        "a 400-digit metric": _update(message, site, 0.0, rows, metrics={"train_loss": 10 ** 400}),
        "a metric of 1e300": _update(message, site, 0.0, rows, metrics={"train_loss": 1e300}),
    }
    for what, body in bad.items():
        agent.send(what, "PUT", path, body)
    # finite and well-formed, so accepted; but the mean with it is beyond what any site can train
    agent.send("3e38 everywhere", "PUT", path, _update(message, site, 3e38, rows))
    return True


def _local_attack(task, honest: dict, agent: HostileAgent) -> bool:
    if any(what.startswith("rows") for what, _ in agent.statuses):
        return False
    path = f"/v1/tasks/{task['id']}/answer"
    forged = [{**row, "site": "cleveland"} for row in honest["rows"]]
    agent.send("rows under another site's name", "POST", path, json.dumps({**honest, "rows": forged}).encode())
    agent.send("rows of another model", "POST", path,
               json.dumps({**honest, "rows": [{**honest["rows"][0], "model": "federated"}]}).encode())
    agent.send("an accuracy of 1e300", "POST", path,
               json.dumps({**honest, "metrics": {"test": {"accuracy": 1e300}}}).encode())
    return False  # then the honest answer


def test_hostile_sites_are_refused_or_dropped_and_the_run_completes(deployment):
    d = deployment({**BASE, "rounds": 2, "deadline": 90})  # a loaded CI machine must not make a hostile site late
    d.start_coordinator("--start")
    for site in ("cleveland", "hungarian"):
        d.start_agent(site)
    va = HostileAgent(d, "va", {"prepare": _prepare_attack})
    switzerland = HostileAgent(d, "switzerland", {"fit": _fit_attack, "local": _local_attack})
    threads = [va.start(), switzerland.start()]
    status = d.wait_completed(timeout=300)

    codes = dict(va.statuses)
    assert all(400 <= codes[what] < 500 for what in BAD_JSON), codes
    assert codes["6 MB of JSON, under the upload limit"] == 413
    assert codes["a malformed preparation answer"] == 200  # well-formed JSON: the run reads it, and drops va
    codes = dict(switzerland.statuses)
    assert codes.pop("3e38 everywhere") == 200
    assert all(code == 422 for code in codes.values()), codes
    assert len(codes) == 12

    # va's unreadable answer dropped it; preparation went on with the other three
    summary = json.loads((d.run_dir(status) / "summary.json").read_text())
    assert set(summary["federated"]["sites"]) == {"cleveland", "hungarian", "switzerland"}
    audit = d.client.get("/v1/audit").json()
    assert any(a["site_id"] == "va" and a["detail"].startswith("dropped from the run: the 'columns' answer of "
                                                                 "site 'va' is malformed") for a in audit)
    assert sum(1 for a in audit if a["site_id"] == "va" and a["status"] >= 400) >= len(BAD_JSON)
    assert sum(1 for a in audit if a["site_id"] == "switzerland" and a["status"] == 422) >= 10

    # switzerland's 3e38 update was left out of round 1 and counted; it trained in round 2
    rounds = status["rounds"]
    assert rounds[0]["refused"] == {"switzerland": REFUSED}
    assert rounds[0]["answered"] == ["cleveland", "hungarian"]
    assert rounds[1]["answered"] == ["cleveland", "hungarian", "switzerland"]
    final, _ = load_params(d.run_dir(status) / "global.safetensors")
    assert trainable(final)

    text = (d.run_dir(status) / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    local = [r for r in rows if r["model"] == "local"]
    assert {r["site"] for r in local} == {"cleveland", "hungarian", "switzerland"}
    assert len([r for r in local if r["site"] == "cleveland"]) == len([r for r in local if r["site"] == "hungarian"])

    # item 12: what the real agents keep is theirs alone
    for site in ("cleveland", "hungarian"):
        root = d.root / "agents" / site
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    for thread in threads:
        thread.join(timeout=30)


# ----- item 6: secure aggregation trusts the authenticated site, not the message ------------------


def _impostor(task, honest: dict, agent: HostileAgent) -> bool:
    if task["round"] != 1:
        return False
    path = f"/v1/tasks/{task['id']}/answer"
    for claimed in ("cleveland", "no-such-site"):
        advert = b64(encode_message(KeyAdvert(claimed, os.urandom(32), os.urandom(32))))
        agent.send(f"keys as {claimed}", "POST", path, json.dumps({"advert": advert}).encode())
    # va's own keys never come: it drops out of round 1. It polls for its task back to back, as an
    # agent between tasks does: the first poll after round 1's keys task closes ends va's silence
    # (board.py), so the next round waits for it however fast the other sites answer.
    while (poll := agent.raw.get("/v1/task", params={"wait": 0})).status_code == 200 and poll.json()["id"] == task["id"]:
        time.sleep(0.02)
    return True


def test_secure_aggregation_refuses_an_impostor_and_counts_it_as_a_dropout(deployment):
    d = deployment({**BASE, "rounds": 3, "secure_aggregation": True, "secagg_max_dropouts": 1,
                    "baselines": False, "deadline": 20})
    d.start_coordinator("--start")
    for site in HEART_SITES[:3]:
        d.start_agent(site)
    va = HostileAgent(d, "va", {"secure-fit": _impostor})
    thread = va.start()
    status = d.wait_completed(timeout=300)
    assert dict(va.statuses) == {"keys as cleveland": 403, "keys as no-such-site": 403}, va.details
    rounds = status["rounds"]
    assert rounds[0]["answered"] == ["cleveland", "hungarian", "switzerland"]
    assert set(rounds[0]["refused"]) == {"va"}
    assert rounds[-1]["answered"] == HEART_SITES, [(r.get("answered"), r.get("refused"), r.get("dropped")) for r in rounds]
    audit = d.client.get("/v1/audit").json()
    assert any(a["site_id"] == "va" and a["status"] == 403 and "claims to come from 'cleveland'" in a["detail"]
               for a in audit)
    thread.join(timeout=30)


# ----- items 8, 9: held-open polls and floods of unauthenticated requests ---------------------------


def test_forty_held_polls_do_not_starve_health_or_status(deployment):
    sites = [f"s{i}" for i in range(12)]
    d = deployment(BASE, sites)
    d.start_coordinator()  # no run: every poll is held for its whole wait
    clients = [d.site_client(s) for s in sites]
    results: list[int] = []

    def hold(client: httpx.Client) -> None:
        results.append(client.get("/v1/task", params={"wait": 20}, timeout=60).status_code)

    polls = [threading.Thread(target=hold, args=(c,)) for c in clients for _ in range(4)]  # 48 polls
    for t in polls:
        t.start()
    time.sleep(2.0)
    assert results == []  # all 48 are held open
    extra = clients[0].get("/v1/task", params={"wait": 20}, timeout=10)
    assert extra.status_code == 429  # a fifth poll from one site
    assert d.client.get("/v1/health", timeout=10).json() == {"ok": True}
    assert d.client.get("/v1/status", timeout=10).json()["status"] == "idle"
    assert results == []  # they answered while every poll was still held
    for t in polls:
        t.join(timeout=60)
    assert results == [204] * 48


def test_unauthenticated_floods_add_a_bounded_number_of_audit_rows(deployment):
    d = deployment(BASE, ["a"])
    d.start_coordinator()
    before = d.client.get("/v1/audit", params={"limit": 10_000}).json()
    stranger = httpx.Client(base_url=d.url, verify=client_ssl_context(d.admin.ca_pem), timeout=30)
    for i in range(2000):
        token = {} if i % 2 else {"Authorization": f"Bearer forged-{i}"}
        assert stranger.get(f"/v1/tasks/{'x' * 2000}{i}/params", headers=token).status_code == 401
    after = d.client.get("/v1/audit", params={"limit": 10_000}).json()
    added = after[len(before):]
    # One row per kind and minute, with the repeats counted: however long the 2,000 requests took on a
    # busy machine (each minute may add a row), every request is accounted for and the rows stay few.
    assert 1 <= len(added) <= 12
    assert sum(len(a["action"]) + len(a["detail"]) for a in added) < 8000
    counted = [re.search(r"(?:and|repeated) (\d+) more", a["detail"]) for a in added]
    assert sum(1 + int(m.group(1)) if m and "and" in m.group(0) else int(m.group(1)) if m else 1
               for m in counted) == 2000


# ----- item 12: ids the coordinator sends are checked before they name a file ----------------------


class _HostileCoordinator(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[str]] = []  # the paths of the answers it received

    def do_GET(self):
        plan = {"run": "../../escaped", "config": {"dataset": "heart-disease"}, "shape": None, "sites": ["va"]}
        task = {"id": "prepare.1", "kind": "prepare", "round": 0, "plan": plan, "phase": "columns",
                "question": {"dataset": "heart-disease"}}
        body = json.dumps(task).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.answers.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_agent_refuses_a_run_id_that_is_a_path(tmp_path):
    from fedcare.transports.network.credentials import init_authority, issue_site

    init_authority(tmp_path / "pki")
    issue_site(tmp_path / "pki", "va")
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _HostileCoordinator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        state = tmp_path / "hospital" / "state"
        agent = subprocess.run([sys.executable, "-m", "fedcare", "site", "--coordinator", f"http://127.0.0.1:{port}",
                                "--insecure", "--credential", str(tmp_path / "pki" / "sites" / "va.json"),
                                "--dataset", "heart-disease", "--state", str(state)],
                               cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.shutdown()
    assert agent.returncode == 2, agent.stderr
    assert "run id '../../escaped', which is not a plain name" in agent.stderr
    assert _HostileCoordinator.answers == []  # it answered nothing
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "hospital" / "escaped").exists()


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/abs", "", "x" * 200, "a\\b", 3])
def test_plain_ids_refuse_paths(bad):
    with pytest.raises(AgentStopped, match="not a plain name"):
        plain_id(bad, "run id")
    assert plain_id("1.secure.share", "task id") == "1.secure.share"


# ----- item 5 at the level of the pieces --------------------------------------------------------------


def test_weighted_sum_of_huge_finite_values_stays_finite():
    like = {"w": np.zeros(3, np.float32)}
    updates = [Update("a", {"w": np.full(3, 3e38, np.float32)}, 100), Update("b", {"w": np.ones(3, np.float32)}, 100)]
    out, _ = weighted_mean().apply(updates, {}, RoundContext(params=like, round=1, rng=np.random.default_rng(0)))
    assert out["w"].dtype == np.float32 and np.all(np.isfinite(out["w"]))
    assert not trainable({"w": out["w"]})  # finite, but its squares overflow: the guard leaves it out
    assert trainable({"w": np.full(3, 1e6, np.float32)})
    assert update_to_bytes(updates[1], round_=1)  # the round travels with the update


@pytest.mark.parametrize("phase", ["schema", "split", "tabular.stats", "finish"])
def test_a_site_unreadable_at_any_phase_is_dropped_and_preparation_restarts(tmp_path, phase):
    """The coordinator's side of the drop, with the sites' real SitePreparation answering in this
    process: one site's answer to `phase` is emptied; the others answer every question again."""
    from fedcare.core.config import make_config
    from fedcare.data.prepare import SitePreparation, ask_in_process
    from fedcare.transports.network.coordinator import Coordinator, ServiceSettings

    cfg = make_config({"dataset": "heart-disease", "min_sites": 2})
    coordinator = Coordinator(cfg, ServiceSettings(tmp_path / "state", tuple(HEART_SITES)))
    sites = {s: SitePreparation.from_builtin("heart-disease", s) for s in HEART_SITES}
    asked: list[str] = []

    def ask(question_phase: str, question: dict) -> dict:
        answers = ask_in_process([sites[s] for s in current])(question_phase, question)
        asked.append(question_phase)
        if question_phase == phase and "va" in answers:
            answers["va"] = {}
        return answers

    current = list(HEART_SITES)
    prepared = coordinator._prepare(cfg, current, ask)
    assert current == ["cleveland", "hungarian", "switzerland"]
    assert list(prepared.preprocessing["site_rows"]) == current
    assert asked.count("columns") == 2  # started again, without va
    audit = coordinator.store.audit_log()
    assert audit[-1]["site_id"] == "va" and audit[-1]["detail"].startswith(f"dropped from the run: the '{phase}' answer")
