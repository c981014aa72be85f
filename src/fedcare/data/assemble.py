"""Turn sites' raw rows into a FederatedDataset: split each site, fit the shared transform, encode.

Shared by the built-in datasets and bring-your-own files, so both follow the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


from fedcare.core.errors import DataError
from fedcare.data.columns import ColumnTypes, typed_frame
from fedcare.data.dataset import DataSpec, FederatedDataset, SiteData
from fedcare.data.labels import LabelEncoding
from fedcare.data.preprocessing import apply_transform, fit_transform
from fedcare.data.raw import RawSite
from fedcare.data.splitting import split_site
from fedcare.data.survival import SurvivalEncoding

MIN_SITE_ROWS = 4


def check_site_sizes(sites: Sequence[RawSite]) -> None:
    """A site needs a few rows to have both a train and a test split."""
    for site in sites:
        if len(site.frame) < MIN_SITE_ROWS:
            raise DataError(
                f"site '{site.site_id}' has {len(site.frame)} rows, fewer than the {MIN_SITE_ROWS} needed "
                "to split it into train and test; merge it with another site or drop its rows"
            )


def build_dataset(
    name: str,
    sites: Sequence[RawSite],
    label: LabelEncoding | SurvivalEncoding,
    types: ColumnTypes,
    spec: DataSpec,
    extra: dict[str, Any] | None = None,
) -> FederatedDataset:
    """Split every site, fit the transform on training rows only, and encode all splits."""
    check_site_sizes(sites)
    splits = []
    for site in sites:
        codes = label.strata(site.frame)  # class codes, event codes (survival) or None (regression)
        split = split_site(site.site_id, len(site.frame), codes, spec.test_fraction, spec.val_fraction, spec.split_seed)
        typed = typed_frame(site.frame, types)
        y = label.targets(site.frame)
        splits.append((site, typed, y, split))
    transform = fit_transform([typed.iloc[split.train] for _, typed, _, split in splits], types)
    site_data = []
    for site, typed, y, split in splits:
        parts = {}
        for part in ("train", "val", "test"):
            rows = getattr(split, part)
            parts[f"x_{part}"] = apply_transform(typed.iloc[rows], transform)
            parts[f"y_{part}"] = y[rows]
        site_data.append(SiteData(site_id=site.site_id, **parts))
    preprocessing: dict[str, Any] = {
        **transform.to_dict(),
        "label": label.to_dict(),
        "split": {
            "test_fraction": spec.test_fraction,
            "val_fraction": spec.val_fraction,
            "split_seed": spec.split_seed,
            "stratified_when": "2+ classes at the site and every class has more than 2 rows",
            **({"stratified_by": "event"} if label.task == "survival" else {}),
        },
        "site_rows": {s.site_id: {"train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}
                      for s, _, _, sp in splits},
        **(extra or {}),
    }
    return FederatedDataset(
        name=name,
        task=label.task,
        feature_names=transform.feature_names,
        classes=label.classes,
        sites=tuple(site_data),
        preprocessing=preprocessing,
    )
