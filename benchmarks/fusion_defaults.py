"""The fusion model's defaults chosen on validation rows (RESULTS.md §16): late fusion's sum against
the average it replaced, and the image encoder's feature dropout and L2 penalty against none, on the
GENERATED three-modality demo (synthetic-multimodal and its -missing variant), federated only.
Prints the federated model's mean validation accuracy over sites in the last round, per seed.

    python benchmarks/fusion_defaults.py --seeds 5 --out /tmp/fusion-defaults
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")

from fedcare import simulate
from fedcare.learning import fusion

SETTINGS = {  # name: (combine, image dropout, image L2)
    "late average, no image regularisation": ("average", 0.0, 0.0),
    "late average, image regularisation": ("average", fusion.IMAGE_DROPOUT, fusion.IMAGE_DECAY),
    "late sum, no image regularisation": ("sum", 0.0, 0.0),
    "late sum, image dropout only": ("sum", fusion.IMAGE_DROPOUT, 0.0),
    "late sum, image regularisation (default)": ("sum", fusion.IMAGE_DROPOUT, fusion.IMAGE_DECAY),
}
SUM = fusion.FusionModel.late


def average(self, parts, m):
    """The late fusion this replaced: softmax weights over the inputs present, summing to 1."""
    logits = self.head.scale.expand(m.shape[0], -1).masked_fill(m == 0, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)
    return sum(weights[:, i:i + 1] * parts[i] for i in range(len(self.names)))


def val_accuracy(dataset: str, seed: int, out: Path) -> float:
    simulate({"dataset": dataset, "model": "fusion", "fusion": "late", "seed": seed, "val_fraction": 0.2,
              "split_seed": 43 + seed, "rounds": 20, "baselines": False, "out": str(out)})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = max(r["round"] for r in rows if r["model"] == "federated")
    return statistics.fmean(r["accuracy"] for r in rows if r["model"] == "federated" and r.get("split") == "val"
                            and r["round"] == last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dataset", action="append", help="default: synthetic-multimodal and its -missing variant")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fusion-defaults"))
    args = parser.parse_args()
    print("| dataset | setting | federated val accuracy, mean ± sd | per seed |\n|---|---|---|---|")
    for dataset in args.dataset or ("synthetic-multimodal", "synthetic-multimodal-missing"):
        for name, (combine, dropout, decay) in SETTINGS.items():
            fusion.FusionModel.late = SUM if combine == "sum" else average
            fusion.IMAGE_DROPOUT, fusion.IMAGE_DECAY = dropout, decay
            vals = [val_accuracy(dataset, s, args.out / f"{dataset}-{combine}-{dropout}-{decay}-{s}")
                    for s in range(args.seeds)]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            print(f"| {dataset} | {name} | {statistics.fmean(vals):.3f} ± {sd:.3f} | "
                  + " ".join(f"{v:.3f}" for v in vals) + " |", flush=True)


if __name__ == "__main__":
    main()
