"""Compressed arrays on the wire: lossy codecs for updates and broadcasts, and their strict decoding.

A scheme is `none`, or a sparsifier and/or a quantizer joined by `+` (sparsifier first):

  topk:F    keep the ⌈F·n⌉ entries of largest magnitude of each array
  fp16      IEEE half precision (2 bytes per entry; |x| above 65504 cannot be sent)
  bf16      bfloat16: the top 16 bits of float32, rounded to nearest even, travelling as uint16
            (numpy has no bfloat16 type; the cast is five lines, not worth a dependency)
  int8      8-bit integers (−127…127) times a float32 scale (max |x| / 127) per array, or per block
            of B entries with `int8:B`; rounding is stochastic (unbiased: E[decoded] = x) when the
            encoder is given a random generator, to nearest otherwise (a broadcast is one model)
  int4      the same with 4-bit integers (−7…7, two per byte) and scale max |x| / 7; `int4:B` per block

e.g. `topk:0.01+int8` keeps 1 % of the entries as int8 with their positions.

The layout is compact because both sides already agree on the message's names and shapes (an
update mirrors the message it answers; a broadcast is the model the site built from the plan).
Every array travels packed, in the order of their sorted names, in one uint8 entry `PACKED`; the
message has no other entry, so its header names no array, shape or offset. Batch-norm running
statistics and single entries travel exactly, at their own float dtype (`exact`); every other array
as the scheme says. A compressed broadcast's metadata says the scheme, e.g. `topk:0.01+int8;varint`
(serialization writes that metadata compactly, see `compact_meta`); a compressed update says only
the index code, in its frame (core/updateframe.py), since the site was asked for the scheme. Per
array the packed bytes are: with top-k, the kept positions, either as LEB128 varints of the gaps
between them (`varint`, about 1 byte per kept entry when the gaps are short) or as a bitmap of
⌈n/8⌉ bytes (`bitmap`), whichever is smaller for the whole message; then the values (fp16/bf16:
2 bytes, int8: 1, int4: ½, none: the array's own float dtype); then int8/int4's float32 scales.

Compression happens at the wire (core/serialization.py): the receiver decodes every array back to
its dense float shape before anything else sees it, so clipping, noise and the robust rules work
on decoded updates. Decoding trusts nothing: the packed length is exact, every position lies inside
its array (varints at most 5 bytes, bitmaps with exactly the kept count and no bits past the end),
every scale is finite, non-negative and small enough that no decoded value overflows, every
quantized value lies in −127…127 or −7…7, and a failure is a ParamsError naming the array.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedcare.core.errors import ConfigError, ParamsError

#: Reserved in names: model arrays never have '#' in them, so the packed entry cannot clash.
PART = "#"
#: The one safetensors entry of a compressed message: every array, packed.
PACKED = "#"
QUANTIZERS = ("fp16", "bf16", "int8", "int4")
#: The largest quantization level of each integer quantizer.
LEVELS = {"int8": 127, "int4": 7}
#: The largest int8/int4 scale: 127 · scale stays below float32's maximum.
MAX_SCALE = float(np.finfo(np.float32).max) / 128
#: The state names (last part) that travel exactly: a lossy batch-norm running variance can turn
#: negative and give NaN predictions (the first synthetic-scans run with top-k did), and the running
#: mean belongs with it.
EXACT_STATE = ("running_mean", "running_var")
#: Significant digits a compressed broadcast keeps of its metadata's floats: a lossy message need
#: not carry 17 digits of a scalar nothing is computed from.
META_DIGITS = 6
INDEX_CODES = ("varint", "bitmap")
_FLOATS = (np.dtype("<f4"), np.dtype("<f8"))


@dataclass(frozen=True)
class Scheme:
    """A parsed scheme: the kept fraction (None: dense), the quantizer (None: float32/64 as is)
    and int8/int4's block size (None: one scale per array)."""

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
    """`none`, `fp16`, `bf16`, `int8[:B]`, `int4[:B]`, `topk:F`, or `topk:F+<quantizer>`; ConfigError otherwise."""
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
                if name not in LEVELS or not re.fullmatch(r"[1-9][0-9]{0,8}", arg):
                    raise ConfigError(f"{what} '{text}': only int8 and int4 take a block size, a whole number "
                                      "(int8:256)")
                block = int(arg)
        else:
            raise ConfigError(f"{what} '{text}' is not a scheme: use none, fp16, bf16, int8, int8:B, int4, int4:B, "
                              "topk:F, or topk:F+fp16|bf16|int8|int4 (one sparsifier first, then one quantizer)")
    return Scheme(topk, quantizer, block)


