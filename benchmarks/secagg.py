"""Secure aggregation's cost per round: time and bytes for 4 and 20 sites, beside the same round's
plain path (each site's update as safetensors bytes, decoded and validated, weighted mean).

The whole protocol runs in one process (keys, sealed shares, masking, unmasking) with OS randomness;
bytes are counted from the protocol's own messages. `--repeats` alternating runs, medians reported.

    python benchmarks/secagg.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fedcare.algorithms import RoundContext, weighted_mean
from fedcare.algorithms import secagg
from fedcare.core.serialization import update_from_bytes, update_to_bytes
from fedcare.core.update import Update


def secure_round(vectors: dict[str, np.ndarray], threshold: int) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    ids = sorted(vectors)
    length = len(next(iter(vectors.values())))
    coordinator = secagg.SecAggCoordinator(0, length, threshold)
    sites = {s: secagg.SecAggSite(s, 0) for s in ids}
    sent = {"keys": 0, "shares": 0, "masked": 0, "unmask": 0}  # bytes each site sends, by stage
    for site in sites.values():
        advert = site.advertise()
        sent["keys"] += len(advert.c_public) + len(advert.s_public)
        coordinator.receive_keys(advert)
    roster = coordinator.roster()
    for site in sites.values():
        batch = site.share_keys(roster)
        sent["shares"] += sum(len(m.nonce) + len(m.ciphertext) for m in batch)
        coordinator.receive_shares(batch)
    for s, site in sites.items():
        site.receive_shares(coordinator.shares_for(s))
    for s, site in sites.items():
        masked = site.mask(vectors[s])
        sent["masked"] += len(masked.words)
        coordinator.receive_masked(masked)
    request = coordinator.unmask_request()
    responses = [sites[s].unmask_response(request) for s in request.survivors]
    for r in responses:
        shares = list(r.self_mask_shares.values()) + list(r.key_shares.values())
        sent["unmask"] += sum((x.bit_length() + 7) // 8 + (y.bit_length() + 7) // 8 for x, y in shares)
    total = coordinator.unmask(responses)
    seconds = time.perf_counter() - started
    plain = np.sum([vectors[s] for s in ids], axis=0)
    assert np.max(np.abs(total - plain)) <= len(ids) * 2.0 ** -17 + 1e-9
    return seconds, sent


def plain_round(vectors: dict[str, np.ndarray]) -> tuple[float, int]:
    like = {"w": np.zeros(len(next(iter(vectors.values()))), np.float32)}
    started = time.perf_counter()
    blobs = [update_to_bytes(Update(s, {"w": v.astype(np.float32)}, 10)) for s, v in vectors.items()]
    updates = (update_from_bytes(b, like) for b in blobs)
    weighted_mean("uniform").apply(updates, {}, RoundContext(like, 1, np.random.default_rng(0)))
    return time.perf_counter() - started, sum(len(b) for b in blobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| sites | params | plain round (ms) | secure round (ms) | time ratio | plain bytes up | secure bytes up "
          "(keys + shares + masked + unmask) | bytes ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (4, 20):
        for m in (1_000, 100_000):
            vectors = {f"site-{i:02d}": rng.normal(size=m) for i in range(n)}
            plain_t, secure_t = [], []
            for _ in range(args.repeats):
                t, plain_bytes = plain_round(vectors)
                plain_t.append(t)
                t, sent = secure_round(vectors, n // 2 + 1)
                secure_t.append(t)
            p, s = statistics.median(plain_t), statistics.median(secure_t)
            up = sent["keys"] + sent["shares"] + sent["masked"] + sent["unmask"]
            print(f"| {n} | {m:,} | {p * 1e3:.1f} | {s * 1e3:.1f} | {s / p:.0f}x | {plain_bytes:,} | {up:,} "
                  f"({sent['keys']:,} + {sent['shares']:,} + {sent['masked']:,} + {sent['unmask']:,}) | "
                  f"{up / plain_bytes:.2f}x |")


if __name__ == "__main__":
    main()
