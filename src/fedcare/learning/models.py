"""Models from parts: an encoder for the patients' inputs and a head for the task, and the bridge
between torch modules and Params.

A model takes a batch's named inputs (a mapping name -> tensor). The vector inputs (tabular, omics:
each kind's default encoder is "vector") are fused early: put side by side in the data's order and
encoded together by the ModelSpec's encoder (nothing for linear, hidden layers for mlp), then the
task's head maps the encoding to the task's outputs. The result is plain torch layers fed from the
mapping, so its parameter names are those of the layers (`weight`, `bias`; `0.weight`, ...).
A model is named declaratively (a ModelSpec, the config's model section) so the coordinator can
send it to a site as data; a user's own factory receives the input shapes and the task instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fedcare.core.config import ModelSpec
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params
from fedcare.data.dataset import InputShape
from fedcare.data.inputs import input_kind
from fedcare.learning.imagemodels import build_image_model
from fedcare.learning.tasks import Task

ModelFactory = Callable[[Mapping[str, InputShape], Task], nn.Module]
"""A user's own model: (the input shapes by name, the task) -> a torch.nn.Module whose forward takes
the batch's inputs as a mapping name -> tensor and returns the task's `num_outputs` per patient."""


def vector(batch: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """The vector inputs side by side (early fusion), in the data's order."""
    return batch[names[0]] if len(names) == 1 else torch.cat([batch[n] for n in names], dim=-1)


class LinearModel(nn.Linear):
    """A linear model of the vector inputs: no encoder, the task's head alone."""

    def __init__(self, inputs: Sequence[str], in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.inputs = tuple(inputs)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(vector(batch, self.inputs))


class StackModel(nn.Sequential):
    """The encoder's layers, then the task's head, applied in turn to the vector inputs."""

    def __init__(self, inputs: Sequence[str], *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.inputs = tuple(inputs)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(vector(batch, self.inputs))


def encoder_layers(spec: ModelSpec, width: int) -> tuple[list[nn.Module], int]:
    """The ModelSpec's encoder of `width` fused features, and the width it hands the head:
    nothing for linear (= logistic); per hidden layer Linear → (BatchNorm →) ReLU for mlp, the batch
    norm being what FedBN keeps local."""
    if spec.name in ("linear", "logistic"):
        return [], width
    if spec.name == "mlp":
        layers: list[nn.Module] = []
        for h in spec.hidden:
            layers += [nn.Linear(width, h), *([nn.BatchNorm1d(h)] if spec.batch_norm else []), nn.ReLU()]
            width = h
        return layers, width
    raise ConfigError(f"unknown model '{spec.name}'; choose linear, logistic or mlp")


def build_model(spec: ModelSpec, inputs: Mapping[str, InputShape], task: Task) -> nn.Module:
    """The model a ModelSpec names for these inputs and this task."""
    if spec.name == "fusion":
        from fedcare.learning.fusion import FusionModel

        return FusionModel(spec, inputs, task)
    other = [name for name, shape in inputs.items() if input_kind(shape.kind).encoder != "vector"]
    images = [name for name in other if input_kind(inputs[name].kind).encoder == "image"]
    if images and len(images) == len(other):
        return build_image_model(spec, inputs, task, images, encoder_layers)
    if spec.image_model is not None:
        raise ConfigError(f"image_model '{spec.image_model}' needs an image input, and this data has none")
    if other:
        raise ConfigError(f"input '{other[0]}' needs the '{input_kind(inputs[other[0]].kind).encoder}' encoder, "
                          "which the linear and mlp models do not have")
    names = list(inputs)
    width = sum(inputs[n].shape[0] for n in names)
    layers, width = encoder_layers(spec, width)
    if not layers:
        return LinearModel(names, width, task.num_outputs)
    return StackModel(names, *layers, nn.Linear(width, task.num_outputs))


def initial_model(factory: ModelFactory, inputs: Mapping[str, InputShape], task: Task, seed: int) -> nn.Module:
    """Build a model with weights drawn from a seeded generator (same seed, same start everywhere)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # models are built on the CPU (and cheaper than torch.manual_seed)
        return factory(inputs, task)


def get_params(module: nn.Module) -> Params:
    """Floating-point state (weights and float buffers such as batch-norm statistics), as numpy."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
            if v.is_floating_point()}


def head_names(module: nn.Module) -> frozenset[str]:
    """State names of the last layer that has parameters: the 'head' FedPer and FedRep keep local."""
    last = ""
    for name, sub in module.named_modules():
        if any(True for _ in sub.parameters(recurse=False)):
            last = name
    prefix = f"{last}." if last else ""
    return frozenset(f"{prefix}{k}" for k, v in (module.get_submodule(last) if last else module)
                     .state_dict().items() if v.is_floating_point() and "." not in k)


def batch_norm_names(module: nn.Module) -> frozenset[str]:
    """State names of every batch-norm layer (weights and running statistics): what FedBN keeps local."""
    names = set()
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            names |= {f"{name}.{k}" for k, v in sub.state_dict().items() if v.is_floating_point()}
    return frozenset(names)


def set_params(module: nn.Module, params: Params) -> None:
    """Load params into the module in place (no reallocation: this runs every round)."""
    state = module.state_dict()
    with torch.no_grad():
        for k, v in params.items():
            v = np.asarray(v)
            state[k].copy_(torch.from_numpy(v if v.flags.writeable else v.copy()))  # received params are read-only views
