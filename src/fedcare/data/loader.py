"""load_dataset: check the spec, then prepare sites from a built-in dataset or the user's files.

Targets: --label (binary, multiclass, regression) or --time and --event (survival).
Files: several files = one site each; one file with --site = one site per value; one file without
sites = simulated sites via --partition. Whatever the layout, the sites are then prepared through
fedcare.data.prepare, in this process: the exchange a networked run has with its sites, so
simulation and deployment cannot drift apart. Built-in datasets and the user's files follow the
same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data import partition as partitioners
from fedcare.data.builtin import get_builtin
from fedcare.data.dataset import DataSpec, FederatedDataset, SiteData
from fedcare.data.joinedfiles import joined_sites
from fedcare.data.labels import LabelEncoding, infer_label_encoding
from fedcare.data.manifest import manifest_spec, read_manifest
from fedcare.data.prepare import SitePreparation, ask_in_process, check_options, prepare, require_column
from fedcare.data.raw import RawSite
from fedcare.data.readers import read_table_typed
from fedcare.data.sitetable import SiteTable
from fedcare.data.survival import SurvivalEncoding, infer_survival_encoding
from fedcare.data.values import canonical


def load_dataset(spec: DataSpec) -> FederatedDataset:
    """Load and encode the dataset `spec` describes; bad input raises ConfigError/DataError."""
    check_spec(spec)
    if spec.dataset is not None:
        builtin = get_builtin(spec.dataset)
        return build_dataset(spec, [SitePreparation.from_builtin(builtin.name, s) for s in builtin.site_ids])
    if spec.inputs:  # several files per patient, joined at each site (fedcare.data.joinedfiles)
        sites, extra = joined_sites(spec)
        return build_dataset(spec, sites, extra)
    if spec.images is not None:  # an image manifest: its files checked, its paths made absolute
        manifest = read_manifest(spec.images, spec.task, spec.skip_bad_images)
        spec = manifest_spec(spec, list(manifest.frame.columns))
        return load_files(spec, manifest.frame, {"images_skipped": list(manifest.skipped)})
    return load_files(spec)


def check_spec(spec: DataSpec) -> None:
    """Reject contradictory or out-of-range options before any file is read."""
    check_options(spec)
    if spec.dataset is None and not spec.files and spec.images is None:  # (a coordinator's sites hold them)
        raise ConfigError("no data given: pass --dataset NAME (see `fedcare datasets`) or --data FILE")
    if spec.dataset is not None:
        return
    if spec.site is not None and len(spec.files) > 1:
        raise ConfigError("--site cannot be used with several --data files: each file already is one site")
    if spec.partition is not None and (spec.site is not None or len(spec.files) > 1):
        raise ConfigError("--partition is only for one file without a site column; drop --partition or --site")


def site_groups(frame: pd.DataFrame, column: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The site ids of a site column in order of first appearance, the rows grouped by site (stable:
    file order within a site) and where each site's rows start: one pass, however many sites."""
    codes, spellings = pd.factorize(frame[column].to_numpy(dtype=object))
    site_codes, site_ids = pd.factorize(np.array([canonical(v) for v in spellings], dtype=object))
    rows = site_codes[codes]  # each row's site, numbered in order of first appearance
    order = np.argsort(rows, kind="stable")
    return [str(s) for s in site_ids], order, np.searchsorted(rows[order], np.arange(len(site_ids) + 1))


def _sites_from_column(frame: pd.DataFrame, column: str, source: str) -> list[RawSite]:
    """One site per value of the site column, in order of first appearance (rows without one are
    dropped before: `load_files` counts them)."""
    site_ids, order, bounds = site_groups(frame, column)
    in_order = bool((order == np.arange(len(order))).all())  # sites already together: no reordered copy
    tables = SiteTable.from_frame(frame, None if in_order else order, share=True).grouped(bounds)  # each site a view
    return [RawSite(site_id, table, source) for site_id, table in zip(site_ids, tables)]


