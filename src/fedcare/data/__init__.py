"""Data layer: load a built-in or user dataset as per-site arrays, preprocessed federatedly.

Patient rows stay with their site; only aggregates are combined (see fedcare.data.preprocessing).
fedcare.data.prepare splits the preparation into a site half and a coordinator half that exchange
JSON questions and answers; simulation runs both halves in one process.
This package never imports torch.
"""

from fedcare.data.builtin import BUILTIN_DATASETS, dataset_info
from fedcare.data.dataset import DataSpec, FederatedDataset, SiteData, TaskKind
from fedcare.data.loader import load_dataset
from fedcare.data.prepare import PreparedDataset, SitePreparation, prepare

__all__ = [
    "BUILTIN_DATASETS",
    "DataSpec",
    "FederatedDataset",
    "PreparedDataset",
    "SiteData",
    "SitePreparation",
    "TaskKind",
    "dataset_info",
    "load_dataset",
    "prepare",
]
