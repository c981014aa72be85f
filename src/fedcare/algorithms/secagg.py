"""Secure aggregation: the coordinator learns the sum of the sites' updates and nothing else.

Semi-honest variant of Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning" (CCS 2017), with the dropout recovery of the paper. Everything is simulated in-process,
but every step is an explicit message made of bytes and ints (the dataclasses below), so the same
objects can later run over the network: a `SecAggSite` at each hospital, a `SecAggCoordinator` at
the server, and the messages in between.

One round, in the paper's four stages (U1 ⊇ U2 ⊇ U3 are the sites still answering at each stage):

0. Advertise keys. Each site draws two X25519 key pairs, (c_sk, c_pk) to encrypt the shares it
   sends to other sites and (s_sk, s_pk) to agree pairwise mask seeds, and sends both public keys.
   The coordinator broadcasts the sorted roster (U1, at least `threshold` sites).
1. Share keys. Site u draws a self-mask seed b_u (32 random bytes) and Shamir-shares b_u and s_sk_u
   with threshold t among all roster sites (share x-coordinate = 1 + the recipient's position in
   the sorted roster). The pair of shares meant for site v is sealed with ChaCha20-Poly1305 under a
   key derived (HKDF-SHA256) from X25519(c_sk_u, c_pk_v), with the round, sender and recipient in
   the HKDF context and the associated data. The coordinator only routes these opaque payloads.
   U2 = the sites whose payloads arrived.
2. Masked input. Site u encodes its update to fixed point, q_u = round(x · 2^f) mod 2^64, and sends
       y_u = q_u + PRG(b_u) + Σ_{v∈U2, v>u} PRG(s_uv) − Σ_{v∈U2, v<u} PRG(s_uv)   (mod 2^64)
   where s_uv = HKDF(X25519(s_sk_u, s_pk_v)) with the round and the pair in sorted order in the
   context, "<" is the sorted order of site ids and PRG(seed) is the ChaCha20 keystream of `seed`
   read as little-endian k-bit words (k = 64, or 16/32 for quantized updates). U3 = the sites whose y arrived; U2 \\ U3 dropped.
3. Unmask. The coordinator sends (U3, U2 \\ U3) to the survivors. Each survivor checks the two sets
   are disjoint (an honest site never reveals both secrets of one site: that would unmask it) and
   that |U3| ≥ t, then reveals its share of b_v for every survivor v and its share of s_sk_u for
   every dropped u. With ≥ t responses the coordinator reconstructs them, removes Σ PRG(b_v) and the
   pairwise masks the survivors shared with dropped sites, and is left with Σ_{v∈U3} q_v, which it
   decodes. Fewer than t survivors (or responses) → `SecAggError`, and nothing is revealed.

Why two key pairs (as in the paper): the coordinator legitimately learns s_sk_u of a dropped site.
If the same key also sealed u's shares, it could then open the shares u sent and rebuild b_u, so a
site that was only late (its y arrives after it was declared dropped) would be unmasked.

Fixed point (k = 64-bit words, f fractional bits, default f = 16):
  * range: the true sum must satisfy |Σ x| < 2^(k−f−1) = 2^47 ≈ 1.4e14 per coordinate (it wraps
    silently otherwise). Sites enforce it by refusing any |x| ≥ 2^(k−f−1) / n (n = roster size), so
    an overflow of the sum is impossible rather than silent;
  * error: each site rounds to the nearest multiple of 2^−f, so the decoded sum is within
    n · 2^−(f+1) of the true sum per coordinate (n = number of surviving sites; ≤ 7.7e−6 · n for
    f = 16), plus float64 rounding of the decoded value (relative 2^−53, only when |sum| > 2^37).
  Weighted means: each site sends w_i · x_i with its weight w_i (e.g. number of examples) appended
  as one more coordinate; the coordinator divides the summed vector by the summed weight.

Trust model and limits: semi-honest (honest-but-curious) coordinator and sites, no collusion of the
coordinator with t or more sites. A malicious coordinator could lie about who dropped (the paper's
active variant adds signatures and a consistency round; not implemented) — choosing t > n/2 keeps
the paper's guarantees against it as far as the threshold goes. Keys and seeds are single-use: a
`SecAggSite` serves one round; never reuse b_u or the key pairs across rounds.

In a run (fedcare.transports.secure) every message travels as bytes (encode_message /
decode_message below), and the engine gets one summed update that `secure_mean` turns into the mean.

Randomness: production code uses the OS (X25519PrivateKey.generate and os.urandom). A seeded
byte source can be passed for reproducible simulations and tests only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcare.algorithms.aggregators import Weighting
from fedcare.algorithms.pieces import RoundContext, StageName, State
from fedcare.algorithms.privacy import CLIP_KEY, SiteDPSettings, geometric_clip_update
from fedcare.core.compression import LEVELS, parse_scheme, ring_bits
from fedcare.core.errors import ConfigError, FedcareError
from fedcare.core.params import Params
from fedcare.core.update import Update

if TYPE_CHECKING:
    from fedcare.core.config.algorithm import AlgorithmSettings
    from fedcare.core.config.compression import CompressionSettings

__all__ = [
    "SecurePlan",
    "check_threshold",
    "PRIME",
    "WORD_BITS",
    "DEFAULT_FRAC_BITS",
    "SecAggError",
    "KeyAdvert",
    "Roster",
    "SealedShares",
    "MaskedInput",
    "UnmaskRequest",
    "UnmaskResponse",
    "SecAggSite",
    "SecAggCoordinator",
    "SimulationResult",
    "simulate",
    "secure_sum",
    "encode_fixed_point",
    "decode_fixed_point",
    "prg_words",
    "shamir_split",
    "shamir_reconstruct",
    "seeded_randbytes",
    "encode_message",
    "decode_message",
    "SecureMean",
    "secure_mean",
    "SUM_SITE_ID",
    "WEIGHT_METRIC",
    "COUNT_METRIC",
    "CLIP_BROADCAST",
]


class SecAggError(FedcareError):
    """Secure aggregation cannot go on: too few sites left, a bad message, or an out-of-range update."""


RandBytes = Callable[[int], bytes]

PRIME = 2**521 - 1  # Mersenne prime > 2^256: a field large enough for 32-byte secrets
_SHARE_BYTES = 66  # ceil(521 / 8)
WORD_BITS = 64
#: The rings the masks may live in: 2^16, 2^32 or 2^64 (smaller words: smaller masked uploads, for
#: updates quantized to a few bits, see transports/secure.py).
RINGS = {16: np.dtype("<u2"), 32: np.dtype("<u4"), 64: np.dtype("<u8")}
_SIGNED = {16: np.int16, 32: np.int32, 64: np.int64}
DEFAULT_FRAC_BITS = 16
_SECRET_BYTES = 32
_PROTOCOL = b"fedcare-secagg-v1"


# ---------------------------------------------------------------------------------------------
# Primitives (all cryptography from the `cryptography` package; Shamir is field arithmetic)


def _lp(text: str) -> bytes:
    """Length-prefixed UTF-8, so concatenated ids cannot be ambiguous."""
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _mask_context(round: int, a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return _PROTOCOL + b"|pair-mask|" + round.to_bytes(8, "big") + _lp(lo) + _lp(hi)


def _seal_context(round: int, sender: str, recipient: str) -> bytes:
    return _PROTOCOL + b"|share-seal|" + round.to_bytes(8, "big") + _lp(sender) + _lp(recipient)


def prg_words(seed: bytes, length: int, word_bits: int = WORD_BITS) -> np.ndarray:
    """Expand a 32-byte seed into `length` uniform words of `word_bits` bits: the ChaCha20 keystream of `seed`.

    Every seed here is used for exactly one stream (pairwise seeds are fresh per round and pair,
    self-mask seeds fresh per round), so a fixed all-zero nonce is safe.
    """
    if len(seed) != 32:
        raise SecAggError(f"a PRG seed must be 32 bytes, not {len(seed)}")
    encryptor = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    dtype = RINGS[word_bits]
    stream = encryptor.update(bytes(dtype.itemsize * length))
    return np.frombuffer(stream, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)


def encode_fixed_point(x: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS, max_abs: float | None = None,
                       word_bits: int = WORD_BITS) -> np.ndarray:
    """q = round(x · 2^f) mod 2^k as unsigned k-bit words (two's complement for negatives).

    `max_abs` (default 2^(k−f−1)) bounds |x|; values at or above it, or not finite, are refused.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise SecAggError(f"secure aggregation takes a flat vector, not an array of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise SecAggError("the update has NaN or infinite values; secure aggregation needs finite numbers")
    limit = float(2.0 ** (word_bits - frac_bits - 1)) if max_abs is None else max_abs
    if x.size and float(np.max(np.abs(x))) >= limit:
        raise SecAggError(
            f"an update value has magnitude {float(np.max(np.abs(x))):.3g}, at or above the fixed-point "
            f"limit {limit:.3g} (2^{word_bits - frac_bits - 1} / number of sites); scale the update down "
            "or use fewer fractional bits"
        )
    scaled = np.rint(np.ldexp(x, frac_bits))  # exact scaling by a power of two, then round half-even
    return scaled.astype(np.int64).view(np.uint64).astype(RINGS[word_bits].newbyteorder("="))


def decode_fixed_point(q: np.ndarray, frac_bits: int = DEFAULT_FRAC_BITS, word_bits: int = WORD_BITS) -> np.ndarray:
    """Inverse of the encoding for a (summed) vector of k-bit words: signed value / 2^f as float64."""
    signed = np.asarray(q, dtype=RINGS[word_bits].newbyteorder("=")).view(_SIGNED[word_bits])
    return np.ldexp(signed.astype(np.float64), -frac_bits)


def _rand_below(modulus: int, randbytes: RandBytes) -> int:
    """Uniform in [0, modulus) by rejection sampling."""
    nbits = modulus.bit_length()
    nbytes = (nbits + 7) // 8
    excess = 8 * nbytes - nbits
    while True:
        value = int.from_bytes(randbytes(nbytes), "big") >> excess
        if value < modulus:
            return value


def shamir_split(secret: int, n: int, threshold: int, randbytes: RandBytes = os.urandom) -> list[tuple[int, int]]:
    """Shares (x, f(x)) for x = 1..n of a random degree-(threshold−1) polynomial f with f(0) = secret."""
    if not 0 <= secret < PRIME:
        raise SecAggError("a Shamir secret must lie in [0, PRIME)")
    if not 1 <= threshold <= n:
        raise SecAggError(f"the threshold must be between 1 and the number of shares {n}, not {threshold}")
    coefficients = [secret] + [_rand_below(PRIME, randbytes) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, n + 1):
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def shamir_reconstruct(shares: Iterable[tuple[int, int]]) -> int:
    """f(0) by Lagrange interpolation. With fewer than the threshold the result is unrelated to the secret."""
    points = list(shares)
    xs = [x for x, _ in points]
    if not points:
        raise SecAggError("no shares to reconstruct from")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError("Shamir shares must have distinct, non-zero x-coordinates")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    return secret


def seeded_randbytes(seed: int, stream: int = 0) -> RandBytes:
    """A reproducible byte source FOR SIMULATIONS AND TESTS ONLY (numpy PCG64, not a CSPRNG)."""
    gen = np.random.default_rng([seed, stream])
    return gen.bytes


# ---------------------------------------------------------------------------------------------
# Messages: bytes and ints only, so they can be serialised for a network transport


@dataclass(frozen=True)
class KeyAdvert:
    """Site → coordinator → all sites: the site's two raw 32-byte X25519 public keys."""

    site_id: str
    c_public: bytes  # seals the shares sent to this site
    s_public: bytes  # agrees the pairwise mask seeds


@dataclass(frozen=True)
class Roster:
    """Coordinator → all sites: the round's parameters and the advertised keys, sorted by site id."""

    round: int
    length: int
    threshold: int
    frac_bits: int
    keys: tuple[KeyAdvert, ...]
    word_bits: int = WORD_BITS  # the ring 2^k the masked words live in

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(k.site_id for k in self.keys)


@dataclass(frozen=True)
class SealedShares:
    """Site → coordinator → one site: the recipient's shares of the sender's b and s_sk, AEAD-sealed.

    The coordinator sees only sender, recipient, nonce and ciphertext.
    """

    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class MaskedInput:
    """Site → coordinator: y as little-endian words of the roster's k bits."""

    site_id: str
    words: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Coordinator → surviving sites: who sent y (survivors) and who did not (dropped)."""

    round: int
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Site → coordinator: its shares (x, y) of b for each survivor and of s_sk for each dropped site."""

    site_id: str
    self_mask_shares: Mapping[str, tuple[int, int]]
    key_shares: Mapping[str, tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Site


class SecAggSite:
    """One hospital's side of one round. Single use: make a new one every round (fresh keys and b)."""

    def __init__(self, site_id: str, round: int, *, randbytes: RandBytes | None = None) -> None:
        if not isinstance(site_id, str) or not site_id:
            raise SecAggError("a site id must be a non-empty string")
        self.site_id = site_id
        self.round = int(round)
        self._rand: RandBytes = os.urandom if randbytes is None else randbytes
        if randbytes is None:
            self._c_sk = X25519PrivateKey.generate()
            self._s_sk = X25519PrivateKey.generate()
        else:
            self._c_sk = X25519PrivateKey.from_private_bytes(randbytes(32))
            self._s_sk = X25519PrivateKey.from_private_bytes(randbytes(32))
        self._roster: Roster | None = None
        self._b: bytes | None = None
        self._held: dict[str, tuple[int, int, int]] = {}  # owner -> (x, share of b, share of s_sk)
        self._u2: tuple[str, ...] | None = None
        self._masked = False
        self._revealed = False

    @property
    def roster(self) -> Roster | None:
        """The roster this site accepted (None before share_keys): its threshold bounds the survivors."""
        return self._roster

    # stage 0
    def advertise(self) -> KeyAdvert:
        return KeyAdvert(self.site_id, self._c_sk.public_key().public_bytes_raw(), self._s_sk.public_key().public_bytes_raw())

    # stage 1
    def share_keys(self, roster: Roster) -> list[SealedShares]:
        """Check the roster, draw b, Shamir-share b and s_sk, and seal one payload per other site."""
        if self._roster is not None:
            raise SecAggError(f"site '{self.site_id}' already shared its keys this round")
        ids = roster.site_ids
        if roster.round != self.round:
            raise SecAggError(f"roster is for round {roster.round}, site '{self.site_id}' is in round {self.round}")
        if list(ids) != sorted(set(ids)):
            raise SecAggError("the roster must list each site once, sorted by site id")
        if self.advertise() not in roster.keys:
            raise SecAggError(f"the roster does not carry site '{self.site_id}''s keys")
        _check_threshold(roster.threshold, len(ids))
        self._roster = roster
        self._b = self._rand(_SECRET_BYTES)
        n, t = len(ids), roster.threshold
        b_shares = shamir_split(int.from_bytes(self._b, "big"), n, t, self._rand)
        sk_shares = shamir_split(int.from_bytes(self._s_sk.private_bytes_raw(), "big"), n, t, self._rand)
        sealed = []
        for advert, (x, yb), (_, ys) in zip(roster.keys, b_shares, sk_shares):
            if advert.site_id == self.site_id:
                self._held[self.site_id] = (x, yb, ys)
                continue
            plaintext = x.to_bytes(4, "big") + yb.to_bytes(_SHARE_BYTES, "big") + ys.to_bytes(_SHARE_BYTES, "big")
            key = self._seal_key(advert.site_id, sender=self.site_id, recipient=advert.site_id)
            nonce = self._rand(12)
            aad = _seal_context(self.round, self.site_id, advert.site_id)
            sealed.append(SealedShares(self.site_id, advert.site_id, nonce, ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)))
        return sealed

    def _advert(self, site_id: str) -> KeyAdvert:
        assert self._roster is not None
        for advert in self._roster.keys:
            if advert.site_id == site_id:
                return advert
        raise SecAggError(f"site '{site_id}' is not on the roster of round {self.round}")

    def _seal_key(self, other: str, *, sender: str, recipient: str) -> bytes:
        peer = X25519PublicKey.from_public_bytes(self._advert(other).c_public)
        return _hkdf(self._c_sk.exchange(peer), _seal_context(self.round, sender, recipient))

    def receive_shares(self, sealed: Iterable[SealedShares]) -> None:
        """Open the payloads routed to this site; their senders (and this site) form U2."""
        if self._roster is None:
            raise SecAggError("receive shares after sharing keys")
        if self._u2 is not None:
            raise SecAggError(f"site '{self.site_id}' already received its shares this round")
        roster_ids = set(self._roster.site_ids)
        for msg in sealed:
            if msg.recipient != self.site_id or msg.sender not in roster_ids or msg.sender in self._held:
                raise SecAggError(f"site '{self.site_id}' got a misrouted or duplicate share payload from '{msg.sender}'")
            key = self._seal_key(msg.sender, sender=msg.sender, recipient=self.site_id)
            try:
                plain = ChaCha20Poly1305(key).decrypt(msg.nonce, msg.ciphertext, _seal_context(self.round, msg.sender, self.site_id))
            except InvalidTag:
                raise SecAggError(f"the share payload from '{msg.sender}' to '{self.site_id}' failed authentication") from None
            if len(plain) != 4 + 2 * _SHARE_BYTES:
                raise SecAggError(f"the share payload from '{msg.sender}' has the wrong length")
            x = int.from_bytes(plain[:4], "big")
            yb = int.from_bytes(plain[4 : 4 + _SHARE_BYTES], "big")
            ys = int.from_bytes(plain[4 + _SHARE_BYTES :], "big")
            if x != 1 + self._roster.site_ids.index(self.site_id):
                raise SecAggError(f"the share payload from '{msg.sender}' has the wrong x-coordinate")
            self._held[msg.sender] = (x, yb, ys)
        u2 = tuple(sorted(self._held))
        if len(u2) < self._roster.threshold:
            raise SecAggError(
                f"only {len(u2)} sites shared their keys, fewer than the threshold {self._roster.threshold}; the round cannot go on securely"
            )
        self._u2 = u2

    # stage 2
    def pairwise_seed(self, other: str) -> bytes:
        peer = X25519PublicKey.from_public_bytes(self._advert(other).s_public)
        return _hkdf(self._s_sk.exchange(peer), _mask_context(self.round, self.site_id, other))

    def mask(self, update: np.ndarray) -> MaskedInput:
        """y = q + PRG(b) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv) mod 2^k, over v in U2."""
        if self._u2 is None or self._roster is None or self._b is None:
            raise SecAggError("mask the update after receiving the other sites' shares")
        if self._masked:
            raise SecAggError(f"site '{self.site_id}' already sent its masked update this round")
        roster = self._roster
        x = np.asarray(update, dtype=np.float64)
        if x.shape != (roster.length,):
            raise SecAggError(f"the update has shape {x.shape}, the round expects ({roster.length},)")
        bits = roster.word_bits
        max_abs = float(2.0 ** (bits - roster.frac_bits - 1)) / len(roster.keys)
        y = encode_fixed_point(x, roster.frac_bits, max_abs=max_abs, word_bits=bits)
        y += prg_words(self._b, roster.length, bits)
        for other in self._u2:
            if other == self.site_id:
                continue
            mask = prg_words(self.pairwise_seed(other), roster.length, bits)
            if self.site_id < other:
                y += mask
            else:
                y -= mask
        self._masked = True
        return MaskedInput(self.site_id, y.astype(RINGS[bits]).tobytes())

    # stage 3
    def unmask_response(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal shares of b for survivors and of s_sk for dropped sites, never both for one site."""
        if self._u2 is None or self._roster is None:
            raise SecAggError("answer an unmask request only after the sharing stage")
        if self._revealed:
            raise SecAggError(f"site '{self.site_id}' already answered an unmask request this round")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if request.round != self.round:
            raise SecAggError(f"unmask request is for round {request.round}, not {self.round}")
        if survivors & dropped:
            raise SecAggError(f"sites {sorted(survivors & dropped)} are listed both as survivors and as dropped; refusing to unmask")
        if survivors | dropped != set(self._u2):
            raise SecAggError("the unmask request does not partition the sites that shared keys; refusing to unmask")
        if self.site_id not in survivors or not self._masked:
            raise SecAggError(f"site '{self.site_id}' did not send a masked update and does not take part in unmasking")
        if len(survivors) < self._roster.threshold:
            raise SecAggError(
                f"only {len(survivors)} sites survived, fewer than the threshold {self._roster.threshold}; refusing to unmask"
            )
        self._revealed = True
        return UnmaskResponse(
            self.site_id,
            {v: (self._held[v][0], self._held[v][1]) for v in sorted(survivors)},
            {u: (self._held[u][0], self._held[u][2]) for u in sorted(dropped)},
        )


def _check_threshold(threshold: int, n: int) -> None:
    if n < 2:
        raise SecAggError(f"secure aggregation needs at least 2 sites, not {n}")
    if not 2 <= threshold <= n:
        raise SecAggError(f"the threshold must be between 2 and the number of sites {n}, not {threshold}")


# ---------------------------------------------------------------------------------------------
# Coordinator


@dataclass
class SecAggCoordinator:
    """The server's side of one round. It holds only public keys, opaque sealed payloads in transit,
    the masked vectors, the shares revealed for unmasking, and finally the sum."""

    round: int
    length: int
    threshold: int
    frac_bits: int = DEFAULT_FRAC_BITS
    word_bits: int = WORD_BITS
    _keys: dict[str, KeyAdvert] = field(default_factory=dict, init=False, repr=False)
    _roster: Roster | None = field(default=None, init=False, repr=False)
    _mailbox: dict[str, list[SealedShares]] = field(default_factory=dict, init=False, repr=False)
    _u2: tuple[str, ...] | None = field(default=None, init=False, repr=False)
    _masked: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _request: UnmaskRequest | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.length < 0:
            raise SecAggError(f"the vector length must be >= 0, not {self.length}")
        if self.word_bits not in RINGS:
            raise SecAggError(f"masked words are 16, 32 or 64 bits, not {self.word_bits}")
        if not 0 <= self.frac_bits <= self.word_bits - 2:
            raise SecAggError(f"frac_bits must be between 0 and {self.word_bits - 2}, not {self.frac_bits}")
        if self.threshold < 2:
            raise SecAggError(f"the threshold must be at least 2, not {self.threshold}")

    # stage 0
    def receive_keys(self, advert: KeyAdvert) -> None:
        if self._roster is not None:
            raise SecAggError(f"keys from '{advert.site_id}' arrived after the roster was closed")
        if advert.site_id in self._keys:
            raise SecAggError(f"site '{advert.site_id}' advertised its keys twice")
        if len(advert.c_public) != 32 or len(advert.s_public) != 32 or advert.c_public == advert.s_public:
            raise SecAggError(f"site '{advert.site_id}' advertised malformed keys")
        self._keys[advert.site_id] = advert

    def roster(self) -> Roster:
        """Close stage 0 and return the broadcast roster (U1)."""
        if self._roster is None:
            _check_threshold(self.threshold, len(self._keys))
            keys = tuple(self._keys[s] for s in sorted(self._keys))
            self._roster = Roster(self.round, self.length, self.threshold, self.frac_bits, keys, self.word_bits)
        return self._roster

    # stage 1
    def receive_shares(self, sealed: Iterable[SealedShares]) -> None:
        """One site's batch of sealed payloads (one per other roster site)."""
        roster = self.roster()
        if self._u2 is not None:
            raise SecAggError("share payloads arrived after the sharing stage was closed")
        batch = list(sealed)
        senders = {m.sender for m in batch}
        if len(senders) != 1:
            raise SecAggError("a batch of share payloads must come from exactly one site")
        (sender,) = senders
        expected = set(roster.site_ids) - {sender}
        if sender not in roster.site_ids or sender in self._mailbox or sorted(m.recipient for m in batch) != sorted(expected):
            raise SecAggError(f"site '{sender}' sent an incomplete, duplicate or misaddressed batch of share payloads")
        self._mailbox[sender] = batch

    def close_sharing(self) -> tuple[str, ...]:
        """U2: the sites whose payloads arrived. Needs at least `threshold` of them."""
        if self._u2 is None:
            u2 = tuple(sorted(self._mailbox))
            if len(u2) < self.threshold:
                raise SecAggError(f"only {len(u2)} sites shared their keys, fewer than the threshold {self.threshold}")
            self._u2 = u2
        return self._u2

    def shares_for(self, site_id: str) -> list[SealedShares]:
        """The sealed payloads addressed to `site_id` from the other sites in U2."""
        u2 = self.close_sharing()
        if site_id not in u2:
            raise SecAggError(f"site '{site_id}' did not share its keys and takes no further part in the round")
        return [m for s in u2 if s != site_id for m in self._mailbox[s] if m.recipient == site_id]

    # stage 2
    def receive_masked(self, msg: MaskedInput) -> None:
        u2 = self.close_sharing()
        if self._request is not None:
            raise SecAggError(f"the masked update of '{msg.site_id}' arrived after unmasking started; it is ignored")
        if msg.site_id not in u2 or msg.site_id in self._masked:
            raise SecAggError(f"unexpected or duplicate masked update from '{msg.site_id}'")
        dtype = RINGS[self.word_bits]
        if len(msg.words) != dtype.itemsize * self.length:
            raise SecAggError(f"the masked update of '{msg.site_id}' has {len(msg.words)} bytes, expected "
                              f"{dtype.itemsize * self.length}")
        words = np.frombuffer(msg.words, dtype=dtype).astype(dtype.newbyteorder("="))
        words.flags.writeable = False
        self._masked[msg.site_id] = words

    @property
    def masked_inputs(self) -> Mapping[str, np.ndarray]:
        """What the coordinator stores of each update: the masked words (read-only)."""
        return dict(self._masked)

    # stage 3
    def unmask_request(self) -> UnmaskRequest:
        """Close stage 2: survivors = sites whose y arrived, dropped = the rest of U2."""
        if self._request is None:
            u2 = self.close_sharing()
            survivors = tuple(s for s in u2 if s in self._masked)
            dropped = tuple(s for s in u2 if s not in self._masked)
            if len(survivors) < self.threshold:
                raise SecAggError(
                    f"only {len(survivors)} of {len(u2)} sites sent their masked update, fewer than the "
                    f"threshold {self.threshold}: the sum cannot be unmasked (no secret was revealed)"
                )
            self._request = UnmaskRequest(self.round, survivors, dropped)
            self._mailbox.clear()
        return self._request

    @property
    def survivors(self) -> tuple[str, ...]:
        return self.unmask_request().survivors

    @property
    def dropped(self) -> tuple[str, ...]:
        return self.unmask_request().dropped

    def unmask(self, responses: Iterable[UnmaskResponse]) -> np.ndarray:
        """Σ over survivors of their updates (float64), from at least `threshold` survivors' responses."""
        request = self.unmask_request()
        got = {}
        for r in responses:
            if r.site_id not in request.survivors or r.site_id in got:
                raise SecAggError(f"unexpected or duplicate unmask response from '{r.site_id}'")
            if set(r.self_mask_shares) != set(request.survivors) or set(r.key_shares) != set(request.dropped):
                raise SecAggError(f"the unmask response of '{r.site_id}' does not answer the request")
            got[r.site_id] = r
        if len(got) < self.threshold:
            raise SecAggError(f"only {len(got)} sites answered the unmask request, fewer than the threshold {self.threshold}")
        assert self._roster is not None
        bits = self.word_bits
        total = np.zeros(self.length, dtype=RINGS[bits].newbyteorder("="))
        for words in self._masked.values():
            total += words
        for v in request.survivors:
            b = shamir_reconstruct(r.self_mask_shares[v] for r in got.values())
            if b >= 2 ** (8 * _SECRET_BYTES):
                raise SecAggError(f"the self-mask seed of '{v}' did not reconstruct (inconsistent shares)")
            total -= prg_words(b.to_bytes(_SECRET_BYTES, "big"), self.length, bits)
        for u in request.dropped:
            sk = shamir_reconstruct(r.key_shares[u] for r in got.values())
            if sk >= 2 ** (8 * _SECRET_BYTES):
                raise SecAggError(f"the mask key of dropped site '{u}' did not reconstruct (inconsistent shares)")
            s_sk = X25519PrivateKey.from_private_bytes(sk.to_bytes(_SECRET_BYTES, "big"))
            if s_sk.public_key().public_bytes_raw() != self._keys[u].s_public:
                raise SecAggError(f"the mask key of dropped site '{u}' does not match its advertised public key")
            for v in request.survivors:
                peer = X25519PublicKey.from_public_bytes(self._keys[v].s_public)
                seed = _hkdf(s_sk.exchange(peer), _mask_context(self.round, u, v))
                mask = prg_words(seed, self.length, bits)
                if v < u:  # v added PRG(s_vu): take it off
                    total -= mask
                else:  # v subtracted it: put it back
                    total += mask
        return decode_fixed_point(total, self.frac_bits, bits)


# ---------------------------------------------------------------------------------------------
# In-process simulation


@dataclass(frozen=True)
class SimulationResult:
    total: np.ndarray
    coordinator: SecAggCoordinator
    sites: Mapping[str, SecAggSite]


def simulate(
    vectors: Mapping[str, np.ndarray],
    threshold: int,
    drop_after_masking: Iterable[str] = (),
    round: int = 0,
    rng_seed: int | None = None,
    frac_bits: int = DEFAULT_FRAC_BITS,
) -> SimulationResult:
    """Run one round in-process, passing every message through the coordinator.

    Sites in `drop_after_masking` go through key sharing but their masked update never arrives.
    `rng_seed` makes keys, seeds and nonces reproducible (simulations and tests only); None uses
    the OS randomness.
    """
    ids = sorted(vectors)
    dropped = set(drop_after_masking)
    if not dropped <= set(ids):
        raise SecAggError(f"dropped sites {sorted(dropped - set(ids))} are not among the sites")
    lengths = {np.asarray(v).reshape(-1).shape[0] for v in vectors.values()}
    if len(lengths) != 1:
        raise SecAggError(f"all updates must have the same length, got {sorted(lengths)}")
    (length,) = lengths
    coordinator = SecAggCoordinator(round, length, threshold, frac_bits)
    sites = {
        s: SecAggSite(s, round, randbytes=None if rng_seed is None else seeded_randbytes(rng_seed, i))
        for i, s in enumerate(ids)
    }
    for site in sites.values():
        coordinator.receive_keys(site.advertise())
    roster = coordinator.roster()
    for site in sites.values():
        coordinator.receive_shares(site.share_keys(roster))
    for s, site in sites.items():
        site.receive_shares(coordinator.shares_for(s))
    for s, site in sites.items():
        masked = site.mask(np.asarray(vectors[s], dtype=np.float64).reshape(-1))
        if s not in dropped:
            coordinator.receive_masked(masked)
    request = coordinator.unmask_request()
    responses = [sites[s].unmask_response(request) for s in request.survivors]
    return SimulationResult(coordinator.unmask(responses), coordinator, sites)


def secure_sum(
    vectors: Mapping[str, np.ndarray],
    threshold: int,
    drop_after_masking: Iterable[str] = (),
    round: int = 0,
    rng_seed: int | None = None,
    frac_bits: int = DEFAULT_FRAC_BITS,
) -> np.ndarray:
    """Σ of the surviving sites' vectors via the full protocol (float64, within n·2^−(f+1) per coordinate)."""
    return simulate(vectors, threshold, drop_after_masking, round, rng_seed, frac_bits).total


# ---------------------------------------------------------------------------------------------
# Wire format: each message as bytes, so a network transport sends exactly what a simulation counts
#
# A message is one tag byte and a list of fields, each a 4-byte big-endian length and its bytes;
# nested lists are fields holding such a list. Numbers have fixed widths. Every decode checks the
# structure and raises SecAggError on anything malformed.

_TAGS = {KeyAdvert: b"K", Roster: b"R", SealedShares: b"S", MaskedInput: b"M", UnmaskRequest: b"Q",
         UnmaskResponse: b"A"}


def _pack(fields: Iterable[bytes]) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def _unpack(blob: bytes, count: int | None = None) -> list[bytes]:
    fields, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise SecAggError("malformed secure-aggregation message (a field length is cut short)")
        n = int.from_bytes(blob[i:i + 4], "big")
        if i + 4 + n > len(blob):
            raise SecAggError("malformed secure-aggregation message (a field runs past the end)")
        fields.append(bytes(blob[i + 4:i + 4 + n]))
        i += 4 + n
    if count is not None and len(fields) != count:
        raise SecAggError(f"malformed secure-aggregation message ({len(fields)} fields, expected {count})")
    return fields


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecAggError("malformed secure-aggregation message (a site id is not UTF-8)") from None


def _int(raw: bytes, width: int) -> int:
    if len(raw) != width:
        raise SecAggError(f"malformed secure-aggregation message (a {width}-byte number has {len(raw)} bytes)")
    return int.from_bytes(raw, "big")


def _advert_fields(a: KeyAdvert) -> list[bytes]:
    return [a.site_id.encode("utf-8"), a.c_public, a.s_public]


def _advert(fields: list[bytes]) -> KeyAdvert:
    if len(fields) != 3:
        raise SecAggError("malformed key advert")
    return KeyAdvert(_text(fields[0]), fields[1], fields[2])


def _shares_field(shares: Mapping[str, tuple[int, int]]) -> bytes:
    return _pack(_pack([owner.encode("utf-8"), x.to_bytes(4, "big"), y.to_bytes(_SHARE_BYTES, "big")])
                 for owner, (x, y) in shares.items())


def _shares(raw: bytes) -> dict[str, tuple[int, int]]:
    out = {}
    for item in _unpack(raw):
        owner, x, y = _unpack(item, 3)
        out[_text(owner)] = (_int(x, 4), _int(y, _SHARE_BYTES))
    return out


def encode_message(msg: object) -> bytes:
    """Bytes of a KeyAdvert, Roster, MaskedInput, UnmaskRequest, UnmaskResponse, or of one site's
    batch of SealedShares (a list)."""
    if isinstance(msg, (list, tuple)) and all(isinstance(m, SealedShares) for m in msg):
        return b"S" + _pack(_pack([m.sender.encode("utf-8"), m.recipient.encode("utf-8"), m.nonce, m.ciphertext])
                            for m in msg)
    if isinstance(msg, KeyAdvert):
        return b"K" + _pack(_advert_fields(msg))
    if isinstance(msg, Roster):
        head = [msg.round.to_bytes(8, "big"), msg.length.to_bytes(8, "big"), msg.threshold.to_bytes(4, "big"),
                msg.frac_bits.to_bytes(1, "big"), msg.word_bits.to_bytes(1, "big")]
        return b"R" + _pack([*head, *(_pack(_advert_fields(a)) for a in msg.keys)])
    if isinstance(msg, MaskedInput):
        return b"M" + _pack([msg.site_id.encode("utf-8"), msg.words])
    if isinstance(msg, UnmaskRequest):
        ids = lambda xs: _pack(s.encode("utf-8") for s in xs)  # noqa: E731
        return b"Q" + _pack([msg.round.to_bytes(8, "big"), ids(msg.survivors), ids(msg.dropped)])
    if isinstance(msg, UnmaskResponse):
        return b"A" + _pack([msg.site_id.encode("utf-8"), _shares_field(msg.self_mask_shares),
                             _shares_field(msg.key_shares)])
    raise SecAggError(f"no wire format for {type(msg).__name__}")


def decode_message(blob: bytes, expected: type) -> object:
    """The message of type `expected` (SealedShares: a list of them) encoded in `blob`."""
    tag = _TAGS.get(expected)
    if tag is None or blob[:1] != tag:
        raise SecAggError(f"expected a {getattr(expected, '__name__', expected)} message")
    body = blob[1:]
    if expected is KeyAdvert:
        return _advert(_unpack(body))
    if expected is Roster:
        fields = _unpack(body)
        if len(fields) < 5 or _int(fields[4], 1) not in RINGS:
            raise SecAggError("malformed roster")
        keys = tuple(_advert(_unpack(f)) for f in fields[5:])
        return Roster(_int(fields[0], 8), _int(fields[1], 8), _int(fields[2], 4), _int(fields[3], 1), keys,
                      _int(fields[4], 1))
    if expected is SealedShares:
        out = []
        for item in _unpack(body):
            sender, recipient, nonce, ct = _unpack(item, 4)
            out.append(SealedShares(_text(sender), _text(recipient), nonce, ct))
        return out
    if expected is MaskedInput:
        site, words = _unpack(body, 2)
        return MaskedInput(_text(site), words)
    if expected is UnmaskRequest:
        rnd, survivors, dropped = _unpack(body, 3)
        return UnmaskRequest(_int(rnd, 8), tuple(_text(s) for s in _unpack(survivors)),
                             tuple(_text(s) for s in _unpack(dropped)))
    site, self_masks, keys = _unpack(body, 3)
    return UnmaskResponse(_text(site), _shares(self_masks), _shares(keys))


# ---------------------------------------------------------------------------------------------
# The coordinator's aggregator for a securely summed round

#: The one update a secure round hands the round engine, and the metrics it carries.
SUM_SITE_ID = "secure-sum"
WEIGHT_METRIC = "weight"
COUNT_METRIC = "clip_count"
#: Broadcast beside the params under site-level DP: the C every site clips to this round.
CLIP_BROADCAST = "site_dp/clip_norm"


@dataclass(frozen=True)
class SecureMean:
    """The mean of a securely summed round. The transport hands over ONE update (site id
    SUM_SITE_ID) holding Σᵢ wᵢ·xᵢ, with Σᵢ wᵢ in metrics["weight"]; the mean is their ratio, so a
    run with secure aggregation equals one with the weighted mean (wᵢ = examples × site weight).

    With `dp` (site-level DP) each site clipped its update to the C this piece broadcasts, sent
    weight 1, and added its share of N(0, (σC)²): nothing is clipped or noised here, the mean is
    uniform over the sites in the sum (as in dp_fedavg). Under adaptive clipping the sites also
    summed 1[‖xᵢ‖ ≤ C] plus a share of N(0, σ_b²) (metrics["clip_count"]), which moves C as in
    AdaptiveClip; C lives in the state ("clip_norm")."""

    dp: SiteDPSettings | None = None
    stage: ClassVar[StageName] = "aggregate_updates"

    def init(self, params: Params) -> State:
        return {} if self.dp is None else {CLIP_KEY: np.array([self.dp.clip_norm], np.float64)}

    def current_clip(self, state: State | None) -> float:
        if self.dp is None:
            raise SecAggError("secure_mean without site-level DP clips nothing")
        if state and CLIP_KEY in state:
            return float(np.asarray(state[CLIP_KEY]).ravel()[0])
        return float(self.dp.clip_norm)

    def broadcast(self, state: State) -> Params:
        """The C the sites clip to (site-level DP only)."""
        return {} if self.dp is None else {CLIP_BROADCAST: np.array([self.current_clip(state)], np.float64)}

    def apply(self, updates: Iterable[Update], state: State, ctx: RoundContext) -> tuple[Params, State]:
        updates = list(updates)
        if len(updates) != 1 or updates[0].site_id != SUM_SITE_ID or WEIGHT_METRIC not in updates[0].metrics:
            raise SecAggError("secure_mean takes the one summed update of a secure-aggregation round; "
                              f"got {[u.site_id for u in updates]}")
        total = updates[0]
        weight = float(total.metrics[WEIGHT_METRIC])
        if not weight > 0:
            raise ConfigError("every site in the secure sum has weight 0; give at least one site a positive weight")
        out = {k: (np.asarray(total.grad[k], np.float64) / weight).astype(ctx.params[k].dtype) for k in ctx.params}
        if self.dp is None or not self.dp.adaptive:
            return out, state
        c = self.current_clip(state)
        below = float(total.metrics[COUNT_METRIC]) / weight
        assert self.dp.target_quantile is not None
        new_c = geometric_clip_update(c, below, self.dp.target_quantile, self.dp.lr)
        return out, {**state, CLIP_KEY: np.array([new_c], np.float64)}


def secure_mean(dp: SiteDPSettings | None = None) -> SecureMean:
    return SecureMean(dp)


# ---------------------------------------------------------------------------------------------
# The public settings of a run's secure rounds (what the plan decides and every party knows)


def quantized_secure(compression: CompressionSettings, algorithm: AlgorithmSettings, per_round: int) -> dict:
    """SecurePlan's quantization keys for the config (empty when updates are not compressed): the
    quantizer, its range, and the smallest ring whose sum of `per_round` sites cannot overflow."""
    scheme = parse_scheme(compression.compress_updates)
    if scheme.quantizer is None:
        return {}
    weights = [float(w) for w in algorithm.site_weights.values()] or [1.0]
    max_weight = max(1.0, *weights) if algorithm.weighting == "uniform" else None
    return {"quantizer": scheme.quantizer, "quant_range": compression.compress_range,
            "word_bits": ring_bits(LEVELS[scheme.quantizer], per_round, max_weight)}


def check_threshold(selected: int, max_dropouts: int) -> int:
    """t = selected − max_dropouts, the fewest sites whose sum may be unmasked. It must be at least 2
    and more than half the round's sites (an honest majority: fewer revealed shares than that
    cannot unmask a site that only arrived late)."""
    t = selected - max_dropouts
    if selected < 2:
        raise ConfigError(f"secure aggregation needs at least 2 sites per round and this run selects {selected}: "
                          "raise fraction or min_sites")
    if max_dropouts < 0 or t < 2 or 2 * t <= selected:
        most = max(0, (selected - 1) // 2) if selected >= 3 else 0
        raise ConfigError(f"secure aggregation of {selected} sites per round tolerates at most {most} dropped site(s) "
                          f"(more than half must survive, and at least 2), not secagg_max_dropouts={max_dropouts}")
    return t


@dataclass(frozen=True)
class SecurePlan:
    """The public settings of every secure round: how many sites may drop after masking, how
    updates are weighted (as the weighted mean would: examples or 1, times the site's weight),
    site-level DP (then every site weighs 1 and noises its own contribution), fixed-point bits."""

    max_dropouts: int = 0
    weighting: Weighting = "examples"
    site_weights: Mapping[str, float] = field(default_factory=dict)
    dp: SiteDPSettings | None = None
    frac_bits: int = DEFAULT_FRAC_BITS
    noise_seed: int | None = None  # SIMULATION ONLY: reproducible DP noise (see the module docstring)
    quantizer: str | None = None  # int8 / int4: sites send integers in steps of quant_range / levels
    quant_range: float | None = None  # the bound on each update coordinate the quantizer scales to
    word_bits: int = WORD_BITS  # the ring the masks live in (16 or 32 when quantized, with headroom)

    @property
    def frac_bits_used(self) -> int:
        """Fractional bits of the masked words: none when the sites already send integers."""
        return 0 if self.quantizer else self.frac_bits

    def extras(self) -> tuple[str, ...]:
        """The coordinates after the model's: the weight, and the clip count under adaptive clipping."""
        return (WEIGHT_METRIC, COUNT_METRIC) if self.dp is not None and self.dp.adaptive else (WEIGHT_METRIC,)

    def to_json(self) -> dict:
        """The plan as JSON data, for a networked run's plan (the noise seed is never sent)."""
        return {"max_dropouts": self.max_dropouts, "weighting": self.weighting,
                "site_weights": dict(self.site_weights), "frac_bits": self.frac_bits,
                "dp": None if self.dp is None else dataclasses.asdict(self.dp), "quantizer": self.quantizer,
                "quant_range": self.quant_range, "word_bits": self.word_bits}

    @classmethod
    def from_json(cls, data: Mapping) -> SecurePlan:
        try:
            dp = None if data["dp"] is None else SiteDPSettings(**data["dp"])
            quantizer = data["quantizer"]
            if quantizer not in (None, "int8", "int4") or int(data["word_bits"]) not in RINGS:
                raise ValueError(f"quantizer {str(quantizer)[:10]} in {data['word_bits']}-bit words")
            scale = None if data["quant_range"] is None else float(data["quant_range"])
            if (quantizer is None) != (scale is None) or (scale is not None and not 0 < scale < math.inf):
                raise ValueError(f"quant_range {str(scale)[:20]} for quantizer {quantizer}")
            return cls(int(data["max_dropouts"]), data["weighting"], dict(data["site_weights"]), dp,
                       int(data["frac_bits"]), None, quantizer, scale, int(data["word_bits"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"a secure-aggregation plan is malformed ({exc})") from None

    def weight(self, site_id: str, num_examples: int) -> float:
        if self.dp is not None:
            return 1.0  # DP-FedAvg's uniform mean: a site's row count is itself private
        base = float(num_examples) if self.weighting == "examples" else 1.0
        return base * float(self.site_weights.get(site_id, 1.0))
