"""The local optimizer takes torch.optim's steps float for float, and a run that trains in the loop
(as every site agent and `fedcare simulate` does) never imports torch._dynamo or sympy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fedcare.learning.localopt import LocalOptimizer


def _model() -> torch.nn.Module:
    torch.manual_seed(4)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 2)
    )
    model.unused = torch.nn.Parameter(
        torch.ones(3)
    )  # never in the loss: no gradient, never stepped
    return model


def _train(opt_for, kind: str, lr: float, frozen: bool) -> dict[str, torch.Tensor]:
    model = _model()
    chosen = [
        p for n, p in model.named_parameters() if not (frozen and n.startswith("0."))
    ]
    opt = opt_for(chosen, kind, lr)
    gen = torch.Generator().manual_seed(7)
    for _ in range(60):
        x, y = (
            torch.randn(16, 6, generator=gen),
            torch.randint(0, 2, (16,), generator=gen),
        )
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _torch(params, kind, lr):
    return (
        torch.optim.Adam(params, lr=lr)
        if kind == "adam"
        else torch.optim.SGD(params, lr=lr)
    )


@pytest.mark.parametrize(
    "kind,lr,frozen",
    [
        ("sgd", 0.1, False),
        ("adam", 0.01, False),
        ("adam", 0.3, True),
        ("sgd", 0.05, True),
    ],
)
def test_the_same_floats_as_torch_optim(kind, lr, frozen):
    ours = _train(lambda p, k, r: LocalOptimizer(p, r, k), kind, lr, frozen)
    theirs = _train(_torch, kind, lr, frozen)
    start = dict(_model().named_parameters())
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name  # bit for bit
    assert torch.equal(ours["unused"], start["unused"])
    assert frozen == torch.equal(ours["0.weight"], start["0.weight"])
    assert not torch.equal(ours["2.weight"], start["2.weight"])  # it did train


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_run_in_the_loop_imports_neither_dynamo_nor_sympy(tmp_path, optimizer):
    code = (
        "import sys, fedcare; fedcare.simulate(dataset='heart-disease', rounds=1, model='mlp', hidden=[8], "
        f"optimizer={optimizer!r}, baselines=False, out={str(tmp_path)!r}); "
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))"
    )
    env = {**os.environ, "FEDCARE_REPORT_FIGURES": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
