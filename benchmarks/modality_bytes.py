"""What a site lacking an input saves on the wire (RESULTS.md §16, "What the sites send"): the bytes
of each round, each way, of a fusion run on ovarian-genomics with study-9's genes hidden (the
ovarian-missing variant of benchmarks/multimodal.py), run by every simulation backend, beside the
omics encoder's own size. Bytes are counted, not timed: a run gives the same figures on any machine.

    python benchmarks/modality_bytes.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")

from multimodal import blank_input

from fedcare import simulate
from fedcare.data import DataSpec, load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="in-process,processes")
    args = ap.parse_args()
    data = blank_input(load_dataset(DataSpec(dataset="ovarian-genomics")), "omics", 0.3, ("study-9",))
    config = {"dataset": "ovarian-genomics", "model": "fusion", "rounds": args.rounds, "baselines": False}
    rows, encoder = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            extra = {"backend": backend, "workers": 2} if backend != "in-process" else {}
            run = simulate({**config, **extra, "out": str(Path(tmp) / backend)}, prepared=data)
            rows[backend] = json.loads((run.path / "summary.json").read_text())["communication"]["per_round"]
            encoder = sum(v.nbytes for k, v in run.global_params.items() if k.startswith("encoders.omics."))
            model = sum(v.nbytes for v in run.global_params.values())
    print(f"model {model} bytes of arrays, of which the omics encoder {encoder}; 4 sites, study-9 without omics")
    print("| backend | round | upload | broadcast (fit and evaluation) |")
    print("|---|---|---|---|")
    for backend, per_round in rows.items():
        for r in per_round:
            print(f"| {backend} | {r['round']} | {r['upload']} | {r['broadcast']} |")


if __name__ == "__main__":
    main()
