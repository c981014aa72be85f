"""The model section: the encoder of the patients' vector inputs (tabular, omics), declared as data
so the coordinator can send it to a site."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from fedcare.core.config.base import Section, one_or_many

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig


class ModelSpec(Section):
    name: Literal["linear", "logistic", "mlp", "fusion"] = Field(
        "linear", alias="model", description="logistic = linear with a sigmoid/softmax loss; fusion = one encoder "
                                             "per input and a fusion head (docs/multimodal.md)")
    hidden: tuple[int, ...] = (32,)
    batch_norm: bool = Field(False, description="MLP with batch norm after each hidden layer (for fedbn)")
    image_model: Literal["cnn", "densenet121", "resnet18", "unet", "basicunet"] | None = Field(
        None, description="the network of image inputs (default: cnn; unet for segmentation)")
    fusion: Literal["late", "intermediate"] | None = Field(
        None, description="model fusion: late (default: each input's prediction, summed with learned scales) "
                          "or intermediate (embeddings and the mask of present inputs into one head)")
    modality_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="model fusion: chance of hiding each present "
                                                                     "input of a training patient (one always stays)")

    @field_validator("hidden", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return one_or_many(v)

    def check(self, config: FederationConfig) -> None:
        if self.name != "fusion" and (self.fusion is not None or self.modality_dropout):
            raise ValueError("fusion and modality_dropout apply to model fusion; add model: fusion or drop them")
