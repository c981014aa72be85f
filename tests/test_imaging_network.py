"""Images over the network: a real coordinator and three site agents on 127.0.0.1 over TLS, each agent
given its own manifest of image files (`fedcare site --images`), equal the simulation's figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("monai")
pytest.importorskip("PIL")

from netutil import Deployment
from test_imaging import write_scans

from fedcare.interfaces.api import simulate

SITES = ["site-1", "site-2", "site-3"]
CONFIG = {"image_columns": ["path"], "label": "label", "patient": "patient", "drop": ["mask"],
          "image_size": [16, 16], "rounds": 2, "seed": 3, "optimizer": "adam", "lr": 0.003, "batch_size": 8,
          "personalization": "fedbn"}


def test_three_agents_with_their_own_manifests_equal_the_simulation(tmp_path):
    whole = pd.read_csv(write_scans(tmp_path / "hospitals", sites=3, per_site=12))
    manifests = []
    for site, rows in whole.groupby("site", sort=True):  # one manifest per hospital, relative paths
        path = tmp_path / "hospitals" / f"{site}.csv"
        rows.drop(columns=["site"]).to_csv(path, index=False)
        manifests.append(path)
    d = Deployment(tmp_path, SITES, CONFIG)
    try:
        d.start_coordinator("--start")
        for site, manifest in zip(SITES, manifests):
            d._spawn(site, ["site", "--coordinator", d.url, "--credential", str(d.pki / "sites" / f"{site}.json"),
                            "--images", str(manifest), "--state", str(tmp_path / "agents" / site)])
        status = d.wait_completed(timeout=400)
        net = json.loads((d.run_dir(status) / "summary.json").read_text())
    finally:
        d.close()
    sim = simulate({**CONFIG, "data": [str(m) for m in manifests], "out": str(tmp_path / "simulated")}).summary
    for block in ("federated", "personalized", "local"):  # (pooling is what a network does not do)
        assert net[block] == sim[block], block
    assert net["federated"]["mean"]["accuracy"] is not None
    assert set(net["federated"]["sites"]) == set(SITES)
    assert net["bytes_sent"] == sim["bytes_sent"]
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".yaml", ".log"):  # no image path reached it
            assert ".png" not in path.read_text(errors="replace"), path
