"""Cox proportional-hazards loss in torch: the negative partial log-likelihood, Breslow ties.

For patients sorted by time, each observed event i contributes

    risk_i - log( sum_{j : time_j >= time_i} exp(risk_j) )

to the log partial likelihood. Breslow's approximation gives every patient tied at an event time
the same risk set: all patients with time >= that time. The loss is minus the sum over events,
divided by the number of events, so it does not grow with the batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cox_loss(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Mean negative Cox partial log-likelihood over the events in the batch (0 with no event).

    risk: (n,) model outputs (log relative hazard); time: (n,) > 0; event: (n,) 1 = event, 0 = censored.
    Differentiable in `risk`. Stable for large risks: the risk-set sums are taken with a cumulative
    log-sum-exp over the patients sorted by time, longest first.
    """
    risk = risk.reshape(-1)
    time = time.reshape(-1).to(risk.dtype)
    event = event.reshape(-1).to(risk.dtype)
    n_events = event.sum()
    if risk.numel() == 0 or float(n_events) == 0.0:
        return risk.sum() * 0.0  # keeps the graph, so backward() still works on an event-free batch
    order = torch.argsort(time, descending=True, stable=True)
    risk_s, time_s, event_s = risk[order], time[order], event[order]
    # log sum_{j <= k} exp(risk_j) in descending-time order = log-sum over times >= time_k ...
    log_cum = torch.logcumsumexp(risk_s, dim=0)
    # ... and for ties the risk set runs to the last patient of the tie group (all with time >= t).
    _, counts = torch.unique_consecutive(time_s, return_counts=True)
    group_end = torch.cumsum(counts, dim=0) - 1
    log_risk_set = log_cum[torch.repeat_interleave(group_end, counts)]
    return -((risk_s - log_risk_set) * event_s).sum() / n_events
