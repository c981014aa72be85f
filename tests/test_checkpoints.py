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
