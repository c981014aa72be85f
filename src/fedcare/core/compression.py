"""Compressed arrays on the wire: lossy codecs for updates and broadcasts, and their strict decoding.

A scheme is `none`, or a sparsifier and/or a quantizer joined by `+` (sparsifier first):

  topk:F    keep the ⌈F·n⌉ entries of largest magnitude of each array; their positions travel as a
            sorted index array in the smallest unsigned dtype that holds the array's size (uint8,
            uint16 or uint32: 1–4 bytes per kept entry)
  fp16      IEEE half precision (2 bytes per entry; |x| above 65504 cannot be sent)
  bf16      bfloat16: the top 16 bits of float32, rounded to nearest even, travelling as uint16
            (numpy has no bfloat16 type; the cast is five lines, not worth a dependency)
  int8      8-bit integers times a float32 scale (max |x| / 127) per array, or per block of B
            entries with `int8:B`; rounding is stochastic (unbiased: E[decoded] = x) when the encoder
            is given a random generator, to nearest otherwise (a broadcast is one model, not a mean)

e.g. `topk:0.01+int8` keeps 1 % of the entries as int8 with their indices. Arrays of fewer than
`MIN_ENTRIES` entries (biases, a logistic model's few weights) travel as they are: the header that
describes a compressed array would cost more than it saves. Compression happens at
the wire (core/serialization.py): the receiver decodes every array back to its dense float shape
before anything else sees it, so clipping, noise and the robust rules work on decoded updates.

Decoding trusts nothing: every part's dtype and length, every index (strictly increasing, inside
the array), every scale (finite, non-negative, small enough that no decoded value overflows) and
every quantized value (−127…127) is checked, and a failure is a ParamsError naming the array.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcare.core.errors import ConfigError, ParamsError

#: Where a compressed array's parts are named: `<name>` holds the values, `<name>#scale` the int8
#: scales, `<name>#index` the kept positions. Model arrays never have '#' in their names.
PART = "#"
QUANTIZERS = ("fp16", "bf16", "int8")
#: The largest int8 scale: 127 · scale stays below float32's maximum.
MAX_SCALE = float(np.finfo(np.float32).max) / 128
#: Smaller arrays are sent uncompressed (their description would outweigh the bytes saved).
MIN_ENTRIES = 128
_INDEX_DTYPES = (np.dtype("<u1"), np.dtype("<u2"), np.dtype("<u4"))
_FLOATS = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}


@dataclass(frozen=True)
class Scheme:
    """A parsed scheme: the kept fraction (None: dense), the quantizer (None: float32/64 as is)
    and int8's block size (None: one scale per array)."""

    topk: float | None = None
    quantizer: str | None = None
    block: int | None = None

    @property
    def active(self) -> bool:
        return self.topk is not None or self.quantizer is not None

    def __str__(self) -> str:
        parts = [f"topk:{self.topk:g}"] if self.topk is not None else []
        if self.quantizer is not None:
            parts.append(self.quantizer + (f":{self.block}" if self.block else ""))
        return "+".join(parts) or "none"


NONE = Scheme()


def parse_scheme(text: str, what: str = "compression") -> Scheme:
    """`none`, `fp16`, `bf16`, `int8`, `int8:B`, `topk:F`, or `topk:F+<quantizer>`; ConfigError otherwise."""
    text = str(text).strip().lower()
    if text in ("", "none"):
        return NONE
    topk = quantizer = block = None
    for i, part in enumerate(text.split("+")):
        name, _, arg = part.partition(":")
        if name == "topk" and i == 0 and topk is None:
            try:
                topk = float(arg)
            except ValueError:
                topk = math.nan
            if not 0 < topk < 1:
                raise ConfigError(f"{what} '{text}': topk needs a fraction between 0 and 1, e.g. topk:0.01")
        elif name in QUANTIZERS and quantizer is None:
            quantizer = name
            if arg:
                if name != "int8" or not re.fullmatch(r"[1-9][0-9]{0,8}", arg):
                    raise ConfigError(f"{what} '{text}': only int8 takes a block size, a whole number (int8:256)")
                block = int(arg)
        else:
            raise ConfigError(f"{what} '{text}' is not a scheme: use none, fp16, bf16, int8, int8:B, topk:F, "
                              "or topk:F+fp16|bf16|int8 (one sparsifier first, then one quantizer)")
    return Scheme(topk, quantizer, block)


