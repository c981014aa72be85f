"""`fedcare demo-network`: a whole deployment on this machine, for a first look (like NVIDIA FLARE's
`poc`): a private CA, one credential per hospital, an example federation.yaml, each hospital's own
CSV file (the bundled heart-disease institutions, exported as a hospital would), and real processes
— a coordinator and one agent per hospital over TLS on 127.0.0.1 — run to completion.

Every step is a `fedcare` command a real deployment runs; the demo prints them (commands.txt) so an
operator can replay them by hand, host by host."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from fedcare.core.errors import ConfigError, FedcareError
from fedcare.data.heart_disease import SITES, hospital_table
from fedcare.transports.network.credentials import (
    AdminCredential,
    client_ssl_context,
    init_authority,
    issue_site,
)

FEDERATION_YAML = """\
# The federation's settings: the same keys as `fedcare simulate`. No `data` key: each hospital's
# agent reads its own file (fedcare site --data FILE); this file only describes the columns.
label: disease                   # the column to predict (1 = heart disease)
drop: [slope, ca, thal]          # columns not used (mostly empty outside one hospital)
categorical: [cp, restecg]       # coded columns: one-hot encoded, not numbers
algorithm: fedavg
model: linear
rounds: {rounds}
local_epochs: 1
lr: 0.05
min_sites: 2                     # a round closes on the deadline with at least this many sites
seed: 0
deadline: 120                    # seconds a round waits for its sites
"""


def run_demo(folder: Path, sites: int, rounds: int, say: Callable[[str], None] = print) -> Path:
    """Set up and run the deployment in `folder`; returns the run folder."""
    if not 1 <= sites <= len(SITES):
        raise ConfigError(f"--sites must be between 1 and {len(SITES)}: the demo has {len(SITES)} hospitals' files")
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, got {rounds}")
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"'{folder}' is not empty: choose another --dir, or remove it, so old files do not mix in")
    names = list(SITES[:sites])
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    pki, logs = folder / "credentials", folder / "logs"
    logs.mkdir()
    init_authority(pki)
    for name in names:
        issue_site(pki, name)
        (folder / "hospitals" / name).mkdir(parents=True)
        hospital_table(name).to_csv(folder / "hospitals" / name / "cohort.csv", index=False)
    config = folder / "federation.yaml"
    config.write_text(FEDERATION_YAML.format(rounds=rounds))
    commands = {"coordinator": ["coordinator", "--config", config, "--credentials", pki, "--state",
                                folder / "coordinator", "--port", str(port), "--sites", ",".join(names), "--start"]}
    for name in names:
        commands[name] = ["site", "--coordinator", url, "--credential", pki / "sites" / f"{name}.json",
                          "--data", folder / "hospitals" / name / "cohort.csv", "--state", folder / "agents" / name]
    (folder / "commands.txt").write_text("".join(f"fedcare {shlex.join(map(str, c))}\n" for c in commands.values()))
    say(f"demo in {folder}: {len(names)} hospitals ({', '.join(names)}), coordinator at {url}")
    say(f"the commands it runs, one per host in a real deployment: {folder / 'commands.txt'}")
    procs: list[subprocess.Popen] = []
    try:
        for name, args in commands.items():
            with (logs / f"{name}.log").open("ab") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "fedcare", *map(str, args)], cwd=folder,
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            if name == "coordinator":
                _wait_up(url, pki, procs[0], logs)
        status = _wait_done(url, pki, procs[0], logs, say)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    if status["status"] != "completed":
        raise FedcareError(f"the run {status['status']}: {status.get('reason')}; see {logs}")
    return folder / "coordinator" / "runs" / status["run_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(url: str, pki: Path) -> httpx.Client:
    admin = AdminCredential.load(pki / "admin.json")
    return httpx.Client(base_url=url, verify=client_ssl_context(admin.ca_pem), timeout=30,
                        headers={"Authorization": f"Bearer {admin.token}"})


def _wait_up(url: str, pki: Path, proc: subprocess.Popen, logs: Path) -> None:
    with _client(url, pki) as client:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise FedcareError(f"the coordinator exited; see {logs / 'coordinator.log'}")
            try:
                if client.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
    raise FedcareError(f"the coordinator did not come up in 120 s; see {logs / 'coordinator.log'}")


def _wait_done(url: str, pki: Path, proc: subprocess.Popen, logs: Path, say: Callable[[str], None]) -> dict:
    shown = -1
    with _client(url, pki) as client:
        while True:
            if proc.poll() is not None:
                raise FedcareError(f"the coordinator exited; see {logs / 'coordinator.log'}")
            status = client.get("/v1/status").json()
            done = len(status.get("rounds", []))
            if done != shown:
                say(f"run {status.get('run_id')}: {status['status']}, {done} rounds done")
                shown = done
            if status["status"] in ("completed", "failed", "stopped"):
                return status
            time.sleep(0.5)
