"""Update: what a site sends back after a round. Params-shaped arrays, a count and scalars; never rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedcare.core.params import Params


@dataclass(frozen=True)
class Update:
    """One site's contribution to a round.

    `grad` is a descent direction: the gradient of the local loss (fedsgd) or, after several local
    steps, the pseudo-gradient θ_global − θ_local (fedavg). The coordinator always *descends* along
    the aggregate, so one server optimizer serves both (sgd with lr 1.0 on θ_global − θ_local gives
    back the mean of the local models: plain FedAvg).
    """

    site_id: str
    grad: Params
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
