"""`fedcare demo-network`: the CA, credentials, federation.yaml, one CSV per hospital and real processes
on 127.0.0.1, run to completion; and the example federation.yaml of docs/deployment.md is valid."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import SRC

from fedcare.core.config import make_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


def test_demo_network_runs_a_deployment_to_completion(tmp_path):
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "120", "PATH": "/usr/bin:/bin"}
    demo = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "fedcare", "demo-network", "--sites", "2", "--rounds", "2",
                           "--dir", str(demo)], env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = Path(re.search(r"run folder: (\S+)", done.stdout).group(1))
    assert run_dir.parent == demo / "coordinator" / "runs"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2 and set(summary["federated"]["sites"]) == {"cleveland", "hungarian"}
    assert summary["dataset"] == "own-data"
    for site in ("cleveland", "hungarian"):
        assert (demo / "credentials" / "sites" / f"{site}.json").is_file()
        assert (demo / "hospitals" / site / "cohort.csv").is_file()
        assert f"--data {demo / 'hospitals' / site / 'cohort.csv'}" in (demo / "commands.txt").read_text()
    config = make_config(yaml.safe_load((demo / "federation.yaml").read_text()))
    assert config.data.dataset is None and config.data.label == "disease"
    port = int(re.search(r"127\.0\.0\.1:(\d+)", done.stdout).group(1))
    with socket.socket() as s:  # every process it started is gone: the port is free again
        s.bind(("127.0.0.1", port))
    again = subprocess.run([sys.executable, "-m", "fedcare", "demo-network", "--dir", str(demo)], env=env, check=False,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "is not empty" in again.stderr and again.stderr.count("\n") == 1


def test_the_example_federation_yaml_in_the_docs_is_a_valid_own_data_config():
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    example = next(b for b in blocks if "label:" in b)
    config = make_config(yaml.safe_load(example))
    assert config.data.dataset is None and config.data.files == ()
    assert config.data.label and config.algorithm.rounds >= 1
