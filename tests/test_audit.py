"""The membership-inference audit on real heart-disease runs: numbers an auditor can trust.

An overfit model (a wide MLP trained for many local epochs, then fine-tuned at each site) must be
visibly attackable, and the same attack with members and non-members swapped must fall below 0.5:
a flipped score sign or a mixed-up label breaks one of the two. The thresholds leave a wide margin:
over training (and audit) seeds 0-9 the personalized models' loss-threshold AUC was 0.605-0.622 and
their shadow AUC 0.654-0.751; the global model's loss-threshold AUC was 0.546-0.560.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import HEART_SITES, built_once, examples, run_cli

import fedcare
from fedcare.core.errors import ConfigError
from fedcare.interfaces import audit

OVERFIT = {"model": "mlp", "hidden": [128], "local_epochs": 30, "lr": 0.3, "batch_size": 8, "rounds": 5,
           "personalization": "finetune", "finetune_epochs": 30, "baselines": False, "seed": 0}


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, worker_id) -> Path:
    """This worker's own copy (the audits write into it) of the one overfit run of the session."""
    shared = built_once(tmp_path_factory, worker_id, "audit-overfit",
                        lambda folder: fedcare.simulate(out=folder / "overfit", **OVERFIT))
    out = tmp_path_factory.mktemp("audit") / "overfit"
    shutil.copytree(shared / "overfit", out)
    return out


@pytest.fixture(scope="module")
def overfit_audit(overfit_run) -> dict:
    return audit.audit_membership(overfit_run, shadows=2, seed=0)


def _aucs(report: dict) -> list[float]:
    return [report["auc"], *(s["auc"] for s in report["sites"].values())]


def test_every_auc_is_in_0_1_and_counts_match_the_splits(overfit_run, overfit_audit):
    sizes = json.loads((overfit_run / "summary.json").read_text())["site_sizes"]
    assert overfit_audit["models"] == ["global", "personalized"]
    assert overfit_audit["members"] == sum(s["train"] for s in sizes.values())
    assert overfit_audit["non_members"] == sum(s["test"] for s in sizes.values())
    assert overfit_audit["dp"] is None
    for attack in ("loss_threshold", "shadow"):
        for model in ("global", "personalized"):
            report = overfit_audit["attacks"][attack][model]
            assert all(0.0 <= a <= 1.0 for a in _aucs(report)), (attack, model)
            assert 0.0 <= report["advantage"] <= 1.0
            assert list(report["sites"]) == HEART_SITES
            assert report["members"] == overfit_audit["members"]
            worst = report["worst_site"]
            assert worst["auc"] == max(s["auc"] for s in report["sites"].values())
            assert report["sites"][worst["site_id"]]["auc"] == worst["auc"]
    loss = overfit_audit["attacks"]["loss_threshold"]["global"]
    assert loss["non_members"] == overfit_audit["non_members"]
    for site in HEART_SITES:
        assert loss["sites"][site]["members"] == sizes[site]["train"]
        assert loss["sites"][site]["non_members"] == sizes[site]["test"]
    shadow = overfit_audit["attacks"]["shadow"]["global"]
    for site in HEART_SITES:  # judged on the held-out half only: the other half trained the shadows
        assert shadow["sites"][site]["non_members"] == sizes[site]["test"] - sizes[site]["test"] // 2


def test_an_overfit_model_leaks_and_swapping_members_reverses_the_attack(overfit_run, overfit_audit):
    attacks = overfit_audit["attacks"]
    assert attacks["loss_threshold"]["personalized"]["auc"] > 0.56
    assert attacks["loss_threshold"]["global"]["auc"] > 0.52
    assert attacks["shadow"]["personalized"]["auc"] > 0.58
    run = audit.load_run(overfit_run)
    personal = run.models["personalized"]
    members, non_members = audit.training_rows(run.dataset), audit.held_out_rows(run.dataset)
    swapped = audit.loss_threshold_attack(run, personal, non_members, members)
    assert swapped["auc"] < 0.44
    pool, held_out = audit.split_held_out(non_members, 0)
    shadows = audit.train_shadows(run, pool, 2, 0, personalized=True)
    straight = audit.shadow_attack(run, personal, shadows, "personalized", members, held_out)
    assert straight["auc"] == attacks["shadow"]["personalized"]["auc"]  # same seed, same numbers
    assert audit.shadow_attack(run, personal, shadows, "personalized", held_out, members)["auc"] < 0.42


def test_a_logistic_model_leaks_less_than_the_overfit_one(tmp_path, overfit_audit):
    fedcare.simulate(rounds=5, lr=0.1, batch_size=32, baselines=False, out=tmp_path / "logistic")
    result = audit.audit_membership(tmp_path / "logistic", shadows=1, model="global", write=False)
    assert result["attacks"]["loss_threshold"]["global"]["auc"] < \
        overfit_audit["attacks"]["loss_threshold"]["personalized"]["auc"]
    assert not (tmp_path / "logistic" / "audit.json").exists()
    assert result["dp"] is None and result["models"] == ["global"]
    with pytest.raises(ConfigError, match="no personalized models"):
        audit.audit_membership(tmp_path / "logistic", model="personalized")


