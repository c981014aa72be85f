"""A site's side of a round: train on local rows, return an update; evaluate on a local split.

The same code serves simulation and deployment: a transport hands it params and a FitRequest and
carries back the Update, which holds arrays shaped like the params and scalars — never rows.

Personalization is site state that never travels (`self.personal`):
  fedper  the output layer ("head") stays at the site: the site trains body and its own head, and
          sends zeros for the head;
  fedrep  the same split, but the head is trained first with the body frozen, then the body with
          the head frozen (Collins et al., ICML 2021);
  fedbn   batch-norm layers (weights and running statistics) stay at the site (Li et al., ICLR 2021);
  ditto   the site also keeps a whole personal model v, trained each round on its rows with
          λ/2·‖v − θ_global‖² pulling it towards the global model (Li et al., ICML 2021);
  finetune  nothing during training; at the end the global model is trained k more epochs locally.

SCAFFOLD (request.scaffold) is site state too: the site's control variate cᵢ (`self.control`, zeros
at start) survives rounds and only its change Δcᵢ is ever sent (see fedcare.algorithms.scaffold).

Error feedback (request.error_feedback) is site state as well: what compression left out of the last
update (`self.residual`, e = target − decoded) is added to the next one, so nothing is lost for good
(Seide et al. 2014; Karimireddy et al., ICML 2019). The site computes exactly what its wire encoder
will send (the same seeded rounding, core/compression.py) and never sends the residual itself.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fedcare.algorithms.modalities import rows_metric
from fedcare.core import compression
from fedcare.core.errors import ConfigError, ParamsError, SiteDeclined
from fedcare.core.messages import FitRequest, Split, control_name, split_controls
from fedcare.core.params import Params
from fedcare.core.update import Update
from fedcare.data.examples import Examples, array
from fedcare.learning import baseline_hazard
from fedcare.learning.batches import Batches
from fedcare.learning.dpsgd import dp_steps, train_dp
from fedcare.learning.fusion import PRESENT, present_name, with_presence
from fedcare.learning.metrics import Metrics, reliability
from fedcare.learning.models import batch_norm_names, get_params, head_names, set_params
from fedcare.learning.tasks import Task
from fedcare.learning.training import train_epochs


class BudgetExhausted(SiteDeclined):
    """Another round would spend more privacy than the site's budget: it stops taking part."""


