"""Bytes for params and updates: safetensors for arrays, JSON in its metadata for the rest.

Nothing is ever unpickled: safetensors holds only raw tensors and a JSON header, and everything read
is validated against the expected params before use.

Writing and reading are deliberately asymmetric:

* `params_to_bytes` writes with the safetensors library (`safetensors.numpy.save`), so what we send
  is exactly what any safetensors reader expects, byte for byte.
* `params_from_bytes` reads with our own strict parser and returns read-only numpy *views* into the
  received buffer (`np.frombuffer` with offset/count) instead of `safetensors.numpy.load`, which
  copies every tensor out of the message. A coordinator receiving a model-sized update from each of
  hundreds of sites would otherwise pay twice the update's size per message; with views it pays the
  message once. Parsing ourselves also lets us check the header strictly before touching the data:
  header length within bounds (and below `MAX_HEADER_BYTES`), a JSON object without duplicate keys,
  only F32/F64 tensors (and, in a compressed message, the parts core/compression.py decodes), shapes of non-negative integers, and data offsets that match each tensor's
  size and tile the data section exactly (no overlaps, no holes, nothing past the end), as the
  safetensors specification requires. The values are then checked by `validate_params` (names,
  shapes and dtypes against the model, all finite).

The views keep the received buffer alive for as long as any decoded array is alive; they are marked
read-only, so a consumer that wants to modify a decoded array must copy it first. If the caller passes
a mutable buffer (bytearray), it must not reuse that buffer while the arrays are in use.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from fedcare.core import compression, updateframe
from fedcare.core.errors import ParamsError
from fedcare.core.messages import FitRequest
from fedcare.core.params import Params, validate_params
from fedcare.core.update import Update

_META_KEY = "fedcare"
_CODEC_KEY = "codec"  # in a compressed message's metadata: its scheme (core/compression.py)

#: Largest JSON header accepted (the safetensors library uses the same bound).
MAX_HEADER_BYTES = 100_000_000

#: The only tensor dtypes a model may hold, as safetensors spells them -> little-endian numpy dtype.
_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
#: What a compressed message holds besides (core/compression.py): its packed bytes.
_PART_DTYPES = {"U8": np.dtype("u1")}
_WIRE_DTYPES = _DTYPES | _PART_DTYPES

#: What each safetensors dtype is called in an error message (the other names mean nothing to a user).
_DTYPE_WORDS = {"F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16",
                "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64",
                "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}


class _Malformed(ValueError):
    """A structural problem with the bytes; reported as 'not valid safetensors bytes (...)'."""


def params_to_bytes(params: Mapping[str, np.ndarray], meta: Mapping[str, object] | None = None,
                    scheme: compression.Scheme = compression.NONE, rng: np.random.Generator | None = None) -> bytes:
    """With an active `scheme`, the arrays travel compressed (see core/compression.py; `rng` makes
    int8/int4 rounding stochastic), the metadata's `codec` names the scheme, and the metadata is
    written compactly (`compression.compact_meta`); with scheme none the bytes are unchanged."""
    # Structure only: refusing NaN/Inf is the receiver's job (a sender is not trusted to check), and
    # a simulated corrupt site must be able to send what a broken one would.
    validate_params(params, finite=False)
    meta = dict(meta or {})
    if _CODEC_KEY in meta:  # the reader would take the message for a compressed one
        raise ValueError(f"metadata key {_CODEC_KEY!r} is reserved: it names a compressed message's scheme")
    compact = False
    if scheme.active:
        params, codec = compression.encode(params, scheme, rng)
        if codec is not None:  # a lossy message: its metadata without spaces and 17-digit floats
            meta, compact = compression.compact_meta(meta), True
            meta[_CODEC_KEY] = codec
    header = {_META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":") if compact else None)}
    # np.asarray(order="C"), not np.ascontiguousarray, which would turn a 0-d array into shape (1,)
    return save({k: np.asarray(v, order="C") for k, v in params.items()}, metadata=header)


def params_from_bytes(data: bytes | bytearray | memoryview, like: Mapping[str, np.ndarray] | None = None,
                      what: str = "params", layout: Mapping[str, np.ndarray] | None = None,
                      lossy: bool = True) -> tuple[Params, dict]:
    """Decode and validate; the returned order follows `like` when given (the model's order).

    The arrays are read-only views into `data` (no copy of the tensors is made), except those of a
    compressed message, which are decoded (and checked part by part) into new dense arrays; a
    compressed message can only be read with `like` (or, where the arrays are not checked against
    expected ones, `layout`), which gives the names and shapes both sides agree on. With `lossy`
    False a compressed message is refused (an update asked for at full precision).
    """
    try:
        arrays, meta = _decode(data, what)
    except _Malformed as exc:
        raise ParamsError(f"{what} are not valid safetensors bytes ({exc})") from None
    if _CODEC_KEY in meta and not lossy:
        raise ParamsError(f"{what} travels compressed ({str(meta[_CODEC_KEY])[:64]!r}) but was asked for at full "
                          "precision")
    if _CODEC_KEY in meta:
        arrays = compression.decode(arrays, meta.pop(_CODEC_KEY), like if like is not None else layout, what)
    else:
        for name, arr in arrays.items():
            if arr.dtype not in _DTYPES.values():
                raise ParamsError(f"{what} array '{name}' has dtype {arr.dtype}; expected float32 or float64")
    validate_params(arrays, like, what)
    if like is not None:
        arrays = {k: arrays[k] for k in like}
    return arrays, meta


def _decode(data: bytes | bytearray | memoryview, what: str) -> tuple[Params, dict]:
    try:
        buf = memoryview(data)
    except TypeError:
        raise _Malformed(f"expected bytes, got {type(data).__name__}") from None
    if not buf.c_contiguous:
        raise _Malformed("the buffer is not contiguous")
    buf = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
    size = buf.nbytes
    if size < 8:
        raise _Malformed("too short for a header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise _Malformed(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if n > size - 8:
        raise _Malformed(f"header length {n} is beyond the data ({size - 8} bytes follow)")
    header = _parse_header(bytes(buf[8:8 + n]))
    meta = _read_meta(header.pop("__metadata__", None))
    start, data_len = 8 + n, size - 8 - n

    layout = []  # (begin, end, name, numpy dtype, shape)
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _Malformed(f"entry '{name}' must hold exactly dtype, shape and data_offsets")
        dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype_name, str):
            raise _Malformed(f"entry '{name}' has a non-string dtype")
        if dtype_name not in _WIRE_DTYPES:
            word = _DTYPE_WORDS.get(dtype_name, dtype_name)
            raise ParamsError(f"{what} array '{name}' has dtype {word}; expected float32 or float64")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise _Malformed(f"entry '{name}' has a shape that is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise _Malformed(f"entry '{name}' has data_offsets that are not [begin, end]")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise _Malformed(f"entry '{name}' has data_offsets {offsets} outside the "
                             f"{data_len}-byte data section")
        dtype = _WIRE_DTYPES[dtype_name]
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise _Malformed(f"entry '{name}' spans {end - begin} bytes but shape {shape} of "
                             f"{_DTYPE_WORDS[dtype_name]} needs {math.prod(shape) * dtype.itemsize}")
        layout.append((begin, end, name, dtype, tuple(shape)))

    position = 0  # the tensors must tile the data section: no overlap, no hole, nothing left over
    for begin, end, name, _, _ in sorted(layout, key=lambda t: (t[0], t[1])):
        if begin < position:
            raise _Malformed(f"entry '{name}' overlaps the previous tensor")
        if begin > position:
            raise _Malformed(f"there are {begin - position} unused bytes before entry '{name}'")
        position = end
    if position != data_len:
        raise _Malformed(f"{data_len - position} bytes follow the last tensor")

    arrays: Params = {}
    for begin, end, name, dtype, shape in layout:
        arr = np.frombuffer(buf, dtype=dtype, count=(end - begin) // dtype.itemsize,
                            offset=start + begin).reshape(shape)
        if sys.byteorder != "little":  # rare hosts: one native copy, so dtypes compare equal
            arr = arr.astype(dtype.newbyteorder("="))
        arr.flags.writeable = False
        arrays[name] = arr
    return arrays, meta


#: Largest magnitude a site's scalar may have: far beyond any metric, and small enough that no sum or
#: mean over sites can overflow (a site reporting 1e308 would make every mean of that metric inf).
MAX_SCALAR = 1e100


def finite_number(x: object) -> bool:
    """A site's scalar: an int or float (not a bool), finite, of magnitude at most MAX_SCALAR."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return abs(x) <= 2 ** 63 if isinstance(x, int) else math.isfinite(x) and abs(x) <= MAX_SCALAR


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Malformed(f"the header repeats the key '{key}'")
        out[key] = value
    return out


def _refuse_constant(token: str) -> None:
    raise _Malformed(f"the header holds the non-JSON number {token}")


def _parse_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise _Malformed("the header is not UTF-8") from None
    except _Malformed:
        raise
    except ValueError as exc:  # not JSON, or an integer too long to convert
        raise _Malformed(f"the header is not JSON: {exc}") from None
    except RecursionError:
        raise _Malformed("the header is nested too deeply") from None
    if not isinstance(header, dict):
        raise _Malformed(f"the header is a JSON {type(header).__name__}, not an object")
    return header


def _read_meta(meta: object) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _Malformed("__metadata__ must map names to strings")
    try:
        out = json.loads(meta.get(_META_KEY, "{}"), parse_constant=_refuse_constant)
    except _Malformed:
        raise
    except ValueError as exc:  # not JSON, or an integer too long to convert
        raise _Malformed(f"the {_META_KEY} metadata is not JSON: {exc}") from None
    except RecursionError:
        raise _Malformed("the metadata is nested too deeply") from None
    if not isinstance(out, dict):
        raise _Malformed("metadata is not a JSON object")
    return out


#: What an update's metadata may hold: a site's scalars are few, named like identifiers, and finite;
#: its count of examples fits in a float64 exactly (a weight above 2**53 is no count of patients).
MAX_METRICS = updateframe.MAX_METRICS
MAX_EXAMPLES = 2 ** 53
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def update_to_bytes(update: Update, round_: int | None = None, scheme: compression.Scheme = compression.NONE,
                    rng: np.random.Generator | None = None) -> bytes:
    """`round_`, when given, travels with the update, so that it cannot be replayed in another round.
    With an active `scheme` the update is compressed and framed compactly (core/updateframe.py): the
    receiver reads it knowing the scheme it asked for and the site it came from."""
    if scheme.active:
        validate_params(update.grad, finite=False)
        parts, codec = compression.encode(update.grad, scheme, rng)
        packed = parts[compression.PACKED].tobytes() if codec is not None else b""
        frame = updateframe.pack(codec.partition(";")[2] if codec else "", round_, update.num_examples,
                                 update.metrics)
        return save({compression.PACKED: np.frombuffer(frame + packed, np.uint8)})
    meta = {"site_id": update.site_id, "num_examples": update.num_examples, "metrics": update.metrics}
    if round_ is not None:
        meta["round"] = round_
    return params_to_bytes(update.grad, meta)


def fit_reply_to_bytes(update: Update, request: FitRequest) -> bytes:
    """A site's answer to a fit request: its update for the request's round, compressed as the
    request says (int8 rounds stochastically with the generator `compression.update_rng` gives, so
    a site keeping error feedback knows exactly what arrived)."""
    scheme = compression.parse_scheme(request.compress)
    return update_to_bytes(update, request.round, scheme, compression.update_rng(request.seed) if scheme.active else None)


def update_from_bytes(data: bytes | bytearray | memoryview, like: Mapping[str, np.ndarray],
                      round_: int | None = None, compress: str = "none", sender: str | None = None) -> Update:
    """Decode and validate a site's update; its arrays are read-only views into `data` (decoded
    copies when compressed). With `round_`, the update must say it was trained for that round. An
    update asked for with an active `compress` scheme must travel compressed, framed compactly, and
    comes from `sender`, the site the receiver knows it talks to."""
    if compression.parse_scheme(compress).active:
        grad, site_id, num_examples, metrics, sent_round = _compressed_update(data, like, compress, sender)
        meta = {"round": sent_round} if sent_round is not None else {}
    else:
        grad, meta = params_from_bytes(data, like, what="update", lossy=False)
        try:
            site_id = str(meta["site_id"])
            num_examples = meta["num_examples"]
            metrics = dict(meta.get("metrics", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParamsError(f"update metadata is malformed ({exc})") from None
    if not _is_int(num_examples) or not 0 < num_examples <= MAX_EXAMPLES:
        raise ParamsError(f"update from '{site_id[:64]}' claims {str(num_examples)[:40]} examples; it must be "
                          f"a whole number from 1 to {MAX_EXAMPLES}")
    if len(metrics) > MAX_METRICS:
        raise ParamsError(f"update holds {len(metrics)} metrics; at most {MAX_METRICS} are accepted")
    for name, value in metrics.items():
        if not METRIC_NAME.fullmatch(name):
            raise ParamsError(f"update metric name {name[:70]!r} is not a short identifier")
        if not finite_number(value):
            raise ParamsError(f"update metric '{name}' is {str(value)[:40]!r}; it must be a finite number "
                              f"of magnitude at most {MAX_SCALAR:g}")
    if round_ is not None and meta.get("round") != round_:
        raise ParamsError(f"the update was trained for round {str(meta.get('round'))[:20]}, not for round {round_}")
    return Update(site_id, grad, num_examples, {k: float(v) for k, v in metrics.items()})


def _compressed_update(data: bytes | bytearray | memoryview, like: Mapping[str, np.ndarray], compress: str,
                       sender: str | None) -> tuple[Params, str, object, dict, int | None]:
    if sender is None:
        raise ParamsError("a compressed update can only be read by a receiver that knows which site sent it")
    try:
        arrays, meta = _decode(data, "update")
    except _Malformed as exc:
        raise ParamsError(f"update is not valid safetensors bytes ({exc})") from None
    packed = arrays.get(compression.PACKED)
    if meta or set(arrays) != {compression.PACKED} or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ParamsError(f"update was asked for as '{compress}': it must hold only the uint8 entry "
                          f"'{compression.PACKED}' and no JSON metadata")
    frame = updateframe.Frame(packed.data, sender)
    codec = f"{compress};{frame.code}" if frame.code else compress
    grad = compression.decode({compression.PACKED: packed[frame.end:]}, codec, like, "update")
    validate_params(grad, like, "update")
    return {k: grad[k] for k in like}, sender, frame.num_examples, frame.metrics, frame.round


def save_params(path: str | Path, params: Mapping[str, np.ndarray], meta: Mapping[str, object] | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written model."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(params_to_bytes(params, meta))
    tmp.replace(path)


def load_params(path: str | Path, like: Mapping[str, np.ndarray] | None = None) -> tuple[Params, dict]:
    """Read a saved model; the arrays are read-only views into the file's bytes (copy to modify)."""
    return params_from_bytes(Path(path).read_bytes(), like, what=f"params in {path}")
