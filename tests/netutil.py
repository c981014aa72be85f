"""Real processes for the deployment tests: a coordinator and site agents on 127.0.0.1 over TLS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from conftest import SRC
from fedcare.transports.network.agent import AgentSettings, AgentStopped, SiteAgent
from fedcare.transports.network.credentials import (AdminCredential, SiteCredential, client_ssl_context,
                                                    init_authority, issue_site)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["NO_COLOR"] = "1"
    return env


@dataclass
class Deployment:
    """A private CA with one credential per site, a coordinator config, and the processes started."""

    root: Path
    sites: list[str]
    config: dict
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    held: list[HeldAgent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki = self.root / "pki"
        init_authority(self.pki)
        for site in self.sites:
            issue_site(self.pki, site)
        self.config_path = self.root / "federation.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.admin = AdminCredential.load(self.pki / "admin.json")
        self.client = httpx.Client(base_url=self.url, verify=client_ssl_context(self.admin.ca_pem), timeout=30,
                                   headers={"Authorization": f"Bearer {self.admin.token}"})

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def site_client(self, site: str) -> httpx.Client:
        cred = SiteCredential.load(self.pki / "sites" / f"{site}.json")
        return httpx.Client(base_url=self.url, verify=client_ssl_context(cred.ca_pem), timeout=30,
                            headers={"Authorization": f"Bearer {cred.token}"})

    def _spawn(self, name: str, args: list[str], stdin: int | None = None) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "fedcare", *args], cwd=self.root, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT, stdin=stdin)
        self.procs[name] = proc
        return proc

    def start_coordinator(self, *extra: str) -> subprocess.Popen:
        proc = self._spawn("coordinator", ["coordinator", "--config", str(self.config_path), "--credentials",
                                           str(self.pki), "--state", str(self.root / "state"), "--port",
                                           str(self.port), "--sites", ",".join(self.sites), *extra])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.get("/v1/health").status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"coordinator exited: {self.log('coordinator')}")
            time.sleep(0.2)
        raise AssertionError("coordinator did not come up")

    def start_agent(self, site: str, *extra: str, stdin: int | None = None, data: Path | None = None
                    ) -> subprocess.Popen:
        """An agent with the site's rows of the bundled heart-disease data, or its own file `data`."""
        source = ["--data", str(data)] if data is not None else ["--dataset", "heart-disease"]
        return self._spawn(site, ["site", "--coordinator", self.url, "--credential",
                                  str(self.pki / "sites" / f"{site}.json"), *source,
                                  "--state", str(self.root / "agents" / site), *extra], stdin=stdin)

    def start_held(self, hold: int) -> HeldAgent:
        """The coordinator with the run under way, agents for all sites but the last, and a HeldAgent
        for the last that holds its round-`hold` update: returns once rounds 1 to hold - 1 are
        closed and checkpointed and round `hold` waits for it, however fast the rounds go."""
        self.start_coordinator("--start")
        for site in self.sites[:-1]:
            self.start_agent(site)
        agent = HeldAgent(self, self.sites[-1], hold)
        self.held.append(agent)
        assert agent.holding.wait(timeout=240), f"round {hold} never came\n{self.log('coordinator')}"
        return agent

    def start_all(self) -> None:
        """The coordinator, started with the run under way, and one agent per site."""
        self.start_coordinator("--start")
        for site in self.sites:
            self.start_agent(site)

    def status(self) -> dict:
        return self.client.get("/v1/status").json()

    def wait_for(self, predicate, timeout: float = 240.0, what: str = "condition") -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                status = self.status()
                if predicate(status):
                    return status
                if status.get("status") == "failed":
                    raise AssertionError(f"run failed: {status.get('reason')}\n{self.log('coordinator')}")
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; status {self.status()}\n{self.log('coordinator')}")

    def wait_completed(self, timeout: float = 240.0) -> dict:
        return self.wait_for(lambda s: s.get("status") == "completed", timeout, "the run to complete")

    def run_dir(self, status: dict) -> Path:
        return self.root / "state" / "runs" / status["run_id"]

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def close(self) -> None:
        for agent in self.held:
            agent.stop()
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.client.close()


class ThreadAgent(SiteAgent):
    """A real agent for `site` (its rows of the bundled heart-disease data) in a thread of the test's
    process, over TLS with the site's own credential, trained as a `fedcare site` process trains:
    tests subclass it to hold or attack a task."""

    def __init__(self, d: Deployment, site: str, state: Path, poll_wait: float = 20.0):
        cred = SiteCredential.load(d.pki / "sites" / f"{site}.json")
        super().__init__(AgentSettings(d.url, site, cred.token, state, client_ssl_context(cred.ca_pem),
                                       dataset="heart-disease", poll_wait=poll_wait),
                         say=lambda text: None)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        return thread

    def _serve(self) -> None:
        try:
            self.run()
        except AgentStopped:
            pass


class HeldAgent(ThreadAgent):
    """A ThreadAgent that holds its update for round `hold` until `release()`: a test can then kill or
    damage the coordinator while the run is certainly under way."""

    def __init__(self, d: Deployment, site: str, hold: int):
        super().__init__(d, site, d.root / "agents" / site)
        self.hold = hold
        self.holding = threading.Event()
        self._released = threading.Event()
        self._stopped = False
        self.start()

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self._stopped = True
        self._released.set()

    def _put_update(self, task: dict, blob: bytes) -> None:
        if task["round"] == self.hold and not self._released.is_set():
            self.holding.set()
            self._released.wait()
        super()._put_update(task, blob)

    def _request(self, method: str, path: str, **kwargs) -> object:
        if self._stopped:
            raise AgentStopped("the test is over")
        return super()._request(method, path, **kwargs)