class LocalSite:
    """One site's data and model. Examples held in memory become tensors once, so a round costs only
    arithmetic; examples read from disk are read a batch at a time (fedcare.learning.batches)."""

    def __init__(self, site_id: str, task: Task, model: nn.Module, splits: Mapping[str, Examples],
                 inputs: Sequence[str] | None = None):
        """`splits`: the site's examples by split name; `inputs`: the named arrays the model takes
        (default: every array that is not one of the task's targets)."""
        self.site_id = site_id
        self.task = task
        self.model = model
        self._data = {name: Batches(examples, task, with_presence(examples, inputs) if inputs is not None else
                                    [n for n in examples.names if n not in task.targets])
                      for name, examples in splits.items()}
        self.input_rows = {rows_metric(n[:-len(PRESENT)]): float(np.sum(array(splits["train"], n)))
                           for n in self._data["train"].inputs if n.endswith(PRESENT)} if "train" in splits else {}
        self.personal: Params = {}  # kept layers (FedPer/FedRep head, FedBN batch norm): never sent
        self.ditto: Params = {}  # Ditto's whole personal model: never sent
        self._personal_model: nn.Module | None = None
        self.control: Params = {}  # SCAFFOLD's cᵢ: never sent, only its change Δcᵢ
        self.dp: Params = {}  # record-level DP: this site's noise multiplier and steps taken (its accountant)
        self.dp_spent: float | None = None  # ε spent so far
        self.residual: Params = {}  # error feedback: what compression left out of the last update; never sent

    _STATE = ("personal", "ditto", "control", "dp", "residual")

    def site_state(self) -> Params:
        """Everything this site keeps between rounds, as named arrays for its own checkpoint."""
        return {f"{part}/{k}": v for part in self._STATE for k, v in getattr(self, part).items()}

    def load_site_state(self, state: Params) -> None:
        """Restore what site_state() saved (a resumed run continues where the site left off)."""
        for part in self._STATE:
            setattr(self, part, {k.partition("/")[2]: np.array(v) for k, v in state.items()
                                 if k.partition("/")[0] == part})

    @property
    def train_data(self) -> Batches:
        return self._data["train"]

    @property
    def num_train(self) -> int:
        return len(self._data["train"])

    def num_examples(self, split: str) -> int:
        return len(self._data[split]) if split in self._data else 0

    def split_data(self, split: str) -> Batches | None:
        return self._data.get(split)

    def fit(self, params: Params, request: FitRequest) -> Update:
        update = self._fit(params, request)
        return self._with_residual(update, request) if request.error_feedback else update

    def _with_residual(self, update: Update, request: FitRequest) -> Update:
        """The update plus the last residual: what this round's compressed message should carry.
        Keeps the new residual, the part of it that the compressed message will not."""
        target = {k: (v + self.residual[k]).astype(v.dtype, copy=False) if k in self.residual else v
                  for k, v in update.grad.items()}
        sent = compression.roundtrip(target, compression.parse_scheme(request.compress),
                                     compression.update_rng(request.seed))
        self.residual = {k: target[k] - sent[k] for k in target}
        return Update(update.site_id, target, update.num_examples, update.metrics)

    def _fit(self, params: Params, request: FitRequest) -> Update:
        params, controls = split_controls(params)  # control/<name>: arrays broadcast beside the model
        if request.scaffold:
            return self._fit_scaffold(params, controls, request)
        kept = self.kept_names(request.personalization)
        self._load(params, kept)
        if request.mode == "gradient":
            grad, loss = self._full_gradient()
            grad = {k: grad[k] for k in params}  # a scoped request's params: only what this site was sent
        elif request.personalization == "fedrep":
            loss = self._train_head_then_body(request, kept)
        else:
            loss = self._train_epochs(request)
        if request.mode != "gradient":
            trained = get_params(self.model)
            grad = {k: params[k] - trained[k] for k in params}
        if kept:
            trained = get_params(self.model)
            self.personal = {k: trained[k].copy() for k in kept}
            grad = {k: np.zeros_like(v) if k in kept else v for k, v in grad.items()}  # the kept part never leaves
        if request.personalization == "ditto":
            self._ditto_step(params, request)
        metrics = {"train_loss": loss, **self.input_rows}  # rows.<input>: how many training rows have it
        if request.dp_epsilon is not None and self.dp_spent is not None:
            metrics["epsilon"] = self.dp_spent  # this site's accountant: ε spent so far
        return Update(self.site_id, grad, self.num_train, metrics)

    # ----- SCAFFOLD -----------------------------------------------------------------------------

    def _fit_scaffold(self, params: Params, c: Params, request: FitRequest) -> Update:
        """K local SGD steps along ∇ℓ(y) − cᵢ + c; then cᵢ⁺ = cᵢ − c + (θ − y)/(K·lr) (option II).

        Sends θ − y and Δcᵢ = cᵢ⁺ − cᵢ (as control/<name>); keeps cᵢ⁺. Batch-norm statistics are
        not trained by gradient steps: their control variates stay 0.
        """
        fixes = self.scaffold_fixes(params, c, request)
        set_params(self.model, params)
        hooks = []
        for k, p in self.model.named_parameters():  # every backward pass adds c − cᵢ to the gradient SGD steps along
            fix = torch.as_tensor(fixes[k], dtype=p.dtype)
            hooks.append(p.register_hook(lambda g, fix=fix: g + fix))
        try:
            loss = self._train_epochs(request)
        finally:
            for hook in hooks:
                hook.remove()
        trained = get_params(self.model)
        return self.scaffold_update(params, c, {k: params[k] - trained[k] for k in params}, loss, request)

    def scaffold_fixes(self, params: Params, c: Params, request: FitRequest) -> Params:
        """c − cᵢ for each trainable array: what SCAFFOLD adds to every gradient of this round (the
        loop's hooks and the batched sites both take it from here)."""
        if request.mode != "local_epochs" or request.optimizer != "sgd":
            raise ConfigError("scaffold trains with plain local SGD (local_epochs mode, optimizer sgd); "
                              f"got mode {request.mode}, optimizer {request.optimizer}")
        if request.personalization != "none" or request.prox_mu > 0:
            raise ConfigError("scaffold does not combine with personalization or a proximal term")
        missing = [k for k in params if k not in c]
        if missing:
            raise ParamsError(f"scaffold request lacks the control variate '{control_name(missing[0])}'")
        c_i = self.control or {k: np.zeros_like(v) for k, v in params.items()}
        return {k: np.asarray(c[k] - c_i[k]) for k, _ in self.model.named_parameters()}

    def scaffold_update(self, params: Params, c: Params, grad: Params, loss: float, request: FitRequest) -> Update:
        """cᵢ⁺ = cᵢ − c + (θ − y)/(K·lr) kept; θ − y and Δcᵢ sent."""
        c_i = self.control or {k: np.zeros_like(v) for k, v in params.items()}
        trainable = dict(self.model.named_parameters())
        steps = request.local_epochs * math.ceil(self.num_train / request.batch_size)
        delta = {k: ((grad[k] / (steps * request.lr) - c[k]) if k in trainable else np.zeros_like(grad[k]))
                 .astype(params[k].dtype, copy=False) for k in params}
        self.control = {k: (c_i[k] + delta[k]).astype(params[k].dtype, copy=False) for k in params}
        return Update(self.site_id, {**grad, **{control_name(k): delta[k] for k in params}}, self.num_train,
                      {"train_loss": loss})

    # ----- personalization ---------------------------------------------------------------------

    def kept_names(self, personalization: str) -> frozenset[str]:
        """Names of the params that stay at this site under a personalization mode."""
        if personalization in ("fedper", "fedrep"):
            return head_names(self.model)
        if personalization == "fedbn":
            return batch_norm_names(self.model)
        return frozenset()

    def _load(self, params: Params, kept: frozenset[str]) -> None:
        """Global params, with this site's own values for the names it keeps (once it has them)."""
        set_params(self.model, params)
        if kept and self.personal:
            set_params(self.model, {k: self.personal[k] for k in kept if k in self.personal})

    def _train_head_then_body(self, request: FitRequest, kept: frozenset[str]) -> float:
        named = dict(self.model.named_parameters())
        head = [p for k, p in named.items() if k in kept]
        body = [p for k, p in named.items() if k not in kept]
        common = dict(epochs=request.local_epochs, lr=request.lr, batch_size=request.batch_size,
                      optimizer=request.optimizer, seed=request.seed)
        loss = train_epochs(self.model, self._data["train"], trainable=head, **common)
        if body:
            loss = train_epochs(self.model, self._data["train"], trainable=body, **common)
        return loss

    def _ditto_step(self, global_params: Params, request: FitRequest) -> None:
        """One round of Ditto's personal objective: local loss + λ/2·‖v − θ_global‖²."""
        if self._personal_model is None:
            self._personal_model = copy.deepcopy(self.model)
        set_params(self._personal_model, self.ditto or global_params)
        anchor = [torch.from_numpy(np.array(global_params[k])) for k, _ in self._personal_model.named_parameters()]
        train_epochs(self._personal_model, self._data["train"], epochs=request.local_epochs, lr=request.lr,
                     batch_size=request.batch_size, optimizer=request.optimizer, seed=request.seed + 1,
                     anchor=anchor, mu=request.ditto_lambda)
        self.ditto = get_params(self._personal_model)

    def personal_params(self, global_params: Params, request: FitRequest) -> Params:
        """This site's own model at the end of a run: the global params with what it kept, its Ditto
        model, or the global model fine-tuned for request.local_epochs epochs on its rows."""
        mode = request.personalization
        if mode == "ditto":
            return self.ditto or global_params
        self._load(global_params, self.kept_names(mode))
        if mode == "finetune":
            self._train_epochs(request)
        return get_params(self.model)

    def _full_gradient(self) -> tuple[Params, float]:
        """∇ of the mean loss over every local training example at the given params. Examples read
        in chunks add up their chunks' losses weighted by rows: exact for a per-patient loss."""
        data = self._data["train"]
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        loss = 0.0
        for i, (inputs, targets, size) in enumerate(data.chunks()):
            if i and not self.task.per_example:
                raise ConfigError(f"fedsgd over examples read in chunks needs a per-patient loss, which the "
                                  f"{self.task.name} task does not have; use fedavg")
            part = self.task.loss(self.model(inputs), targets) * (size / len(data))
            part.backward()
            loss += float(part.detach())
        grads = {name: p.grad for name, p in self.model.named_parameters()}
        out = {}
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                g = grads.get(k)
                out[k] = np.zeros(tuple(v.shape), np.float32) if g is None else g.detach().numpy().copy()
        return out, loss

    def _train_epochs(self, request: FitRequest) -> float:
        if request.dp_epsilon is not None:
            return self._train_private(request)
        anchor = [p.detach().clone() for p in self.model.parameters()] if request.prox_mu > 0 else None
        return train_epochs(self.model, self._data["train"], epochs=request.local_epochs, lr=request.lr,
                            batch_size=request.batch_size, optimizer=request.optimizer, seed=request.seed,
                            anchor=anchor, mu=request.prox_mu)

    def _train_private(self, request: FitRequest) -> float:
        """DP-SGD under this site's own accountant: the noise is calibrated once so the planned rounds
        spend exactly the budget, and a round that would overspend it is refused."""
        sigma, steps = self.dp_round(request)
        loss = train_dp(self.model, self._data["train"], epochs=request.local_epochs, lr=request.lr,
                        batch_size=request.batch_size, clip=request.dp_clip, noise_multiplier=sigma, seed=request.seed)
        self.dp_spend(request, steps)
        return loss

    def dp_round(self, request: FitRequest) -> tuple[float, int]:
        """This round's DP-SGD noise multiplier σ and steps under the site's accountant (σ calibrated on
        first use); raises BudgetExhausted when the round would overspend the budget. The loop and the
        batched sites (learning/batched.py) both take them from here."""
        from fedcare.algorithms.accounting import epsilon, noise_multiplier_for

        if request.mode != "local_epochs" or request.optimizer != "sgd" or request.prox_mu or request.scaffold:
            raise ConfigError("record-level DP trains with plain DP-SGD: use fedavg-style local epochs, optimizer sgd")
        q = min(1.0, request.batch_size / self.num_train)
        per_round = dp_steps(request.local_epochs, q)
        if not self.dp:
            sigma = noise_multiplier_for(request.dp_epsilon, request.dp_delta, q, per_round * request.planned_rounds)
            self.dp = {"noise_multiplier": np.array([sigma]), "steps": np.array([0.0])}
        sigma, steps = float(self.dp["noise_multiplier"][0]), int(self.dp["steps"][0])
        if epsilon(sigma, q, steps + per_round, request.dp_delta) > request.dp_epsilon * (1 + 1e-9):
            raise BudgetExhausted(f"site '{self.site_id}' would exceed its privacy budget ε={request.dp_epsilon} "
                                  f"in round {request.round}; it stops training")
        return sigma, per_round

    def dp_spend(self, request: FitRequest, steps: int) -> None:
        """Count a trained round's DP-SGD steps in the site's accountant."""
        from fedcare.algorithms.accounting import epsilon

        q = min(1.0, request.batch_size / self.num_train)
        total = int(self.dp["steps"][0]) + steps
        self.dp["steps"] = np.array([float(total)])
        self.dp_spent = epsilon(float(self.dp["noise_multiplier"][0]), q, total, request.dp_delta)

    def evaluate(self, params: Params, splits: Sequence[Split]) -> dict[str, Metrics]:
        """Metrics of the given params on each named split this site holds (empty splits skipped)."""
        out: dict[str, Metrics] = {}
        for split in splits:
            if self.num_examples(split) == 0:
                continue
            outputs, targets = self.outputs(params, split)
            out[split] = self.task.metrics(outputs, targets)
        return out

    def calibration_bins(self, params: Params, split: Split = "test") -> dict | None:
        """A binary model's reliability bins and squared error on a split, as sums (so sites add up,
        learning/calibration.py); None for another task or a split with no rows."""
        if self.task.name != "binary" or self.num_examples(split) == 0:
            return None
        out, targets = self.outputs(params, split)
        p = torch.sigmoid(out.squeeze(-1)).double().numpy()
        y = np.asarray(targets["label"], dtype=np.float64)
        return {**reliability(y, p), "squares": float(np.sum((p - y) ** 2)), "rows": len(y)}

    def follow_up(self, split: Split = "train") -> float | None:
        """A survival site's longest follow-up time on a split (an aggregate: the common time grid of
        the baseline hazard is made from these, learning/baseline_hazard.py); None otherwise."""
        if self.task.name != "survival" or self.num_examples(split) == 0:
            return None
        return float(np.max(self._data[split].targets["time"]))

    def hazard_sums(self, params: Params, grid: Sequence[float], split: Split = "train") -> dict | None:
        """A survival site's per-interval events and at-risk sums of exp(risk) on the grid, on its
        training rows (sums, so sites add up to Breslow's baseline hazard, learning/baseline_hazard.py);
        None for another task or a split with no rows."""
        if self.task.name != "survival" or self.num_examples(split) == 0:
            return None
        out, targets = self.outputs(params, split)
        return baseline_hazard.site_sums(targets["time"], targets["event"], out.squeeze(-1).double().numpy(),
                                         np.asarray(grid, dtype=np.float64))

    def presence(self, split: Split) -> dict[str, np.ndarray]:
        """Which of a split's patients have each model input (True everywhere without a companion)."""
        data = self._data[split]
        return {n: array(data.examples, present_name(n)) > 0 if present_name(n) in data.inputs
                else np.ones(len(data), bool) for n in data.inputs if not n.endswith(PRESENT)}

    def outputs(self, params: Params, split: Split) -> tuple[torch.Tensor, Mapping[str, np.ndarray]]:
        """The model's raw outputs on a split's rows and their targets: what its metrics are made of
        (and the reliability bins of a classifier, which need more than one number per split)."""
        set_params(self.model, params)
        self.model.eval()
        data = self._data[split]
        with torch.no_grad():
            return torch.cat([self.model(inputs) for inputs, _, _ in data.chunks()]), data.targets
