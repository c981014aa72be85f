"""Params validation and the wire format: safetensors + JSON, never pickle."""

import numpy as np
import pytest

from fedcare.core import ParamsError, Update, validate_params
from fedcare.core.serialization import (
    load_params,
    params_from_bytes,
    params_to_bytes,
    save_params,
    update_from_bytes,
    update_to_bytes,
)

LIKE = {"layer.weight": np.zeros((2, 3), np.float32), "layer.bias": np.zeros(2, np.float32)}


def test_roundtrip_keeps_order_values_and_metadata():
    params = {"layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "layer.bias": np.ones(2, np.float32)}
    out, meta = params_from_bytes(params_to_bytes(params, {"round": 3}), LIKE)
    assert list(out) == ["layer.weight", "layer.bias"]
    np.testing.assert_array_equal(out["layer.weight"], params["layer.weight"])
    assert meta == {"round": 3}


def test_update_roundtrip():
    u = Update("cleveland", {k: v + 1 for k, v in LIKE.items()}, 42, {"train_loss": 0.5})
    back = update_from_bytes(update_to_bytes(u), LIKE)
    assert (back.site_id, back.num_examples, back.metrics) == ("cleveland", 42, {"train_loss": 0.5})
    np.testing.assert_array_equal(back.grad["layer.bias"], np.ones(2, np.float32))


@pytest.mark.parametrize("bad, message", [
    ({"layer.weight": np.zeros((3, 2), np.float32), "layer.bias": np.zeros(2, np.float32)},
     "'layer.weight' has shape \\(3, 2\\); expected \\(2, 3\\)"),
    ({"layer.weight": np.zeros((2, 3), np.float64), "layer.bias": np.zeros(2, np.float32)},
     "'layer.weight' has dtype float64; expected float32"),
    ({"layer.weight": np.zeros((2, 3), np.float32)}, "lack array 'layer.bias'"),
    ({**LIKE, "extra": np.zeros(1, np.float32)}, "unexpected array 'extra'"),
    ({"layer.weight": np.zeros((2, 3), np.float32), "layer.bias": np.array([0, np.nan], np.float32)},
     "'layer.bias' holds NaN"),
    ({"layer.weight": np.zeros((2, 3), np.int32), "layer.bias": np.zeros(2, np.float32)},
     "'layer.weight' has dtype int32"),
])
def test_validation_names_the_offending_array(bad, message):
    with pytest.raises(ParamsError, match=message):
        validate_params(bad, LIKE)


def test_nan_is_refused_on_arrival_too():
    raw = LIKE | {"layer.bias": np.array([np.inf, 0], np.float32)}
    from safetensors.numpy import save
    with pytest.raises(ParamsError, match="'layer.bias' holds NaN or infinite"):
        params_from_bytes(save(raw), LIKE)


@pytest.mark.parametrize("blob", [b"", b"\x00" * 4, b"not safetensors at all", params_to_bytes(LIKE)[:-3],
                                  (10**9).to_bytes(8, "little") + b"{}"])
def test_corrupt_bytes_give_params_error(blob):
    with pytest.raises(ParamsError, match="not valid safetensors"):
        params_from_bytes(blob, LIKE)


def test_update_with_bad_metadata_is_refused():
    with pytest.raises(ParamsError, match="metadata is malformed"):
        update_from_bytes(params_to_bytes(LIKE, {"site_id": "a"}), LIKE)
    with pytest.raises(ParamsError, match="claims 0 examples"):
        update_from_bytes(params_to_bytes(LIKE, {"site_id": "a", "num_examples": 0}), LIKE)


def test_save_is_atomic_and_loads(tmp_path):
    path = tmp_path / "global.safetensors"
    save_params(path, LIKE, {"k": "v"})
    assert not list(tmp_path.glob("*.tmp"))
    params, meta = load_params(path, LIKE)
    assert meta == {"k": "v"} and list(params) == list(LIKE)


def test_core_layers_do_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, fedcare, fedcare.core, fedcare.algorithms, fedcare.federation, "
            "fedcare.core.serialization, fedcare.core.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
