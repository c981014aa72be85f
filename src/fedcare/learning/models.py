"""The model zoo (linear/logistic, MLP) and the bridge between torch modules and Params.

A model is named declaratively (a ModelSpec, the config's model section) so the coordinator can send
it to a site as data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedcare.core.config import ModelSpec
from fedcare.core.errors import ConfigError
from fedcare.core.params import Params

ModelFactory = Callable[[int, int], nn.Module]
"""A user's own model: (num_features, num_outputs) -> torch.nn.Module."""


def build_model(spec: ModelSpec, num_features: int, num_outputs: int) -> nn.Module:
    """The model a ModelSpec names: linear (= logistic), or an MLP with optional batch norm
    (Linear → BatchNorm → ReLU per hidden layer: what FedBN keeps local)."""
    if spec.name in ("linear", "logistic"):
        return nn.Linear(num_features, num_outputs)
    if spec.name == "mlp":
        layers: list[nn.Module] = []
        width = num_features
        for h in spec.hidden:
            layers += [nn.Linear(width, h), *([nn.BatchNorm1d(h)] if spec.batch_norm else []), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_outputs))
        return nn.Sequential(*layers)
    raise ConfigError(f"unknown model '{spec.name}'; choose linear, logistic or mlp")


def initial_model(factory: ModelFactory, num_features: int, num_outputs: int, seed: int) -> nn.Module:
    """Build a model with weights drawn from a seeded generator (same seed, same start everywhere)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(num_features, num_outputs)


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
