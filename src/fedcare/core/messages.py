"""What the coordinator asks of a site: declarative, JSON-able instructions, never code."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

SiteMode = Literal["gradient", "local_epochs"]
Personalization = Literal["none", "finetune", "fedper", "fedrep", "fedbn", "ditto"]
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class FitRequest:
    """One round's local work: the mode and hyperparameters; the global params travel beside it."""

    round: int
    mode: SiteMode
    local_epochs: int
    lr: float
    batch_size: int
    optimizer: Literal["sgd", "adam"]
    seed: int
    prox_mu: float = 0.0  # FedProx: weight of the proximal term μ/2·‖θ − θ_global‖² (0 = plain local training)
    personalization: Personalization = "none"  # what the site keeps for itself (see learning/site.py)
    ditto_lambda: float = 0.1  # Ditto: pull of the personal model towards the global one

    def to_json(self) -> dict:
        return asdict(self)
