"""Data layer: load a built-in or user dataset as per-site arrays, preprocessed federatedly.

Patient rows stay with their site; only aggregates are combined (see fedcare.data.preprocessing).
This package never imports torch.
"""

from fedcare.data.builtin import BUILTIN_DATASETS, dataset_info
from fedcare.data.dataset import DataSpec, FederatedDataset, SiteData, TaskKind
from fedcare.data.loader import load_dataset

__all__ = [
    "BUILTIN_DATASETS",
    "DataSpec",
    "FederatedDataset",
    "SiteData",
    "TaskKind",
    "dataset_info",
    "load_dataset",
]
