"""Params: the model state as an ordered mapping name -> numpy array, framework-free.

Arithmetic helpers keep the order of names so that flattening and serialization are stable.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedcare.core.errors import ParamsError

Params = dict[str, np.ndarray]

ALLOWED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


_FINITE_CHUNK = 1 << 20


def all_finite(arr: np.ndarray) -> bool:
    """np.isfinite in slices, so a huge array never needs a same-size temporary."""
    flat = arr.reshape(-1)
    return all(bool(np.isfinite(flat[i:i + _FINITE_CHUNK]).all()) for i in range(0, flat.size, _FINITE_CHUNK))


def validate_params(params: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray] | None = None,
                    what: str = "params", finite: bool = True) -> None:
    """Check names, shapes, dtypes and (unless finite=False) finiteness; with `like`, require the
    same names/shapes/dtypes.

    The error names the offending array, because a site's operator must find it in their model.
    """
    if not isinstance(params, Mapping) or not params:
        raise ParamsError(f"{what} must be a non-empty mapping of name -> array")
    if like is not None:
        missing = [k for k in like if k not in params]
        extra = [k for k in params if k not in like]
        if missing:
            raise ParamsError(f"{what} lack array '{missing[0]}' (expected {len(like)} arrays)")
        if extra:
            raise ParamsError(f"{what} hold unexpected array '{extra[0]}'")
    for name, arr in params.items():
        if not isinstance(name, str) or not name:
            raise ParamsError(f"{what} have an array with an empty or non-string name")
        if not isinstance(arr, np.ndarray):
            raise ParamsError(f"{what} array '{name}' is a {type(arr).__name__}, not a numpy array")
        if arr.dtype not in ALLOWED_DTYPES:
            raise ParamsError(f"{what} array '{name}' has dtype {arr.dtype}; expected float32 or float64")
        if like is not None:
            ref = like[name]
            if arr.shape != ref.shape:
                raise ParamsError(f"{what} array '{name}' has shape {arr.shape}; expected {ref.shape}")
            if arr.dtype != ref.dtype:
                raise ParamsError(f"{what} array '{name}' has dtype {arr.dtype}; expected {ref.dtype}")
        if finite and not all_finite(arr):
            raise ParamsError(f"{what} array '{name}' holds NaN or infinite values")


def zeros_like(params: Mapping[str, np.ndarray]) -> Params:
    return {k: np.zeros_like(v) for k, v in params.items()}


def copy(params: Mapping[str, np.ndarray]) -> Params:
    return {k: np.array(v, copy=True) for k, v in params.items()}
