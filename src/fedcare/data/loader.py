"""load_dataset: check the spec, then build sites from a built-in dataset or the user's files.

Targets: --label (binary, multiclass, regression) or --time and --event (survival).
Files: several files = one site each; one file with --site = one site per value; one file without
sites = simulated sites via --partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data import partition as partitioners
from fedcare.data.assemble import build_dataset
from fedcare.data.builtin import get_builtin
from fedcare.data.columns import type_columns
from fedcare.data.dataset import DataSpec, FederatedDataset
from fedcare.data.labels import LabelEncoding, infer_label_encoding
from fedcare.data.raw import RawSite
from fedcare.data.readers import read_table
from fedcare.data.survival import SurvivalEncoding, infer_survival_encoding
from fedcare.data.values import canonical

SHOWN_COLUMNS = 12


def load_dataset(spec: DataSpec) -> FederatedDataset:
    """Load and encode the dataset `spec` describes; bad input raises ConfigError/DataError."""
    check_spec(spec)
    if spec.dataset is not None:
        return get_builtin(spec.dataset).load(spec)
    return load_files(spec)


def check_spec(spec: DataSpec) -> None:
    """Reject contradictory or out-of-range options before any file is read."""
    if spec.dataset is not None and spec.data:
        raise ConfigError("pass either --dataset or --data, not both")
    if spec.dataset is None and not spec.data:
        raise ConfigError("no data given: pass --dataset NAME (see `fedcare datasets`) or --data FILE")
    if not 0.0 < spec.test_fraction < 1.0:
        raise ConfigError(f"test fraction must be between 0 and 1, got {spec.test_fraction}")
    if not 0.0 <= spec.val_fraction < 1.0:
        raise ConfigError(f"val fraction must be in [0, 1), got {spec.val_fraction}")
    if spec.task not in (None, "binary", "multiclass", "regression", "survival"):
        raise ConfigError(f"unknown task '{spec.task}': use binary, multiclass, regression or survival")
    if spec.dataset is not None:
        builtin = get_builtin(spec.dataset)
        for flag, value in (("site", spec.site), ("label", spec.label), ("time", spec.time), ("event", spec.event),
                            ("partition", spec.partition), ("drop", spec.drop), ("categorical", spec.categorical)):
            if value:
                raise ConfigError(f"--{flag} applies to --data files, not to the built-in dataset '{spec.dataset}'")
        if spec.task is not None and spec.task != builtin.task:
            raise ConfigError(f"dataset '{spec.dataset}' is a {builtin.task} task, not {spec.task}")
        return
    _check_targets(spec)
    if spec.site is not None and len(spec.data) > 1:
        raise ConfigError("--site cannot be used with several --data files: each file already is one site")
    if spec.partition is not None:
        if spec.partition not in ("iid", "dirichlet", "quantity"):
            raise ConfigError(f"unknown partition '{spec.partition}': use iid, dirichlet or quantity")
        if spec.site is not None or len(spec.data) > 1:
            raise ConfigError("--partition is only for one file without a site column; drop --partition or --site")
        if spec.num_sites < 1:
            raise ConfigError(f"--num-sites must be at least 1, got {spec.num_sites}")
        if spec.alpha <= 0:
            raise ConfigError(f"--alpha must be positive, got {spec.alpha}")


def _check_targets(spec: DataSpec) -> None:
    """--label for binary/multiclass/regression; --time and --event (and no --label) for survival."""
    survival = spec.time is not None or spec.event is not None or spec.task == "survival"
    if not survival:
        if spec.label is None:
            raise ConfigError("--label is required with --data: name the column to predict "
                              "(or --time and --event for a survival task)")
        return
    if spec.label is not None:
        raise ConfigError("a survival task takes --time and --event instead of --label; drop --label")
    if spec.time is None or spec.event is None:
        missing = "--time" if spec.time is None else "--event"
        raise ConfigError(f"a survival task needs both --time (time to event or censoring) and --event "
                          f"(1 = event, 0 = censored); {missing} is missing")
    if spec.task not in (None, "survival"):
        raise ConfigError(f"--time and --event make a survival task, not {spec.task}; drop --task")


def _columns_text(columns: list[str]) -> str:
    shown = ", ".join(columns[:SHOWN_COLUMNS])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > SHOWN_COLUMNS else "")


def _require(column: str, columns: list[str], source: str) -> None:
    if column not in columns:
        raise DataError(f"column '{column}' not found in '{source}'; available columns: {_columns_text(columns)}")


def _read_all(paths: list[Path]) -> list[pd.DataFrame]:
    frames = [read_table(p) for p in paths]
    if len({p.stem for p in paths}) != len(paths):
        raise DataError("several --data files share a file name; site ids come from file names, so rename them")
    reference = list(frames[0].columns)
    for path, frame in zip(paths[1:], frames[1:]):
        missing = [c for c in reference if c not in frame.columns]
        extra = [c for c in frame.columns if c not in reference]
        if missing or extra:
            what = f"lacks column '{missing[0]}'" if missing else f"has extra column '{extra[0]}'"
            raise DataError(f"'{path.name}' {what} compared with '{paths[0].name}'; all site files need the same columns")
    return frames


def _sites_from_column(frame: pd.DataFrame, column: str, source: str) -> list[RawSite]:
    values = frame[column].tolist()
    for row, value in zip(frame.index, values):
        if value is None:
            raise DataError(f"site column '{column}' is empty in row {row + 1} of '{source}'; fill it or drop the row")
    ids = pd.Series([canonical(v) for v in values], index=frame.index)
    order = list(dict.fromkeys(ids.tolist()))
    return [RawSite(site_id, frame[ids == site_id], source) for site_id in order]


def _partition(frame: pd.DataFrame, spec: DataSpec, label: LabelEncoding | SurvivalEncoding, source: str) -> list[RawSite]:
    rng = np.random.default_rng(spec.partition_seed)
    n = len(frame)
    if spec.partition == "iid":
        parts = partitioners.iid(n, spec.num_sites, rng)
    elif spec.partition == "quantity":
        parts = partitioners.quantity(n, spec.num_sites, spec.alpha, rng)
    else:
        codes = label.strata(frame)  # survival: skewed by event vs. censored
        if codes is None:
            raise DataError("the dirichlet partition skews labels by class and a regression label has no classes; "
                            "use --partition iid or --partition quantity")
        parts = partitioners.dirichlet(codes, spec.num_sites, spec.alpha, rng)
    return [RawSite(f"site-{i + 1}", frame.iloc[rows], source) for i, rows in enumerate(parts)]


def load_files(spec: DataSpec) -> FederatedDataset:
    """Bring-your-own data: read, assign sites, infer the task and column kinds, then build."""
    survival = spec.time is not None
    targets = (spec.time, spec.event) if survival else (spec.label,)
    assert all(targets)
    paths = [Path(p) for p in spec.data]
    frames = _read_all(paths)
    columns = list(frames[0].columns)
    source = paths[0].name
    for column in (*targets, *([spec.site] if spec.site else []), *spec.drop, *spec.categorical):
        _require(column, columns, source)
    dropped_label: dict[str, int] = {}
    kept = []
    for path, frame in zip(paths, frames):
        has_label = frame[list(targets)].notna().all(axis=1)
        dropped_label[path.name] = int((~has_label).sum())
        kept.append(frame[has_label])
    label: LabelEncoding | SurvivalEncoding
    if survival:
        label = infer_survival_encoding(spec.time, spec.event, [(p.name, f) for p, f in zip(paths, kept)])
    else:
        label = infer_label_encoding(spec.label, [v for f in kept for v in f[spec.label].tolist()], spec.task)
    if len(paths) > 1:
        sites = [RawSite(p.stem, f, p.name) for p, f in zip(paths, kept)]
    elif spec.site is not None:
        sites = _sites_from_column(kept[0], spec.site, source)
    elif spec.partition is not None:
        sites = _partition(kept[0], spec, label, source)
    else:
        raise DataError(f"'{source}' is one file without sites: pass --site COLUMN to name its site column, "
                        "or --partition iid|dirichlet|quantity to simulate sites")
    excluded = {*targets, *([spec.site] if spec.site else []), *spec.drop}
    features = [c for c in columns if c not in excluded]
    if not features:
        what = "time, event" if survival else "label"
        raise DataError(f"no feature columns left in '{source}' after removing the {what}, site and --drop columns")
    types = type_columns(features, sites, spec.categorical, several_files=len(paths) > 1)
    extra: dict[str, Any] = {
        "files": [p.name for p in paths],
        ("rows_dropped_missing_time_or_event" if survival else "rows_dropped_missing_label"): dropped_label,
        "columns_dropped": list(spec.drop),
        "site_column": spec.site,
    }
    if spec.partition is not None:
        extra["partition"] = {"kind": spec.partition, "num_sites": spec.num_sites, "alpha": spec.alpha,
                              "seed": spec.partition_seed}
    return build_dataset(paths[0].stem, sites, label, types, spec, extra)
