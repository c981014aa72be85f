"""A run's model for serving outside fedcare: TorchScript (torch.jit.trace) or ONNX (torch's
exporter). The exported graph takes each input's encoded array (float32, one row per patient, in
the card's input order) and returns what `fedcare predict` writes: class probabilities for a
classifier, the value for regression, the log relative hazard for survival. Encoding a raw table
stays with fedcare (`load_model`): the card in the model file says how."""

from __future__ import annotations

from pathlib import Path

import torch

from fedcare.core.errors import ConfigError
from fedcare.learning.modelfile import LoadedModel

FORMATS = ("onnx", "torchscript")


class Scorer(torch.nn.Module):
    """The model with its inputs as positional tensors and the task's output function applied."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.model, self.names, self.task = model.module, list(model.card.shape.inputs), model.task.name

    def forward(self, *arrays: torch.Tensor) -> torch.Tensor:
        out = self.model(dict(zip(self.names, arrays)))
        if self.task == "binary":
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=-1)
        if self.task == "multiclass":
            return torch.softmax(out, dim=-1)
        return out


def export_model(model: LoadedModel, fmt: str, target: Path) -> Path:
    """Write the model in `fmt` to `target`; image models and unknown formats are refused in one line."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; choose {' or '.join(FORMATS)}")
    kinds = {s.kind for s in model.card.shape.inputs.values()}
    if not kinds <= {"tabular", "omics"}:
        raise ConfigError(f"export covers models of table inputs (tabular, omics); this one takes "
                          f"{', '.join(sorted(kinds - {'tabular', 'omics'}))}")
    scorer = Scorer(model).eval()
    example = tuple(torch.zeros((2, *s.shape)) for s in model.card.shape.inputs.values())
    names = list(model.card.shape.inputs)
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(scorer, example), str(target))
        else:
            batch = torch.export.Dim("patients")
            torch.onnx.export(scorer, example, str(target), input_names=names, output_names=["output"],
                              dynamic_shapes=(tuple({0: batch} for _ in names),), dynamo=True, verbose=False)
    return target
