"""A run stopped mid-way resumes from its checkpoint to the same result as an uninterrupted run,
with every site's own state (Ditto's model, FedPer's head, SCAFFOLD's cᵢ) carried over."""

import json

import numpy as np
import pytest

import fedcare
from fedcare.interfaces.api import resume
from fedcare.core import ConfigError


class Crash(Exception):
    pass


def crash_after(n):
    def progress(name, record):
        if name == "federated" and record.round == n:
            raise Crash(f"stopped after round {n}")
    return progress


def without_wall(path):
    s = json.loads((path / "summary.json").read_text())
    s.pop("wall_seconds")
    return s


@pytest.mark.parametrize("settings", [
    {"algorithm": "fedavg", "personalization": "ditto"},
    {"algorithm": "scaffold"},
    {"algorithm": "fedadam", "model": "mlp", "hidden": [8], "personalization": "fedper"},
    {"algorithm": "fedavg", "aggregator": "centered-clip", "val_fraction": 0.2, "patience": 50},
])
def test_resume_equals_an_uninterrupted_run(tmp_path, settings):
    common = dict(rounds=6, baselines=True, **settings)
    whole = fedcare.simulate(out=str(tmp_path / "whole"), **common)
    with pytest.raises(Crash):
        fedcare.simulate(out=str(tmp_path / "cut"), progress=crash_after(3), **common)
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = resume(tmp_path / "cut")
    for k in whole.global_params:
        np.testing.assert_array_equal(resumed.global_params[k], whole.global_params[k])
    for site in whole.site_params:
        for k in whole.site_params[site]:
            np.testing.assert_array_equal(resumed.site_params[site][k], whole.site_params[site][k])
    assert without_wall(tmp_path / "cut") | {"preprocessing": None} == without_wall(tmp_path / "whole") | {
        "preprocessing": None}
    cut_rows = (tmp_path / "cut" / "metrics.jsonl").read_text()
    assert cut_rows == (tmp_path / "whole" / "metrics.jsonl").read_text()


def test_a_round_under_way_at_the_crash_is_run_again_not_duplicated(tmp_path):
    with pytest.raises(Crash):
        fedcare.simulate(rounds=4, baselines=False, out=str(tmp_path / "r"), progress=crash_after(2))
    run = resume(tmp_path / "r")
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    tests = [(r["round"], r["site"]) for r in rows if r["split"] == "test"]
    assert len(tests) == len(set(tests)) == 4 * 4


def test_resume_without_a_checkpoint_says_so(tmp_path):
    fedcare.simulate(rounds=1, baselines=False, checkpoint_every=0, out=str(tmp_path / "n"))
    with pytest.raises(ConfigError, match="no checkpoint"):
        resume(tmp_path / "n")


def test_checkpoints_every_few_rounds_keep_the_rounds_between_them(tmp_path):
    """With checkpoint_every 2 the checkpoint of round 2 holds round 1's rows too: a run resumed
    from it writes the same metrics.jsonl as an uninterrupted one."""
    common = dict(rounds=5, baselines=False, checkpoint_every=2)
    fedcare.simulate(out=str(tmp_path / "whole"), **common)
    with pytest.raises(Crash):
        fedcare.simulate(out=str(tmp_path / "cut"), progress=crash_after(3), **common)
    resume(tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "whole" / "metrics.jsonl").read_text()


def test_rows_grow_by_appending_and_a_failed_attempt_leaves_nothing_twice(tmp_path):
    """Each checkpoint appends its round's rows (earlier rounds' bytes stay as they were); whatever
    an attempt that failed left after the last checkpoint's rows is cut off by the next attempt."""
    from fedcare.federation.checkpoint import Checkpoints, EngineCheckpoint

    params = {"w": np.ones(3, np.float32)}
    checkpoints = Checkpoints(tmp_path)
    rows_file = tmp_path / "checkpoints" / "rows.jsonl"

    def checkpoint(r):
        return EngineCheckpoint(r, params, [], params, r, None)

    checkpoints.save(checkpoint(1), {}, [{"round": 1, "site": "a"}])
    first = rows_file.read_bytes()
    with open(rows_file, "ab") as out:  # an attempt at round 2 cut short: half a row
        out.write(b'{"checkpoint": 2, "rou')
    checkpoints.save(checkpoint(2), {}, [{"round": 2, "site": "a"}, {"round": 2, "site": "b"}])
    text = rows_file.read_bytes()
    assert text.startswith(first) and text.count(b"\n") == 3 and b'"rou{' not in text
    loaded = Checkpoints(tmp_path).load([])
    assert loaded is not None and [(r["round"], r["site"]) for r in loaded[2]] == [(1, "a"), (2, "a"), (2, "b")]
