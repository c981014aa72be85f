"""Bytes for params and updates: safetensors for arrays, JSON in its metadata for the rest.

Nothing is ever unpickled: safetensors holds only raw tensors and a JSON header, and everything read
is validated against the expected params before use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from fedcare.core.errors import ParamsError
from fedcare.core.params import Params, validate_params
from fedcare.core.update import Update

_META_KEY = "fedcare"


def params_to_bytes(params: Mapping[str, np.ndarray], meta: Mapping[str, object] | None = None) -> bytes:
    validate_params(params)
    header = {_META_KEY: json.dumps(dict(meta or {}), sort_keys=True)}
    return save({k: np.ascontiguousarray(v) for k, v in params.items()}, metadata=header)


def params_from_bytes(data: bytes, like: Mapping[str, np.ndarray] | None = None,
                      what: str = "params") -> tuple[Params, dict]:
    """Decode and validate; the returned order follows `like` when given (the model's order)."""
    try:
        arrays = load(bytes(data))
        header = _read_metadata(data)
    except (SafetensorError, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{what} are not valid safetensors bytes ({exc})") from None
    validate_params(arrays, like, what)
    if like is not None:
        arrays = {k: arrays[k] for k in like}
    return arrays, header


def _read_metadata(data: bytes) -> dict:
    if len(data) < 8:
        raise ValueError("too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length beyond the data")
    meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    raw = meta.get(_META_KEY, "{}")
    out = json.loads(raw)
    if not isinstance(out, dict):
        raise ValueError("metadata is not a JSON object")
    return out


def update_to_bytes(update: Update) -> bytes:
    meta = {"site_id": update.site_id, "num_examples": update.num_examples, "metrics": update.metrics}
    return params_to_bytes(update.grad, meta)


def update_from_bytes(data: bytes, like: Mapping[str, np.ndarray]) -> Update:
    grad, meta = params_from_bytes(data, like, what="update")
    try:
        site_id = str(meta["site_id"])
        num_examples = int(meta["num_examples"])
        metrics = {str(k): float(v) for k, v in dict(meta.get("metrics", {})).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ParamsError(f"update metadata is malformed ({exc})") from None
    if num_examples <= 0:
        raise ParamsError(f"update from '{site_id}' claims {num_examples} examples; it must be > 0")
    return Update(site_id, grad, num_examples, metrics)


def save_params(path: str | Path, params: Mapping[str, np.ndarray], meta: Mapping[str, object] | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written model."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(params_to_bytes(params, meta))
    tmp.replace(path)


def load_params(path: str | Path, like: Mapping[str, np.ndarray] | None = None) -> tuple[Params, dict]:
    return params_from_bytes(Path(path).read_bytes(), like, what=f"params in {path}")
