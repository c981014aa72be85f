"""Many sites' local SGD at once: the sites' params stacked, one step of all of them per minibatch
(`torch.func.functional_call` + `vmap` over the sites), unequal site sizes padded and masked.

Each site sees exactly the minibatches the one-site loop (fedcare.learning.training) gives it: the
same seeded shuffles, the same batch boundaries, the same steps; only float32 rounding differs. Only
the model runs under vmap: each patient's loss (the task's `patient_losses`) is computed on all
the sites' rows at once outside it and each site takes the masked mean of its own, so no loss runs
through PyTorch's Python decompositions (their first use imports sympy). A task without
`patient_losses` takes its own mean loss under vmap, per-patient and masked in a window some site
fills in part. A site with fewer batches than the largest stops stepping when its own batches end.
Gradients come from plain autograd on the sites' summed loss (`site_grads`), not torch.func.grad,
whose first use imports torch._dynamo. What it covers: plain
local SGD (FedAvg) with FedProx's proximal term or SCAFFOLD's correction, and FedSGD's one gradient over all of a site's
training rows, on tasks whose loss is a mean over patients and models without batch norm;
`batchable` says why anything else trains in the loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedcare.core.errors import ConfigError
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params
from fedcare.core.update import Update
from fedcare.learning.batches import Batches
from fedcare.learning.localopt import LocalOptimizer
from fedcare.learning.models import set_params


def batchable(request: FitRequest, model: nn.Module, data: Batches) -> str | None:
    """None when this site's round can train batched; otherwise why it trains in the loop."""
    if request.mode == "local_epochs" and request.optimizer != "sgd":
        return "batched sites train plain local SGD (fedavg, fedprox) or one gradient (fedsgd)"
    if request.mode not in ("local_epochs", "gradient"):
        return f"the {request.mode} round trains site by site"
    if request.personalization != "none":
        return "personalization trains site by site"
    if request.dp_epsilon is not None and (request.mode != "local_epochs" or request.prox_mu or request.scaffold):
        return "record-level DP trains plain DP-SGD (fedavg-style local epochs)"
    if request.error_feedback:
        return "error feedback keeps each site's own residual: sites train one by one"
    if not data.task.per_example:
        return f"the {data.task.name} task's loss couples patients in a batch"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "batch norm trains site by site"
    if not data.examples.in_memory:
        return "examples read from files train site by site"
    return None


