"""Registry of datasets shipped with fedcare, and what `fedcare datasets` shows about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedcare.core.errors import DataError
from fedcare.data import heart_disease
from fedcare.data.assemble import build_dataset
from fedcare.data.columns import type_columns
from fedcare.data.dataset import DataSpec, FederatedDataset, TaskKind
from fedcare.data.labels import LabelEncoding
from fedcare.data.raw import RawSite


@dataclass(frozen=True)
class BuiltinDataset:
    """A bundled dataset: how to load it and how to describe and cite it."""

    name: str
    task: TaskKind
    description: str
    source: str
    citation: str
    load: Callable[[DataSpec], FederatedDataset]
    site_rows: Callable[[], list[dict[str, Any]]]


HEART_LABEL = LabelEncoding(
    column=heart_disease.LABEL,
    task="binary",
    classes=("no disease", "disease"),
    mapping={"0": 0, "1": 1, "2": 1, "3": 1, "4": 1},  # num > 0 = disease, as in FLamby
)


def _heart_sites() -> tuple[list[RawSite], dict[str, int]]:
    sites, dropped = [], {}
    for site_id in heart_disease.SITES:
        frame, n_dropped = heart_disease.read_site(site_id)
        sites.append(RawSite(site_id, frame, f"processed.{site_id}.data"))
        dropped[site_id] = n_dropped
    return sites, dropped


def _load_heart(spec: DataSpec) -> FederatedDataset:
    sites, dropped = _heart_sites()
    features = [c for c in sites[0].frame.columns if c != heart_disease.LABEL]
    types = type_columns(features, sites, heart_disease.CATEGORICAL, several_files=True)
    extra = {"dataset": "heart-disease", "rows_dropped_missing": dropped,
             "columns_dropped": list(heart_disease.DROPPED)}
    return build_dataset("heart-disease", sites, HEART_LABEL, types, spec, extra)


def _heart_rows() -> list[dict[str, Any]]:
    return [{"site_id": s.site_id, "rows": len(s.frame)} for s in _heart_sites()[0]]


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "heart-disease": BuiltinDataset(
        name="heart-disease",
        task="binary",
        description="UCI Heart Disease, 4 hospitals, predict coronary artery disease (FLamby Fed-Heart-Disease preprocessing)",
        source="UCI Machine Learning Repository, Heart Disease (1988), CC BY 4.0; PIs: A. Janosi, W. Steinbrunn, "
               "M. Pfisterer, R. Detrano",
        citation="du Terrail et al., FLamby: Datasets and Benchmarks for Cross-Silo Federated Learning in "
                 "Realistic Healthcare Settings, NeurIPS 2022 Datasets and Benchmarks",
        load=_load_heart,
        site_rows=_heart_rows,
    ),
}


def get_builtin(name: str) -> BuiltinDataset:
    """Look up a built-in dataset, listing the names when it is unknown."""
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown dataset '{name}'; built-in datasets are: {', '.join(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name]


def dataset_info() -> list[dict[str, Any]]:
    """One JSON-able entry per built-in dataset, for `fedcare datasets`."""
    return [
        {"name": d.name, "task": d.task, "description": d.description, "sites": d.site_rows(),
         "source": d.source, "citation": d.citation}
        for d in BUILTIN_DATASETS.values()
    ]
