"""A compressed update's frame: what its receiver checks besides the arrays, in a few bytes.

A compressed update is a safetensors message with one uint8 entry `#` (core/compression.py) and no
JSON metadata: its bytes are this frame, then the arrays as core/compression.py packs them. The
receiver already knows two things the JSON of an uncompressed update says, so they do not travel:
who sent it (the authenticated caller over the network, the site it asked in simulation) and the
scheme (the one its fit request named). What does travel, in order:

  1 byte   the index code of the top-k positions: 0 none (a dense scheme), 1 varint, 2 bitmap; its
           other bits are zero
  varint   the round the update was trained for (0: none given), so that it cannot be replayed in
           another round
  varint   num_examples
  varint   the number of metrics, then per metric, in sorted name order:
             varint  (k << 2) | t, where k = 0: the name follows (a varint length, then ASCII), and
                     k ≥ 1: the name is KNOWN[k - 1]; t = 0: a float32 value follows (4 bytes),
                     1: a float64 value (8 bytes), 2: an integer (a zigzag varint)

Varints are LEB128 (7 bits a byte, low bits first), at most 10 bytes. A float metric travels as
float32 when float32 holds it (a compressed message is lossy; 7 significant digits of a loss are
plenty), as float64 otherwise and always for `epsilon`, which must never be reported smaller than
it is. `Frame` trusts nothing: every read is bounds-checked, at most `MAX_METRICS` are read, a name
is quoted with repr in an error (it is the sender's text), and the names, counts and values are
checked again by core/serialization.py like those of any update.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

from fedcare.core.errors import ParamsError

#: Index codes by their frame byte (core/compression.py's names; "" for a dense scheme).
CODES = ("", "varint", "bitmap")
#: Metric names a frame can name by number instead of spelling them: what sites report every round.
#: Appending keeps old frames readable; reordering would not.
KNOWN = ("train_loss", "epsilon")
FLOAT32, FLOAT64, INTEGER = 0, 1, 2
MAX_NAME = 64
#: At most this many metrics an update (core/serialization.py checks uncompressed updates the same).
MAX_METRICS = 32
#: Metrics that travel as float64 always: a privacy figure rounded to float32 could be reported smaller.
EXACT = ("epsilon",)
_F32_MAX = 3.4028234663852886e38
_F32_TINY = 1.1754943508222875e-38  # below this float32 loses digits (subnormal)


def pack(code: str, round_: int | None, num_examples: int, metrics: Mapping[str, object]) -> bytes:
    """The frame of one update; `code` is the index code compression chose ("" when dense)."""
    out = bytearray([CODES.index(code)])
    out += varint(round_ or 0) + varint(num_examples) + varint(len(metrics))
    for name in sorted(metrics):
        value = metrics[name]
        k = KNOWN.index(name) + 1 if name in KNOWN else 0
        if isinstance(value, int) and not isinstance(value, bool):
            kind, body = INTEGER, varint(2 * value if value >= 0 else -2 * value - 1)  # zigzag
        elif isinstance(value, float) and name not in EXACT and (
                value == 0 or (math.isfinite(value) and _F32_TINY <= abs(value) <= _F32_MAX)):
            kind, body = FLOAT32, struct.pack("<f", value)
        else:  # anything else travels as float64, and the receiver refuses what is not a finite number
            kind, body = FLOAT64, struct.pack("<d", float(value) if isinstance(value, (int, float)) else math.nan)
        out += varint((k << 2) | kind)
        if k == 0:  # as the site spelt it: the receiver refuses a name that is long or not ASCII
            raw = name.encode("utf-8")
            out += varint(len(raw)) + raw
        out += body
    return bytes(out)


def varint(n: int) -> bytes:
    """LEB128 of a non-negative integer below 2**70."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Frame:
    """A frame read from the front of a packed entry: `code`, `round` (None: none given),
    `num_examples`, `metrics`, and `end`, where the packed arrays begin."""

    def __init__(self, data: bytes | memoryview, sender: str):
        self._data, self._at, self._who = memoryview(data), 0, f"compressed update from '{sender[:64]}'"
        first = self._take(1, "its first byte")[0]
        if first >= len(CODES):
            raise ParamsError(f"{self._who}: its first byte is {first}; the index code must be 0, 1 or 2")
        self.code = CODES[first]
        self.round = self._varint("its round") or None
        self.num_examples = self._varint("its number of examples")
        count = self._varint("its number of metrics")
        if count > MAX_METRICS:
            raise ParamsError(f"{self._who} holds {count} metrics; at most {MAX_METRICS} are accepted")
        self.metrics: dict[str, object] = {}
        for _ in range(count):
            key = self._varint("a metric's key")
            k, kind = key >> 2, key & 3
            if k > len(KNOWN) or kind > INTEGER:
                raise ParamsError(f"{self._who}: metric key {key} names no known metric or value type")
            name = KNOWN[k - 1] if k else self._name()
            if self.metrics and name <= next(reversed(self.metrics)):
                raise ParamsError(f"{self._who}: its metrics must be in sorted name order, each once ({name!r})")
            if kind == INTEGER:
                z = self._varint(f"metric {name!r}")
                self.metrics[name] = (z >> 1) ^ -(z & 1)
            else:
                size, fmt = (4, "<f") if kind == FLOAT32 else (8, "<d")
                self.metrics[name] = struct.unpack(fmt, self._take(size, f"metric {name!r}"))[0]
        self.end = self._at

    def _take(self, n: int, part: str) -> memoryview:
        if self._at + n > len(self._data):
            raise ParamsError(f"{self._who}: its frame ends inside {part}")
        out = self._data[self._at:self._at + n]
        self._at += n
        return out

    def _varint(self, part: str) -> int:
        n = 0
        for shift in range(0, 70, 7):
            byte = self._take(1, part)[0]
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                return n
        raise ParamsError(f"{self._who}: {part} is a varint longer than 10 bytes")

    def _name(self) -> str:
        length = self._varint("a metric's name")
        if not 0 < length <= MAX_NAME:
            raise ParamsError(f"{self._who}: a metric name of {length} bytes (1 to {MAX_NAME} are accepted)")
        raw = bytes(self._take(length, "a metric's name"))
        if not raw.isascii():
            raise ParamsError(f"{self._who}: a metric name is not ASCII")
        return raw.decode("ascii")
