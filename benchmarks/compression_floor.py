"""The smallest update the checked framing allows, per dataset of benchmarks/compression.py, and so
the largest upload ratio any compression scheme could reach in safetensors.

A compressed update is one safetensors message: 8 bytes of header length, a JSON header with one
entry `#` (no JSON metadata), padded to 8 bytes, then the packed entry: the frame the receiver checks
(core/updateframe.py: index code, round, num_examples, the metrics) and the packed arrays. This takes
the real messages of one round (each dataset's defaults, `compress_updates int8`), keeps each
message's frame as the encoder wrote it, and writes it again with one byte of arrays: no scheme can
send less. Beside it, the same frame with the arrays that travel exactly in every scheme
(`compression.exact`: batch-norm running statistics, single entries) as the only payload: the floor
of the current layout. Round 1's messages.

    python benchmarks/compression_floor.py      # about a minute; writes results/compression-floor.md
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
from compression import DATASETS
from safetensors.numpy import save


def messages(dataset: str) -> list[tuple[object, object, bytes]]:
    """(update, request, bytes) of every site's real int8 update in round 1."""
    import fedcare
    from fedcare.transports import simulation

    sent, real = [], simulation.fit_reply_to_bytes

    def keep(
        update, request
    ):  # the simulation's own encoder; this only records what it returns
        blob = real(update, request)
        sent.append((update, request, bytes(blob)))
        return blob

    simulation.fit_reply_to_bytes = keep
    try:
        with tempfile.TemporaryDirectory() as out:
            fedcare.simulate(
                {
                    **DATASETS[dataset],
                    "compress_updates": "int8",
                    "rounds": 1,
                    "seed": 0,
                    "baselines": False,
                },
                out=out,
            )
    finally:
        simulation.fit_reply_to_bytes = real
    return sent


def floor(dataset: str) -> dict:
    from fedcare.core import compression
    from fedcare.core.serialization import update_to_bytes
    from fedcare.core.updateframe import Frame

    rows = []
    for update, request, blob in messages(dataset):
        n = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + n])
        assert set(header) == {"#"}, header.keys()  # the layout this measures
        frame = Frame(blob[8 + n :], update.site_id)
        exact = sum(a.nbytes for k, a in update.grad.items() if compression.exact(k, a.size))
        rows.append(
            {
                "plain": len(update_to_bytes(update, request.round)),
                "int8": len(blob),
                "least": len(save({"#": np.zeros(frame.end + 1, np.uint8)})),
                "exact_small": len(save({"#": np.zeros(frame.end + exact, np.uint8)})),
                "small": exact,
                "arrays": sum(a.nbytes for a in update.grad.values()),
                "meta": f"{frame.end} bytes: round {frame.round}, {frame.num_examples} examples, metrics {frame.metrics}",
            }
        )
    out = {
        k: statistics.mean(r[k] for r in rows)
        for k in ("plain", "int8", "least", "exact_small", "small", "arrays")
    }
    return out | {"meta": rows[0]["meta"], "sites": len(rows)}


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")
    columns = (
        "dataset",
        "uncompressed update",
        "its arrays",
        "int8 update",
        "framing + 1 byte",
        "largest ratio",
        "10× needs",
        "exact arrays",
        "floor with them exact",
        "its ratio",
    )
    lines = [
        "| " + " | ".join(columns) + " |",
        "|---" + "|---:" * (len(columns) - 1) + "|",
    ]
    metas = []
    for dataset in DATASETS:
        f = floor(dataset)
        lines.append(
            f"| {dataset} | {f['plain']:,.0f} | {f['arrays']:,.0f} | {f['int8']:,.0f} | "
            f"{f['least']:,.0f} | {f['plain'] / f['least']:.1f} | {f['plain'] / 10:,.0f} | "
            f"{f['small']:,.0f} | {f['exact_small']:,.0f} | {f['plain'] / f['exact_small']:.1f} |"
        )
        metas.append(f"- {dataset}: {f['meta']}")
    text = "\n".join(
        lines
        + ["", "The frame of the first site's message (round 1):", ""]
        + metas
    )
    (Path(__file__).parent / "results" / "compression-floor.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
