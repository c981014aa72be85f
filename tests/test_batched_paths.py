"""The batched paths: plain autograd on the sites' summed loss gives each site the gradient
torch.func.grad gives it, the per-patient losses outside vmap average to the loop's mean loss,
the sites judged together get the loop's metrics bit for bit, and a batched run needs neither torch._dynamo
nor sympy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from fedcare.core.config import resolve_config
from fedcare.data import load_dataset
from fedcare.learning.batched import site_grads
from fedcare.learning.tasks import make_task
from fedcare.transports.simulated import build_federation
from fedcare.transports.simulation import SimulationTransport
from fedcare.transports.together import Together


def test_summed_loss_gives_each_site_its_own_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    sites = 4
    stacked = {k: (v.detach() + 0.1 * torch.randn(sites, *v.shape)) for k, v in model.named_parameters()}
    x, y = torch.randn(sites, 9, 5), torch.randint(0, 3, (sites, 9))

    def loss(p, xb, yb):
        out = torch.nn.functional.cross_entropy(functional_call(model, p, (xb,)), yb)
        return out, out

    want, want_loss = vmap(grad(loss, has_aux=True))(stacked, x, y)
    got, got_loss = site_grads(loss, {k: v.clone().requires_grad_() for k, v in stacked.items()}, x, y)
    assert torch.equal(got_loss, want_loss)
    for k, v in want.items():
        assert v.abs().max() > 0 and torch.equal(got[k], v), k
    assert not torch.equal(got["0.weight"][0], got["0.weight"][1])  # the sites' own, not a shared one


def test_patient_losses_average_to_the_tasks_loss():
    torch.manual_seed(1)
    cases = {"multiclass": (torch.randn(11, 3), {"label": torch.randint(0, 3, (11,))}),
             "binary": (torch.randn(11, 1), {"label": torch.randint(0, 2, (11,)).float()}),
             "regression": (torch.randn(11, 1), {"label": torch.randn(11)})}
    for name, (out, targets) in cases.items():
        task = make_task(name, ("a", "b", "c") if name == "multiclass" else ("a", "b") if name == "binary" else ())
        each = task.patient_losses(out, targets)
        assert each.shape == (11,) and len(set(each.tolist())) > 1, name
        torch.testing.assert_close(each.mean(), task.loss(out, targets), rtol=1e-6, atol=0)
        torch.testing.assert_close(each[:4].mean(), task.loss(out[:4], {"label": targets["label"][:4]}), rtol=1e-6, atol=0)


def test_a_batched_run_imports_neither_dynamo_nor_sympy(tmp_path):
    code = ("import sys, fedcare; fedcare.simulate(dataset='heart-disease', rounds=1, model='mlp', hidden=[8], "
            f"batched=True, baselines=False, out={str(tmp_path)!r}); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    env = {**os.environ, "FEDCARE_REPORT_FIGURES": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_sites_judged_together_get_the_loops_metrics():
    cfg = resolve_config({"dataset": "heart-disease", "model": "mlp", "hidden": [8], "batched": True})
    dataset = load_dataset(cfg.data)
    fed = build_federation(cfg, dataset)
    rng = np.random.default_rng(3)
    params = {k: (v + rng.normal(scale=0.3, size=v.shape)).astype(v.dtype) for k, v in fed.initial.items()}
    ids, splits = [s.site_id for s in fed.sites], ["train", "val", "test"]  # val: empty, skipped
    alone = SimulationTransport(fed.sites).evaluate(params, ids, splits)
    together = Together(cfg.backend)
    judged = together.evaluate(params, ids, splits, {s.site_id: s for s in fed.sites})
    assert list(judged) == ids  # every honest in-memory site, judged together
    both = SimulationTransport(fed.sites, together=together).evaluate(params, ids, splits)
    assert len({s.num_examples("test") for s in fed.sites}) > 1  # unequal sizes: the cut matters
    for sid in ids:
        assert list(both[sid]) == list(alone[sid]) == ["train", "test"]
        for split in alone[sid]:
            assert both[sid][split].keys() == alone[sid][split].keys()
            assert both[sid][split] == alone[sid][split]  # bit for bit: each site's rows on their own
    assert len({round(alone[sid]["test"]["log_loss"], 6) for sid in ids}) == len(ids)  # the sites' own rows
    partial = {k: v for k, v in params.items() if k != next(iter(params))}
    assert together.evaluate(partial, ids, splits, {s.site_id: s for s in fed.sites}) == {}  # not the whole model


def test_batched_workers_write_the_in_process_metrics_bit_for_bit(tmp_path):
    """A worker's shard holds fewer sites than the in-process backend: judging them together must
    not change a metric's last bits (a forward over several sites' rows at once did)."""
    from fedcare import simulate

    run = {"dataset": "heart-disease", "rounds": 2, "model": "mlp", "hidden": [8], "batched": True, "baselines": False}
    here = simulate(**run, out=str(tmp_path / "in-process"))
    there = simulate(**run, backend="processes", workers=2, out=str(tmp_path / "processes"))
    rows = (tmp_path / "in-process" / "metrics.jsonl").read_text()
    assert rows.count("\n") > 8 and rows == (tmp_path / "processes" / "metrics.jsonl").read_text()
    assert all(np.array_equal(v, there.global_params[k]) for k, v in here.global_params.items())
