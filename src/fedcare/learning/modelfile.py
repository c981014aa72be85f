"""A run's model file as a model you can use: `load_model` rebuilds the architecture from the file's
card (fedcare.data.modelcard), loads its arrays and scores a table of new patients, encoded with the
run's fitted preprocessing, exactly as the run evaluated its own rows. Nothing is unpickled: the
arrays are safetensors, the card JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedcare.core.errors import ConfigError, DataError, FedcareError
from fedcare.core.params import Params
from fedcare.core.serialization import load_params
from fedcare.data.modelcard import FORMAT, KEY, ModelCard
from fedcare.data.newrows import encode_rows
from fedcare.learning import baseline_hazard
from fedcare.learning.models import build_model, set_params
from fedcare.learning.tasks import Task, make_task

SCORED = ("binary", "multiclass", "regression", "survival")  # tasks whose outputs are one row per patient


@dataclass(frozen=True)
class LoadedModel:
    """A run's model, callable on a pandas DataFrame of new patients (the training table's feature
    columns; extra columns are ignored)."""

    path: Path
    task: Task
    card: ModelCard
    module: torch.nn.Module

    def inputs(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The rows encoded with the run's fitted preprocessing, one array per input."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"a model scores a pandas DataFrame of patients, not a {type(frame).__name__}")
        return encode_rows(frame, self.card.encoding)

    def raw(self, inputs: Mapping[str, np.ndarray]) -> torch.Tensor:
        """The model's raw outputs (logits, values, log relative hazards), as the run's evaluation has them."""
        self.module.eval()
        with torch.no_grad():
            return self.module({k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in inputs.items()})

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per patient: `probability:<class>` for every class and `predicted` (classifiers),
        `predicted` (regression) or `risk`, the log relative hazard, and (a card with the run's baseline
        hazard) `survival@<t>`, S(t | x) = exp(−H0(t)·exp(risk)) at each of its grid times (survival)."""
        out = self.raw(self.inputs(frame))
        table = pd.DataFrame(index=frame.index)
        classes = self.card.shape.classes
        if self.task.name in ("binary", "multiclass"):
            if self.task.name == "binary":  # what the binary metrics score, and their 0.5 threshold
                p1 = torch.sigmoid(out.squeeze(-1)).double().numpy()
                proba, picked = np.stack([1.0 - p1, p1], axis=1), (p1 >= 0.5).astype(np.int64)
            else:
                proba = torch.softmax(out.double(), dim=-1).numpy()
                picked = proba.argmax(axis=1)
            for k, name in enumerate(classes):
                table[f"probability:{name}"] = proba[:, k]
            table["predicted"] = [classes[k] for k in picked]
        elif self.task.name == "regression":
            table["predicted"] = out.squeeze(-1).double().numpy()
        else:
            table["risk"] = risk = out.squeeze(-1).double().numpy()
            baseline = self.card.baseline_hazard
            if baseline:
                curves = baseline_hazard.survival_curves(risk, baseline)
                for k, t in enumerate(baseline["times"]):
                    table[baseline_hazard.column(t)] = curves[:, k]
        return table


def load_model(path: str | Path) -> LoadedModel:
    """A run's model file (`global.safetensors`, `sites/<site>.safetensors`) as a callable model."""
    path = Path(path)
    if path.is_dir():
        path = path / "global.safetensors"
    if not path.is_file():
        raise ConfigError(f"no model file at '{path}'; give a run folder or one of its .safetensors files")
    try:
        params, meta = load_params(path)
    except FedcareError as exc:
        raise ConfigError(f"'{path}' is not a readable model file ({exc})") from None
    try:
        card = ModelCard.from_meta(meta)
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"'{path}' is not a model file this fedcare version reads (no '{KEY}' card in "
                          f"{FORMAT} format); it was written by another program or an older run") from None
    shape = card.shape
    if shape.task not in SCORED:
        raise ConfigError(f"scoring new patients covers {', '.join(SCORED)} models; this one is {shape.task}")
    task = make_task(shape)
    module = build_model(card.spec, shape.inputs, task)
    _load_into(module, params, path)
    return LoadedModel(path, task, card, module)


def _load_into(module: torch.nn.Module, params: Params, path: Path) -> None:
    expected = {k for k, v in module.state_dict().items() if v.is_floating_point()}
    if set(params) != expected:
        odd = min(set(params) ^ expected)
        raise ConfigError(f"'{path}' does not match the architecture it describes (tensor '{odd}'); the file is damaged")
    for k, v in params.items():
        if tuple(module.state_dict()[k].shape) != tuple(np.shape(v)):
            raise ConfigError(f"'{path}': tensor '{k}' has shape {tuple(np.shape(v))}, its architecture "
                              f"{tuple(module.state_dict()[k].shape)}; the file is damaged")
    set_params(module, params)
