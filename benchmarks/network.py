"""The networked coordinator on loopback: its overhead per round and the sites' upload throughput.

Setup (the deployment issue): 4 sites, a model of about 1,000,000 parameters (heart-disease, MLP
15 → 991 → 991 → 1: 999,920 float32 parameters, 4.0 MB per message), FedAvg, TLS on 127.0.0.1.

* A private CA and 4 site credentials are made in a temporary folder, and the real coordinator is
  started as a subprocess (`python -m fedcare coordinator ... --start`), exactly as the deployment
  tests do (tests/netutil.py). It imports a copy of src/ taken when the script starts, so that edits
  to the work tree during the run do not change what is measured halfway.
* The 4 sites do **not** train: each is a thread of this process running a minimal client of the real
  API over TLS (httpx with fedcare's `client_ssl_context`). It answers the data-preparation tasks with
  a real `SitePreparation` of its hospital, each fit task by downloading the params and PUTting a
  precomputed valid update (the same names and shapes, fixed small random values), and each
  evaluate task by downloading the params and posting fixed metrics. Like the real agent, it checks
  a download against the digest the task names and skips it when it already holds those bytes (the
  evaluated params are the next round's broadcast). So what is timed is the coordinator and the
  protocol (TLS, HTTP, validation, aggregation, SQLite, checkpoints), not PyTorch: a round's
  duration here *is* the overhead a real round adds beyond the sites' training.
  Threads, not processes: on a 2-core machine 4 client processes would compete with the coordinator
  for the cores; threads keep the whole client side in one process (about one core at most, the
  GIL), leaving the other core to the coordinator, as in a deployment where sites are other machines.
* Round time = from the moment round r's fit task opens (the first site's long-poll returns it) to
  the moment round r+1's opens, cross-checked with the coordinator's own `rounds.closed` timestamps
  in `<state>/coordinator.db`. Round 1 is a warm-up and is not counted; the last round only closes
  the previous interval. The round is broken down client-side into: fit transfers (downloads and
  uploads), the coordinator's gap until the evaluate task opens (validation is done on upload;
  this gap is aggregation and serializing the new params), the evaluate task, and the gap until the
  next fit task opens (anomaly report, SQLite, checkpoint, round file, serializing the params again).
* Where the time goes: an extra run of the same service with timers around the suspects, a stack
  sampler and per-thread CPU time (`--no-profile` skips it), and what-if runs with one hot spot
  patched out inside this benchmark (`--no-what-if` skips them); src/ is never modified.
* Upload throughput = bytes of one PUT of the update / its client-side time (request start to
  response). Two passes per repeat: `concurrent` (the real protocol: the 4 sites upload at once; this
  pass gives the round times) and `serial` (the sites wait for each other after downloading and then
  upload one at a time, so each PUT is alone on the wire: single-stream throughput). Reference on the
  same machine, same bytes, same certificate, interleaved with the runs: a raw TLS socket server
  (reads N bytes, answers "ok") and a bare ASGI app on the same uvicorn (reads the body, answers
  200), each uploaded to alone and by 4 streams at once. MB = 10^6 bytes.
* The floor of a round: the same reference servers given a round's bytes in a round's pattern, 4
  uploads of the update at once, then (once all are in) 4 downloads of the params at once, on the 4
  kept-alive connections; the raw TLS socket's figure is what moving 16 MB up and 16 MB down costs on
  this machine with nothing else (no polls, no JSON, no hashing, no validation), the bare uvicorn
  app's is the same through the coordinator's HTTP stack.

    PYTHONPATH=src python benchmarks/network.py [--rounds 30] [--repeats 3] [--no-what-if] [--no-profile]
        [--compress-updates SCHEME] [--compress-broadcast SCHEME] [--stacks auto,h11] [--against TREE]

`--against TREE` (another work tree, e.g. the main branch's) runs that tree's coordinator, from its
own snapshot of TREE/src, beside this one in every repeat (shuffled with the other runs, the same
sites and the same measurements), and pairs the two by repeat: on a shared machine whose load
moves, a comparison is only fair between runs made side by side.

Writes benchmarks/results/network.md (the tables) and network.json (every raw number); with
compression (the sites' precomputed update is then sent compressed, as a real site's would be; the
coordinator compresses its broadcasts and the sites read them against the plan's model, as the
agent does) network-compressed.md and .json instead. benchmarks/network_compression.py runs the
compressed and uncompressed settings interleaved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

import fedcare  # noqa: E402
from fedcare.core.compression import NONE, parse_scheme, update_rng  # noqa: E402
from fedcare.core.config import make_config  # noqa: E402
from fedcare.core.serialization import params_from_bytes, update_to_bytes  # noqa: E402
from fedcare.core.update import Update  # noqa: E402
from fedcare.data.dataset import DataShape  # noqa: E402
from fedcare.data.prepare import SitePreparation  # noqa: E402
from fedcare.federation.plan import make_plan  # noqa: E402
from fedcare.transports.network.credentials import (AdminCredential, SiteCredential, client_ssl_context,  # noqa: E402
                                                    init_authority, issue_site, server_tls_files)

COMPRESS: dict[str, str] = {}  # --compress-updates / --compress-broadcast: config keys of every run
SITES = ["cleveland", "hungarian", "switzerland", "va"]
HIDDEN = 991  # heart-disease has 15 features: 15·991 + 991 + 991·991 + 991 + 991 + 1 = 999,920 params
SRC = Path(fedcare.__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "results"
MB = 1e6
TICK = os.sysconf("SC_CLK_TCK")
#: What-if runs: the coordinator (or the sites) patched *inside this benchmark* to see what a hot spot
#: costs; src/ is unchanged. Each runs beside the plain run in every repeat.
WHAT_IF = {
    "control": "nothing: the same patched entry point with no patch (the baseline for the rows below)",
    "no-anomaly-report": "the per-round anomaly report's norms, products and consensus skipped "
                         "(fedcare.federation.anomalies.report_products → zeros)",
    "no-checkpoint-files": "the per-round files skipped: checkpoint (Checkpoints.save) and round-N.safetensors "
                           "(the durability the coordinator promises; measured, not proposed)",
    "both": "the two together",
}


# ----------------------------------------------------------------------------- processes


class Processes:
    """Every subprocess this benchmark starts; `stop_all` ends them (also on error or Ctrl-C). They import
    fedcare from `code`: a snapshot of src/ taken at the start, so that edits made to the work tree while
    the benchmark runs do not change what it measures halfway."""

    def __init__(self, code: Path = SRC) -> None:
        self.procs: list[subprocess.Popen] = []
        self.code = code

    def spawn(self, args: list[str], log: Path, cwd: Path, env_extra: dict | None = None) -> subprocess.Popen:
        env = {**os.environ, **(env_extra or {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.code), env.get("PYTHONPATH")) if p)
        env["OMP_NUM_THREADS"] = "1"
        env["NO_COLOR"] = "1"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; 1/CLK_TCK resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


# ----------------------------------------------------------------------------- the sites


class Round:
    """What the sites saw of one round; times are time.perf_counter() of this process."""

    def __init__(self) -> None:
        self.fit_open: float | None = None       # first site's poll returned the fit task
        self.coordinator_cpu: float | None = None  # coordinator's CPU seconds at that moment
        self.clients_cpu: float | None = None    # this process's (the 4 clients') CPU seconds then
        self.sites: dict[str, dict[str, float]] = {}


class Federation:
    """One run of the real coordinator with 4 non-training sites; `mode` is 'concurrent' or 'serial'."""

    def __init__(self, root: Path, pki: Path, procs: Processes, rounds: int, mode: str, variant: str = "plain",
                 stack: str | None = None):
        self.root, self.pki, self.procs, self.rounds, self.mode, self.variant = root, pki, procs, rounds, mode, variant
        self.stack = stack  # FEDCARE_HTTP for the coordinator (httpstack.py); None: this process's environment
        self.profile = root / "profile.json" if variant == "profile" else None
        self.patched = variant not in ("plain", "stack", "against")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.upload_lock = threading.Lock()
        self.barrier = threading.Barrier(len(SITES))
        self.record: dict[int, Round] = {}
        self.errors: list[str] = []
        self.update_bytes = 0
        self.download_bytes = 0
        self.params = 0
        self.layout: dict | None = None  # the model's arrays, to read a compressed broadcast against

    def config(self) -> dict:
        return {"dataset": "heart-disease", "model": "mlp", "hidden": [HIDDEN, HIDDEN], "rounds": self.rounds,
                "algorithm": "fedavg", "lr": 0.05, "local_epochs": 1, "seed": 0, "baselines": False,
                "personalization": "none", "val_fraction": 0.0, **COMPRESS}

    def run(self) -> dict:
        self.root.mkdir(parents=True)
        load = os.getloadavg()[0]
        config_path = self.root / "federation.yaml"
        config_path.write_text(yaml.safe_dump(self.config()))
        log = self.root / "coordinator.log"
        common = ["--config", str(config_path), "--credentials", str(self.pki), "--state", str(self.root / "state"),
                  "--port", str(self.port)]
        if not self.patched:  # the real service, as an operator starts it
            args = ["-m", "fedcare", "coordinator", *common, "--sites", ",".join(SITES), "--deadline", "120", "--start"]
        else:  # the same service.serve(), patched (timers and a stack sampler, or a what-if)
            args = [str(Path(__file__).resolve()), "--serve-patched", self.variant,
                    "--profile-out", str(self.root / "profile.json"), *common]
        self.coordinator = self.procs.spawn(args, log, self.root, {"FEDCARE_HTTP": self.stack} if self.stack else None)
        try:
            self._wait_healthy(log)
            started = time.perf_counter()
            threads = [threading.Thread(target=self._site, args=(s,), name=f"site-{s}", daemon=True) for s in SITES]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                if self.errors or self.coordinator.poll() is not None:
                    break
                for t in threads:
                    t.join(0.2)
            if self.errors or self.coordinator.poll() is not None:
                self.procs.stop(self.coordinator)  # unblocks the other sites' requests
                for t in threads:
                    t.join(30)
                raise RuntimeError(f"{self.mode} {self.variant} run failed: {self.errors[:1]}\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            wall = time.perf_counter() - started
            closed = self._closed()
        finally:
            self.procs.stop(self.coordinator)
        result = self._results(closed, wall)
        result["load"] = load
        result["stack"] = next((line.split("HTTP stack: ", 1)[1] for line in log.read_text(errors="replace").splitlines()
                                if "HTTP stack: " in line), "not logged (code before httpstack.py)")
        if self.profile is not None:
            result["profile"] = json.loads(self.profile.read_text())
        return result

    def _wait_healthy(self, log: Path) -> None:
        admin = AdminCredential.load(self.pki / "admin.json")
        with httpx.Client(base_url=self.url, verify=client_ssl_context(admin.ca_pem), timeout=5) as client:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                if self.coordinator.poll() is not None:
                    raise RuntimeError(f"coordinator exited:\n{log.read_text(errors='replace')[-3000:]}")
                try:
                    if client.get("/v1/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        raise RuntimeError("the coordinator did not come up in 120 s")

    def _closed(self) -> dict[int, float]:
        db = sqlite3.connect(self.root / "state" / "coordinator.db")
        try:
            return {r: c for r, c in db.execute("SELECT round, closed FROM rounds ORDER BY round")}
        finally:
            db.close()

    # ----- one site: a thread --------------------------------------------------------------------

    def _site(self, site: str) -> None:
        try:
            self._site_loop(site)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.errors.append(f"site {site}: {type(exc).__name__}: {exc}")

    def _site_loop(self, site: str) -> None:
        cred = SiteCredential.load(self.pki / "sites" / f"{site}.json")
        prep = SitePreparation.from_builtin("heart-disease", site)
        rng = np.random.default_rng(SITES.index(site))
        grad: dict | None = None
        examples = 1
        held: tuple[str, dict] | None = None  # (sha256, params) of the last params downloaded
        client = httpx.Client(base_url=self.url, verify=client_ssl_context(cred.ca_pem),
                              headers={"Authorization": f"Bearer {cred.token}"},
                              timeout=httpx.Timeout(60.0, read=90.0))
        with client:
            while True:
                response = client.get("/v1/task", params={"wait": 20})
                received = time.perf_counter()
                _ok(response, "poll")
                if response.status_code == 204:
                    continue
                task = response.json()
                kind, tid = task["kind"], task["id"]
                if kind == "done":
                    if task.get("status") != "completed":
                        raise RuntimeError(f"run ended: {task}")
                    return
                if kind == "prepare":
                    answer = prep.answer(task["phase"], task["question"])
                    _ok(client.post(f"/v1/tasks/{tid}/answer", json={"answer": answer}), "prepare answer")
                    continue
                counted = kind in ("fit", "evaluate") and not tid.startswith("final.")  # N.fit, N.evaluate
                mark = self._mark(task["round"], kind, received) if counted else {}
                # as the real agent does: when the task names its params' digest and this site holds
                # those bytes already (the evaluated params are the next round's), it skips the download
                digest = (task.get("params") or {}).get("sha256")
                t0 = time.perf_counter()
                if digest is not None and held is not None and held[0] == digest:
                    t1, message = t0, held[1]
                    mark[f"{kind}_download_skipped"] = 1.0
                else:
                    download = client.get(f"/v1/tasks/{tid}/params")
                    t1 = time.perf_counter()
                    _ok(download, "download")
                    if digest is not None and hashlib.sha256(download.content).hexdigest() != digest:
                        raise RuntimeError(f"task {tid}: the params downloaded do not match their digest")
                    # a real site decodes and checks it too; a compressed broadcast is read against the
                    # plan's model (names and shapes), as the agent reads it
                    message, _ = params_from_bytes(download.content, layout=self._layout(task))
                    held = (digest, message) if digest is not None else None
                    if counted:  # the final evaluation's model goes out at full precision, as it is saved
                        self.download_bytes = len(download.content)
                    self.params = sum(int(v.size) for v in message.values())
                mark.update({f"{kind}_download_start": t0, f"{kind}_download_end": t1})
                if kind == "fit":
                    if grad is None:  # made once: the names, shapes and dtypes of the message, small values
                        grad = {k: (rng.standard_normal(v.shape) * 1e-3).astype(v.dtype) for k, v in message.items()}
                        examples = max(1, int(prep.row_counts.get("train", 100)))
                    # serialized each round: an update says which round it was trained for
                    scheme = parse_scheme(COMPRESS.get("compress_updates", "none"))
                    blob = update_to_bytes(Update(site, grad, examples, {"train_loss": 0.0}), round_=task["round"],
                                           scheme=scheme, rng=update_rng(task["round"]) if scheme.active else None)
                    self.update_bytes = len(blob)
                    if self.mode == "serial":
                        self.barrier.wait(timeout=60)  # every download done: nothing else on the wire
                        self.upload_lock.acquire()
                    try:
                        p0 = time.perf_counter()
                        response = client.put(f"/v1/tasks/{tid}/update", content=blob,
                                              headers={"content-type": "application/octet-stream"})
                        p1 = time.perf_counter()
                    finally:
                        if self.mode == "serial":
                            self.upload_lock.release()
                    _ok(response, "upload")
                    mark.update({"upload_start": p0, "upload_end": p1})
                elif kind == "evaluate":
                    metrics = {split: {"accuracy": 0.5, "loss": 0.69} for split in task["splits"]}
                    a0 = time.perf_counter()
                    response = client.post(f"/v1/tasks/{tid}/answer", json={"metrics": metrics})
                    a1 = time.perf_counter()
                    _ok(response, "evaluate answer")
                    mark.update({"answer_start": a0, "answer_end": a1})
                else:
                    raise RuntimeError(f"unexpected task kind {kind!r}")

    def _layout(self, task: dict) -> dict | None:
        """The model a broadcast holds, built once from the plan the task carries (as the agent's
        `_expected`); None without compressed broadcasts, where the message itself names its arrays."""
        if parse_scheme(COMPRESS.get("compress_broadcast", "none")) == NONE:
            return None
        with self.lock:
            if self.layout is None:
                plan = task["plan"]
                self.layout = make_plan(make_config(plan["config"]), DataShape.from_json(plan["shape"]),
                                        plan["sites"]).initial_params()
            return self.layout

    def _mark(self, rnd: int, kind: str, received: float) -> dict[str, float]:
        with self.lock:
            record = self.record.setdefault(rnd, Round())
            if kind == "fit" and record.fit_open is None:
                record.fit_open = received
                record.coordinator_cpu = cpu_seconds(self.coordinator.pid)
                record.clients_cpu = time.process_time()
            mark = record.sites.setdefault(threading.current_thread().name.removeprefix("site-"), {})
        mark[f"{kind}_received"] = received
        return mark

    # ----- results -------------------------------------------------------------------------------

    def _results(self, closed: dict[int, float], wall: float) -> dict:
        rounds = []
        for r in sorted(self.record):
            rec = self.record[r]
            if r + 1 not in self.record:
                break  # the last round only closes the previous interval
            nxt = self.record[r + 1]
            s = rec.sites
            row = {"round": r, "period": nxt.fit_open - rec.fit_open,
                   "coordinator_cpu": nxt.coordinator_cpu - rec.coordinator_cpu,
                   "clients_cpu": nxt.clients_cpu - rec.clients_cpu}
            last_upload = max(v["upload_end"] for v in s.values())
            eval_open = min(v["evaluate_received"] for v in s.values())
            last_answer = max(v["answer_end"] for v in s.values())
            row["fit_transfers"] = last_upload - rec.fit_open
            row["aggregate_gap"] = eval_open - last_upload
            row["evaluate_task"] = last_answer - eval_open
            row["checkpoint_gap"] = nxt.fit_open - last_answer
            row["upload_window"] = last_upload - min(v["upload_start"] for v in s.values())
            row["uploads"] = {site: v["upload_end"] - v["upload_start"] for site, v in s.items()}
            row["fit_downloads"] = {site: v["fit_download_end"] - v["fit_download_start"] for site, v in s.items()
                                    if not v.get("fit_download_skipped")}
            row["eval_downloads"] = {site: v["evaluate_download_end"] - v["evaluate_download_start"]
                                     for site, v in s.items() if not v.get("evaluate_download_skipped")}
            row["eval_answers"] = {site: v["answer_end"] - v["answer_start"] for site, v in s.items()}
            row["closed_interval"] = (closed[r + 1] - closed[r]) if r in closed and r + 1 in closed else None
            rounds.append(row)
        return {"mode": self.mode, "variant": self.variant, "rounds_configured": self.rounds, "wall_seconds": wall,
                "update_bytes": self.update_bytes, "download_bytes": self.download_bytes, "params": self.params,
                "rounds": rounds}


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")


# ----------------------------------------------------------------------------- reference servers


def serve_reference(cert: str, key: str, raw_port: int, http_port: int) -> None:
    """A subprocess: a raw TLS socket server (thread) and a bare ASGI app on uvicorn (main thread)."""
    import uvicorn

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", raw_port))

    sent: dict[int, bytes] = {}  # download size -> the bytes served (made once, like the coordinator's broadcast)

    def served(n: int) -> bytes:
        if n not in sent:
            sent[n] = os.urandom(n)
        return sent[n]

    def connection(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            head = memoryview(bytearray(16))  # bytes the client sends, bytes it asks back
            view = memoryview(bytearray(0))
            while True:
                if _recv_exact(tls, head, 16) is None:
                    return
                n, back = int.from_bytes(head[:8], "little"), int.from_bytes(head[8:], "little")
                if n > len(view):
                    view = memoryview(bytearray(n))
                if _recv_exact(tls, view, n) is None:
                    return
                if back:
                    tls.sendall(served(back))
                else:
                    tls.sendall(b"ok")

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    async def app(scope, receive, send):  # reads the whole body, answers 200: the HTTP stack alone
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # GET /download?n=N: N bytes, made once (a broadcast's download)
            back = int(scope["query_string"].decode().partition("=")[2] or 0)
            body = served(back)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b'{"received": %d}' % len(b"".join(chunks))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning", lifespan="off",
                                  ssl_certfile=cert, ssl_keyfile=key)).run()


def _recv_exact(sock: ssl.SSLSocket, view: memoryview, n: int) -> int | None:
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n], n - got)
        if k == 0:
            return None
        got += k
    return got


class Reference:
    """Uploads of the same bytes to the reference servers, alone and 4 at once."""

    def __init__(self, root: Path, pki: Path, procs: Processes):
        self.raw_port, self.http_port = free_port(), free_port()
        cert, key = server_tls_files(pki)
        log = root / "reference.log"
        self.proc = procs.spawn([str(Path(__file__).resolve()), "--serve-reference", "--cert", str(cert),
                                 "--key", str(key), "--raw-port", str(self.raw_port),
                                 "--http-port", str(self.http_port)], log, root)
        wait_port(self.raw_port, self.proc, log)
        wait_port(self.http_port, self.proc, log)
        self.ctx = client_ssl_context(AdminCredential.load(pki / "admin.json").ca_pem)

    def raw_client(self):
        sock = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.raw_port)),
                                    server_hostname="127.0.0.1")

        view = memoryview(bytearray(0))

        def upload(blob: bytes) -> float:
            t0 = time.perf_counter()
            sock.sendall(len(blob).to_bytes(8, "little") + bytes(8))
            sock.sendall(blob)
            reply = sock.recv(2)
            t1 = time.perf_counter()
            if reply != b"ok":
                raise RuntimeError(f"raw TLS server answered {reply!r}")
            return t1 - t0

        def download(n: int) -> float:
            nonlocal view
            t0 = time.perf_counter()
            sock.sendall(bytes(8) + n.to_bytes(8, "little"))
            if n > len(view):
                view = memoryview(bytearray(n))
            if _recv_exact(sock, view, n) is None:
                raise RuntimeError("raw TLS server closed the connection")
            return time.perf_counter() - t0
        upload.download = download
        return upload, sock.close

    def http_client(self):
        client = httpx.Client(base_url=f"https://127.0.0.1:{self.http_port}", verify=self.ctx, timeout=60)

        def upload(blob: bytes) -> float:
            t0 = time.perf_counter()
            response = client.put("/upload", content=blob, headers={"content-type": "application/octet-stream"})
            t1 = time.perf_counter()
            _ok(response, "reference upload")
            return t1 - t0

        def download(n: int) -> float:
            t0 = time.perf_counter()
            response = client.get("/download", params={"n": n})
            t1 = time.perf_counter()
            _ok(response, "reference download")
            if len(response.content) != n:
                raise RuntimeError(f"reference download: {len(response.content)} bytes, not {n}")
            return t1 - t0
        upload.download = download
        return upload, client.close

    def measure(self, which: str, blob: bytes, samples: int, down: int = 0) -> dict:
        """`down` > 0 adds the round's pattern: 4 uploads of `blob` at once, then 4 downloads of
        `down` bytes at once (the evaluate task's), on kept-alive connections as the sites use."""
        make = self.raw_client if which == "raw" else self.http_client
        alone, close = make()
        try:
            alone(blob)  # connection and handshake, warm-up
            single = [alone(blob) for _ in range(samples)]
        finally:
            close()
        clients = [make() for _ in SITES]
        per_stream: list[float] = []
        windows: list[float] = []
        try:
            for upload, _ in clients:
                upload(blob)
            for _ in range(samples):
                barrier = threading.Barrier(len(clients))
                spans: list[tuple[float, float]] = []

                def one(upload) -> None:
                    barrier.wait()
                    t0 = time.perf_counter()
                    upload(blob)
                    spans.append((t0, time.perf_counter()))

                threads = [threading.Thread(target=one, args=(u,)) for u, _ in clients]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                per_stream += [b - a for a, b in spans]
                windows.append(max(b for _, b in spans) - min(a for a, _ in spans))
            rounds = [self._round(clients, blob, down) for _ in range(samples if down else 0)]
        finally:
            for _, close in clients:
                close()
        return {"single": single, "concurrent_per_stream": per_stream, "concurrent_window": windows,
                "round": [r[0] for r in rounds], "round_up": [r[1] for r in rounds],
                "round_down": [r[2] for r in rounds]}

    @staticmethod
    def _round(clients: list, blob: bytes, down: int) -> tuple[float, float, float]:
        """The floor of a round's transfers: (first upload start → last download end, the uploads'
        window, the downloads' window). Nothing else: no polls, no parsing, no hashing."""
        marks: dict[str, list[float]] = {"up": [], "up_end": [], "down": [], "down_end": []}
        lock = threading.Lock()
        barrier = threading.Barrier(len(clients))

        def one(upload) -> None:
            barrier.wait()
            t0 = time.perf_counter()
            upload(blob)
            t1 = time.perf_counter()
            barrier.wait()  # every upload in, as the evaluate task opens only after aggregation
            t2 = time.perf_counter()
            upload.download(down)
            t3 = time.perf_counter()
            with lock:
                for key, t in zip(("up", "up_end", "down", "down_end"), (t0, t1, t2, t3)):
                    marks[key].append(t)

        threads = [threading.Thread(target=one, args=(u,)) for u, _ in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (max(marks["down_end"]) - min(marks["up"]), max(marks["up_end"]) - min(marks["up"]),
                max(marks["down_end"]) - min(marks["down"]))


# ----------------------------------------------------------------------------- profiling the coordinator


class Profile:
    """In the profiled coordinator process: wall-time timers around the suspects, a stack sampler over
    every thread (a poor man's py-spy: sys._current_frames every few ms) and each thread's CPU time
    from /proc. Counting starts when round 2's fit task is posted and stops at the final evaluation."""

    IDLE = {("threading.py", "wait"), ("selectors.py", "select"), ("queue.py", "get"),
            ("threading.py", "_wait_for_tstate_lock"), ("thread.py", "_worker")}  # the last: an idle pool thread

    def __init__(self, interval: float = 0.004):
        self.interval = interval
        self.lock = threading.Lock()
        self.active = False
        self.rounds = 0
        self.timers: dict[str, list[float]] = {}
        self.inclusive: dict[str, int] = {}
        self.leaf: dict[str, int] = {}
        self.by_thread: dict[str, int] = {}
        self.samples = 0
        self.busy = 0
        self.cpu_start: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.cpu_seen: dict[str, float] = {}  # each thread's CPU when last read: a thread that ended keeps it
        self.wall = 0.0
        self._t0 = 0.0

    # ----- switches
    def begin(self) -> None:
        self.cpu_start = self._thread_cpu()
        self._t0 = time.perf_counter()
        self.active = True

    def end(self) -> None:
        if not self.active:
            return
        self.active = False
        self.wall = time.perf_counter() - self._t0
        now = {**self.cpu_seen, **self._thread_cpu()}
        groups: dict[str, float] = {}
        for key, value in now.items():
            name = key.split("#")[0]
            groups[name] = groups.get(name, 0.0) + value - self.cpu_start.get(key, 0.0)
        self.cpu = groups

    def _thread_cpu(self) -> dict[str, float]:
        out = {}
        for t in threading.enumerate():
            try:
                fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = _thread_group(t.name)
            out[f"{name}#{t.native_id}"] = (int(fields[11]) + int(fields[12])) / TICK
        return out

    # ----- timers
    def add(self, name: str, seconds: float) -> None:
        if self.active:
            with self.lock:
                entry = self.timers.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += seconds

    def timed(self, name: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)
        return wrapper

    def timed_async(self, name: str, fn):
        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)
        return wrapper

    # ----- sampler
    def sample_forever(self) -> None:
        me = threading.get_ident()
        names = {}
        ticks = 0
        while True:
            time.sleep(self.interval)
            if not self.active:
                continue
            ticks += 1
            if ticks % 25 == 0:  # every ~0.1 s: threads that end before the count stops still count
                self.cpu_seen.update(self._thread_cpu())
            if len(names) != threading.active_count():
                names = {t.ident: _thread_group(t.name) for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                stack = []
                f = frame
                while f is not None:
                    code = f.f_code
                    stack.append((Path(code.co_filename).name, code.co_name, code.co_filename))
                    f = f.f_back
                self.samples += 1
                if (stack[0][0], stack[0][1]) in self.IDLE:
                    continue
                self.busy += 1
                group = names.get(ident, "other")
                self.by_thread[group] = self.by_thread.get(group, 0) + 1
                leaf = _label(stack[0])
                self.leaf[leaf] = self.leaf.get(leaf, 0) + 1
                for label in {_label(x) for x in stack if x[2].startswith(str(SRC))}:  # fedcare's own code
                    self.inclusive[label] = self.inclusive.get(label, 0) + 1

    def dump(self) -> dict:
        self.end()
        top = lambda d, n: sorted(d.items(), key=lambda kv: -kv[1])[:n]  # noqa: E731
        return {"rounds": self.rounds, "wall": self.wall, "interval": self.interval, "timers": self.timers,
                "thread_cpu": self.cpu, "samples": self.samples, "busy_samples": self.busy,
                "busy_by_thread": self.by_thread, "inclusive": top(self.inclusive, 60), "leaf": top(self.leaf, 40)}


def _thread_group(name: str) -> str:
    if name == "MainThread":
        return "event loop (MainThread)"
    if name.startswith("run-"):
        return "round engine (run thread)"
    if name.startswith("AnyIO worker"):
        return "request handlers (AnyIO worker threads)"
    if name.startswith("anomaly-report"):
        return "round engine: the anomaly report's thread"
    return name


def _label(entry: tuple[str, str, str]) -> str:
    filename, func, full = entry
    parent = Path(full).parent.name
    return f"{parent}/{filename}:{func}"


def serve_patched(variant: str, out: Path, config: Path, credentials: Path, state: Path, port: int) -> None:
    """A subprocess: the coordinator as `fedcare coordinator --start` runs it (service.serve), patched here:
    `profile` wraps the Profile's timers around the suspects and writes the profile to `out` on exit;
    the what-if variants change one thing (see WHAT_IF)."""
    import fedcare.algorithms.robust as robust
    import fedcare.federation.anomalies as anomalies
    import fedcare.federation.checkpoint as checkpoints
    import fedcare.transports.network.coordinator as coordinator
    from fedcare.transports.network.service import serve

    if variant in ("no-anomaly-report", "both"):
        if hasattr(anomalies, "report_products"):  # the one-pass report: no products, no consensus
            anomalies.report_products = lambda updates, aggregate, consensus=False: robust.ReportProducts(
                [u.site_id for u in updates], [0.0] * len(updates), [0.0] * len(updates), 0.0)
        else:  # code before the one-pass report
            anomalies.update_report = lambda updates, aggregate: {}
    if variant in ("no-checkpoint-files", "both"):
        checkpoints.Checkpoints.save = lambda self, checkpoint, site_states, rows: None
        coordinator.save_params = lambda path, params, meta=None: None
    profile = _instrument() if variant == "profile" else None

    def terminated(signum, frame):  # noqa: ARG001 - uvicorn re-raises SIGTERM after its shutdown
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminated)
    try:
        serve(config, credentials, state, "127.0.0.1", port, list(SITES), 120.0, 512.0, True, False)
    finally:
        if profile is not None:
            out.write_text(json.dumps(profile.dump(), indent=1))


def _instrument() -> Profile:
    """Timers around the coordinator's suspects, and the stack sampler."""
    import fedcare.federation.checkpoint as checkpoints
    import fedcare.federation.engine as engine
    import fedcare.transports.network.coordinator as coordinator
    import fedcare.transports.network.server as server
    import fedcare.transports.network.transport as transport
    from fedcare.transports.network.board import Board, Task
    from fedcare.transports.network.store import Store

    profile = Profile()
    threading.Thread(target=profile.sample_forever, name="sampler", daemon=True).start()

    def wrap(owner, name: str, label: str, timer=profile.timed) -> None:
        if hasattr(owner, name):  # the coordinator's code moves on: time what is there
            setattr(owner, name, timer(label, getattr(owner, name)))

    wrap(server, "update_from_bytes", "validate an upload (update_from_bytes)")
    wrap(server, "_read", "receive an upload's body (await _read)", profile.timed_async)
    wrap(transport, "params_to_bytes", "serialize params for a task (params_to_bytes)")
    wrap(Task, "__post_init__", "hash a task's params (sha256 in Task.__post_init__)")
    wrap(coordinator, "save_params", "write round-N.safetensors (save_params)")
    wrap(checkpoints.Checkpoints, "save", "write the checkpoint (Checkpoints.save)")
    wrap(engine, "anomaly_report", "anomaly report")
    for method in ("seen", "audit", "close_round", "set_status", "latest_run", "rounds"):
        wrap(Store, method, f"SQLite: Store.{method}")
    original_run = Store._run

    def _run(self, sql, args=()):  # Store._run, with the wait for its lock and the statement timed apart
        if not (hasattr(self, "_lock") and hasattr(self, "_db")):
            return original_run(self, sql, args)
        t0 = time.perf_counter()
        with self._lock:
            t1 = time.perf_counter()
            rows = self._db.execute(sql, args).fetchall()
            t2 = time.perf_counter()
        profile.add("SQLite: waiting for the store's lock", t1 - t0)
        profile.add(f"SQLite: execute {sql.split()[0]} (with its commit)", t2 - t1)
        return rows
    _run.__code__ = _run.__code__.replace(co_name="Store._run[sqlite execute and commit]")
    Store._run = _run

    ask = Board.ask

    def timed_ask(self, task, deadline, quorum):
        if task.id == "2.fit":
            profile.begin()
        if task.id == "final.test":
            profile.end()
        if profile.active and task.kind == "fit":
            profile.rounds += 1
        t0 = time.perf_counter()
        try:
            return ask(self, task, deadline, quorum)
        finally:
            profile.add(f"engine waits for the sites: {task.kind} task (Board.ask)", time.perf_counter() - t0)
    Board.ask = timed_ask

    class TimedStrategy:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            value = getattr(self._inner, name)
            return profile.timed("aggregate (strategy.run)", value) if name == "run" else value

    class TimedAlgorithm:
        def __init__(self, inner):
            self._inner = inner
            self.strategy = TimedStrategy(inner.strategy)

        def __getattr__(self, name):
            return getattr(self._inner, name)

    engine_class = coordinator.RoundEngine

    class TimedEngine(engine_class):
        def __init__(self, algorithm, *args, **kwargs):
            super().__init__(TimedAlgorithm(algorithm), *args, **kwargs)
    coordinator.RoundEngine = TimedEngine

    make_app = server.create_app

    def create_app(control, credentials, extensions=()):
        app = make_app(control, credentials, extensions)

        async def timed(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            parts = scope["path"].split("/")
            route = "/".join("{id}" if i == 3 and parts[2] == "tasks" else p for i, p in enumerate(parts))
            t0 = time.perf_counter()
            try:
                return await app(scope, receive, send)
            finally:
                profile.add(f"request {scope['method']} {route} (server-side wall)", time.perf_counter() - t0)
        return timed
    server.create_app = create_app

    return profile


def profile_report(profile: dict) -> str:
    n = max(1, profile["rounds"])
    wall = profile["wall"]
    lines = [f"Profiled run: {profile['rounds']} rounds (round 2 to the last), {1e3 * wall / n:.1f} ms wall per "
             "round under instrumentation. Timers are wall time in the coordinator process; those marked "
             "*waits* include waiting for the network or for the sites, and timers nest (a request's time "
             "includes the SQLite write its credential check makes).", "",
             "| timer (coordinator process) | calls per round | ms per round | ms per call | |",
             "|---|---|---|---|---|"]
    for name, (calls, seconds) in sorted(profile["timers"].items(), key=lambda kv: -kv[1][1]):
        note = ("waits: long-poll" if "/v1/task " in name else
                "waits: transfer on the wire" if name.startswith(("request", "receive")) else
                "waits: for the sites" if name.startswith("engine waits") else
                "waits: other requests' writes" if "lock" in name else "")
        lines.append(f"| {name} | {calls / n:.1f} | {1e3 * seconds / n:.1f} | {1e3 * seconds / max(calls, 1):.2f} "
                     f"| {note} |")
    lines += ["", "| thread of the coordinator | CPU ms per round |", "|---|---|"]
    for name, seconds in sorted(profile["thread_cpu"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {1e3 * seconds / n:.1f} |")
    busy = max(1, profile["busy_samples"])
    lines += ["", f"Stack samples of every thread every {1e3 * profile['interval']:.0f} ms: {profile['busy_samples']} "
              f"of {profile['samples']} busy, i.e. not parked on a lock, a condition or select (busy includes C "
              "calls that release the GIL: an fsync inside SQLite, a socket read). Innermost Python frame of the "
              "busy samples (top 15):", "", "| innermost frame | share of busy samples |", "|---|---|"]
    for label, count in profile["leaf"][:15]:
        lines.append(f"| `{label}` | {100 * count / busy:.0f} % |")
    lines += ["", "fedcare functions on the stack of busy samples (inclusive, top 20):", "",
              "| fedcare function | share of busy samples |", "|---|---|"]
    for label, count in profile["inclusive"][:20]:
        lines.append(f"| `{label}` | {100 * count / busy:.0f} % |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- statistics and tables


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def ms_row(label: str, xs: list[float], note: str = "") -> str:
    if not xs:
        return f"| {label} | — | — | — | — | 0 | {note} |"
    lo, med, hi = quartiles(xs)
    return (f"| {label} | {1e3 * med:.1f} | {1e3 * lo:.1f}–{1e3 * hi:.1f} | {1e3 * min(xs):.1f} | "
            f"{1e3 * max(xs):.1f} | {len(xs)} | {note} |")


def mbps(nbytes: int, seconds: list[float]) -> list[float]:
    return [nbytes / s / MB for s in seconds]


def mbps_row(label: str, xs: list[float], ref: float | None, note: str = "") -> str:
    lo, med, hi = quartiles(xs)
    ratio = f"{med / ref:.2f}" if ref else "1.00"
    return (f"| {label} | {med:.0f} | {lo:.0f}–{hi:.0f} | {min(xs):.0f} | {max(xs):.0f} | {len(xs)} | {ratio} | "
            f"{note} |")


def what_if_rows(data: dict, plain: list[dict]) -> list[str]:
    runs = data.get("what_if", [])
    if not runs:
        return []

    def median_period(run: dict) -> float:
        return statistics.median(r["period"] for r in run["rounds"] if r["round"] >= 2)

    def row(label: str, rounds: list[dict], paired: str, what: str) -> str:
        lo, med, hi = quartiles([r["period"] for r in rounds])
        phase = {k: 1e3 * statistics.median(r[k] for r in rounds)
                 for k in ("fit_transfers", "evaluate_task", "checkpoint_gap")}
        cpu = 1e3 * statistics.fmean(r["coordinator_cpu"] for r in rounds)
        return (f"| {label} | {1e3 * med:.1f} | {1e3 * lo:.1f}–{1e3 * hi:.1f} | {len(rounds)} | "
                f"{phase['fit_transfers']:.1f} | {phase['evaluate_task']:.1f} | {phase['checkpoint_gap']:.1f} | "
                f"{cpu:.1f} | {paired} | {what} |")

    control = {run["repeat"]: median_period(run) for run in runs if run["variant"] == "control"}
    lines = ["", "### What-if: the same runs with one hot spot removed (patched in this benchmark only; "
             "src/ unchanged; each variant runs once in every repeat, in shuffled order)", "",
             "The patched coordinator is started from this script (`--serve-patched`), so the `control` row, the "
             "same entry point with nothing patched, is the baseline for the what-ifs. Phases are medians over "
             "rounds, in ms; CPU is the coordinator process's mean per round.", "",
             "| run | median round ms | IQR ms | n | fit phase | evaluate task | close + checkpoint gap | "
             "coordinator CPU ms | vs control, paired by repeat (median; range) | what was changed |",
             "|---|---|---|---|---|---|---|---|---|---|",
             row("plain (`fedcare coordinator`, as above)", plain, "", "nothing")]
    for variant, what in WHAT_IF.items():
        mine = [run for run in runs if run["variant"] == variant]
        rounds = [r for run in mine for r in run["rounds"] if r["round"] >= 2]
        if not rounds:
            continue
        ratios = [median_period(run) / control[run["repeat"]] for run in mine if run["repeat"] in control]
        paired = f"{statistics.median(ratios):.2f}; {min(ratios):.2f}–{max(ratios):.2f}" if ratios else ""
        lines.append(row(variant, rounds, paired, what))
    return lines


def stack_rows(data: dict, runs: list[dict]) -> list[str]:
    """The plain runs beside the same runs on another HTTP stack (--stacks), paired by repeat."""
    others = data.get("stack_runs", [])
    if not others:
        return []
    plain = [run for run in runs if run["mode"] == "concurrent"]

    def rounds(group: list[dict]) -> list[dict]:
        return [r for run in group for r in run["rounds"] if r["round"] >= 2]

    def med(run: dict) -> float:
        return statistics.median(r["period"] for r in run["rounds"] if r["round"] >= 2)

    def row(label: str, group: list[dict], paired: str) -> str:
        rs = rounds(group)
        lo, m, hi = quartiles([r["period"] for r in rs])
        phase = {k: 1e3 * statistics.median(r[k] for r in rs) for k in ("fit_transfers", "evaluate_task", "checkpoint_gap")}
        cpu = 1e3 * statistics.fmean(r["coordinator_cpu"] for r in rs)
        return (f"| {label} | {1e3 * m:.1f} | {1e3 * lo:.1f}–{1e3 * hi:.1f} | {len(rs)} | {phase['fit_transfers']:.1f} | "
                f"{phase['evaluate_task']:.1f} | {phase['checkpoint_gap']:.1f} | {cpu:.1f} | {paired} |")

    by_repeat = {run["repeat"]: med(run) for run in plain}
    lines = ["", ("### HTTP stacks: the plain run beside the same run on another stack (each in every repeat, "
                  "shuffled)"), "",
             ("| coordinator's stack (as it logged it) | median round ms | IQR ms | n | fit phase | evaluate task | "
              "close + checkpoint gap | coordinator CPU ms | vs the plain run, paired by repeat (median; range) |"),
             "|---|---|---|---|---|---|---|---|---|",
             row(f"plain: {plain[0]['stack']}", plain, "1.00")]
    for stack in dict.fromkeys(run["stack"] for run in others):
        mine = [run for run in others if run["stack"] == stack]
        ratios = [med(run) / by_repeat[run["repeat"]] for run in mine if run["repeat"] in by_repeat]
        lines.append(row(stack, mine, f"{statistics.median(ratios):.2f}; {min(ratios):.2f}–{max(ratios):.2f}"))
    return lines


def against_rows(data: dict, runs: list[dict]) -> list[str]:
    """The plain runs beside the other tree's coordinator (--against), paired by repeat."""
    others = data.get("against_runs", [])
    if not others:
        return []
    plain = [run for run in runs if run["mode"] == "concurrent"]

    def rounds(group: list[dict]) -> list[dict]:
        return [r for run in group for r in run["rounds"] if r["round"] >= 2]

    def med(run: dict, key: str = "period") -> float:
        return statistics.median(r[key] for r in run["rounds"] if r["round"] >= 2)

    def cpu(run: dict) -> float:
        return statistics.fmean(r["coordinator_cpu"] for r in run["rounds"] if r["round"] >= 2)

    def row(label: str, group: list[dict]) -> str:
        rs = rounds(group)
        lo, m, hi = quartiles([r["period"] for r in rs])
        phase = {k: 1e3 * statistics.median(r[k] for r in rs) for k in ("fit_transfers", "aggregate_gap",
                                                                         "evaluate_task", "checkpoint_gap")}
        return (f"| {label} | {1e3 * m:.1f} | {1e3 * lo:.1f}–{1e3 * hi:.1f} | {len(rs)} | "
                f"{1e3 * statistics.fmean(r['coordinator_cpu'] for r in rs):.1f} | {phase['fit_transfers']:.1f} | "
                f"{phase['aggregate_gap']:.1f} | {phase['evaluate_task']:.1f} | {phase['checkpoint_gap']:.1f} | "
                f"{', '.join(f'{1e3 * med(run):.0f}' for run in group)} |")

    mine = {run["repeat"]: run for run in plain}
    pairs = [(mine[run["repeat"]], run) for run in others if run["repeat"] in mine]
    ratio = [med(a) / med(b) for a, b in pairs]
    cpu_ratio = [cpu(a) / cpu(b) for a, b in pairs]
    tree = data["against"]
    return ["", f"### This tree beside {tree['tree']} (commit {tree['git']['commit'][:10]}"
            + (", with uncommitted changes in src/" if tree["git"]["src_uncommitted"] else "")
            + "): both coordinators in every repeat, in shuffled order", "",
            ("| coordinator | median round ms | IQR ms | n | coordinator CPU ms / round (mean) | fit phase | "
             "aggregation gap | evaluate task | close + checkpoint gap | median round of each repeat |"),
            "|---|---|---|---|---|---|---|---|---|---|",
            row("this tree", plain), row(tree["tree"], others), "",
            f"Paired by repeat, this tree / {tree['tree']}: median round {statistics.median(ratio):.2f} (range "
            f"{min(ratio):.2f}–{max(ratio):.2f}), coordinator CPU per round {statistics.median(cpu_ratio):.2f} "
            f"(range {min(cpu_ratio):.2f}–{max(cpu_ratio):.2f}); {len(pairs)} repeats. 1-minute load average at "
            "the starts of these runs: " + ", ".join(f"{run['load']:.1f}" for pair in pairs for run in pair) + "."]


def floor_rows(data: dict, conc: list[dict]) -> list[str]:
    """The round's bytes in the round's pattern with nothing else (the reference servers): how far the
    coordinator's round is above what moving 16 MB up and 16 MB down costs on this machine."""
    refs = data["reference"]
    if not refs["raw"].get("round"):
        return []
    raw, http = refs["raw"], refs["http"]
    ratio = statistics.median(r["period"] for r in conc) / statistics.median(raw["round"])
    return [ms_row("**floor: raw TLS socket, the round's bytes** (4 uploads at once, then 4 downloads at once)",
                   raw["round"], f"fedcare's round is {ratio:.1f}× this"),
            ms_row("· floor: its 4 uploads", raw["round_up"], "first start → last end"),
            ms_row("· floor: its 4 downloads", raw["round_down"], "first start → last end"),
            ms_row("bare uvicorn app over TLS, the round's requests (4 PUTs at once, then 4 GETs at once)",
                   http["round"], "the HTTP stack, no fedcare"),
            ms_row("· bare uvicorn: its 4 PUTs", http["round_up"], ""),
            ms_row("· bare uvicorn: its 4 GETs", http["round_down"], "")]


def source_fingerprint(src: Path = SRC) -> dict[str, str]:
    """sha256 of the coordinator's code (what this benchmark measures), to tell if it changed mid-run."""
    package = src / "fedcare"
    files = [*sorted((package / "transports" / "network").glob("*.py")),
             *sorted((package / "federation").glob("*.py")), *sorted((package / "algorithms").glob("*.py")),
             *sorted((package / "core").rglob("*.py"))]
    return {str(f.relative_to(src)): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files if f.is_file()}


def git_state(src: Path = SRC) -> dict:
    """The commit the work tree is on, and whether src/ differs from it (read-only git calls)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=src.parent, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "src_uncommitted": bool(git("status", "--porcelain", "--", "src"))}


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "openssl": ssl.OPENSSL_VERSION, "platform": platform.platform()}


def report(data: dict) -> str:
    runs = data["runs"]
    conc = [r for run in runs if run["mode"] == "concurrent" for r in run["rounds"]]
    serial = [r for run in runs if run["mode"] == "serial" for r in run["rounds"]]
    conc = [r for r in conc if r["round"] >= 2]  # round 1 is the warm-up
    serial = [r for r in serial if r["round"] >= 2]
    size, down = data["update_bytes"], data["download_bytes"]
    refs = data["reference"]
    m = data["machine"]
    loads = [run["load"] for run in runs + data.get("what_if", []) + data.get("against_runs", [])]
    fit_skipped = 4 * len(conc) - sum(len(r["fit_downloads"]) for r in conc)
    lines = [
        f"model: heart-disease MLP 15→{HIDDEN}→{HIDDEN}→1, {data['params']:,} float32 parameters; "
        f"update {size:,} bytes, params download {down:,} bytes",
        f"4 sites (threads of the benchmark process, not training) ↔ coordinator subprocess, HTTPS on 127.0.0.1 "
        f"(TLS, {m['openssl']}); {data['rounds']} measured rounds × {data['repeats']} repeats, round 1 of each run "
        "not counted",
        f"machine: {m['cpu']}, {m['cores']} cores (shared with other work), Python {m['python']}; 1-minute load "
        f"average {data['load_before'][0]:.2f} before, {data['load_after'][0]:.2f} after, "
        f"{min(loads):.2f}–{max(loads):.2f} at the starts of the runs",
        "",
        f"code measured: a snapshot of src/ taken at the start (work tree on commit {data['git']['commit'][:10]}"
        + (", with uncommitted changes in src/" if data["git"]["src_uncommitted"] else "") + ")"
        + ("; src/ in the work tree changed during the run (" + ", ".join(data["source_changed_during_run"])
           + "), the snapshot did not" if data["source_changed_during_run"] else ""),
        "",
        "### Coordinator round time (sites do not train: this is the overhead beyond training)",
        "",
        "| what (per round, 4 sites, concurrent) | median ms | IQR ms | min ms | max ms | n | |",
        "|---|---|---|---|---|---|---|",
        ms_row("**round: fit task open → next fit task open**", [r["period"] for r in conc], "target < 100 ms"),
        ms_row("round from coordinator.db (`rounds.closed` differences)",
               [r["closed_interval"] for r in conc if r["closed_interval"] is not None], "cross-check"),
        ms_row("· fit transfers: downloads not skipped + 4 uploads (+ validation)",
               [r["fit_transfers"] for r in conc], "task open → last upload answered"),
        ms_row("· aggregation gap", [r["aggregate_gap"] for r in conc], "last upload answered → evaluate task open"),
        ms_row("· evaluate task: 4 downloads + 4 answers", [r["evaluate_task"] for r in conc],
               "evaluate open → last answer answered"),
        ms_row("· round close + checkpoint gap", [r["checkpoint_gap"] for r in conc],
               "last answer → next fit task open"),
        *floor_rows(data, conc),
        ms_row("coordinator process CPU time (user + sys)", [r["coordinator_cpu"] for r in conc],
               f"mean {1e3 * statistics.fmean(r['coordinator_cpu'] for r in conc):.1f} ms; /proc, 1/{TICK} s ticks"),
        ms_row("4 client threads' CPU time (benchmark process)", [r["clients_cpu"] for r in conc],
               f"mean {1e3 * statistics.fmean(r['clients_cpu'] for r in conc):.1f} ms"),
        ms_row("one site: GET params (fit), 4 at once",
               [v for r in conc for v in r["fit_downloads"].values()],
               f"{down / MB:.2f} MB; {fit_skipped} of {4 * len(conc)} skipped (same digest as the evaluate task's)"),
        ms_row("one site: PUT update, 4 at once", [v for r in conc for v in r["uploads"].values()],
               f"{size / MB:.2f} MB"),
        ms_row("one site: GET params (evaluate)", [v for r in conc for v in r["eval_downloads"].values()],
               f"{4 * len(conc) - sum(len(r['eval_downloads']) for r in conc)} of {4 * len(conc)} skipped"),
        ms_row("one site: POST evaluate answer", [v for r in conc for v in r["eval_answers"].values()], ""),
        *what_if_rows(data, conc),
        *stack_rows(data, runs),
        *against_rows(data, runs),
        "",
        "### Upload throughput (client-side, request start → response; MB = 10^6 bytes)",
        "",
        "| what | median MB/s | IQR MB/s | min | max | n | ratio to raw TLS (medians) | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    raw_single = statistics.median(mbps(size, refs["raw"]["single"]))
    raw_stream = statistics.median(mbps(size, refs["raw"]["concurrent_per_stream"]))
    raw_window = statistics.median(mbps(len(SITES) * size, refs["raw"]["concurrent_window"]))
    http = refs["http"]
    lines += [
        mbps_row("**fedcare PUT /update, one upload at a time**",
                 mbps(size, [v for r in serial for v in r["uploads"].values()]), raw_single,
                 "serial pass; target > 200 MB/s"),
        mbps_row("bare uvicorn ASGI app over TLS, one at a time", mbps(size, http["single"]), raw_single, ""),
        mbps_row("raw TLS socket, one at a time", mbps(size, refs["raw"]["single"]), None, ""),
        mbps_row("fedcare PUT /update, per request, 4 sites at once",
                 mbps(size, [v for r in conc for v in r["uploads"].values()]), raw_stream, "concurrent pass"),
        mbps_row("bare uvicorn, per request, 4 at once", mbps(size, http["concurrent_per_stream"]), raw_stream, ""),
        mbps_row("raw TLS, per stream, 4 at once", mbps(size, refs["raw"]["concurrent_per_stream"]), None, ""),
        mbps_row("fedcare, all 4 uploads (4 × update / first start → last end)",
                 mbps(len(SITES) * size, [r["upload_window"] for r in conc]), raw_window, "aggregate"),
        mbps_row("bare uvicorn, 4 at once, aggregate", mbps(len(SITES) * size, http["concurrent_window"]), raw_window,
                 ""),
        mbps_row("raw TLS, 4 streams, aggregate", mbps(len(SITES) * size, refs["raw"]["concurrent_window"]), None, ""),
        "",
        "### Each repeat (median round ms; median single-upload MB/s)",
        "",
        "| repeat | round (concurrent) | round from db | fedcare upload alone | raw TLS alone | run wall s |",
        "|---|---|---|---|---|---|",
    ]
    for k in range(data["repeats"]):
        c = [r for r in runs[2 * k]["rounds"] if r["round"] >= 2]
        s = [r for r in runs[2 * k + 1]["rounds"] if r["round"] >= 2]
        db = [r["closed_interval"] for r in c if r["closed_interval"] is not None]
        raw = data["reference_repeats"][k]["raw"]["single"]
        lines.append(f"| {k + 1} | {1e3 * statistics.median(r['period'] for r in c):.1f} | "
                     f"{1e3 * statistics.median(db):.1f} | "
                     f"{statistics.median(mbps(size, [v for r in s for v in r['uploads'].values()])):.0f} | "
                     f"{statistics.median(mbps(size, raw)):.0f} | {runs[2 * k]['wall_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds per run (2 more are run)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats of the whole set of runs (plain, serial, what-ifs, references)")
    parser.add_argument("--serve-reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--raw-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-profile", action="store_true", help="skip the instrumented extra run")
    parser.add_argument("--no-what-if", action="store_true", help="skip the what-if runs (patched coordinator)")
    parser.add_argument("--compress-updates", help="compress the sites' updates with this scheme")
    parser.add_argument("--compress-broadcast", help="compress the coordinator's broadcasts with this scheme")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="folder for the .md and .json (default benchmarks/results; network_compression.py "
                             "keeps each of its runs elsewhere)")
    parser.add_argument("--stacks", default="auto",
                        help="the coordinator's HTTP stacks, comma-separated FEDCARE_HTTP values (auto, h11): the "
                             "first for every run, each other one for an extra concurrent run in every repeat")
    parser.add_argument("--against", type=Path,
                        help="another work tree (its src/fedcare, e.g. /work/main): its coordinator runs beside this "
                             "one in every repeat, shuffled, and the report pairs the two by repeat")
    parser.add_argument("--serve-patched", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--credentials", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    COMPRESS.update({k: v for k, v in (("compress_updates", args.compress_updates),
                                       ("compress_broadcast", args.compress_broadcast)) if v})
    if args.serve_reference:
        serve_reference(args.cert, args.key, args.raw_port, args.http_port)
        return
    if args.serve_patched:
        serve_patched(args.serve_patched, args.profile_out, args.config, args.credentials, args.state, args.port)
        return
    if args.rounds < 2 or args.repeats < 1:
        parser.error("--rounds must be at least 2 and --repeats at least 1")


    def terminated(signum, frame):  # noqa: ARG001 - SIGTERM: stop the subprocesses on the way out
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    data: dict = {"rounds": args.rounds, "repeats": args.repeats, "machine": machine(),
                  "load_before": list(os.getloadavg()), "runs": [], "what_if": [], "stack_runs": [], "profiled_runs": [],
                  "against_runs": [], "against": None,
                  "reference_repeats": [],
                  "source_before": source_fingerprint(), "git": git_state()}
    with tempfile.TemporaryDirectory(prefix="fedcare-network-bench-") as tmp:
        root = Path(tmp)
        code = root / "src"
        shutil.copytree(SRC / "fedcare", code / "fedcare", ignore=shutil.ignore_patterns("__pycache__"))
        data["source_measured"] = source_fingerprint(code)
        procs = Processes(code)
        other = None  # --against: the other tree's coordinator, from its own snapshot
        if args.against is not None:
            other_code = root / "against-src"
            shutil.copytree(args.against / "src" / "fedcare", other_code / "fedcare",
                            ignore=shutil.ignore_patterns("__pycache__"))
            other = Processes(other_code)
            data["against"] = {"tree": str(args.against), "git": git_state(args.against / "src"),
                               "source_measured": source_fingerprint(other_code)}
        try:
            pki = root / "pki"
            init_authority(pki)
            for site in SITES:
                issue_site(pki, site)
            reference = Reference(root, pki, procs)
            blob = b""
            main_stack, *other_stacks = [x.strip() for x in args.stacks.split(",") if x.strip()] or ["auto"]
            plan = [("concurrent", "plain", main_stack), ("serial", "plain", main_stack)]
            plan += [] if args.no_what_if else [("concurrent", v, main_stack) for v in WHAT_IF]
            plan += [("concurrent", "stack", x) for x in other_stacks]
            plan += [] if other is None else [("concurrent", "against", main_stack)]
            for k in range(args.repeats):
                order = plan[:]
                random.Random(k).shuffle(order)  # no variant always runs first or last in a repeat
                results = {}
                for mode, variant, stack in order:
                    print(f"repeat {k + 1}/{args.repeats}: {mode} {variant} run (FEDCARE_HTTP={stack}), "
                          f"{args.rounds + 2} rounds ...", flush=True)
                    fed = Federation(root / f"run-{k}-{mode}-{variant}-{stack}", pki,
                                     other if variant == "against" else procs, args.rounds + 2, mode, variant, stack)
                    result = fed.run()
                    result["repeat"] = k
                    results[mode, variant, stack] = result
                    med = statistics.median(r["period"] for r in result["rounds"] if r["round"] >= 2)
                    print(f"  median round {1e3 * med:.1f} ms, wall {result['wall_seconds']:.1f} s", flush=True)
                    data["update_bytes"], data["download_bytes"] = result["update_bytes"], result["download_bytes"]
                    data["params"] = result["params"]
                    blob = blob or os.urandom(result["update_bytes"])
                data["runs"] += [results["concurrent", "plain", main_stack], results["serial", "plain", main_stack]]
                data["what_if"] += [r for (_, variant, _), r in results.items()
                                    if variant not in ("plain", "stack", "against")]
                data["stack_runs"] += [r for (_, variant, _), r in results.items() if variant == "stack"]
                data["against_runs"] += [r for (_, variant, _), r in results.items() if variant == "against"]
                print(f"repeat {k + 1}/{args.repeats}: reference uploads ...", flush=True)
                data["reference_repeats"].append({w: reference.measure(w, blob, args.rounds, data["download_bytes"])
                                                  for w in ("raw", "http")})
            profiled = [(stack, procs, "this tree") for stack in [main_stack, *other_stacks]]
            profiled += [] if other is None else [(main_stack, other, str(args.against))]
            for stack, runner, tree in [] if args.no_profile else profiled:
                print(f"instrumented run of {tree} (not counted above, FEDCARE_HTTP={stack}), {args.rounds + 2} "
                      "rounds ...", flush=True)
                fed = Federation(root / f"run-profiled-{stack}-{len(data['profiled_runs'])}", pki, runner,
                                 args.rounds + 2, "concurrent", "profile", stack)
                data["profiled_runs"].append({**fed.run(), "tree": tree})
        finally:
            procs.stop_all()
            if other is not None:
                other.stop_all()
    data["load_after"] = list(os.getloadavg())
    data["source_after"] = source_fingerprint()
    changed = sorted(k for k in data["source_before"].keys() | data["source_after"].keys()
                     if data["source_before"].get(k) != data["source_after"].get(k))
    data["source_changed_during_run"] = changed
    if changed:
        print(f"note: src/ changed in the work tree while the benchmark ran ({', '.join(changed)}); "
              "the coordinator ran from the snapshot taken at the start")
    data["reference"] = {w: {key: [x for rep in data["reference_repeats"] for x in rep[w][key]]
                             for key in ("single", "concurrent_per_stream", "concurrent_window", "round",
                                         "round_up", "round_down")}
                         for w in ("raw", "http")}
    table = report(data)
    for profiled in data["profiled_runs"]:
        med = statistics.median(r["period"] for r in profiled["rounds"] if r["round"] >= 2)
        table += ("\n### Where the coordinator's time goes (an extra, instrumented run; not in the figures above)\n\n"
                  f"Code: {profiled.get('tree', 'this tree')}. "
                  f"HTTP stack: {profiled['stack']}. Median round of the instrumented run, client-side: "
                  f"{1e3 * med:.1f} ms.\n" + profile_report(profiled["profile"]))
    print()
    print(table)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/network.py --rounds {args.rounds} --repeats {args.repeats}"
    command += f" --stacks {args.stacks}" if args.stacks != "auto" else ""
    command += f" --against {args.against}" if args.against is not None else ""
    command += "".join(f" --{k.replace('_', '-')} {v}" for k, v in COMPRESS.items())
    name = "network-compressed" if COMPRESS else "network"
    (out / f"{name}.md").write_text(f"<!-- {command} -->\n\n{table}")
    raw = {k: v for k, v in data.items() if k != "reference"}  # "reference" is reference_repeats pooled
    (out / f"{name}.json").write_text(json.dumps(_rounded({**raw, "compression": COMPRESS}), indent=1))
    print(f"wrote {out / f'{name}.md'} and {out / f'{name}.json'}")


def _rounded(value: object) -> object:
    """Floats to 6 decimals (times are in seconds: microseconds are more than the clocks can tell)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
