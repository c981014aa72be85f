"""Multimodal patients on ovarian-genomics (RESULTS.md §16): the fusion model against clinical-only
(debulking status, the `tabular` input) and omics-only (158 genes, `omics`) models, each local,
federated and pooled, per site, over seeds.

Real data, real missingness pattern simulated: ovarian-genomics has both inputs for every patient, so
the `missing` variant hides the genes of a share of each site's patients (`--blank`, default 0.3)
and of every patient of one study (`--no-omics-site`), as the data layer's join marks a patient
without an input (zeros plus `omics.present` = 0). The single-modality models are the same fusion
model of one input. Defaults only: nothing is tuned on test rows.

    python benchmarks/multimodal.py --seeds 5 --out /tmp/multimodal
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FEDCARE_REPORT_FIGURES", "0")

from fedcare import simulate  # noqa: E402
from fedcare.data import DataSpec, load_dataset  # noqa: E402
from fedcare.data.dataset import DataShape, FederatedDataset, SiteData  # noqa: E402
from fedcare.data.examples import ArrayExamples, array  # noqa: E402
from fedcare.learning.fusion import present_name  # noqa: E402

MODELS = {"fused": ("tabular", "omics"), "clinical-only": ("tabular",), "omics-only": ("omics",)}


def blank_input(dataset: FederatedDataset, name: str, fraction: float, without: tuple[str, ...] = (),
                seed: int = 0) -> FederatedDataset:
    """The dataset with input `name` hidden for a seeded `fraction` of each site's patients and for
    every patient of the sites in `without`: zeros, and `<name>.present` 0.0 for them, 1.0 for the rest."""
    rng = np.random.default_rng(seed)
    sites = []
    for site in dataset.sites:
        splits = {}
        for split, examples in site.splits.items():
            arrays = {n: array(examples, n) for n in examples.names}
            n = len(examples)
            present = (rng.random(n) >= fraction).astype(np.float32) if site.site_id not in without \
                else np.zeros(n, np.float32)
            arrays[name] = arrays[name] * present[:, None]
            arrays[present_name(name)] = present
            splits[split] = ArrayExamples(arrays)
        sites.append(SiteData(site.site_id, splits))
    return replace(dataset, sites=tuple(sites))


def only(dataset: FederatedDataset, inputs: tuple[str, ...]) -> FederatedDataset:
    """The same rows with the model seeing only `inputs` (a single-modality model)."""
    shape = DataShape(dataset.shape.task, dataset.shape.classes,
                      {n: s for n, s in dataset.shape.inputs.items() if n in inputs})
    return replace(dataset, shape=shape)
