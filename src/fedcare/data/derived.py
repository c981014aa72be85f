"""The datasets the effect learners train on, made at each site from its own encoded rows.

T-learner: one outcome dataset per arm (the site's rows of that arm). S-learner: every row with the
arm as one more input (`arm`, one-hot). DR-learner: every row with its pseudo-outcome as a
continuous label. Each keeps the sites' own train/validation/test split, so held-out rows stay
held out for every learner. Rows never move: each site derives its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fedcare.data.dataset import DataShape, FederatedDataset, InputShape, SiteData
from fedcare.data.examples import ArrayExamples, array

ARM_INPUT = "arm"


def _arrays(data: SiteData, split: str) -> dict[str, np.ndarray]:
    ex = data.splits[split]
    return {name: array(ex, name) for name in ex.names}


def _derive(dataset: FederatedDataset, shape: DataShape,
            change: Callable[[SiteData, str, dict[str, np.ndarray]], dict[str, np.ndarray]]) -> FederatedDataset:
    sites = tuple(SiteData(sd.site_id, {split: ArrayExamples(change(sd, split, _arrays(sd, split)))
                                         for split in sd.splits}) for sd in dataset.sites)
    return FederatedDataset(dataset.name, shape, sites, dataset.preprocessing)


def arm_rows(dataset: FederatedDataset, arm: int) -> FederatedDataset:
    """Each site's rows of one arm (a site without any training row of it drops out)."""
    out = _derive(dataset, dataset.shape,
                  lambda sd, split, a: {k: v[a["treatment"] == arm] for k, v in a.items()})
    return FederatedDataset(out.name, out.shape, tuple(sd for sd in out.sites if sd.sizes()["train"] > 0),
                            out.preprocessing)


def one_hot(codes: np.ndarray, num_arms: int) -> np.ndarray:
    return (np.asarray(codes)[:, None] == np.arange(num_arms)[None, :]).astype(np.float32)


def with_arm_input(dataset: FederatedDataset, arms: tuple[str, ...]) -> FederatedDataset:
    """Every row, the arm one-hot as the input `arm` (the S-learner's one model)."""
    shape = DataShape(dataset.shape.task, dataset.shape.classes,
                      {**dataset.shape.inputs,
                       ARM_INPUT: InputShape("tabular", (len(arms),), tuple(f"arm={a}" for a in arms))})
    return _derive(dataset, shape, lambda sd, split, a: {**a, ARM_INPUT: one_hot(a["treatment"], len(arms))})


def with_label(dataset: FederatedDataset, labels: Mapping[str, Mapping[str, np.ndarray]]) -> FederatedDataset:
    """Every row with a continuous label of its own (`labels[site][split]`): the DR-learner's target."""
    shape = DataShape("regression", (), dataset.shape.inputs)
    return _derive(dataset, shape, lambda sd, split, a: {**a, "label": labels[sd.site_id][split].astype(np.float32)})
