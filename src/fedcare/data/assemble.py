"""Prepare in-process sites into a FederatedDataset: the simulation's side of fedcare.data.prepare.

The sites answer the coordinator's questions in this process, through the same `prepare` and
`SitePreparation` code that a networked run uses, so simulation and deployment cannot drift apart.
Shared by the built-in datasets and bring-your-own files, so both follow the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedcare.data.dataset import DataSpec, FederatedDataset, SiteData
from fedcare.data.prepare import SitePreparation, ask_in_process, prepare


def build_dataset(spec: DataSpec, sites: Sequence[SitePreparation], overrides: dict[str, Any] | None = None
                  ) -> FederatedDataset:
    """Run the preparation over `sites`, in their order; `overrides` replaces preprocessing entries
    that only the simulation knows (rows dropped before one file was cut into sites)."""
    prepared = prepare(spec, [s.site_id for s in sites], ask_in_process(sites))
    data: list[SiteData] = []
    for site in sites:
        assert site.data is not None  # set by the last phase
        data.append(site.data)
    return FederatedDataset(
        name=prepared.name,
        task=prepared.task,
        feature_names=prepared.feature_names,
        classes=prepared.classes,
        sites=tuple(data),
        preprocessing={**prepared.preprocessing, **(overrides or {})},
    )
