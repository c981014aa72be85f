"""The process and Ray backends give the in-process backend's results bit for bit, and refuse what
they cannot host in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import summary_without_wall
from netutil import free_port

from fedcare import simulate
from fedcare.core.config import resolve_config
from fedcare.core.errors import ConfigError
from fedcare.core.messages import FitRequest
from fedcare.core.serialization import params_to_bytes, update_from_bytes
from fedcare.data import load_dataset
from fedcare.interfaces.api import resume
from fedcare.transports.shard import Host, pack, shard_message, unpack
from fedcare.transports.simulated import build_federation
from fedcare.transports.simulation import SimulationTransport
from fedcare.transports.together import Together

# SCAFFOLD (per-site control state and extra broadcast arrays), a simulated attacker under a norm
# bound, checkpoints (every site's state read back from its worker) and the local and pooled baselines.
RUN = dict(dataset="heart-disease", rounds=2, algorithm="scaffold", attack="sign-flip", attackers=1,
           norm_bound=3.0, checkpoint_every=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("in-process")
    return simulate(out=str(out), **RUN), out


def files(run_dir: Path) -> dict[str, bytes]:
    skip = {"summary.json", "report.html"}  # hold the wall time
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in skip}


def assert_same_run(reference, run, run_dir: Path) -> None:
    ref, ref_dir = reference
    for name, value in ref.global_params.items():
        assert np.array_equal(value, run.global_params[name]), name
    for site, params in ref.local_params.items():
        assert all(np.array_equal(v, run.local_params[site][k]) for k, v in params.items()), site
    assert summary_without_wall(run_dir) == summary_without_wall(ref_dir)
    ref_files, run_files = files(ref_dir), files(run_dir)
    assert ref_files.keys() == run_files.keys()
    differ = [name for name in ref_files if ref_files[name] != run_files[name] and name != "config.yaml"]
    assert differ == []  # metrics.jsonl, the models and every checkpoint (site states among them)


class Crash(Exception):
    pass


def crash_in_round_2(name, record):
    if name == "federated" and record.round == 2:
        raise Crash


def test_processes_match_in_process_bit_for_bit_even_after_a_crash(reference, tmp_path):
    """Stopped in round 2 (its workers closed), resumed from round 1's checkpoint in new workers given
    every site's saved state: still the in-process run, bit for bit."""
    with pytest.raises(Crash):
        simulate(out=str(tmp_path), backend="processes", workers=2, progress=crash_in_round_2, **RUN)
    assert "backend: processes" in (tmp_path / "config.yaml").read_text()
    assert_same_run(reference, resume(tmp_path), tmp_path)


def test_hosted_backends_refuse_what_they_cannot_host(tmp_path):
    with pytest.raises(ConfigError, match="model_factory"):
        simulate(out=str(tmp_path), backend="processes", rounds=1, model_factory=lambda inputs, task: None)
    with pytest.raises(ConfigError, match="secure aggregation"):
        simulate(out=str(tmp_path), backend="processes", rounds=1, secure_aggregation=True)
    with pytest.raises(ConfigError, match="ray_address needs backend ray"):
        simulate(out=str(tmp_path), ray_address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="workers needs backend"):
        simulate(out=str(tmp_path), workers=2)
    # a worker's own failure comes back as a message, not a dead process
    header, _ = unpack(Host().handle(pack({"op": "fit"})))
    assert header["kind"] == "internal" and "KeyError" in header["error"]


RAY = str(Path(sys.executable).parent / "ray")  # the command beside this interpreter


