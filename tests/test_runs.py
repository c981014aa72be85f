"""Several runs on one coordinator, started and watched with `fedcare admin`, and a busy port.
Real processes over TLS on 127.0.0.1 (tests/netutil.py)."""

from __future__ import annotations

import json

import yaml
from conftest import HEART_SITES, run_cli
from netutil import Deployment

BASE = {"dataset": "heart-disease", "rounds": 2, "seed": 3, "lr": 0.05, "local_epochs": 1, "baselines": False}


def test_admin_starts_runs_one_after_another_without_a_restart(tmp_path):
    d = Deployment(tmp_path, HEART_SITES, BASE)
    try:
        d.start_coordinator()  # no --start: the admin starts each run
        admin = ["--coordinator", d.url, "--credential", str(d.pki / "admin.json")]
        idle = run_cli("admin", "status", *admin, cwd=tmp_path)
        assert idle.returncode == 0 and "no run yet" in idle.stdout
        first = tmp_path / "run1.yaml"
        first.write_text(yaml.safe_dump({**BASE, "rounds": 2}))
        started = run_cli("admin", "start", *admin, "--config", str(first), cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        for site in HEART_SITES[:2]:
            d.start_agent(site, "--keep-running")
        d.wait_for(lambda s: s.get("waiting_for") == ["switzerland", "va"], what="the run to wait for two sites")
        table = run_cli("admin", "status", *admin, cwd=tmp_path)
        assert "waiting for sites switzerland, va" in table.stdout, table.stdout
        busy = run_cli("admin", "start", *admin, "--config", str(first), cwd=tmp_path)  # one run at a time
        assert busy.returncode == 2 and "under way" in busy.stderr and busy.stderr.count("\n") == 1
        for site in HEART_SITES[2:]:
            d.start_agent(site, "--keep-running")
        one = d.wait_completed()
        assert [r["round"] for r in one["rounds"]] == [1, 2]

        second = tmp_path / "run2.yaml"
        second.write_text(yaml.safe_dump({**BASE, "rounds": 3, "model": "mlp", "hidden": [8]}))
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**BASE, "rounds": 0}))
        refused = run_cli("admin", "start", *admin, "--config", str(bad), cwd=tmp_path)
        assert refused.returncode == 2 and "rounds" in refused.stderr and refused.stderr.count("\n") == 1
        started = run_cli("admin", "start", *admin, "--config", str(second), cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        two = d.wait_for(lambda s: s["run_id"] != one["run_id"] and s["status"] == "completed",
                         what="the second run")  # the same agents, the same coordinator process
        assert [r["round"] for r in two["rounds"]] == [1, 2, 3]
        config = yaml.safe_load((d.run_dir(two) / "config.yaml").read_text())
        assert config["model"] == "mlp" and config["rounds"] == 3
        assert (d.run_dir(one) / "summary.json").is_file() and (d.run_dir(two) / "summary.json").is_file()
        listing = json.loads(run_cli("admin", "status", *admin, "--json", cwd=tmp_path).stdout)
        assert [r["run_id"] for r in listing["runs"]] == [two["run_id"], one["run_id"]]
        assert [r["status"] for r in listing["runs"]] == ["completed", "completed"]
        assert d.procs["coordinator"].poll() is None
    finally:
        d.close()


def test_a_busy_port_fails_in_one_line_before_listening(tmp_path):
    d = Deployment(tmp_path, HEART_SITES, BASE)
    try:
        d.start_coordinator()
        (tmp_path / "other").mkdir()
        other = run_cli("coordinator", "--config", str(d.config_path), "--credentials", str(d.pki), "--state",
                        str(tmp_path / "other"), "--port", str(d.port), cwd=tmp_path)
        assert other.returncode == 2
        assert other.stderr.startswith("error: cannot listen on 127.0.0.1:") and other.stderr.count("\n") == 1
        assert "listening" not in other.stdout + other.stderr
        assert not (tmp_path / "other" / "coordinator.db").exists()  # nothing started
    finally:
        d.close()
