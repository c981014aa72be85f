"""A live federation with real processes: a coordinator kept open (`--live`) and site agents watching
their files, on 127.0.0.1 over TLS. Nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
from conftest import SRC

from fedcare.core.config import make_config
from fedcare.core.errors import ConfigError, DataError
from fedcare.core.serialization import load_params
from fedcare.data.heart_disease import hospital_table
from fedcare.data.prepare import SitePreparation, ask_in_process, prepare
from fedcare.transports.network.board import Refused
from fedcare.transports.network.credentials import issue_site
from fedcare.transports.network.liveapi import check_report

CONFIG = {"label": "disease", "drop": ["slope", "ca", "thal"], "categorical": ["cp", "restecg"], "model": "linear",
          "rounds": 2, "local_epochs": 1, "lr": 0.05, "seed": 0, "baselines": False, "min_sites": 2,
          "personalization": "finetune", "finetune_epochs": 1, "deadline": 60}
FIRST = ["cleveland", "hungarian", "switzerland"]


def _models(d) -> list[dict]:
    return d.client.get("/v1/models").json()


def _wait_versions(d, n: int, timeout: float = 300.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        versions = _models(d)
        if len(versions) >= n:
            return versions
        time.sleep(0.3)
    raise AssertionError(f"no version {n}: {_models(d)}\n{d.log('coordinator')}")


def _start(d, *extra: str):
    # the default --drift-threshold (0.05): a drop of accuracy that size is within sampling noise on ~90
    # new rows, and the metric test asks for two standard errors besides (federation/drift.py)
    return d._spawn("coordinator", ["coordinator", "--config", str(d.config_path), "--credentials", str(d.pki),
                                    "--state", str(d.root / "state"), "--port", str(d.port), "--live", *extra])


def _up(d) -> None:
    end = time.monotonic() + 180  # a loaded machine takes its time to import torch
    while time.monotonic() < end:
        try:
            if d.client.get("/v1/health").status_code == 200:
                return
        except httpx.TransportError:  # not listening yet
            pass
        time.sleep(0.2)
    raise AssertionError(d.log("coordinator"))


def _agent(d, site: str):
    return d.start_agent(site, "--keep-running", "--watch-every", "0.5", "--max-backoff", "1", data=d.root / "files" / f"{site}.csv")


def _fedcare(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fedcare", *args], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": SRC, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_report_is_checked():
    assert check_report({"rows": 10, "new_rows": 3, "sha256": "a" * 64}) == (10, 3, "a" * 64)
    for bad in ({"rows": 3, "new_rows": 10, "sha256": "a" * 64}, {"rows": -1, "new_rows": 0, "sha256": "a" * 64},
                {"rows": 1, "new_rows": 0, "sha256": "xyz"}, {"rows": True, "new_rows": 0, "sha256": "a" * 64},
                {"rows": 1, "new_rows": 0, "sha256": "a" * 64, "data": [1]}, [1, 2]):
        with pytest.raises(Refused) as exc:
            check_report(bad)
        assert exc.value.status == 422


def test_a_phase_encodes_with_the_fitted_transforms_and_reports_new_categories(tmp_path):
    """In process (no network): what a live phase's preparation does with the current version's transforms."""
    spec = make_config(CONFIG).data
    paths = {}
    for site in ("cleveland", "va"):
        table = hospital_table(site)
        if site == "va":
            table.loc[table.index[:20], "restecg"] = "9"
            table["chol"] = pd.to_numeric(table["chol"]) + 100  # the fitted medians and means must not follow
        paths[site] = tmp_path / f"{site}.csv"
        table.to_csv(paths[site], index=False)
    first = prepare(spec, ["cleveland"], ask_in_process([SitePreparation.from_file(paths["cleveland"], "cleveland")]))
    sites = [SitePreparation.from_file(paths[s], s) for s in ("cleveland", "va")]
    again = prepare(spec, ["cleveland", "va"], ask_in_process(sites), reuse=first)
    assert again.shape == first.shape and again.preprocessing["encoding"] == first.preprocessing["encoding"]
    # '1' is real: cleveland holds it too rarely to name it (its '(other)'), va often enough
    assert again.preprocessing["new_categories"] == {"va": {"restecg": ["1", "9"]}}
    assert set(again.preprocessing["site_rows"]) == {"cleveland", "va"}
    refit = prepare(spec, ["cleveland", "va"], ask_in_process([SitePreparation.from_file(paths[s], s)
                                                               for s in ("cleveland", "va")]))
    assert refit.preprocessing["encoding"] != first.preprocessing["encoding"]  # the check above can fail
    wrong = make_config({**CONFIG, "drop": ["slope", "ca", "thal", "chol"]}).data  # the model's inputs would change
    with pytest.raises(DataError, match="no longer fits the current model"):
        prepare(wrong, ["cleveland"], ask_in_process([SitePreparation.from_file(paths["cleveland"], "cleveland")]),
                reuse=first)


def test_live_federation_grows_takes_a_new_site_and_survives_a_kill(deployment, tmp_path):
    d = deployment(CONFIG, FIRST)
    files = tmp_path / "files"
    files.mkdir()
    tables = {s: hospital_table(s) for s in [*FIRST, "va"]}
    hungarian = tables["hungarian"].sample(frac=1.0, random_state=0)  # the file is sorted by label: shuffled
    held_back = hungarian.iloc[200:]  # arrives later, from the same distribution: the drift control
    hungarian.iloc[:200].to_csv(files / "hungarian.csv", index=False)
    shifted = tables["cleveland"].iloc[:80].copy()  # arrives later at cleveland, older and with lower heart rates
    shifted["age"] = pd.to_numeric(shifted["age"]) + 15
    shifted["thalach"] = pd.to_numeric(shifted["thalach"]) - 35
    tables["va"].loc[tables["va"].index[:20], "restecg"] = "9"  # a code no other hospital uses
    for site in ("cleveland", "switzerland", "va"):
        tables[site].to_csv(files / f"{site}.csv", index=False)

    _start(d, "--start")
    _up(d)
    for site in FIRST:
        _agent(d, site)
    v1 = _wait_versions(d, 1)[0]
    assert v1["version"] == 1 and v1["sites"] == sorted(FIRST) and v1["rounds"] == 2
    summary1 = json.loads((tmp_path / "state" / "models" / "v1" / "summary.json").read_text())
    assert summary1["site_sizes"]["hungarian"]["train"] < 200

    # one hospital's file grows: its agent reports counts and a hash, a phase starts warm from v1
    with open(files / "hungarian.csv", "a") as f:
        held_back.to_csv(f, index=False, header=False)
    with open(files / "cleveland.csv", "a") as f:
        shifted.to_csv(f, index=False, header=False)
    versions = _wait_versions(d, 2)
    v2 = versions[1]
    summary2 = json.loads((tmp_path / "state" / "models" / "v2" / "summary.json").read_text())
    grown = sum(summary2["site_sizes"]["hungarian"].values())
    assert grown == sum(summary1["site_sizes"]["hungarian"].values()) + len(held_back)
    assert sum(summary2["site_sizes"]["cleveland"].values()) == 303 + 80
    assert summary2["preprocessing"]["encoding"] == summary1["preprocessing"]["encoding"]  # v1's transforms
    assert v2["sites"] == sorted(FIRST)
    # drift: the version scored on each site's new rows before training; only the shifted site has a notice
    drifted = {n["site_id"]: n for n in v2["drift"]}
    assert set(drifted) == {"cleveland"} and "inputs" in drifted["cleveland"]["tests"]
    assert {"age", "thalach"} <= set(drifted["cleveland"]["shifted"])
    assert summary2["drift"] == v2["drift"]
    checked = json.loads((tmp_path / "state" / "models" / "v2" / "drift.json").read_text())["checked"]
    assert checked == ["cleveland", "hungarian"]  # hungarian (the control) raised nothing; switzerland had no new rows
    audit = d.client.get("/v1/audit").json()
    assert any(a["action"] == "live report" and a["site_id"] == "hungarian" and "294 rows, 94 new" in a["detail"]
               for a in audit)
    assert any(a["action"] == "live phase" and "warm from version 1" in a["detail"] for a in audit)
    assert [a["site_id"] for a in audit if a["action"] == "live drift"] == ["cleveland"]
    assert d.status()["live"]["drift"] == v2["drift"]
    # warm start: the second phase's model moved on from the first's, not from a fresh one
    g1 = load_params(tmp_path / "state" / "models" / "v1" / "global.safetensors")[0]
    g2 = load_params(tmp_path / "state" / "models" / "v2" / "global.safetensors")[0]
    assert g1.keys() == g2.keys() and any((g1[k] != g2[k]).any() for k in g1)

    # a corrupt and an oversized report: 4xx with an audit line, the state unchanged
    hungarian = d.site_client("hungarian")
    assert hungarian.post("/v1/live/report", json={"rows": 1, "new_rows": 5, "sha256": "0" * 64}).status_code == 422
    assert hungarian.post("/v1/live/report", content=b"{" + b" " * 10_000 + b"}",
                          headers={"content-type": "application/json"}).status_code == 413
    reports = d.status()["live"]["reports"]
    assert reports["hungarian"]["rows"] == 294 and reports["hungarian"]["new_rows"] == 0

    # killed between phases and restarted: versions, audit log, reports and credentials are all there
    before = d.client.get("/v1/audit").json()
    d.kill("coordinator")
    _start(d)
    _up(d)
    assert _models(d) == versions
    after = d.client.get("/v1/audit").json()
    assert [a["detail"] for a in after[:len(before)]] == [a["detail"] for a in before]
    assert any(a["status"] == 422 and a["site_id"] == "hungarian" for a in after)
    assert d.status()["live"]["reports"]["hungarian"]["rows"] == 294

    # a fourth hospital credentialed mid-run joins the next phase with its own personalized model
    issue_site(d.pki, "va")
    _agent(d, "va")
    v3 = _wait_versions(d, 3)[2]
    assert v3["sites"] == sorted([*FIRST, "va"])
    summary3 = json.loads((tmp_path / "state" / "models" / "v3" / "summary.json").read_text())
    assert set(summary3["personalized"]["sites"]) == {*FIRST, "va"}
    assert summary3["preprocessing"]["encoding"] == summary1["preprocessing"]["encoding"]
    assert summary3["preprocessing"]["new_categories"] == {"va": {"restecg": ["9"]}}  # reported, not dropped
    assert any(a["action"] == "live categories" and a["site_id"] == "va" and "restecg: 9" in a["detail"]
               for a in d.client.get("/v1/audit").json())
    assert list((tmp_path / "agents" / "va").glob("*/personalized.safetensors"))
    end = time.monotonic() + 30  # every site fetches the current version
    while not all((tmp_path / "agents" / s / "current-model.safetensors").is_file() for s in [*FIRST, "va"]):
        assert time.monotonic() < end, "a site did not fetch the current version"
        time.sleep(0.3)
    assert d.client.get("/v1/models/current").status_code == 401  # the admin token is no site's

    # a site removed: an audit line, no longer counted, refused when it calls
    admin = ["--coordinator", d.url, "--credential", str(d.pki / "admin.json")]
    listed = _fedcare("admin", "models", *admin)
    assert all(f"v{n}" in listed for n in (1, 2, 3)) and "va" in listed
    assert "removed" in _fedcare("admin", "remove-site", "switzerland", *admin)
    status = d.status()
    assert "switzerland" in status["live"]["left"] and "switzerland" not in status["sites"]
    assert any(a["action"] == "live leave" and a["site_id"] == "switzerland" for a in d.client.get("/v1/audit").json())
    assert d.site_client("switzerland").get("/v1/task", params={"wait": 0}).status_code == 403


def test_live_refuses_a_fixed_site_list(tmp_path):
    from fedcare.transports.network.credentials import init_authority
    from fedcare.transports.network.phases import LiveSettings
    from fedcare.transports.network.service import serve

    init_authority(tmp_path / "pki")
    (tmp_path / "federation.yaml").write_text("label: disease\n")
    with pytest.raises(ConfigError, match="drop --sites"):
        serve(tmp_path / "federation.yaml", tmp_path / "pki", tmp_path / "state", "127.0.0.1", 0, ["cleveland"],
              None, None, False, False, live=LiveSettings())
    for bad in ({"min_new_rows": 0}, {"phase_every": -1.0}, {"drift_threshold": 0.0}):
        with pytest.raises(ConfigError):
            LiveSettings(**bad)
