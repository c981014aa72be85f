"""Sites trained together (`backend.batched`): the one place that decides which of a round's sites
train batched (learning/batched.py) and which in the loop, used alike by the in-process transport
and by a worker's shard, so both backends give the same updates."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from fedcare.core.config.backend import BackendSettings
from fedcare.core.errors import SiteDeclined
from fedcare.core.messages import FitRequest, Split, split_controls
from fedcare.core.params import Params
from fedcare.core.update import Update
from fedcare.learning.batched import (
    batchable,
    check_device,
    evaluate_together,
    train_private_together,
    train_together,
)
from fedcare.learning.site import LocalSite


class Together:
    """Trains the batchable sites of a round at once; the first time a site cannot, says why."""

    def __init__(self, backend: BackendSettings):
        check_device(backend.device)
        self._device, self._warned = backend.device, False

    def updates(self, received: Params, requests: Mapping[str, FitRequest], sites: Mapping) -> dict[str, Update]:
        """The updates of the sites that can train batched (honest ones, whose round allows it); the
        others are left to the caller's loop."""
        ready, why = {}, None
        for sid, request in requests.items():
            site = sites[sid]
            reason = (batchable(request, site.model, site.train_data) if isinstance(site, LocalSite)
                      else "a simulated attacker trains site by site")
            if reason is None:
                ready[sid] = site
            else:
                why = why or reason
        if why and not self._warned:
            warnings.warn(f"batched: some sites train one by one ({why})", stacklevel=1)
            self._warned = True
        if not ready:
            return {}
        first = next(iter(ready.values()))
        params, c = split_controls(received)  # SCAFFOLD's control/<name> arrays, beside the model
        mine = {sid: requests[sid] for sid in ready}
        if next(iter(mine.values())).dp_epsilon is not None:
            return self._private(first.model, params, mine, ready)
        scaffold = next(iter(mine.values())).scaffold
        fixes = {sid: s.scaffold_fixes(params, c, mine[sid]) for sid, s in ready.items()} if scaffold else None
        out = train_together(first.model, {sid: s.train_data for sid, s in ready.items()}, params, mine,
                             self._device, fixes)
        if scaffold:  # each site keeps its cᵢ⁺ and sends Δcᵢ, as in the loop
            out = {sid: ready[sid].scaffold_update(params, c, u.grad, u.metrics["train_loss"], mine[sid])
                   for sid, u in out.items()}
        return out

    def evaluate(self, received: Params, site_ids: Sequence[str], splits: Sequence[Split],
                 sites: Mapping) -> dict[str, dict]:
        """The metrics of the honest sites whose splits are in memory, judged together (every site
        judges the same params; learning/batched.evaluate_together); the others are left to the
        caller's loop. None together when the params do not cover the whole model (a site's kept
        layers would be missing from a shared forward)."""
        ready = {sid: sites[sid] for sid in site_ids if isinstance(sites[sid], LocalSite)}
        if not ready or not set(next(iter(ready.values())).model.state_dict()) <= set(received):
            return {}
        return evaluate_together(next(iter(ready.values())).model, received, ready, splits)

    def _private(self, model, params: Params, requests: Mapping[str, FitRequest], sites: Mapping) -> dict[str, Update]:
        """Record-level DP: each site's σ and steps from its own accountant (a site out of budget is
        left to the loop, which refuses it as it would have), its update, then its spending."""
        rounds = {}
        for sid, site in sites.items():
            try:
                rounds[sid] = site.dp_round(requests[sid])
            except SiteDeclined:
                continue
        if not rounds:
            return {}
        out = train_private_together(model, {sid: sites[sid].train_data for sid in rounds}, params,
                                     {sid: requests[sid] for sid in rounds}, {sid: r[0] for sid, r in rounds.items()},
                                     {sid: r[1] for sid, r in rounds.items()}, self._device)
        for sid, u in out.items():
            sites[sid].dp_spend(requests[sid], rounds[sid][1])
            out[sid] = Update(sid, u.grad, u.num_examples, {**u.metrics, "epsilon": sites[sid].dp_spent})
        return out
