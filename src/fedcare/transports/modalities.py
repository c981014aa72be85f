"""Reporting by modality, for a simulated run of model fusion (summary.json's `modalities`).

Per site, the fused model's test metrics against a model of each single input (the same fusion
model over that input alone, trained as a baseline with the run's own algorithm, rounds and seed),
and every model's metrics on the test patients grouped by which inputs they have ("omics+tabular",
"tabular", ...). A single-input model answers a patient without its input from its head's bias
alone: that is what such a model can do for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from fedcare.core.config import FederationConfig
from fedcare.core.params import Params
from fedcare.data import FederatedDataset
from fedcare.data.dataset import DataShape
from fedcare.federation.engine import RoundEngine
from fedcare.learning.site import LocalSite
from fedcare.transports.simulated import build_federation
from fedcare.transports.simulation import SimulationTransport


def only_inputs(dataset: FederatedDataset, inputs: tuple[str, ...]) -> FederatedDataset:
    """The same rows, the model seeing only `inputs` (a single-modality model)."""
    shape = DataShape(dataset.shape.task, dataset.shape.classes,
                      {n: s for n, s in dataset.shape.inputs.items() if n in inputs})
    return replace(dataset, shape=shape)


def groups(site: LocalSite, split: str = "test") -> np.ndarray:
    """Each patient's group: the inputs they have, joined by '+' ("none" for none of them)."""
    present = site.presence(split)
    return np.array(["+".join(sorted(n for n, has in present.items() if has[i])) or "none"
                     for i in range(site.num_examples(split))])


def by_inputs(site: LocalSite, params: Params, pattern: np.ndarray, split: str = "test") -> dict[str, dict]:
    """The model's metrics on a split's patients in each group of `pattern`, with each group's size."""
    if site.num_examples(split) == 0:
        return {}
    outputs, targets = site.outputs(params, split)
    out = {}
    for group in sorted(set(pattern)):
        rows = np.flatnonzero(pattern == group)
        metrics = site.task.metrics(outputs[rows], {k: np.asarray(v)[rows] for k, v in targets.items()})
        out[str(group)] = {"patients": len(rows), **metrics}
    return out


def modality_block(cfg: FederationConfig, dataset: FederatedDataset, sites: Mapping[str, LocalSite],
                   models: Mapping[str, Mapping[str, Params]]) -> dict:
    """summary.json's `modalities`. `models`: the run's fused models (federated, local, pooled, ...),
    each as the params every site judges (its own, for local)."""
    inputs = list(dataset.shape.inputs)
    patterns = {sid: groups(site) for sid, site in sites.items()}
    grouped = {name: {sid: by_inputs(site, per_site[sid], patterns[sid]) for sid, site in sites.items()
                      if sid in per_site}
               for name, per_site in models.items()}
    block: dict = {"inputs": inputs,
                   "patients": {sid: {g: m["patients"] for g, m in groups.items()}
                                for sid, groups in grouped["federated"].items()},
                   "by_inputs": grouped, "single": {}}
    if len(inputs) < 2 or not cfg.run.baselines:
        return block
    for name in inputs:
        fed = build_federation(cfg, only_inputs(dataset, (name,)))
        result = RoundEngine(fed.plan.algorithm, SimulationTransport(fed.sites), fed.plan.settings).run(fed.initial)
        single = {s.site_id: s for s in fed.sites}
        block["single"][name] = {sid: site.evaluate(result.params, ["test"]).get("test", {})
                                 for sid, site in single.items()}
        block["by_inputs"][f"{name}-only"] = {sid: by_inputs(site, result.params, patterns[sid])
                                              for sid, site in single.items()}
    return block
