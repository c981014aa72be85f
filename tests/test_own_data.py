"""A hospital's own CSV over the network: the coordinator's config describes the columns, each agent
holds its file (`fedcare site --data`), and the result equals the simulation on the same files."""

from __future__ import annotations

import json


from fedcare.core.config import make_config
from fedcare.data.heart_disease import hospital_table
from fedcare.interfaces.api import simulate

COLUMNS = {"label": "disease", "drop": ["slope", "ca", "thal"], "categorical": ["cp", "restecg"]}
SITES = ["cleveland", "hungarian", "va"]
MARK = "private-export-name"  # in every hospital's file name: it must not reach the coordinator


def test_columns_without_data_mean_the_sites_files_not_the_builtin_dataset():
    cfg = make_config(COLUMNS)
    assert cfg.data.dataset is None and cfg.data.files == ()
    assert cfg.data.name == "own-data"
    assert make_config({}).data.dataset == "heart-disease"  # nothing about data: the default dataset
    assert make_config({"rounds": 3}).data.dataset == "heart-disease"


def _hospital_files(folder, names) -> dict:
    """Three hospitals' exports: different column orders, and extra missing cells at one of them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, site in enumerate(SITES):
        table = hospital_table(site)
        if i == 1:
            table = table[table.columns[::-1]]
        if i == 2:
            table = table[sorted(table.columns)].astype(object)
            table.loc[table.index[::7], "chol"] = ""
        path = folder / names(site)
        table.to_csv(path, index=False)
        out[site] = path
    return out


def test_three_hospitals_own_csv_files_over_tls_equal_the_simulation(deployment, tmp_path):
    config = {**COLUMNS, "rounds": 3, "seed": 5, "lr": 0.05, "local_epochs": 1}
    files = _hospital_files(tmp_path / "hospitals", lambda site: f"{site}-{MARK}.csv")
    d = deployment(config, SITES)
    d.start_coordinator("--start")
    for site in SITES:
        d.start_agent(site, data=files[site])
    status = d.wait_completed()
    run_dir = d.run_dir(status)
    net = json.loads((run_dir / "summary.json").read_text())

    same = _hospital_files(tmp_path / "simulated-files", lambda site: f"{site}.csv")  # site id = file name
    sim = simulate({**config, "data": [str(same[s]) for s in SITES], "out": str(tmp_path / "simulated")}).summary
    for block in ("federated", "local"):
        assert net[block] == sim[block], block
    assert net["dataset"] == "own-data"
    assert set(net["federated"]["sites"]) == set(SITES)
    assert net["preprocessing"]["files"] == []
    # no hospital's file name anywhere at the coordinator: database, run folder, log
    for path in [*(tmp_path / "state").rglob("*"), tmp_path / "coordinator.log"]:
        if path.is_file():
            assert MARK.encode() not in path.read_bytes(), path
