"""The personalization section: what each site keeps or adapts for its own patients."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from fedcare.core.config.base import Section

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class PersonalizationSettings(Section):
    mode: Literal["none", "finetune", "fedper", "fedrep", "fedbn", "ditto"] = Field(
        "none", alias="personalization", description="what each site keeps or adapts for its own patients")
    ditto_lambda: float = Field(0.1, ge=0, description="Ditto: pull of the personal model towards the global one")
    finetune_epochs: int = Field(5, ge=1, description="epochs of local fine-tuning (personalization finetune)")

    def check(self, config: FederationConfig) -> None:
        images = config.data.has_images or config.model.image_model  # image models: batch norm, checked by the plan
        if self.mode == "fedbn" and not images and not (config.model.name == "mlp" and config.model.batch_norm):
            raise ValueError("personalization fedbn keeps batch-norm layers local: use model mlp with batch_norm")