def _start_node(args: list[str], temp_dir: str, env: dict) -> subprocess.Popen:
    """One Ray node in the foreground (--block) and its own process group, so the test stops
    exactly the processes it started."""
    return subprocess.Popen([RAY, "start", *args, "--num-cpus", "1", "--temp-dir", temp_dir, "--block",
                             "--disable-usage-stats", "--object-store-memory", str(100 * 2**20)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=open(Path(temp_dir) / "start.log", "wb"))


def _driver(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    """Python code run as a Ray driver in its own process: Ray reads its auth token once per process,
    and another test in this one may have loaded Ray already."""
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)


ALIVE = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
RAY_RUN = ("import json, sys, fedcare; fedcare.simulate(out=sys.argv[2], backend='ray', ray_address=sys.argv[1], "
           "workers=2, **json.loads(sys.argv[3]))")


def _alive(address: str, env: dict) -> int:
    out = _driver(ALIVE, env, address)
    return int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else 0


def test_ray_two_node_cluster_matches_in_process(reference, tmp_path):
    if importlib.util.find_spec("ray") is None or not Path(RAY).is_file():
        pytest.skip("ray is not installed (pip install 'fedcare[ray]')")
    # the cluster's own token (not ~/.ray's), for its nodes and the driver
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = [tempfile.mkdtemp(prefix="ray", dir="/tmp") for _ in range(2)]  # short: Ray's socket paths
    nodes = [_start_node(["--head", "--port", str(port), "--include-dashboard=false"], temp[0], env)]
    try:
        deadline = time.monotonic() + 180
        while _alive(address, env) < 1:
            assert time.monotonic() < deadline, "the Ray head did not start in 180 s"
            time.sleep(1)
        nodes.append(_start_node(["--address", address], temp[1], env))
        while _alive(address, env) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join in 180 s"
            time.sleep(1)
        # one CPU per node and one per worker: the two workers are on two nodes
        done = _driver(RAY_RUN, env, address, str(tmp_path), json.dumps(RUN))
        assert done.returncode == 0, done.stderr[-2000:]
        ref_dir = reference[1]
        assert summary_without_wall(tmp_path) == summary_without_wall(ref_dir)
        ref_files, run_files = files(ref_dir), files(tmp_path)
        assert ref_files.keys() == run_files.keys()
        assert [n for n in ref_files if ref_files[n] != run_files[n] and n != "config.yaml"] == []
    finally:
        for node in nodes:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=30)
        for d in temp:
            shutil.rmtree(d, ignore_errors=True)


def test_batched_sites_match_the_loop_within_float32_rounding():
    """A worker's shard trains its sites together (unequal sizes: padded and masked) and gives the
    one-site loop's updates; a round batching cannot do trains in the loop, with a warning."""
    cfg = resolve_config(dict(dataset="heart-disease", algorithm="fedprox", prox_mu=0.1, optimizer="sgd",
                              model="mlp", hidden=[8], local_epochs=2, backend="processes", batched=True))
    dataset = load_dataset(cfg.data)
    fed = build_federation(cfg, dataset)  # the same sites, trained one by one in this process
    host = Host()
    host.handle(shard_message(fed.plan, [s.site_id for s in fed.sites], [], dataset.sites))
    params = fed.initial

    def fit(**changes):
        base = {"round": 1, "local_epochs": 2, "lr": 0.05, "batch_size": 16, "optimizer": "sgd", "prox_mu": 0.1}
        requests = {s.site_id: FitRequest(**{**base, **changes}, seed=100 + i) for i, s in enumerate(fed.sites)}
        header, blobs = unpack(host.handle(pack({"op": "fit", "orders": [list(params)], "honest": False,
                                                 "scopes": dict.fromkeys(requests, 0),  # every site: the one blob
                                                 "requests": {k: r.to_json() for k, r in requests.items()}},
                                                [params_to_bytes(params)])))
        assert header["declined"] == [None] * len(fed.sites)
        return requests, [update_from_bytes(b, params) for b in blobs]

    assert len({s.num_train for s in fed.sites}) > 1
    for mode in ("local_epochs", "gradient"):  # FedProx's local SGD, FedSGD's one gradient
        requests, batched = fit(mode=mode)
        for site, update in zip(fed.sites, batched, strict=True):
            loop = site.fit(params, requests[site.site_id])
            assert update.metrics["train_loss"] == pytest.approx(loop.metrics["train_loss"], rel=1e-5)
            assert update.grad.keys() == loop.grad.keys()
            for name, value in loop.grad.items():
                assert np.abs(value).max() > 0
                np.testing.assert_allclose(update.grad[name], value, rtol=1e-4, atol=2e-7)
    with pytest.warns(UserWarning, match="one by one"):
        fit(mode="local_epochs", optimizer="adam")