def test_the_held_out_split_is_disjoint_and_complete():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.float32)
    rows = {"a": examples(tabular=x, label=y), "b": examples(tabular=x[:7], label=y[:7])}
    pool, held = audit.split_held_out(rows, seed=3)
    for site, n in (("a", 20), ("b", 7)):
        ids_pool, ids_held = set(pool[site].arrays["label"].tolist()), set(held[site].arrays["label"].tolist())
        assert not ids_pool & ids_held
        assert ids_pool | ids_held == set(range(n))
        assert len(ids_pool) == n // 2
    again, _ = audit.split_held_out(rows, seed=3)
    assert np.array_equal(again["a"].arrays["label"], pool["a"].arrays["label"])


def test_auc_block_orients_scores_towards_members():
    perfect = audit.auc_block(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
    assert perfect["auc"] == 1.0 and perfect["advantage"] == 1.0
    assert audit.auc_block(np.array([1.0, 2.0]), np.array([3.0, 4.0]))["auc"] == 0.0
    assert audit.auc_block(np.ones(3), np.ones(5))["auc"] == 0.5
    empty = audit.auc_block(np.ones(3), np.array([]))
    assert empty["auc"] is None and empty["members"] == 3 and empty["non_members"] == 0


def test_audit_json_is_written_and_deterministic(overfit_run, overfit_audit):
    written = (overfit_run / "audit.json").read_bytes()
    assert json.loads(written) == json.loads(json.dumps(overfit_audit))
    audit.audit_membership(overfit_run, shadows=2, seed=0)
    assert (overfit_run / "audit.json").read_bytes() == written
    assert not list(overfit_run.glob(".*.tmp"))


def test_bad_arguments_are_config_errors(overfit_run, tmp_path):
    with pytest.raises(ConfigError, match="model must be"):
        audit.audit_membership(overfit_run, model="pooled")
    with pytest.raises(ConfigError, match="shadows"):
        audit.audit_membership(overfit_run, shadows=0)
    with pytest.raises(ConfigError, match="not found"):
        audit.audit_membership(tmp_path / "missing")


def test_cli_prints_the_auc_table_and_epsilon_and_fails_in_one_line(overfit_run, tmp_path):
    # the run's privacy block as a DP run writes it (api._privacy; test_dp_sgd checks a real one):
    # a real DP run costs seconds of noise calibration, and the audit only reads this block
    shutil.copytree(overfit_run, tmp_path / "dp", ignore=shutil.ignore_patterns("audit.json"))
    summary = json.loads((tmp_path / "dp" / "summary.json").read_text())
    summary["privacy"] = {"level": "record", "budget": 3.0, "delta": 1e-5, "clip": 1.0, "epsilon": 2.9991,
                          "epsilon_per_site": {site: 2.9991 for site in HEART_SITES}}
    (tmp_path / "dp" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "unfinished").mkdir()
    for name in ("config.yaml", "summary.json"):
        shutil.copy(overfit_run / name, tmp_path / "unfinished" / name)
    shutil.copytree(overfit_run, tmp_path / "old")
    with open(tmp_path / "old" / "config.yaml", "a") as f:
        f.write("colour: red\n")
    commands = {
        "ok": ("audit", "membership", "dp", "--model", "global", "--shadows", "1", "--seed", "1"),
        "missing": ("audit", "membership", "nowhere"),
        "unfinished": ("audit", "membership", "unfinished"),
        "old": ("audit", "membership", "old"),
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        procs = dict(zip(commands, pool.map(lambda args: run_cli(*args, cwd=tmp_path), commands.values())))
    ok = procs.pop("ok")
    assert ok.returncode == 0, ok.stderr
    result = json.loads((tmp_path / "dp" / "audit.json").read_text())
    assert result["models"] == ["global"] and result["seed"] == 1
    for attack in ("loss_threshold", "shadow"):
        report = result["attacks"][attack]["global"]
        assert f"{report['auc']:.3f}" in ok.stdout
        assert f"{report['worst_site']['site_id']} {report['worst_site']['auc']:.3f}" in ok.stdout
    assert result["dp"] == {"level": "record", "epsilon": 2.9991, "delta": 1e-5, "budget": 3.0, "clip": 1.0}
    assert "ε = 2.999 spent (budget 3.0" in ok.stdout
    expected = {"missing": "not found", "unfinished": "global.safetensors", "old": "colour"}
    for name, proc in procs.items():
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert expected[name] in lines[0], (name, lines[0])
