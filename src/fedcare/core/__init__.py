"""Core layer: params, updates, serialization, errors and config models. Imports numpy, never torch."""

from fedcare.core.errors import ConfigError, DataError, FedcareError, ParamsError
from fedcare.core.params import Params, validate_params
from fedcare.core.update import Update

__all__ = [
    "ConfigError",
    "DataError",
    "FedcareError",
    "Params",
    "ParamsError",
    "Update",
    "validate_params",
]
