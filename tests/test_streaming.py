"""Streaming the coordinator's side: zero-copy strict decoding and an O(model) weighted mean."""

import json
import tracemalloc
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save

from fedcare.algorithms import RoundContext, weighted_mean
from fedcare.algorithms.aggregators import CHUNK
from fedcare.core import ParamsError, Update
from fedcare.core.serialization import (
    MAX_HEADER_BYTES,
    params_from_bytes,
    params_to_bytes,
    update_from_bytes,
    update_to_bytes,
)

PARAMS = {"layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "layer.bias": np.ones(2, np.float64)}


def blob(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(raw).to_bytes(8, "little") + raw + data


def f32(shape, begin, end):
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


# ---- zero-copy decoding --------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decoded_arrays_are_read_only_views_into_the_message(wrap):
    data = wrap(params_to_bytes(PARAMS, {"round": 2}))
    out, meta = params_from_bytes(data, PARAMS)
    raw = np.frombuffer(data, np.uint8)
    assert meta == {"round": 2} and list(out) == list(PARAMS)
    for name, arr in out.items():
        np.testing.assert_array_equal(arr, PARAMS[name])
        assert arr.dtype == PARAMS[name].dtype
        assert np.shares_memory(arr, raw), name
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 0


def test_decoded_update_keeps_its_message_alive():
    update = Update("a", {"w": np.full(4, 2.0, np.float32)}, 3)
    back = update_from_bytes(update_to_bytes(update), {"w": np.zeros(4, np.float32)})
    base = back.grad["w"]
    while isinstance(getattr(base, "base", None), np.ndarray):
        base = base.base
    assert isinstance(base.base, memoryview)  # the chain ends in the received buffer, not a copy
    np.testing.assert_array_equal(back.grad["w"], 2.0)


# ---- strict header checks ------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (blob({"a": f32([2], 0, 8), "b": f32([2], 4, 12)}, bytes(12)), "overlaps"),
    (blob({"a": f32([2], 0, 8), "b": f32([0], 4, 4)}, bytes(8)), "overlaps"),
    (blob({"a": f32([2], 0, 8), "b": f32([2], 12, 20)}, bytes(20)), "unused bytes before entry 'b'"),
    (blob({"a": f32([2], 4, 12)}, bytes(12)), "unused bytes before entry 'a'"),
    (blob({"a": f32([2], 0, 8)}, bytes(12)), "4 bytes follow the last tensor"),
    (blob({"a": f32([3], 0, 8)}, bytes(8)), "spans 8 bytes but shape \\[3\\]"),
    (blob({"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "needs 16"),
    (blob({"a": f32([2], 0, 8)}, bytes(4)), "outside the 4-byte data section"),
    (blob({"a": f32([2], 8, 0)}, bytes(8)), "outside"),
    (blob({"a": f32([-2], 0, 8)}, bytes(8)), "non-negative integers"),
    (blob({"a": f32([True, 2], 0, 8)}, bytes(8)), "non-negative integers"),
    (blob({"a": f32([2.0], 0, 8)}, bytes(8)), "non-negative integers"),
    (blob({"a": f32("2", 0, 8)}, bytes(8)), "non-negative integers"),
    (blob({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, bytes(8)), "\\[begin, end\\]"),
    (blob({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)), "exactly dtype, shape and data_offsets"),
    (blob({"a": {**f32([2], 0, 8), "extra": 1}}, bytes(8)), "exactly dtype, shape and data_offsets"),
    (blob({"a": [2]}, bytes(8)), "exactly dtype, shape and data_offsets"),
    (blob([], b""), "JSON list, not an object"),
    (blob(b'"x"'), "JSON str, not an object"),
    (blob(b"{\"a\": 1"), "not JSON"),
    (blob(b"\xff\xfe{}"), "not UTF-8"),
    (blob(b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}', bytes(8)), "repeats the key 'a'"),
    (blob(b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}', bytes(8)), "non-JSON number"),
    (blob({"__metadata__": {"fedcare": 3}}), "__metadata__ must map names to strings"),
    (blob({"__metadata__": {"fedcare": "[1]"}}), "metadata is not a JSON object"),
    ((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + b"{}", "exceeds the"),
    ((2**64 - 1).to_bytes(8, "little") + b"{}", "exceeds the"),
    (b"\x02\x00\x00\x00\x00\x00\x00", "too short"),
    ("a string", "expected bytes"),
])
def test_malformed_safetensors_are_refused(data, message):
    with pytest.raises(ParamsError, match="not valid safetensors bytes") as info:
        params_from_bytes(data)
    assert info.match(message)


@pytest.mark.parametrize("array, word", [
    (np.arange(3, dtype=np.int64), "int64"),
    (np.arange(3, dtype=np.int32), "int32"),
    (np.ones(3, dtype=np.float16), "float16"),
    (np.ones(3, dtype=bool), "bool"),
])
def test_unsupported_dtypes_name_the_array(array, word):
    with pytest.raises(ParamsError, match=f"array 'counts' has dtype {word}; expected float32 or float64"):
        params_from_bytes(save({"counts": array}))


def test_bfloat16_is_refused_by_name():
    data = blob({"half": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4))
    with pytest.raises(ParamsError, match="array 'half' has dtype bfloat16"):
        params_from_bytes(data)


def test_zero_size_tensors_and_padding_from_the_library_are_accepted():
    params = {"empty": np.zeros((0, 3), np.float32), "x": np.array([1.5], np.float64)}
    out, _ = params_from_bytes(save(params))
    assert out["empty"].shape == (0, 3) and out["x"].tolist() == [1.5]


name_chars = st.characters(codec="ascii", categories=("L", "N"), include_characters="._-/")
names = st.text(name_chars, min_size=1, max_size=12).filter(lambda s: s != "__metadata__")


@st.composite
def param_dicts(draw):
    keys = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    out = {}
    for key in keys:
        dtype = draw(st.sampled_from([np.float32, np.float64]))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
        elements = st.floats(allow_nan=False, allow_infinity=False, width=np.dtype(dtype).itemsize * 8)
        out[key] = draw(hnp.arrays(dtype, shape, elements=elements))
    return out


@settings(max_examples=150, deadline=None)
@given(param_dicts(), st.dictionaries(st.text(max_size=5).filter(lambda k: k != "codec"), st.integers(), max_size=3))
def test_random_params_roundtrip_exactly(params, meta):
    out, back_meta = params_from_bytes(params_to_bytes(params, meta), params)
    assert list(out) == list(params) and back_meta == meta
    for name, arr in params.items():
        assert out[name].dtype == arr.dtype and out[name].shape == arr.shape
        assert out[name].tobytes() == arr.tobytes()  # bit-exact, signed zeros included


def test_metadata_may_not_use_the_key_that_marks_a_compressed_message():
    params = {"w": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="'codec' is reserved"):
        params_to_bytes(params, {"codec": 0})


# ---- streaming weighted mean ---------------------------------------------------------------------

def ctx(params):
    return RoundContext(params=params, round=1, rng=np.random.default_rng(0))


MODEL = {"w": np.zeros((1000, 999), np.float32), "b": np.zeros(1000, np.float32)}  # 1,000,000 params


def seeded_update(i):
    rng = np.random.default_rng([7, i])
    grad = {}
    for name, ref in MODEL.items():
        arr = rng.standard_normal(ref.shape, dtype=np.float32)
        arr *= 0.1
        arr += 1.0  # a mean near 1: elementwise relative error is meaningful
        grad[name] = arr
    return Update(f"site-{i}", grad, 1 + (i * 13) % 40)


def test_weighted_mean_memory_stays_below_three_and_a_half_models_and_matches_float64():
    sites = 50
    model_bytes = sum(v.nbytes for v in MODEL.values())
    gen = (seeded_update(i) for i in range(sites))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out, _ = weighted_mean().apply(gen, {}, ctx(MODEL))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the float64 running sum (2 models), the update being added (1) and a chunk of scratch
    assert peak < 3.5 * model_bytes, f"peak {peak / model_bytes:.2f}x the model"

    total = {k: np.zeros(v.shape) for k, v in MODEL.items()}
    weight = 0
    for i in range(sites):
        update = seeded_update(i)
        for k in total:
            total[k] += update.num_examples * update.grad[k].astype(np.float64)
        weight += update.num_examples
    for k in MODEL:
        assert out[k].dtype == np.float32
        np.testing.assert_allclose(out[k], total[k] / weight, rtol=1e-5)


def test_weighted_mean_holds_one_update_at_a_time():
    refs = []

    def updates():
        for i in range(6):
            assert all(r() is None for r in refs), "an earlier update is still alive"
            update = Update(f"s{i}", {"w": np.full(3, float(i), np.float32)}, 1)
            refs.append(weakref.ref(update))
            yield update
            del update

    out, _ = weighted_mean("uniform").apply(updates(), {}, ctx({"w": np.zeros(3, np.float32)}))
    np.testing.assert_allclose(out["w"], 2.5)


def test_weighted_mean_crosses_chunk_boundaries_and_casts_to_the_params_dtype():
    n = 2 * CHUNK + 123
    a, b = np.arange(n, dtype=np.float64), np.full(n, 3.0)
    params = {"x": np.zeros(n, np.float32), "y": np.zeros((2, 2), np.float32)}
    updates = [Update("a", {"x": a, "y": np.ones((2, 2))}, 1), Update("b", {"x": b, "y": np.zeros((2, 2))}, 3)]
    out, _ = weighted_mean().apply(iter(updates), {}, ctx(params))
    assert out["x"].dtype == np.float32
    np.testing.assert_allclose(out["x"], (a + 3 * b) / 4, rtol=1e-6)
    np.testing.assert_allclose(out["y"], 0.25)


def test_weighted_mean_takes_decoded_read_only_updates_and_refuses_mismatches():
    like = {"w": np.zeros(3, np.float32)}
    msgs = [update_to_bytes(Update(s, {"w": np.full(3, v, np.float32)}, n)) for s, v, n in [("a", 1, 1), ("b", 5, 3)]]
    out, _ = weighted_mean().apply((update_from_bytes(m, like) for m in msgs), {}, ctx(like))
    np.testing.assert_allclose(out["w"], 4.0)
    with pytest.raises(ValueError, match="array 'w' has shape"):
        weighted_mean().apply([Update("a", {"w": np.zeros(3)}, 1), Update("b", {"w": np.zeros(4)}, 1)], {}, ctx(like))
    with pytest.raises(ValueError, match="holds arrays"):
        weighted_mean().apply([Update("a", {"w": np.zeros(3)}, 1), Update("b", {"v": np.zeros(3)}, 1)], {}, ctx(like))
