"""A site's side of a round: train on local rows, return an update; evaluate on a local split.

The same code serves simulation and deployment: a transport hands it params and a FitRequest and
carries back the Update, which holds arrays shaped like the params and scalars — never rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedcare.core.messages import FitRequest, Split
from fedcare.core.params import Params
from fedcare.core.update import Update
from fedcare.learning.metrics import Metrics
from fedcare.learning.models import get_params, set_params
from fedcare.learning.tasks import Task


class LocalSite:
    """One site's data and model. Holds tensors built once, so a round costs only arithmetic."""

    def __init__(self, site_id: str, task: Task, model: nn.Module,
                 splits: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.site_id = site_id
        self.task = task
        self.model = model
        self._y_numpy = {name: y for name, (_, y) in splits.items()}
        self._data = {name: (torch.as_tensor(x, dtype=torch.float32), task.target_tensor(y))
                      for name, (x, y) in splits.items()}

    @property
    def num_train(self) -> int:
        return len(self._y_numpy["train"])

    def num_examples(self, split: str) -> int:
        return len(self._y_numpy.get(split, ()))

    def fit(self, params: Params, request: FitRequest) -> Update:
        set_params(self.model, params)
        if request.mode == "gradient":
            grad, loss = self._full_gradient()
        else:
            loss = self._train_epochs(request)
            local = get_params(self.model)
            grad = {k: params[k] - local[k] for k in params}
        return Update(self.site_id, grad, self.num_train, {"train_loss": loss})

    def _full_gradient(self) -> tuple[Params, float]:
        """∇ of the mean loss over every local training example at the given params."""
        x, y = self._data["train"]
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = self.task.loss(self.model(x), y)
        loss.backward()
        grads = {name: p.grad for name, p in self.model.named_parameters()}
        out = {}
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                g = grads.get(k)
                out[k] = np.zeros(tuple(v.shape), np.float32) if g is None else g.detach().numpy().copy()
        return out, float(loss.detach())

    def _train_epochs(self, request: FitRequest) -> float:
        x, y = self._data["train"]
        n = len(y)
        params = list(self.model.parameters())
        if request.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=request.lr)
        else:
            opt = torch.optim.SGD(params, lr=request.lr)
        gen = torch.Generator().manual_seed(request.seed)
        anchor = [p.detach().clone() for p in params] if request.prox_mu > 0 else None
        self.model.train()
        losses: list[torch.Tensor] = []
        for _ in range(request.local_epochs):
            order = torch.randperm(n, generator=gen)
            xs, ys = x[order], y[order]  # one gather per epoch; batches are then cheap views
            losses = []
            for start in range(0, n, request.batch_size):
                xb, yb = xs[start:start + request.batch_size], ys[start:start + request.batch_size]
                opt.zero_grad(set_to_none=True)
                data_loss = self.task.loss(self.model(xb), yb)
                loss = data_loss
                if anchor is not None:  # FedProx: stay near the global model
                    loss = loss + request.prox_mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
                loss.backward()
                opt.step()
                losses.append(data_loss.detach() * len(yb))
        return float(torch.stack(losses).sum()) / n  # mean loss over the last epoch

    def evaluate(self, params: Params, splits: Sequence[Split]) -> dict[str, Metrics]:
        """Metrics of the given params on each named split this site holds (empty splits skipped)."""
        set_params(self.model, params)
        self.model.eval()
        out: dict[str, Metrics] = {}
        with torch.no_grad():
            for split in splits:
                if self.num_examples(split) == 0:
                    continue
                x, _ = self._data[split]
                out[split] = self.task.metrics(self.model(x), self._y_numpy[split])
        return out
