"""A trained model's expected outcome for given rows: the probability of the positive class for a
binary task, the value itself for a continuous one (what treatment-effect learners compare)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.learning.models import set_params


def expected_outcome(model: torch.nn.Module, params: Params, inputs: Mapping[str, np.ndarray], task: str) -> np.ndarray:
    """E[y | inputs] under `params`, float64, one value per row."""
    if task not in ("binary", "regression"):
        raise ConfigError(f"expected outcomes need a binary or continuous label, not a {task} one")
    set_params(model, params)
    model.eval()
    with torch.no_grad():
        out = model({k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in inputs.items()})
    out = out.squeeze(-1).double()
    return (torch.sigmoid(out) if task == "binary" else out).numpy()
