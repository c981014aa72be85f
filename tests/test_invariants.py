"""DESIGN.md's invariants, checked on what really crosses a site boundary in a run."""

import json

import numpy as np
import pytest

import fedcare
from fedcare.core import serialization
from fedcare.transports import simulation


@pytest.fixture
def messages(monkeypatch):
    """Every blob the simulation transport puts on the 'wire', in both directions."""
    sent: list[tuple[str, bytes]] = []

    def record(kind, fn):
        def wrapper(*args, **kwargs):
            blob = fn(*args, **kwargs)
            sent.append((kind, blob))
            return blob
        return wrapper

    monkeypatch.setattr(simulation, "params_to_bytes", record("params", serialization.params_to_bytes))
    monkeypatch.setattr(simulation, "fit_reply_to_bytes", record("update", serialization.fit_reply_to_bytes))
    return sent


def test_only_params_counts_and_scalars_cross_the_boundary(messages, tmp_path):
    run = fedcare.simulate(rounds=3, baselines=False, out=str(tmp_path / "run"))
    like = run.global_params
    expected_values = sum(v.size for v in like.values())
    kinds = {k for k, _ in messages}
    assert kinds == {"params", "update"}
    for kind, blob in messages:
        arrays, meta = serialization.params_from_bytes(blob, like)  # names, shapes, dtypes must match the model
        assert sum(a.size for a in arrays.values()) == expected_values
        if kind == "params":
            assert meta == {}
        else:
            assert set(meta) == {"site_id", "num_examples", "metrics", "round"}
            assert isinstance(meta["num_examples"], int) and meta["round"] in (1, 2, 3)
            assert all(isinstance(v, float) for v in meta["metrics"].values())
        # the header is the only free-form part: it must stay small (no room for rows)
        header_len = int.from_bytes(blob[:8], "little")
        assert header_len < 1024, json.loads(blob[8:8 + header_len])


def test_no_pickle_in_the_package():
    import pathlib
    src = pathlib.Path(fedcare.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path


def test_simulation_is_bit_for_bit_deterministic(tmp_path):
    a = fedcare.simulate(rounds=4, baselines=False, seed=3, out=str(tmp_path / "a"))
    b = fedcare.simulate(rounds=4, baselines=False, seed=3, out=str(tmp_path / "b"))
    for name in a.global_params:
        assert np.array_equal(a.global_params[name], b.global_params[name])