def train_together(model: nn.Module, sites: Mapping[str, Batches], params: Params,
                   requests: Mapping[str, FitRequest], device: str = "cpu",
                   fixes: Mapping[str, Params] | None = None) -> dict[str, Update]:
    """Every site's update from the same global `params`, as the loop makes it: local SGD's
    params − trained and its last epoch's mean loss, or FedSGD's gradient of the mean loss over all
    the site's training rows (mode `gradient`). `model` is any of the sites' (identical) modules.
    `fixes`: per site, what is added to every gradient before its step (SCAFFOLD's c − cᵢ)."""
    ids = list(sites)
    first = requests[ids[0]]
    task = sites[ids[0]].task
    gradient = first.mode == "gradient"
    mu = 0.0 if gradient else first.prox_mu
    names = [k for k, _ in model.named_parameters()]
    start = {k: torch.tensor(params[k], device=device) for k in names}  # a copy: the message is read-only
    stacked = {k: v.expand(len(ids), *v.shape).clone().requires_grad_() for k, v in start.items()}
    buffers = {k: v.to(device) for k, v in model.named_buffers()}
    sizes = torch.tensor([len(sites[s]) for s in ids], device=device)

    def prox(p):
        return sum(((p[k] - anchor_k) ** 2).sum() for k, anchor_k in start.items()) * (mu / 2)

    def whole_loss(p, x, y):  # every row real: the loop's own mean loss over the batch
        data_loss = task.loss(functional_call(model, (p, buffers), (x,)), y)
        return data_loss + prox(p), data_loss

    def masked_loss(p, x, y, mask):  # padded rows: a masked mean of per-patient losses
        def one(xi, yi):  # a patient's loss, as a batch of one
            out = functional_call(model, (p, buffers), ({k: v.unsqueeze(0) for k, v in xi.items()},))
            return task.loss(out, {k: v.unsqueeze(0) for k, v in yi.items()})

        data_loss = (vmap(one)(x, y) * mask).sum() / mask.sum().clamp(min=1)
        return data_loss + prox(p), data_loss

    def flat_loss(p, x, y, mask):  # the model vmapped, each patient's loss outside it
        out = vmap(lambda q, xs: functional_call(model, (q, buffers), (xs,)))(p, x)
        rows = mask.shape[1]
        each = task.patient_losses(out.flatten(0, 1), {k: v.flatten(0, 1) for k, v in y.items()}).view(-1, rows)
        data_loss = (each * mask).sum(1) / mask.sum(1).clamp(min=1)
        anchor = sum(((p[k] - a) ** 2).flatten(1).sum(1) for k, a in start.items()) * (mu / 2)
        return data_loss + anchor, data_loss

    def grads(x, y, mask, counts):
        """Each site's gradient and mean loss on its rows of this window; a site's window full or
        empty everywhere (an empty one's result is not used) needs no mask."""
        if hasattr(task, "patient_losses"):  # no loss under vmap: it would run in Python decompositions
            total, data_loss = flat_loss(stacked, x, y, mask)
            return summed_grads(total, stacked), data_loss.detach()
        full = bool(((counts == 0) | (counts == mask.shape[1])).all())
        return site_grads(whole_loss, stacked, x, y) if full else site_grads(masked_loss, stacked, x, y, mask)

    model.train()
    if gradient:
        longest = int(sizes.max())
        x, y, mask = _rows(sites, ids, [torch.arange(len(sites[s])) for s in ids], longest, device)
        g, loss = grads(x, y, mask, mask.sum(1))
        found = {k: v.detach().cpu().numpy() for k, v in g.items()}
        return {s: Update(s, {k: found[k][i] if k in found else np.zeros_like(params[k]) for k in params},
                          len(sites[s]), {"train_loss": float(loss[i])}) for i, s in enumerate(ids)}
    epochs, lr, bs = first.local_epochs, first.lr, first.batch_size
    steps = max(math.ceil(len(sites[s]) / bs) for s in ids)
    gens = {s: torch.Generator().manual_seed(requests[s].seed) for s in ids}
    fix = ({k: torch.stack([torch.as_tensor(fixes[s][k], dtype=v.dtype) for s in ids]).to(device)
            for k, v in stacked.items()} if fixes else {})
    last = torch.zeros(len(ids), device=device)
    for _ in range(epochs):
        orders = [torch.randperm(len(sites[s]), generator=gens[s]) for s in ids]  # the loop's shuffles
        x, y, mask = _rows(sites, ids, orders, steps * bs, device)
        last = torch.zeros(len(ids), device=device)
        for t in range(steps):
            window = slice(t * bs, (t + 1) * bs)
            m = mask[:, window]
            counts = m.sum(1)
            g, data_loss = grads({k: v[:, window] for k, v in x.items()}, {k: v[:, window] for k, v in y.items()},
                                 m, counts)
            active = (counts > 0).to(m.dtype)  # a site whose batches have ended takes no step
            with torch.no_grad():
                for k in names:
                    step = g[k] + fix[k] if k in fix else g[k]
                    stacked[k] -= lr * step * active.view(-1, *[1] * (g[k].dim() - 1))
            last += data_loss.detach() * counts
    losses = (last / sizes.clamp(min=1)).tolist()
    trained = {k: v.detach().cpu().numpy() for k, v in stacked.items()}
    out = {}
    for i, s in enumerate(ids):  # float buffers are not trained: their part of the update is 0, as in the loop
        delta = {k: params[k] - trained[k][i] if k in trained else np.zeros_like(params[k]) for k in params}
        out[s] = Update(s, delta, len(sites[s]), {"train_loss": losses[i]})
    return out


