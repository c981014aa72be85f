"""A site's local optimizer, plain SGD or Adam, float for float torch.optim's single-tensor CPU steps
(its defaults: no momentum or weight decay; Adam's betas 0.9, 0.999 and eps 1e-8).

Not torch.optim itself: its first optimizer and every step import torch._dynamo (about 2.8 CPU s
in each process that trains: every site agent, worker and `fedcare simulate`), for graph breaks a
run that compiles nothing never needs. tests/test_localopt.py holds both to the same floats.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


class LocalOptimizer:
    """`kind` "sgd" or "adam" over `params`; a parameter without a gradient is skipped, as torch.optim does."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, kind: str
    ) -> None:
        self.params = list(params)
        self.lr = float(lr)
        self.adam = kind == "adam"
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor, list[float]]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if not self.adam:
                p.add_(p.grad, alpha=-self.lr)
                continue
            if i not in self.state:
                self.state[i] = (
                    torch.zeros_like(p, memory_format=torch.preserve_format),
                    torch.zeros_like(p, memory_format=torch.preserve_format),
                    [0.0],
                )
            exp_avg, exp_avg_sq, count = self.state[i]
            grad = p.grad
            count[0] += 1.0
            step = count[0]
            exp_avg.lerp_(grad, 1 - BETA1)
            exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
            step_size = self.lr / (1 - BETA1**step)
            denom = (exp_avg_sq.sqrt() / (1 - BETA2**step) ** 0.5).add_(EPS)
            p.addcdiv_(exp_avg, denom, value=-step_size)
