"""The training section: how a site trains locally each round."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedcare.core.config.base import Section


class TrainingSettings(Section):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(16, ge=1)
    local_epochs: int = Field(1, ge=1)
    threads: int = Field(1, ge=1, description="PyTorch threads for local training; 1 suits tabular models "
                         "(more threads on tiny matrices only wait on each other), raise it for imaging")