def kept(fraction: float, size: int) -> int:
    """Entries top-k keeps of an array of `size` entries: ⌈F·n⌉, at least one of a non-empty array."""
    return min(size, max(1, math.ceil(fraction * size))) if size else 0


def packed_names(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The arrays a compressed message packs, in packing order (both sides derive it): all of them."""
    return sorted(arrays)


def exact(name: str, size: int) -> bool:
    """Whether an array travels exactly in every scheme: a batch-norm running statistic, or a single
    entry (4 bytes exact; a scale alone takes 4)."""
    return size < 2 or name.rpartition(".")[2] in EXACT_STATE


def compact_meta(meta: object) -> object:
    """A compressed message's metadata with its floats cut to `META_DIGITS` significant digits."""
    if isinstance(meta, float):
        return float(f"{meta:.{META_DIGITS}g}")
    if isinstance(meta, dict):
        return {k: compact_meta(v) for k, v in meta.items()}
    if isinstance(meta, list):
        return [compact_meta(v) for v in meta]
    return meta


# ----- encoding -------------------------------------------------------------------------------------


def update_rng(seed: int) -> np.random.Generator:
    """The generator an update's stochastic rounding uses, from the fit request's seed: the site
    (for its error feedback) and its wire encoder draw the same numbers."""
    return np.random.default_rng([seed, 0xC0DEC])


def roundtrip(arrays: Mapping[str, np.ndarray], scheme: Scheme, rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    """What a receiver decodes from `arrays` sent with `scheme`."""
    parts, codec = encode(arrays, scheme, rng)
    return decode(parts, codec, arrays) if codec is not None else dict(arrays)


def encode(arrays: Mapping[str, np.ndarray], scheme: Scheme,
           rng: np.random.Generator | None = None) -> tuple[dict[str, np.ndarray], str | None]:
    """The message's one entry, `PACKED`, and its codec string; the codec is None, and the arrays
    unchanged, when the scheme is none or there is no array."""
    for name in arrays:
        if PART in name:
            raise ParamsError(f"array '{name}' has '{PART}' in its name, which compressed messages reserve")
    names = packed_names(arrays) if scheme.active else []
    if not names:
        return dict(arrays), None
    flats = [np.asarray(arrays[name]).reshape(-1) for name in names]
    lossy = [not exact(name, flat.size) for name, flat in zip(names, flats, strict=True)]
    indices = [_top(flat, scheme.topk) if keep else None for flat, keep in zip(flats, lossy, strict=True)] \
        if scheme.topk is not None else None
    chunks, code = [], None
    if indices is not None:
        varints = [_varint_encode(index) for index in indices if index is not None]
        bitmaps = [_bitmap_encode(index, flat.size) for index, flat in zip(indices, flats, strict=True)
                   if index is not None]
        code, chosen = min((("varint", varints), ("bitmap", bitmaps)), key=lambda c: sum(len(b) for b in c[1]))
        streams = iter(chosen)
    for i, flat in enumerate(flats):
        if not lossy[i]:
            chunks.append(flat.astype(flat.dtype.newbyteorder("<")).tobytes())
            continue
        if indices is not None:
            chunks.append(next(streams))
            flat = flat[indices[i]]
        chunks += _quantize(flat, scheme, rng)
    return {PACKED: np.frombuffer(b"".join(chunks), np.uint8)}, str(scheme) + (f";{code}" if code else "")


def _top(flat: np.ndarray, fraction: float) -> np.ndarray:
    k = kept(fraction, flat.size)
    return np.sort(np.argpartition(-np.abs(flat), k - 1)[:k]) if k else np.zeros(0, np.int64)


def _varint_encode(index: np.ndarray) -> bytes:
    gaps = np.diff(index.astype(np.int64), prepend=-1).astype(np.uint64) - np.uint64(1)
    length = 1 + sum((gaps >= np.uint64(1 << (7 * j))).astype(np.int64) for j in range(1, 5))
    starts = np.cumsum(length) - length
    out = np.zeros(int(length.sum()), np.uint8)
    for j in range(5):
        at = length > j
        byte = (gaps[at] >> np.uint64(7 * j)) & np.uint64(0x7F)
        out[starts[at] + j] = (byte | np.where(length[at] > j + 1, 0x80, 0).astype(np.uint64)).astype(np.uint8)
    return out.tobytes()


def _bitmap_encode(index: np.ndarray, size: int) -> bytes:
    bits = np.zeros(size, bool)
    bits[index] = True
    return np.packbits(bits, bitorder="little").tobytes()


def _quantize(flat: np.ndarray, scheme: Scheme, rng: np.random.Generator | None) -> list[bytes]:
    if scheme.quantizer is None:
        return [flat.tobytes()]
    if scheme.quantizer == "fp16":
        with np.errstate(over="ignore"):  # beyond ±65504: inf, which the receiver refuses by name
            return [flat.astype("<f2").tobytes()]
    if scheme.quantizer == "bf16":
        bits = flat.astype(np.float32).view(np.uint32).astype(np.uint64)
        return [((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()]
    levels = LEVELS[scheme.quantizer]
    block = scheme.block or max(flat.size, 1)
    blocks = -(-flat.size // block)
    padded = np.zeros(blocks * block, np.float64)
    padded[:flat.size] = flat
    padded = padded.reshape(blocks, block)
    scale = (np.abs(padded).max(axis=1) / levels).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float64)[:, None]
    q = padded / safe
    q = np.floor(q + rng.random(q.shape)) if rng is not None else np.rint(q)
    values = np.clip(q, -levels, levels).astype(np.int8).reshape(-1)[:flat.size]
    if scheme.quantizer == "int4":  # two's-complement nibbles, the first entry in the low half
        nibbles = np.zeros(2 * -(-flat.size // 2), np.uint8)
        nibbles[:flat.size] = values.view(np.uint8) & 0x0F
        values = nibbles[0::2] | (nibbles[1::2] << 4)
    return [values.tobytes(), scale.astype("<f4").tobytes()]


# ----- decoding -------------------------------------------------------------------------------------


def decode(parts: Mapping[str, np.ndarray], codec: object, like: Mapping[str, np.ndarray] | None,
           what: str = "message") -> dict[str, np.ndarray]:
    """Dense arrays from a compressed message's entries, its codec string and the params it answers
    (`like`: the names, shapes and dtypes both sides agree on); ParamsError on anything inconsistent."""
    if not isinstance(codec, str) or len(codec) > 64:
        raise ParamsError(f"{what}: the compression codec must be a short string such as 'topk:0.01+int8;varint'")
    text, _, code = codec.partition(";")
    try:
        scheme = parse_scheme(text)
    except ConfigError as exc:
        raise ParamsError(f"{what}: {exc}") from None
    if not scheme.active or (code not in INDEX_CODES if scheme.topk is not None else code != ""):
        raise ParamsError(f"{what}: codec '{codec}' is not a compressed scheme with its index code (varint or bitmap "
                          "after ';' for topk)")
    if like is None:
        raise ParamsError(f"{what} is compressed, and can only be read against the params it answers")
    names = packed_names(like)
    payload = parts.get(PACKED)
    if payload is None or payload.dtype != np.uint8 or payload.ndim != 1:
        raise ParamsError(f"{what} is compressed but holds no 1-d uint8 '{PACKED}' entry")
    for name in parts:
        if name != PACKED:
            raise ParamsError(f"{what} holds entry '{name[:64]}'; a compressed message holds only '{PACKED}'")
    out = {}
    reader = _Reader(payload, what)
    for name in names:
        ref = like[name]
        size = int(np.size(ref))
        dtype = np.dtype(ref.dtype) if np.dtype(ref.dtype) in _FLOATS else np.dtype("<f4")
        if exact(name, size):
            out[name] = reader.array(name, dtype.str, size, "values").reshape(np.shape(ref))
            continue
        count, index = size, None
        if scheme.topk is not None:
            count = kept(scheme.topk, size)
            index = reader.varints(name, count, size) if code == "varint" else reader.bitmap(name, count, size)
        values = _dequantize(reader, name, scheme, count, dtype)
        if index is None:
            dense = values
        else:
            dense = np.zeros(size, dtype)
            dense[index] = values
        out[name] = dense.astype(dtype).reshape(np.shape(ref))
    if reader.at != payload.size:
        raise ParamsError(f"{what}: {payload.size - reader.at} bytes follow the last packed array")
    return out


class _Reader:
    """Consumes the packed bytes front to back; every read is bounds-checked."""

    def __init__(self, payload: np.ndarray, what: str):
        self.payload, self.what, self.at = payload, what, 0

    def take(self, name: str, nbytes: int, part: str) -> np.ndarray:
        if self.at + nbytes > self.payload.size:
            raise ParamsError(f"{self.what} array '{name[:64]}': the packed bytes end inside its {part} "
                              f"({nbytes} bytes needed, {self.payload.size - self.at} left)")
        out = self.payload[self.at:self.at + nbytes]
        self.at += nbytes
        return out

    def array(self, name: str, dtype: str, count: int, part: str) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(name, count * dt.itemsize, part).tobytes(), dt)

    def varints(self, name: str, count: int, size: int) -> np.ndarray:
        window = self.payload[self.at:self.at + 5 * count]
        ends = np.flatnonzero(window < 0x80)[:count]
        if ends.size < count:
            raise ParamsError(f"{self.what} array '{name[:64]}': its index stream holds fewer than {count} positions")
        raw = self.take(name, int(ends[-1]) + 1 if count else 0, "indices").astype(np.int64)
        group = np.concatenate([[0], np.cumsum(raw[:-1] < 0x80)]) if count else np.zeros(0, np.int64)
        digit = np.arange(raw.size) - np.concatenate([[0], ends[:-1] + 1])[group]
        if count and digit.max() > 4:
            raise ParamsError(f"{self.what} array '{name[:64]}': an index varint is longer than 5 bytes")
        gaps = np.bincount(group, weights=(raw & 0x7F) * np.exp2(7.0 * digit), minlength=count).astype(np.int64)
        index = np.cumsum(gaps) + np.arange(count)
        if count and index[-1] >= size:
            raise ParamsError(f"{self.what} array '{name[:64]}': its indices must be strictly increasing and below {size}")
        return index

    def bitmap(self, name: str, count: int, size: int) -> np.ndarray:
        bits = np.unpackbits(self.take(name, -(-size // 8), "bitmap"), bitorder="little")
        if bits[size:].any():
            raise ParamsError(f"{self.what} array '{name[:64]}': its bitmap marks positions at or beyond {size}")
        index = np.flatnonzero(bits[:size])
        if index.size != count:
            raise ParamsError(f"{self.what} array '{name[:64]}': its bitmap marks {index.size} positions, not {count}")
        return index


def _dequantize(reader: _Reader, name: str, scheme: Scheme, count: int, dtype: np.dtype) -> np.ndarray:
    what = reader.what
    if scheme.quantizer is None:
        return reader.array(name, dtype.str, count, "values")
    if scheme.quantizer == "fp16":
        out = reader.array(name, "<f2", count, "values").astype(np.float32)
        if not np.isfinite(out).all():
            raise ParamsError(f"{what} array '{name}' holds values float16 cannot represent (beyond ±65504 or NaN); "
                              "use bf16 or int8")
        return out
    if scheme.quantizer == "bf16":
        return (reader.array(name, "<u2", count, "values").astype(np.uint32) << 16).view(np.float32)
    levels = LEVELS[scheme.quantizer]
    if scheme.quantizer == "int4":
        raw = reader.take(name, -(-count // 2), "values")
        nibbles = np.stack([raw & 0x0F, raw >> 4], axis=1).reshape(-1)
        if count % 2 and nibbles[-1]:
            raise ParamsError(f"{what} array '{name}': the int4 padding nibble must be zero")
        values = ((nibbles[:count].astype(np.int16) ^ 8) - 8)
    else:
        values = reader.array(name, "i1", count, "values").astype(np.int16)
    block = scheme.block or max(count, 1)
    scale = reader.array(name, "<f4", -(-count // block), "scales")
    if not (np.isfinite(scale).all() and (scale >= 0).all() and (scale <= MAX_SCALE).all()):
        raise ParamsError(f"{what} array '{name}': its {scheme.quantizer} scales must be finite, non-negative and "
                          f"at most {MAX_SCALE:.3g}")
    if count and int(np.abs(values).max()) > levels:
        raise ParamsError(f"{what} array '{name}': {scheme.quantizer} values must lie in −{levels}…{levels}")
    return values.astype(np.float32) * np.repeat(scale, block)[:count]


# ----- quantized updates under secure aggregation ------------------------------------------------


def ring_bits(levels: int, sites: int, max_weight: float | None) -> int:
    """The smallest ring (16 or 32 bits) in which the masked sum of `sites` quantized updates cannot
    overflow: Σ wᵢ·qᵢ with |qᵢ| ≤ levels and wᵢ ≤ `max_weight` (None: weights are row counts, not
    known in advance: 32 bits, and each site refuses a weight beyond 2^31 / (levels · sites))."""
    if max_weight is not None and sites * max_weight * levels < 2 ** 15:
        return 16
    if max_weight is None or sites * max_weight * levels < 2 ** 31:
        return 32
    raise ConfigError(f"{sites} sites × weight {max_weight:g} × {levels} levels overflow even 32-bit masked words; "
                      "use fewer sites per round, smaller site_weights, or compress_updates none")
