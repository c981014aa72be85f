"""Disk faults at the coordinator, with real processes over TLS: nothing lost, nothing silently
changed. A flipped byte in a checkpoint stops the resume with one line; a lost database is recovered
from the run folder; a damaged database is one line; a read-only run folder pauses the run until
access is restored."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import HEART_SITES, run_cli
from netutil import Deployment, HeldAgent

from fedcare.core.serialization import load_params
from fedcare.interfaces.api import simulate

BASE = {"dataset": "heart-disease", "rounds": 6, "seed": 3, "lr": 0.05, "local_epochs": 1, "baselines": False}


@pytest.fixture
def deployment(tmp_path):
    d = Deployment(tmp_path, HEART_SITES, BASE)
    yield d
    d.close()


def _killed_after_round_2(d: Deployment) -> tuple[dict, HeldAgent]:
    """The coordinator killed while round 3 waits for va: rounds 1 and 2 closed and checkpointed."""
    va = d.start_held(hold=3)
    status = d.status()
    assert [r["round"] for r in status["rounds"]] == [1, 2]
    d.kill("coordinator")
    return status, va


def _same_model_as_the_simulation(d: Deployment, status: dict, tmp_path) -> None:
    simulate({**BASE, "out": str(tmp_path / "simulated")})
    got, _ = load_params(d.run_dir(status) / "global.safetensors")
    want, _ = load_params(tmp_path / "simulated" / "global.safetensors")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_a_flipped_byte_in_the_checkpoint_stops_the_run_with_one_line(deployment):
    d = deployment
    before, va = _killed_after_round_2(d)
    path = d.run_dir(before) / "checkpoints" / "coordinator.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x04  # one bit of one weight
    path.write_bytes(bytes(blob))
    d.start_coordinator()
    va.release()
    status = d.wait_for(lambda s: s["status"] == "failed", what="the resume to be refused")
    assert status["run_id"] == before["run_id"]
    assert "coordinator.safetensors' is damaged: its SHA-256 does not match" in status["reason"]
    assert "restore" in status["reason"]
    assert not (d.run_dir(status) / "summary.json").exists()  # never "completed" with another model
    assert "Traceback" not in d.log("coordinator")


@pytest.mark.parametrize("fault", ["deleted", "emptied"])
def test_a_lost_database_the_run_resumes_from_its_folder(deployment, tmp_path, fault):
    d = deployment
    before, va = _killed_after_round_2(d)
    db = tmp_path / "state" / "coordinator.db"
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")
    if fault == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")
    d.start_coordinator()
    assert "holds an unfinished run's checkpoint: resuming it" in d.log("coordinator")
    va.release()
    status = d.wait_completed()
    assert status["run_id"] == before["run_id"]
    assert status["rounds"][-1]["round"] == 6
    _same_model_as_the_simulation(d, status, tmp_path)


def test_a_damaged_database_header_is_one_line(tmp_path):
    from fedcare.transports.network.credentials import init_authority, issue_site
    from fedcare.transports.network.store import Store

    init_authority(tmp_path / "pki")
    issue_site(tmp_path / "pki", "a")
    (tmp_path / "f.yaml").write_text("dataset: heart-disease\n")
    Store(tmp_path / "state" / "coordinator.db").close()
    db = tmp_path / "state" / "coordinator.db"
    db.write_bytes(b"this is not SQLite at all" + db.read_bytes()[25:])
    result = run_cli("coordinator", "--config", "f.yaml", "--credentials", "pki", "--state", "state",
                     "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: the coordinator's database") and result.stderr.count("\n") == 1
    assert "move it aside" in result.stderr and "Traceback" not in result.stderr


def _read_only(path, on: bool) -> None:
    """Writes refused even for root (an immutable tree), else by permissions."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr: a read-only folder cannot be made")
        subprocess.run(["chattr", "-R", "+i" if on else "-i", str(path)], check=True)
    else:
        for p in [path, *path.rglob("*")]:
            p.chmod((0o555 if p.is_dir() else 0o444) if on else (0o755 if p.is_dir() else 0o644))


def test_a_read_only_run_folder_pauses_the_run_until_access_is_restored(deployment, tmp_path):
    d = deployment
    va = d.start_held(hold=2)  # round 1 is written; round 2 waits for va
    run_dir = d.run_dir(d.status())
    _read_only(run_dir, True)
    va.release()
    try:
        paused = d.wait_for(lambda s: s["status"] == "paused" and "cannot write" in s["reason"],
                            what="the run to pause on the read-only folder")
        assert "restore write access" in paused["reason"] and str(run_dir) in paused["reason"]
    finally:
        _read_only(run_dir, False)
    status = d.wait_completed()
    assert [r["round"] for r in status["rounds"]] == list(range(1, 7))
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 6
    _same_model_as_the_simulation(d, status, tmp_path)


def test_a_simulation_into_a_read_only_folder_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _read_only(out, True)
    try:
        result = run_cli("simulate", "--rounds", "1", "--no-baselines", "--out", str(out), cwd=tmp_path)
    finally:
        _read_only(out, False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot use '{out}/") and "restore access" in result.stderr
    assert "Traceback" not in result.stderr
