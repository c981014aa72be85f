"""The model section: the encoder of the patients' vector inputs (tabular, omics), declared as data
so the coordinator can send it to a site."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fedcare.core.config.base import Section, one_or_many


class ModelSpec(Section):
    name: Literal["linear", "logistic", "mlp"] = Field("linear", alias="model",
                                                        description="logistic = linear with a sigmoid/softmax loss")
    hidden: tuple[int, ...] = (32,)
    batch_norm: bool = Field(False, description="MLP with batch norm after each hidden layer (for fedbn)")
    image_model: Literal["cnn", "densenet121", "resnet18", "unet", "basicunet"] | None = Field(
        None, description="the network of image inputs (default: cnn; unet for segmentation)")

    @field_validator("hidden", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return one_or_many(v)