def test_in_process_batched_trains_through_the_shards_code():
    """The in-process backend trains its sites batched with the workers' code: its updates are a
    worker's bit for bit and the loop's to float32 rounding; a full run agrees with the loop's."""
    cfg = resolve_config(dict(dataset="heart-disease", algorithm="fedprox", prox_mu=0.1, optimizer="sgd",
                              model="mlp", hidden=[8], local_epochs=2, batched=True))
    dataset = load_dataset(cfg.data)
    fed = build_federation(cfg, dataset)
    host = Host()
    host.handle(shard_message(fed.plan, [s.site_id for s in fed.sites], [], dataset.sites))
    params = fed.initial
    base = {"round": 1, "mode": "local_epochs", "local_epochs": 2, "lr": 0.05, "batch_size": 16, "optimizer": "sgd",
            "prox_mu": 0.1}
    requests = {s.site_id: FitRequest(**base, seed=100 + i) for i, s in enumerate(fed.sites)}
    _, blobs = unpack(host.handle(pack({"op": "fit", "orders": [list(params)], "honest": False,
                                        "scopes": dict.fromkeys(requests, 0),
                                        "requests": {k: r.to_json() for k, r in requests.items()}},
                                       [params_to_bytes(params)])))
    worker = [update_from_bytes(b, params) for b in blobs]
    batched = SimulationTransport(fed.sites, together=Together(cfg.backend)).fit(params, requests).updates
    loop = SimulationTransport(fed.sites).fit(params, requests).updates
    for w, b, one in zip(worker, batched, loop, strict=True):
        assert w.site_id == b.site_id == one.site_id
        for name, value in one.grad.items():
            assert np.array_equal(w.grad[name], b.grad[name]), name
            np.testing.assert_allclose(b.grad[name], value, rtol=1e-4, atol=2e-7)
    run = dict(dataset="heart-disease", rounds=2, algorithm="fedprox", prox_mu=0.1, optimizer="sgd", model="mlp",
               hidden=[8])
    together, alone = simulate(**run, batched=True), simulate(**run)
    for name, value in alone.global_params.items():
        np.testing.assert_allclose(together.global_params[name], value, rtol=1e-4, atol=1e-6)


def test_scaffold_trains_batched_as_in_the_loop():
    """SCAFFOLD's corrections and control variates, stacked: two rounds (the second with nonzero
    cᵢ and c) give the loop's updates and Δcᵢ to float32 rounding, with no site left to the loop."""
    cfg = resolve_config(dict(dataset="heart-disease", algorithm="scaffold", model="mlp", hidden=[8], batched=True))
    dataset = load_dataset(cfg.data)
    loop_fed, batched_fed = build_federation(cfg, dataset), build_federation(cfg, dataset)
    loop = SimulationTransport(loop_fed.sites)
    batched = SimulationTransport(batched_fed.sites, together=Together(cfg.backend))
    params = loop_fed.initial
    c = {f"control/{k}": np.zeros_like(v) for k, v in params.items()}
    for rnd in (1, 2):
        requests = {s.site_id: FitRequest(round=rnd, mode="local_epochs", local_epochs=2, lr=0.05, batch_size=16,
                                          optimizer="sgd", scaffold=True, seed=10 * rnd + i)
                    for i, s in enumerate(loop_fed.sites)}
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a site trained in the loop would warn
            got = batched.fit(params, requests, c).updates
        want = loop.fit(params, requests, c).updates
        assert [u.site_id for u in got] == [u.site_id for u in want]
        for g, w in zip(got, want, strict=True):
            assert g.grad.keys() == w.grad.keys()
            for name, value in w.grad.items():
                np.testing.assert_allclose(g.grad[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
        c = {k: np.mean([u.grad[k] for u in want], axis=0).astype(np.float32) for k in c}  # c moves: cᵢ ≠ c
        assert any(np.abs(v).max() > 0 for v in c.values())
    for a, b in zip(loop_fed.sites, batched_fed.sites, strict=True):
        for k, v in a.control.items():
            np.testing.assert_allclose(b.control[k], v, rtol=1e-4, atol=1e-6)