def _partition(frame: pd.DataFrame, spec: DataSpec, source: str) -> list[RawSite]:
    """Simulated sites; the label encoding of the whole file skews the dirichlet partition."""
    label: LabelEncoding | SurvivalEncoding
    if spec.time is not None:
        label = infer_survival_encoding(spec.time, spec.event, [(source, frame)])  # type: ignore[arg-type]
    else:
        label = infer_label_encoding(spec.label, frame[spec.label].tolist(), spec.task)  # type: ignore[arg-type]
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
    table = SiteTable.from_frame(frame)
    return [RawSite(f"site-{i + 1}", table.take(rows), source) for i, rows in enumerate(parts)]


def load_files(spec: DataSpec, frame: pd.DataFrame | None = None, extra: dict[str, Any] | None = None
               ) -> FederatedDataset:
    """Bring-your-own data: one site per file, or one file cut into sites (by a column or a partition);
    `frame` is the one file's rows when they are already read (an image manifest)."""
    paths = [Path(p) for p in spec.files]
    if len(paths) > 1:
        sites = [SitePreparation.from_manifest(p, p.stem, spec.skip_bad_images) if spec.image_columns
                 else SitePreparation.from_file(p, p.stem, share_name=True) for p in paths]
        if len({p.stem for p in paths}) != len(paths):
            raise DataError("several --data files share a file name; site ids come from file names, so rename them")
        return build_dataset(spec, sites)
    # One file: the rows without a target are dropped (and counted) before the file is cut into sites.
    frame, source = (read_table_typed(paths[0], text_columns(spec)) if frame is None else frame), paths[0].name
    targets = [spec.time, spec.event] if spec.time is not None else [spec.label]
    columns = list(frame.columns)
    for column in (*targets, *([spec.site] if spec.site else []), *spec.drop, *spec.categorical):
        require_column(column, columns, f"'{source}'")  # type: ignore[arg-type]
    complete = frame[targets].notna().all(axis=1)
    kept = _rows_where(frame, complete)
    no_site = 0
    if spec.site is not None:
        has_site = kept[spec.site].notna()
        no_site = int((~has_site).sum())
        raw = _sites_from_column(_rows_where(kept, has_site), spec.site, source)
    elif spec.partition is not None:
        raw = _partition(kept, spec, source)
    else:
        raise DataError(f"'{source}' is one file without sites: pass --site COLUMN to name its site column, "
                        "or --partition iid|dirichlet|quantity to simulate sites")
    del frame, kept  # the sites hold their own rows now: a big file is not held twice
    dropped = "rows_dropped_missing_time_or_event" if spec.time is not None else "rows_dropped_missing_label"
    overrides: dict = {dropped: {source: int((~complete).sum())}, **(extra or {})}
    if spec.partition is not None:
        overrides["partition"] = {"kind": spec.partition, "num_sites": spec.num_sites, "alpha": spec.alpha,
                                  "seed": spec.partition_seed}
    dataset = build_dataset(spec.model_copy(update={"partition": None}), [SitePreparation(r, share_name=True, release_rows=True) for r in raw], overrides)
    if no_site:
        dataset.preprocessing["rows_dropped_missing_site"] = {source: no_site}
        dataset.preprocessing.setdefault("warnings", []).append(
            f"{no_site} rows of '{source}' have an empty site column '{spec.site}' and were dropped")
    return dataset


def text_columns(spec: DataSpec) -> set[str]:
    """The columns read as text whatever they hold: targets, the site, arms, patients, images, and the
    columns declared categorical or dropped (a feature column of numbers is parsed at reading)."""
    named = (spec.site, spec.label, spec.time, spec.event, spec.treatment, spec.patient)
    return {c for c in named if c is not None} | set(spec.drop) | set(spec.categorical) | set(spec.image_columns)


def _rows_where(frame: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    """frame[mask], without a copy when every row is kept."""
    return frame if bool(mask.all()) else frame[mask]


def build_dataset(spec: DataSpec, sites: Sequence[SitePreparation], overrides: dict[str, Any] | None = None
                  ) -> FederatedDataset:
    """Run the preparation over in-process sites, in their order; `overrides` replaces preprocessing
    entries that only the simulation knows (rows dropped before one file was cut into sites)."""
    prepared = prepare(spec, [s.site_id for s in sites], ask_in_process(sites))
    data: list[SiteData] = []
    for site in sites:
        assert site.data is not None  # set by the last phase
        data.append(site.data)
    return FederatedDataset(prepared.name, prepared.shape, tuple(data),
                            {**prepared.preprocessing, **(overrides or {})})
