"""A site's prepared examples on its own disk (safetensors: arrays only, nothing to unpickle), so a
restarted site agent trains without preparing its data again. Kept inside the hospital."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fedcare.core.errors import DataError
from fedcare.data.dataset import SPLITS, SiteData
from fedcare.data.examples import ArrayExamples


def save_site_data(path: Path, data: SiteData) -> bool:
    """Every split's named arrays, as `<split>/<name>`, written whole through a temporary name.
    False, and nothing written, when an input kind reads some examples from its own files: the site
    prepares again after a restart."""
    if not all(isinstance(data.splits[split], ArrayExamples) for split in SPLITS):
        return False
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        examples = data.splits[split]
        assert isinstance(examples, ArrayExamples)
        arrays.update({f"{split}/{name}": np.ascontiguousarray(a) for name, a in examples.arrays.items()})
    tmp = path.with_suffix(".tmp")
    save_file(arrays, str(tmp))
    tmp.replace(path)
    return True


def load_site_data(path: Path, site_id: str) -> SiteData:
    """What save_site_data wrote."""
    arrays = load_file(str(path))
    splits: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    for key, value in arrays.items():
        split, _, name = key.partition("/")
        if split not in splits or not name:
            raise DataError(f"'{path}' holds an array '{key}' that is not a split's; prepare the data again")
        splits[split][name] = value
    return SiteData(site_id, {split: ArrayExamples(named) for split, named in splits.items()})
