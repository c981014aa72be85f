"""DP-SGD at a site (Abadi et al., CCS 2016): record-level differential privacy for its patients.

Each step samples every row independently with probability q (Poisson sampling, the sampling the
privacy accounting assumes), computes one gradient per patient (torch.func), clips each to L2 norm
≤ C, sums them, adds Gaussian noise N(0, (σC)²) and divides by the expected batch size q·n. One
patient then changes a step's update by at most C, hidden by noise σC; the accountant
(fedcare.algorithms.accounting) turns (σ, q, steps, δ) into the ε the site has spent.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedcare.core.errors import ConfigError
from fedcare.learning.batches import Batches


def dp_steps(epochs: int, sampling_rate: float) -> int:
    """Poisson-sampled steps that make `epochs` passes over the data in expectation."""
    return max(1, round(epochs / sampling_rate))


def train_dp(model: nn.Module, data: Batches, *, epochs: int, lr: float, batch_size: int, clip: float,
             noise_multiplier: float, seed: int) -> float:
    """Train with DP-SGD (plain SGD steps); returns the mean clipped-free loss of the sampled rows."""
    task = data.task
    if not task.per_example:
        raise ConfigError(f"record-level DP needs a per-patient loss; the {task.name} task's loss couples "
                          "patients in a batch")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError("record-level DP cannot use batch norm (it mixes patients in a batch); drop --batch-norm "
                          "(the image models have batch norm: they do not take record-level DP)")
    n = len(data)
    q = min(1.0, batch_size / n)
    gen = torch.Generator().manual_seed(seed)
    names = [k for k, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())

    def one_loss(p, xi, yi):  # one patient's inputs and targets, as a batch of one
        out = functional_call(model, (p, buffers), ({k: v.unsqueeze(0) for k, v in xi.items()},))
        return task.loss(out, {k: v.unsqueeze(0) for k, v in yi.items()})

    per_example = vmap(grad(one_loss), in_dims=(None, 0, 0))
    model.train()
    total, seen = 0.0, 0
    for _ in range(dp_steps(epochs, q)):
        picked = torch.rand(n, generator=gen) < q
        noise = {k: torch.normal(0.0, noise_multiplier * clip, size=params[k].shape, generator=gen) for k in names}
        if picked.any():
            xb, yb = data.take(picked)
            m = int(picked.sum())
            detached = {k: v.detach() for k, v in params.items()}
            grads = per_example(detached, xb, yb)
            norms = torch.sqrt(sum(g.reshape(m, -1).pow(2).sum(1) for g in grads.values()))
            factor = torch.clamp(clip / (norms + 1e-12), max=1.0)
            summed = {k: (grads[k] * factor.view(-1, *[1] * (grads[k].dim() - 1))).sum(0) for k in names}
            with torch.no_grad():
                total += float(task.loss(model(xb), yb)) * m
                seen += m
        else:
            summed = {k: torch.zeros_like(params[k]) for k in names}
        with torch.no_grad():
            for k in names:
                params[k] -= lr * (summed[k] + noise[k]) / (q * n)
    return total / max(seen, 1)
