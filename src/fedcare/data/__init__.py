"""Data layer: load a built-in or user dataset as each site's named inputs and targets, preprocessed
federatedly.

Patient rows stay with their site; only aggregates are combined (see fedcare.data.preprocessing).
fedcare.data.prepare splits the preparation into a site half and a coordinator half that exchange
JSON questions and answers; simulation runs both halves in one process. Each input kind (tabular,
omics: fedcare.data.inputs) asks its own questions. This package never imports torch.
"""

from fedcare.data.builtin import BUILTIN_DATASETS, dataset_info
from fedcare.data.dataset import DataShape, DataSpec, FederatedDataset, InputShape, SiteData
from fedcare.data.examples import ArrayExamples, Examples, array
from fedcare.data.loader import load_dataset
from fedcare.data.prepare import PreparedDataset, SitePreparation, prepare

__all__ = [
    "BUILTIN_DATASETS",
    "ArrayExamples",
    "DataShape",
    "DataSpec",
    "Examples",
    "FederatedDataset",
    "InputShape",
    "PreparedDataset",
    "SiteData",
    "SitePreparation",
    "array",
    "dataset_info",
    "load_dataset",
    "prepare",
]