def kept(fraction: float, size: int) -> int:
    """Entries top-k keeps of an array of `size` entries: ⌈F·n⌉, at least one of a non-empty array."""
    return min(size, max(1, math.ceil(fraction * size))) if size else 0


def index_dtype(size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every position of an array of `size` entries."""
    return next(d for d in _INDEX_DTYPES if size <= np.iinfo(d).max + 1)


# ----- encoding -------------------------------------------------------------------------------------


def update_rng(seed: int) -> np.random.Generator:
    """The generator an update's stochastic rounding uses, from the fit request's seed: the site
    (for its error feedback) and its wire encoder draw the same numbers."""
    return np.random.default_rng([seed, 0xC0DEC])


def roundtrip(arrays: Mapping[str, np.ndarray], scheme: Scheme, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """What a receiver decodes from `arrays` sent with `scheme`."""
    return decode(*encode(arrays, scheme, rng))


def encode(arrays: Mapping[str, np.ndarray], scheme: Scheme,
           rng: np.random.Generator | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The wire parts of every array, and the description a receiver needs (shape and dtype)."""
    parts: dict[str, np.ndarray] = {}
    described = {}
    for name, value in arrays.items():
        if PART in name:
            raise ParamsError(f"array '{name}' has '{PART}' in its name, which compressed messages reserve")
        arr = np.asarray(value)
        if arr.size < MIN_ENTRIES:
            parts[name] = arr
            continue
        flat = arr.reshape(-1)
        if scheme.topk is not None:
            index = np.sort(np.argpartition(-np.abs(flat), kept(scheme.topk, flat.size) - 1)
                            [:kept(scheme.topk, flat.size)]) if flat.size else np.zeros(0, np.int64)
            parts[name + PART + "index"] = index.astype(index_dtype(flat.size))
            flat = flat[index]
        parts |= _quantize(name, flat, scheme, rng)
        described[name] = {"shape": list(arr.shape), "dtype": "F64" if arr.dtype == np.float64 else "F32"}
    return parts, {"scheme": str(scheme), "arrays": described}


def _quantize(name: str, flat: np.ndarray, scheme: Scheme, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    if scheme.quantizer is None:
        return {name: flat.copy()}
    if scheme.quantizer == "fp16":
        with np.errstate(over="ignore"):  # beyond ±65504: inf, which the receiver refuses by name
            return {name: flat.astype(np.float16)}
    if scheme.quantizer == "bf16":
        bits = flat.astype(np.float32).view(np.uint32).astype(np.uint64)
        return {name: ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)}
    block = scheme.block or max(flat.size, 1)
    blocks = -(-flat.size // block)
    padded = np.zeros(blocks * block, np.float64)
    padded[:flat.size] = flat
    padded = padded.reshape(blocks, block)
    scale = (np.abs(padded).max(axis=1) / 127).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float64)[:, None]
    q = padded / safe
    q = np.floor(q + rng.random(q.shape)) if rng is not None else np.rint(q)
    values = np.clip(q, -127, 127).astype(np.int8).reshape(-1)[:flat.size]
    return {name: values, name + PART + "scale": scale}


# ----- decoding -------------------------------------------------------------------------------------


def decode(parts: Mapping[str, np.ndarray], codec: object, what: str = "message") -> dict[str, np.ndarray]:
    """Dense arrays from wire parts and their description; ParamsError on anything inconsistent."""
    if not isinstance(codec, dict) or set(codec) != {"scheme", "arrays"} or not isinstance(codec["arrays"], dict):
        raise ParamsError(f"{what}: the compression description must hold exactly 'scheme' and 'arrays'")
    try:
        scheme = parse_scheme(codec["scheme"])
    except ConfigError as exc:
        raise ParamsError(f"{what}: {exc}") from None
    expected = set()
    out = {}
    for name, desc in codec["arrays"].items():
        if PART in name:
            raise ParamsError(f"{what}: compressed array name '{name[:64]}' holds '{PART}'")
        shape, dtype = _described(name, desc, what)
        size = math.prod(shape)
        count = size
        index = None
        if scheme.topk is not None:
            expected.add(name + PART + "index")
            index = _part(parts, name + PART + "index", what)
            count = kept(scheme.topk, size)
            if index.dtype != index_dtype(size) or index.shape != (count,):
                raise ParamsError(f"{what} array '{name}': its index must be {count} {index_dtype(size)} entries "
                                  f"(got {index.shape[0] if index.ndim == 1 else index.shape} {index.dtype})")
            if count and (int(index[-1]) >= size or (count > 1 and not bool((np.diff(index.astype(np.int64)) > 0).all()))):
                raise ParamsError(f"{what} array '{name}': its indices must be strictly increasing and below {size}")
        expected.add(name)
        values = _dequantize(name, parts, scheme, count, what, expected)
        if index is None:
            dense = values
        else:
            dense = np.zeros(size, np.float64)
            dense[index] = values
        out[name] = dense.astype(dtype).reshape(shape)
    for name, arr in parts.items():  # the arrays that travel as they are
        if name in expected:
            continue
        if PART in name:
            raise ParamsError(f"{what} holds part '{name[:64]}', which its compression description does not name")
        if arr.dtype not in _FLOATS.values():
            raise ParamsError(f"{what} array '{name[:64]}' has dtype {arr.dtype}; expected float32 or float64")
        out[name] = arr
    return {name: out[name] for name in parts if name in out}


def _described(name: str, desc: object, what: str) -> tuple[tuple[int, ...], np.dtype]:
    if not isinstance(desc, dict) or set(desc) != {"shape", "dtype"}:
        raise ParamsError(f"{what} array '{name[:64]}': its description must hold exactly shape and dtype")
    shape, dtype = desc["shape"], desc["dtype"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40
                                              for d in shape) or len(shape) > 32:
        raise ParamsError(f"{what} array '{name[:64]}': its shape is not a list of non-negative integers")
    if dtype not in _FLOATS:
        raise ParamsError(f"{what} array '{name[:64]}': it must decode to F32 or F64, not {str(dtype)[:20]}")
    return tuple(shape), _FLOATS[dtype]


def _part(parts: Mapping[str, np.ndarray], key: str, what: str) -> np.ndarray:
    if key not in parts:
        raise ParamsError(f"{what} lacks the part '{key[:80]}' its compression description needs")
    return parts[key]


def _dequantize(name: str, parts: Mapping[str, np.ndarray], scheme: Scheme, count: int, what: str,
                expected: set[str]) -> np.ndarray:
    values = _part(parts, name, what)
    want = {None: None, "fp16": np.dtype("<f2"), "bf16": np.dtype("<u2"), "int8": np.dtype("i1")}[scheme.quantizer]
    if values.ndim != 1 or values.shape[0] != count or (want is not None and values.dtype != want) \
            or (want is None and values.dtype not in _FLOATS.values()):
        raise ParamsError(f"{what} array '{name}': expected {count} {want or 'float32/float64'} values, got "
                          f"shape {values.shape} of {values.dtype}")
    if scheme.quantizer == "fp16":
        out = values.astype(np.float32)
        if not np.isfinite(out).all():
            raise ParamsError(f"{what} array '{name}' holds values float16 cannot represent (beyond ±65504 or NaN); "
                              "use bf16 or int8")
        return out
    if scheme.quantizer == "bf16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    if scheme.quantizer == "int8":
        expected.add(name + PART + "scale")
        scale = _part(parts, name + PART + "scale", what)
        block = scheme.block or max(count, 1)
        blocks = -(-count // block)
        if scale.dtype != np.dtype("<f4") or scale.shape != (blocks,):
            raise ParamsError(f"{what} array '{name}': expected {blocks} float32 scale(s), got shape {scale.shape} "
                              f"of {scale.dtype}")
        if not (np.isfinite(scale).all() and (scale >= 0).all() and (scale <= MAX_SCALE).all()):
            raise ParamsError(f"{what} array '{name}': its int8 scales must be finite, non-negative and at most "
                              f"{MAX_SCALE:.3g}")
        if count and int(np.abs(values.astype(np.int16)).max()) > 127:
            raise ParamsError(f"{what} array '{name}': int8 values must lie in −127…127")
        return values.astype(np.float32) * np.repeat(scale, block)[:count]
    return values