def train_private_together(model: nn.Module, sites: Mapping[str, Batches], params: Params,
                           requests: Mapping[str, FitRequest], noise: Mapping[str, float],
                           steps: Mapping[str, int], device: str = "cpu") -> dict[str, Update]:
    """Every site's DP-SGD update (learning/dpsgd.py) from the same global `params`, as the loop makes
    it: each site draws its Poisson samples and its Gaussian noise from its own seeded generator in
    the loop's order, so only the float32 rounding of the summed per-patient gradients differs.
    `noise`: each site's noise multiplier σ; `steps`: its steps this round (its accountant's)."""
    ids = list(sites)
    task = sites[ids[0]].task
    first = requests[ids[0]]
    lr, clip = first.lr, first.dp_clip
    names = [k for k, _ in model.named_parameters()]
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    stacked = {k: torch.tensor(params[k], device=device).expand(len(ids), *shapes[k]).clone() for k in names}
    buffers = {k: v.to(device) for k, v in model.named_buffers()}
    n = {s: len(sites[s]) for s in ids}
    q = {s: min(1.0, requests[s].batch_size / n[s]) for s in ids}
    gens = {s: torch.Generator().manual_seed(requests[s].seed) for s in ids}

    def one(p, xi, yi):  # one patient's loss, as a batch of one (the loop's per-example gradient)
        out = functional_call(model, (p, buffers), ({k: v.unsqueeze(0) for k, v in xi.items()},))
        loss = task.loss(out, {k: v.unsqueeze(0) for k, v in yi.items()})
        return loss, loss

    per_patient = vmap(vmap(grad(one, has_aux=True), in_dims=(None, 0, 0)))  # sites, then their patients
    scale = torch.tensor([q[s] * n[s] for s in ids], device=device)
    total, seen = torch.zeros(len(ids), dtype=torch.float64), torch.zeros(len(ids), dtype=torch.float64)
    model.train()
    for t in range(max(steps.values())):
        active = [t < steps[s] for s in ids]
        picks, noises = [], []
        for s, on in zip(ids, active, strict=True):
            if on:  # the loop's draws, in its order: the sample, then each array's noise
                picks.append(torch.nonzero(torch.rand(n[s], generator=gens[s]) < q[s]).view(-1))
                noises.append({k: torch.normal(0.0, noise[s] * clip, size=shapes[k], generator=gens[s]) for k in names})
            else:
                picks.append(torch.zeros(0, dtype=torch.int64))
                noises.append({k: torch.zeros(shapes[k]) for k in names})
        width = max(len(p) for p in picks)
        summed = {k: torch.zeros_like(v) for k, v in stacked.items()}
        if width:
            rows = [torch.cat([p, torch.zeros(width - len(p), dtype=torch.int64)]) for p in picks]
            mask = torch.stack([torch.arange(width) < len(p) for p in picks]).to(device, torch.float32)
            taken = [sites[s].take(r) for s, r in zip(ids, rows, strict=True)]
            x = {k: torch.stack([xs[k] for xs, _ in taken]).to(device) for k in taken[0][0]}
            y = {k: torch.stack([ys[k] for _, ys in taken]).to(device) for k in taken[0][1]}
            g, losses = per_patient({k: v.detach() for k, v in stacked.items()}, x, y)
            norms = torch.sqrt(sum(g[k].reshape(len(ids), width, -1).pow(2).sum(-1) for k in names))
            factor = torch.clamp(clip / (norms + 1e-12), max=1.0) * mask
            summed = {k: (g[k] * factor.view(len(ids), width, *[1] * len(shapes[k]))).sum(1) for k in names}
            total += (losses.detach() * mask).sum(1).double()
            seen += mask.sum(1).double()
        on = torch.tensor(active, dtype=torch.float32, device=device)
        with torch.no_grad():
            for k in names:
                step = (summed[k] + torch.stack([z[k] for z in noises]).to(device)) / scale.view(-1, *[1] * len(shapes[k]))
                stacked[k] -= lr * step * on.view(-1, *[1] * len(shapes[k]))
    trained = {k: v.detach().cpu().numpy() for k, v in stacked.items()}
    losses = (total / seen.clamp(min=1)).tolist()
    return {s: Update(s, {k: params[k] - trained[k][i] if k in trained else np.zeros_like(params[k]) for k in params},
                      n[s], {"train_loss": losses[i]}) for i, s in enumerate(ids)}


