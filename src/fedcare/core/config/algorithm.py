"""The algorithm section: the federated algorithm, its rounds, which sites train and how the
coordinator weighs and steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from fedcare.core.config.base import Section

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class AlgorithmSettings(Section):
    name: str = Field("fedavg", alias="algorithm")
    rounds: int = Field(50, ge=1)
    server_lr: float | None = Field(None, gt=0, description="server learning rate (default: 1.0 for fedavg, "
                                     "fedprox and cyclic; 0.01 for fedadam, fedyogi, fedadagrad; at most 0.1 "
                                     "under site-level DP)")
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal weight μ")
    server_momentum: float = Field(0.0, ge=0, lt=1)
    weighting: Literal["examples", "uniform"] = "examples"
    site_weights: dict[str, float] = Field(default_factory=dict)
    fraction: float = Field(1.0, gt=0, le=1, description="share of sites selected each round")
    min_sites: int = Field(1, ge=1)
    patience: int | None = Field(None, ge=1, description="stop when the validation metric has not improved for "
                                 "this many rounds")

    def check(self, config: FederationConfig) -> None:
        if self.patience is not None and config.data.val_fraction == 0:
            raise ValueError("patience needs a validation split: set val_fraction > 0 (e.g. 0.2)")
