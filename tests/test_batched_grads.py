"""The batched trainer's gradients: plain autograd on the sites' summed loss gives each site the
gradient torch.func.grad gives it, and the per-patient losses outside vmap give each site the
loop's mean loss; a batched run needs neither torch._dynamo nor sympy."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch.func import functional_call, grad, vmap

from fedcare.learning.batched import site_grads
from fedcare.learning.tasks import make_task


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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
