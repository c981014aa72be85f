"""Minibatch training of a torch module on one site's examples: the one loop every mode uses
(FedAvg's local epochs, FedProx, Ditto's personal model, fine-tuning, FedRep's phases)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedcare.learning.batches import Batches
from fedcare.learning.localopt import LocalOptimizer


def use_threads(threads: int) -> None:
    """PyTorch's threads for local training (1 suits small tabular models on a busy machine)."""
    torch.set_num_threads(threads)


def train_epochs(model: nn.Module, data: Batches, *, epochs: int, lr: float, batch_size: int, optimizer: str,
                 seed: int, trainable: Sequence[nn.Parameter] | None = None,
                 anchor: Sequence[torch.Tensor] | None = None, mu: float = 0.0) -> float:
    """Train `trainable` (default: every parameter) and return the mean data loss of the last epoch.

    With `anchor` and mu > 0 the loss adds mu/2·Σ‖p − anchor‖² over the model's parameters (the
    proximal term of FedProx, and Ditto's pull of the personal model towards the global one).
    """
    params = list(model.parameters())
    chosen = list(trainable) if trainable is not None else params
    opt = LocalOptimizer(chosen, lr, optimizer)
    gen = torch.Generator().manual_seed(seed)
    penalty = getattr(model, "penalty", None)  # a model's own regulariser (fusion's omics encoder)
    model.train()
    losses: list[torch.Tensor] = []
    with torch.random.fork_rng(devices=[]):  # dropout draws from the request's seed: same run, same numbers
        torch.default_generator.manual_seed(seed)  # the CPU's: torch.manual_seed also seeds every other
        # device kind, ~0.25 ms a call (a traceback per lazily initialised backend), every site and round
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=gen)
            losses = []
            for inputs, targets, size in data.epoch(order, batch_size):
                opt.zero_grad()
                data_loss = data.task.loss(model(inputs), targets)
                loss = data_loss + penalty() if penalty is not None else data_loss
                if anchor is not None and mu > 0:
                    loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
                loss.backward()
                opt.step()
                losses.append(data_loss.detach() * size)
    return float(torch.stack(losses).sum()) / len(data) if losses else 0.0
