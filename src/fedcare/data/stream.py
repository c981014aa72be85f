"""A dataset replayed in time order: each site's rows cut into windows (data/windows.py) and
prepared the way a running federation can prepare them.

The transform is fitted once, federatedly, on the first window's training rows, and kept: every
later window is encoded with it (imputation, standardisation, one-hot categories), as a live
coordinator must encode rows that arrive after its run was prepared. Each site answers the later
windows' preparation questions itself -- the first window's `columns`, `schema`, `split`, each
input's first `stats` and `finish` questions, replayed -- so each window is split into train/validation/test at the site with
the run's settings. Categories a later window brings that the fitted transform lacks are encoded as
all zeros (the transform's rule for an unseen value) and *reported* per window and site, never
dropped silently. Sites with no row in the first window are left out, and named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.config.data import DataSpec
from fedcare.core.errors import DataError
from fedcare.data.columns import MIN_CATEGORY_COUNT, ColumnTypes, typed_frame
from fedcare.data.dataset import DataShape, SiteData
from fedcare.data.loader import check_spec, site_groups
from fedcare.data.prepare import SitePreparation, prepare, require_column
from fedcare.data.preprocessing import transform_from_json
from fedcare.data.raw import RawSite
from fedcare.data.readers import read_table
from fedcare.data.values import clean_column
from fedcare.data.windows import Windows, cut_windows

REPLAYED = ("columns", "schema", "split", "stats", "finish")  # what a later window's site is asked again


@dataclass
class StreamData:
    """Every window's prepared rows per site, with the first window's shape and preprocessing."""

    shape: DataShape
    preprocessing: dict[str, Any]
    site_ids: list[str]
    windows: list[dict[str, SiteData]]  # window -> site -> that window's rows (split at the site)
    bounds: list[tuple[str, str]]
    notes: dict[str, Any] = field(default_factory=dict)  # rows without a time, sites left out, new categories


def load_stream(spec: DataSpec, time_column: str, windows: int | None, window: str | None) -> StreamData:
    """Cut the user's files into windows and prepare them (see the module's docstring)."""
    check_spec(spec)
    if spec.partition is not None:
        raise DataError("a stream keeps each site's own rows in time order; --partition is not supported with "
                        "--time-column: give one file per site or --site COLUMN")
    raw, no_site = _raw_sites(spec)
    for site in raw:
        require_column(time_column, list(site.frame.columns), f"'{site.source}'")
    cells = pd.concat([s.frame[time_column] for s in raw], ignore_index=True)
    cut = cut_windows(pd.Series(clean_column(cells), dtype=object), time_column, windows, window)
    per_site = _split_by_window(raw, cut)
    first = {sid: parts[0] for sid, parts in per_site.items() if 0 in parts}
    left_out = [s.site_id for s in raw if s.site_id not in first]
    if not first:
        raise DataError("no site has rows in the first window")
    spec = spec.model_copy(update={"drop": (*spec.drop, time_column)})  # the time orders rows; it is no feature
    sites = [SitePreparation(r, share_name=True) for r in first.values()]
    asked: dict[str, dict] = {}  # phase -> the first window's question, in the order asked

    def ask(phase: str, question: dict) -> dict[str, dict]:
        if phase.rpartition(".")[2] in REPLAYED and phase not in asked:  # an input's first 'stats' types its rows
            asked[phase] = question
        return {site.site_id: site.answer(phase, question) for site in sites}

    prepared = prepare(spec, list(first), ask)
    ids = list(first)
    prepared_windows = [{s.site_id: s.data for s in sites}]  # type: ignore[misc]
    new_categories: dict[str, dict[str, dict]] = {}
    encoding = prepared.preprocessing["encoding"]
    for w in range(1, cut.count):
        arrived = {sid: per_site[sid][w] for sid in ids if w in per_site[sid]}
        prepared_windows.append({sid: _replay(rows, asked) for sid, rows in arrived.items()})
        unseen = {sid: found for sid, rows in arrived.items() if (found := unseen_categories(rows.frame, encoding))}
        if unseen:
            new_categories[str(w + 1)] = unseen
    notes = {"rows_without_time": int((cut.index < 0).sum()), "rows_without_site": no_site,
             "sites_not_in_first_window": left_out,
             "new_categories": new_categories,
             "transform": "fitted on the first window's training rows and kept for every later window"}
    return StreamData(prepared.shape, prepared.preprocessing, ids, prepared_windows, cut.bounds, notes)


def _raw_sites(spec: DataSpec) -> tuple[list[RawSite], int]:
    """The sites' rows, and how many rows were left out for an empty site cell."""
    paths = [Path(p) for p in spec.files]
    if len(paths) > 1:
        return [RawSite(p.stem, read_table(p), p.name) for p in paths], 0
    frame = read_table(paths[0])
    if spec.site is None:
        raise DataError(f"'{paths[0].name}' is one file without sites: pass --site COLUMN, or one file per site")
    require_column(spec.site, list(frame.columns), f"'{paths[0].name}'")
    has_site = frame[spec.site].notna()
    frame = frame[has_site]
    site_ids, order, bounds = site_groups(frame, spec.site)  # each site's rows as a frame: a stream cuts them
    raw = [RawSite(site_id, frame.iloc[order[bounds[i]:bounds[i + 1]]], paths[0].name)
           for i, site_id in enumerate(site_ids)]
    return raw, int((~has_site).sum())


def _split_by_window(raw: list[RawSite], cut: Windows) -> dict[str, dict[int, RawSite]]:
    out, start = {}, 0
    for site in raw:
        index = cut.index[start:start + len(site.frame)]
        start += len(site.frame)
        out[site.site_id] = {int(w): RawSite(site.site_id, site.frame[index == w], site.source)
                             for w in np.unique(index[index >= 0])}
    return out


def _replay(rows: RawSite, asked: Mapping[str, dict]) -> SiteData:
    """A later window at its site: the first window's questions, answered over the new rows."""
    site = SitePreparation(rows, share_name=True)
    for phase, question in asked.items():
        site.answer(phase, question)
    assert site.data is not None
    return site.data


def unseen_categories(frame: pd.DataFrame, encoding: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per categorical column, the rows whose value the fitted transform has never seen: values held by
    at least MIN_CATEGORY_COUNT rows by name (the site encodes them as all zeros), rarer ones together
    as "(other)" (the site lumps them into its "(other)" category, as in the first window)."""
    cells = pd.DataFrame({str(c): clean_column(frame[c]) for c in frame.columns}, dtype=object)
    out: dict[str, dict[str, int]] = {}
    for fitted in encoding.values():
        try:
            transform = transform_from_json(fitted)
        except (KeyError, TypeError, ValueError):
            continue  # not a table input: it has no categories
        columns = [c for c in transform.categorical if c in cells.columns]
        if not columns:
            continue
        typed = typed_frame(cells[columns], ColumnTypes(tuple(columns), (), tuple(columns)), 1)
        for column in columns:
            known = set(transform.categorical[column].categories)
            values = typed[column].dropna()
            counts = values[~values.isin(known)].value_counts()
            if len(counts):
                named = {str(k): int(n) for k, n in counts.items() if n >= MIN_CATEGORY_COUNT}
                rare = int(counts[counts < MIN_CATEGORY_COUNT].sum())
                out[column] = {**named, **({"(other)": rare} if rare else {})}
    return out