def site_grads(loss, stacked: Mapping[str, torch.Tensor], *batch) -> tuple[dict, torch.Tensor]:
    """Each site's gradient of its own `loss(params, *batch) -> (loss, aux)` and its aux, vmapped over
    the sites. The stacked params are separate per site, so the gradient of the sites' summed loss
    is, slice by slice, each site's own: the numbers of `vmap(grad(loss))` (checked equal), through
    plain autograd, which spares a run torch.func.grad's import of torch._dynamo (about 2 CPU s)."""
    total, aux = vmap(loss)(stacked, *batch)
    return summed_grads(total, stacked), aux.detach()


def summed_grads(total: torch.Tensor, stacked: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each site's gradient of its entry of `total` (one loss per site) with respect to its slice of
    the stacked params."""
    got = torch.autograd.grad(total.sum(), list(stacked.values()), allow_unused=True, materialize_grads=True)
    return dict(zip(stacked, got, strict=True))


def evaluate_together(model: nn.Module, params: Params, sites: Mapping, splits: Sequence[str]) -> dict[str, dict]:
    """Each site's metrics of the same `params` on each named split (empty splits skipped, as
    LocalSite.evaluate does), with the params loaded once into one `model` instead of into every
    site's. Each site's rows still go through the model on their own: the outputs of one forward
    over several sites' rows differ in the last bits with the number of rows, and a worker's shard
    holds fewer sites than the in-process backend, so this keeps both equal to the loop bit for bit."""
    set_params(model, params)
    model.eval()
    out: dict[str, dict] = {sid: {} for sid in sites}
    with torch.no_grad():
        for sid, site in sites.items():
            for split in splits:
                data = site.split_data(split)
                if data is None or len(data) == 0:
                    continue
                if data.tensors is None:  # read lazily: the site's own chunks
                    out[sid][split] = site.evaluate(params, [split])[split]
                else:
                    out[sid][split] = site.task.metrics(model(data.tensors[0]), data.targets)
    return out


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: PyTorch sees no GPU on this machine; use device cpu")


def _rows(sites: Mapping[str, Batches], ids: Sequence[str], orders: Sequence[torch.Tensor], length: int,
          device: str) -> tuple[dict, dict, torch.Tensor]:
    """Each site's rows in the given order, padded to `length` (with its first row), and their mask."""
    xs, ys, masks = [], [], []
    for s, order in zip(ids, orders, strict=True):
        pad = torch.zeros(length - len(order), dtype=order.dtype)
        x, y = sites[s].take(torch.cat([order, pad]))
        xs.append(x)
        ys.append(y)
        masks.append(torch.cat([torch.ones(len(order)), torch.zeros(len(pad))]))

    def stack(parts: list[dict]) -> dict:
        return {k: torch.stack([p[k] for p in parts]).to(device) for k in parts[0]}

    return stack(xs), stack(ys), torch.stack(masks).to(device)


def warm_up() -> None:
    """Pay PyTorch's first-use costs (the loop's first backward and step; vmap sets itself up) on a
    throwaway model, so that a worker started before the data is read pays them while the data is
    prepared, not in its first round. Not DP-SGD's per-patient torch.func.grad: its first use imports
    torch._dynamo (about 2.8 CPU s), which only a DP-SGD run needs, and pays, in its first round."""
    model = nn.Linear(2, 2)
    opt = LocalOptimizer(model.parameters(), 0.1, "sgd")
    x = torch.zeros(3, 4, 2)
    model(x[0]).sum().backward()
    opt.step()

    def loss(p, xb):
        return functional_call(model, p, (xb,)).mean()

    stacked = {k: v.detach().expand(3, *v.shape).clone() for k, v in model.named_parameters()}
    site_grads(lambda p, xb: (loss(p, xb), loss(p, xb)), {k: v.clone().requires_grad_() for k, v in stacked.items()}, x)
    vmap(lambda p, xb: loss(p, xb))(stacked, x)
