"""Damaged checkpoints are found, never resumed into a different model: every file carries a SHA-256
over its content, the metric rows are digested in the coordinator's file, and a networked run's
round files must agree with it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import fedcare
from fedcare.core import ConfigError
from fedcare.federation.checkpoint import Checkpoints, EngineCheckpoint
from fedcare.interfaces.api import resume


def _checkpoint() -> EngineCheckpoint:
    params = {"weight": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.ones(2, np.float32)}
    return EngineCheckpoint(3, params, [{"m/weight": np.full((2, 3), 0.5, np.float32)}], params, 3, 0.75, 1234)


def test_every_single_flipped_byte_of_a_checkpoint_is_detected(tmp_path):
    path = tmp_path / "coordinator.safetensors"
    _checkpoint().save(path)
    good = path.read_bytes()
    assert EngineCheckpoint.load(path).round == 3
    for i in range(len(good)):
        damaged = bytearray(good)
        damaged[i] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(ConfigError, match="coordinator.safetensors' is damaged"):
            EngineCheckpoint.load(path)


def _cut_run(tmp_path, rounds=4, after=2):
    class Crash(Exception):
        pass

    def progress(name, record):
        if name == "federated" and record.round == after:
            raise Crash()

    with pytest.raises(Crash):
        fedcare.simulate(rounds=rounds, baselines=False, personalization="ditto", out=str(tmp_path / "r"),
                         progress=progress)
    return tmp_path / "r" / "checkpoints"


def test_a_flipped_byte_in_the_rows_or_a_site_state_stops_the_resume(tmp_path):
    folder = _cut_run(tmp_path)
    rows = folder / "rows.jsonl"
    text = rows.read_text()
    row = json.loads(text.splitlines()[3])
    value = next(k for k, v in row.items() if isinstance(v, float))
    damaged = text.replace(json.dumps(row[value]), json.dumps(row[value] + 1e-9), 1)
    assert damaged != text
    rows.write_text(damaged)
    with pytest.raises(ConfigError, match="rows.jsonl' is damaged"):
        resume(tmp_path / "r")
    assert not (tmp_path / "r" / "summary.json").exists()
    rows.write_text(text)
    state = next((folder / "sites").iterdir())
    blob = bytearray(state.read_bytes())
    blob[-1] ^= 0x10
    state.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match=f"{state.name}' is damaged"):
        resume(tmp_path / "r")
    state.write_bytes(bytes(blob[:-1]) + bytes([blob[-1] ^ 0x10]))  # repaired: the run resumes and completes
    assert resume(tmp_path / "r").summary["rounds"] == 4


def test_a_round_file_that_disagrees_with_the_checkpoint_is_named(tmp_path):
    folder = tmp_path / "checkpoints"
    cp = _checkpoint()
    from fedcare.core.serialization import params_to_bytes

    checkpoints = Checkpoints(tmp_path)
    checkpoints.save_round(3, params_to_bytes(cp.params))
    checkpoints.save(cp, {}, [{"round": 3, "site": "a", "split": "test", "model": "federated", "accuracy": 0.5}])
    assert checkpoints.load([])[0].round == 3
    other = {**cp.params, "bias": cp.params["bias"] + np.float32(1e-6)}
    checkpoints.save_round(3, params_to_bytes(other))
    with pytest.raises(ConfigError, match="round-3.safetensors' is damaged: it differs from the params of round 3"):
        checkpoints.load([])
    (folder / "rounds" / "round-3.safetensors").unlink()
    with pytest.raises(ConfigError, match="round-3.safetensors' is damaged: it is missing"):
        checkpoints.load([])
