"""What the coordinator asks of a site: declarative, JSON-able instructions, never code."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

SiteMode = Literal["gradient", "local_epochs"]
Personalization = Literal["none", "finetune", "fedper", "fedrep", "fedbn", "ditto"]
Split = Literal["train", "val", "test"]

CONTROL_PREFIX = "control/"
"""Extra arrays that travel beside the params are named `control/<param name>`: SCAFFOLD's server
control variate c in the broadcast, and a site's control delta Δcᵢ in its update."""


def control_name(name: str) -> str:
    return CONTROL_PREFIX + name


def split_controls(arrays: dict) -> tuple[dict, dict]:
    """(model arrays, {param name: control array}) from a received message's arrays."""
    model = {k: v for k, v in arrays.items() if not k.startswith(CONTROL_PREFIX)}
    controls = {k[len(CONTROL_PREFIX):]: v for k, v in arrays.items() if k.startswith(CONTROL_PREFIX)}
    return model, controls


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
    scaffold: bool = False  # SCAFFOLD: correct each local SGD step by c − cᵢ; return Δcᵢ as control/<name>
    dp_epsilon: float | None = None  # record-level DP: the site's budget for the whole run (None = off)
    dp_delta: float = 1e-5
    dp_clip: float = 1.0  # per-patient gradient norm bound C
    planned_rounds: int = 0  # rounds the budget must cover (the site calibrates its noise to them)
    compress: str = "none"  # how the update travels (core/compression.py); the site compresses after training
    error_feedback: bool = False  # the site adds what compression left out of its last update to this one
    skip: tuple[str, ...] = ()  # name prefixes this site neither receives nor sends (an input it lacks)

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip", tuple(self.skip))  # JSON gives a list

    def to_json(self) -> dict:
        return asdict(self)


def scoped(message: dict, skip: tuple[str, ...]) -> dict:
    """The part of a message a site with this `skip` receives and answers with."""
    return {k: v for k, v in message.items() if not k.startswith(skip)} if skip else message
