"""What a run's model file says about itself, as JSON in its safetensors metadata: the architecture
(the ModelSpec and each input's shape), the task and class names, the label, and each input's fitted
preprocessing. The run folder writes it; `fedcare.learning.modelfile` reads it back (no torch here,
so the coordinator's writer stays light)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedcare.core.config.model import ModelSpec
from fedcare.data.dataset import DataShape

FORMAT = "fedcare-model/1"
KEY = "model"  # the metadata entry that holds the card


@dataclass(frozen=True)
class ModelCard:
    spec: ModelSpec
    shape: DataShape
    label: Mapping[str, Any]     # the label's column, task and classes (summary.json's preprocessing.label)
    encoding: Mapping[str, Any]  # each input's fitted preprocessing (transform_to_json and the like)
    # a survival run's Breslow cumulative baseline hazard: {"times": [...], "cumulative_hazard": [...]}
    # (learning/baseline_hazard.py); None where the run did not collect it (a networked run, another task)
    baseline_hazard: Mapping[str, Any] | None = None

    def to_meta(self) -> dict[str, Any]:
        return {KEY: {"format": FORMAT, "spec": self.spec.model_dump(mode="json", by_alias=True),
                      "shape": self.shape.to_json(features=True), "label": dict(self.label),
                      "encoding": dict(self.encoding),
                      **({"baseline_hazard": dict(self.baseline_hazard)} if self.baseline_hazard else {})}}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ModelCard:
        """Raises KeyError, TypeError or ValueError for a file without a card this version reads."""
        m = meta[KEY]
        if m["format"] != FORMAT:
            raise ValueError(f"format {m['format']!r}")
        return cls(ModelSpec.model_validate(m["spec"]), DataShape.from_json(m["shape"]), dict(m["label"]),
                   dict(m["encoding"]), m.get("baseline_hazard"))


def model_card(spec: ModelSpec, shape: DataShape, preprocessing: Mapping[str, Any],
               baseline_hazard: Mapping[str, Any] | None = None) -> ModelCard:
    """A run's card, from its model section, its data's shape, summary.json's preprocessing block and
    (a simulated survival run's global model) its baseline hazard."""
    return ModelCard(spec, shape, dict(preprocessing.get("label", {})), dict(preprocessing.get("encoding", {})),
                     baseline_hazard)
