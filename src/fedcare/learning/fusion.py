"""Fusion models: one encoder per input kind and a fusion head, so one model serves patients with any
subset of inputs (`model: fusion`, docs/multimodal.md).

A patient may lack an input: the data layer fills it with zeros and adds `"<input>.present"` (1.0
where the patient has it); an input without that companion is present for everyone. An encoder runs
on the rows that have its input only, so an absent input changes neither the output nor the
encoder's gradient, nor its batch-norm statistics.

  late          (default) the SUM of each present input's own prediction (its encoder then a linear
                layer), each times a learned scale (`head.scale`, from 1). Summed, not averaged: weights
                that sum to 1 over three inputs cut each encoder's gradient to about a third, and the
                inputs carry separate effects that add up.
  intermediate  each encoder's embedding, zeroed where the input is absent, beside the mask of
                present inputs, into one linear head (`head.weight`, `head.bias`).

Parameter names start with the input (`encoders.omics.…`) or `head.`, so FedPer keeps the fusion
head at the site, FedBN the CNN's batch norm, and the coordinator averages an encoder over the
sites that trained it (fedcare.algorithms.modalities). Encoders:
  vector (tabular) the MLP of `hidden` (Linear → ReLU per layer);
  omics            p ≫ n: dropout on the genes, then a narrow linear layer (OMICS_WIDTH) with its own
                   L2 penalty (OMICS_DECAY, for the patients in the batch that have the input);
  image            the image encoder of fedcare.learning.imagemodels (`image_model`, default cnn), then
                   dropout on its features (IMAGE_DROPOUT) and an L2 penalty on its weights
                   (IMAGE_DECAY): a CNN memorises a few hundred training images and would otherwise
                   take over the fused prediction.
Modality dropout (`modality_dropout: p`) hides each present input of a training patient with chance
p, keeping at least one, so the model learns to answer from any subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from fedcare.core.config import ModelSpec
from fedcare.core.errors import ConfigError
from fedcare.data.dataset import InputShape
from fedcare.data.examples import Examples
from fedcare.data.inputs import input_kind
from fedcare.learning.imagemodels import FEATURES, image_encoder
from fedcare.learning.tasks import Task

PRESENT = ".present"
OMICS_WIDTH = 8
OMICS_DROPOUT = 0.5
OMICS_DECAY = 1e-2
IMAGE_DROPOUT = 0.5
IMAGE_DECAY = 2.5e-2


def present_name(input_name: str) -> str:
    """The companion array that says which patients have `input_name`."""
    return input_name + PRESENT


def with_presence(examples: Examples, inputs: Sequence[str]) -> list[str]:
    """The inputs a model takes, each followed by its presence companion when the examples have one."""
    return [m for n in inputs for m in (n, present_name(n)) if m == n or m in examples.names]


def presence(batch: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    """1.0 for the rows of `batch` that have input `name` (every row, without a companion)."""
    mask = batch.get(present_name(name))
    return torch.ones(len(batch[name])) if mask is None else mask.reshape(-1)


def _encoder(spec: ModelSpec, shape: InputShape) -> tuple[nn.Module, int]:
    """An input's encoder and the width of what it gives the head."""
    encoder = input_kind(shape.kind).encoder
    if encoder == "image":
        return nn.Sequential(image_encoder(spec.image_model or "cnn", shape), nn.Dropout(IMAGE_DROPOUT)), FEATURES
    if encoder != "vector":
        raise ConfigError(f"model fusion has no encoder for input kind '{shape.kind}'")
    width = shape.shape[0]
    if shape.kind == "omics":
        return nn.Sequential(nn.Dropout(OMICS_DROPOUT), nn.Linear(width, OMICS_WIDTH), nn.ReLU()), OMICS_WIDTH
    layers: list[nn.Module] = []
    for h in spec.hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers), width


class Scales(nn.Module):
    """Late fusion's learned scale per input's prediction (not normalised: the predictions add up)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(count))


def _decayed(kind: str, encoder: nn.Module) -> tuple[float, list[nn.Parameter]]:
    """The L2 strength and the weights it applies to, for an input kind's encoder (none for tabular)."""
    if kind == "omics":
        return OMICS_DECAY, [encoder[1].weight]
    if input_kind(kind).encoder == "image":
        return IMAGE_DECAY, [p for p in encoder.parameters() if p.dim() > 1]  # not biases nor batch norm
    return 0.0, []


class FusionModel(nn.Module):
    def __init__(self, spec: ModelSpec, inputs: Mapping[str, InputShape], task: Task) -> None:
        super().__init__()
        if spec.batch_norm:
            raise ConfigError("model fusion's vector encoders have no batch norm (the CNN has its own); "
                              "drop batch_norm")
        self.mode = spec.fusion or "late"  # chosen on validation rows (RESULTS.md §16)
        self.dropout = spec.modality_dropout
        self.names = tuple(inputs)
        self.kinds = {name: inputs[name].kind for name in self.names}
        built = {name: _encoder(spec, shape) for name, shape in inputs.items()}
        if self.mode == "late":
            self.encoders = nn.ModuleDict({n: nn.Sequential(enc, nn.Linear(w, task.num_outputs))
                                           for n, (enc, w) in built.items()})
            self.widths = {n: task.num_outputs for n in self.names}
            self.head: nn.Module = Scales(len(self.names))
        else:
            self.encoders = nn.ModuleDict({n: enc for n, (enc, _) in built.items()})
            self.widths = {n: w for n, (_, w) in built.items()}
            self.head = nn.Linear(sum(self.widths.values()) + len(self.names), task.num_outputs)
        self._l2 = {n: d for n, (enc, _) in built.items() if (d := _decayed(self.kinds[n], enc))[1]}  # not registered twice
        self._decay: torch.Tensor | float = 0.0

    def masks(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(rows, inputs): 1.0 where a row has an input, after modality dropout in training."""
        m = torch.stack([presence(batch, n) for n in self.names], dim=1).float()
        if self.training and self.dropout > 0:
            kept = m * (torch.rand(m.shape) >= self.dropout).float()
            m = torch.where((kept.sum(1, keepdim=True) == 0) & (m.sum(1, keepdim=True) > 0), m, kept)
        return m

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        m = self.masks(batch)
        rows = m.shape[0]
        parts, decay = [], 0.0
        for i, name in enumerate(self.names):
            out = torch.zeros(rows, self.widths[name])
            index = torch.nonzero(m[:, i]).reshape(-1)
            if len(index):  # the encoder sees only the rows that have its input
                out = out.index_copy(0, index, self.encoders[name](batch[name][index]))
                if name in self._l2:
                    strength, weights = self._l2[name]
                    decay = decay + strength * len(index) / rows * sum(w.pow(2).sum() for w in weights)
            parts.append(out)
        self._decay = decay
        if self.mode == "intermediate":
            return self.head(torch.cat([*parts, m], dim=1))
        return self.late(parts, m)

    def late(self, parts: Sequence[torch.Tensor], m: torch.Tensor) -> torch.Tensor:
        """Late fusion: each input's prediction times its scale, summed over the inputs present."""
        weights = m * self.head.scale  # an absent input adds nothing; a row with no input answers 0
        return sum(weights[:, i:i + 1] * parts[i] for i in range(len(self.names)))

    def penalty(self) -> torch.Tensor | float:
        """The last forward pass's regularisation (the omics and image encoders' L2, each for the share of
        the batch that has the input), added to the training loss."""
        return self._decay
