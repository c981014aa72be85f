"""A bundled dataset's defaults (chosen on its validation rows) fill what the user leaves unset."""

from __future__ import annotations

import pytest
import yaml

import fedcare
from fedcare.core.config import resolve_config
from fedcare.data.builtin import get_builtin
from fedcare.data.defaults import with_dataset_defaults


def test_unset_keys_take_the_datasets_defaults_and_set_ones_win():
    chosen = get_builtin("heart-disease").defaults["none"]
    cfg = with_dataset_defaults(resolve_config({}))
    flat = cfg.flat()
    assert chosen and all(flat[k] == v for k, v in chosen.items())
    mine = with_dataset_defaults(resolve_config({"lr": 0.5})).flat()
    assert mine["lr"] == 0.5 and all(mine[k] == v for k, v in chosen.items() if k != "lr")
    # a file's own data has no dataset defaults
    files = resolve_config({"data": ["x.csv"], "label": "y"})
    assert with_dataset_defaults(files) == files


def test_a_personalization_mode_takes_its_own_defaults():
    defaults = get_builtin("heart-disease").defaults
    for mode, chosen in defaults.items():
        flat = with_dataset_defaults(resolve_config({"personalization": mode})).flat(mode="json")
        assert all(flat[k] == v for k, v in chosen.items()), mode


def test_a_default_run_records_the_defaults_and_its_config_reruns_as_it_was(tmp_path):
    run = fedcare.simulate(rounds=2, baselines=False, out=str(tmp_path / "a"))
    written = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    chosen = get_builtin("heart-disease").defaults["none"]
    assert all(written[k] == v for k, v in chosen.items())
    again = fedcare.simulate(tmp_path / "a" / "config.yaml", out=str(tmp_path / "b"))
    assert again.summary["federated"] == run.summary["federated"]


def test_ovarian_defaults_are_the_validated_ones():
    pytest.importorskip("SurvSet")
    chosen = get_builtin("ovarian-genomics").defaults["none"]
    flat = with_dataset_defaults(resolve_config({"dataset": "ovarian-genomics"})).flat()
    assert chosen["rounds"] == flat["rounds"] and all(flat[k] == v for k, v in chosen.items())


def test_the_network_coordinator_runs_a_bundled_dataset_with_the_same_defaults_as_simulate():
    from fedcare.core.config import make_config
    from fedcare.transports.network.coordinator import for_sites

    for given in ({"dataset": "heart-disease", "rounds": 3}, {"dataset": "ovarian-genomics"},
                  {"dataset": "heart-disease", "personalization": "ditto", "lr": 0.2}):
        assert for_sites(make_config(given)) == with_dataset_defaults(resolve_config(given)), given
