"""The sites of a multimodal layout (fedcare.data.multimodal), read from the user's files.

Two layouts, as for one table:
  one file per input, each with the --site column:  --data clinical.csv --omics genes.csv --site hospital
  one folder per site:                              --data A/clinical.csv B/clinical.csv
                                                    --omics A/genes.csv B/genes.csv
In the second, a site's id is its --data file's name, or its folder's name when those repeat, and an
input file belongs to the site whose --data file is in the same folder; a site with no file of an
input lacks that input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.dataset import DataSpec
from fedcare.data.manifest import read_manifest
from fedcare.data.multimodal import IMAGE_KIND, InputRows, by_site, join_site
from fedcare.data.prepare import SitePreparation
from fedcare.data.readers import read_table


def _read(kind: str, path: Path, skip_bad_images: bool = False) -> pd.DataFrame:
    """An input's file; a header without rows is a site without that input."""
    frame = read_table(path, allow_empty=True)
    if kind == IMAGE_KIND and len(frame):
        return read_manifest(path, None, skip_bad_images).frame
    return frame


def site_from_files(site_id: str, data: Path, inputs: Mapping[str, Path], patient: str,
                    skip_bad_images: bool = False) -> SitePreparation:
    """One hospital's own files joined by patient (a site agent's data): `inputs` maps each further
    input kind to its file; a kind it lacks is a file with the header and no rows."""
    parts = [InputRows(kind, _read(kind, Path(path), skip_bad_images), Path(path).name)
             for kind, path in inputs.items()]
    return SitePreparation(join_site(site_id, read_table(Path(data)), Path(data).name, parts, patient)[0])


def site_ids(paths: Sequence[Path]) -> list[str]:
    """Each --data file's site: its name, or its folder's name when the names repeat."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    folders = [p.resolve().parent.name for p in paths]
    if len(set(folders)) != len(folders):
        raise DataError("several --data files share a file name and a folder name; site ids come from them, so "
                        "rename the files or put each site's files in a folder of its own")
    return folders


def joined_sites(spec: DataSpec) -> tuple[list[SitePreparation], dict[str, Any]]:
    """One SitePreparation per site, its patients joined across the files; and summary.json's counts
    of the patients found in a joined file but not in the --data file (no outcome, not examples)."""
    assert spec.patient is not None  # DataSpec.check_values requires it with inputs
    paths = [Path(p) for p in spec.files]
    unmatched: dict[str, dict[str, int]] = {i.kind: {} for i in spec.inputs}
    raws = []
    if len(paths) == 1:
        if spec.site is None:
            raise DataError(f"'{paths[0].name}' is one file without sites: pass --site COLUMN (every joined file "
                            "needs it too), or give one folder per site")
        main = by_site(read_table(paths[0]), spec.site, paths[0].name)
        others = {}
        for item in spec.inputs:
            if len(item.file) != 1:
                raise DataError(f"with one --data file and --site, give one {item.kind} file with the site column, "
                                f"not {len(item.file)}")
            path = Path(item.file[0])
            frame = _read(item.kind, path, spec.skip_bad_images)
            others[item.kind] = (by_site(frame, spec.site, path.name), frame.iloc[0:0], path.name)
        for site, rows in main.items():
            parts = [InputRows(kind, frames.get(site, none), name) for kind, (frames, none, name) in others.items()]
            raws.append((site, rows, paths[0].name, parts))
    else:
        ids = site_ids(paths)
        folder = {p.resolve().parent: s for p, s in zip(paths, ids)}
        if len(folder) != len(paths):
            raise DataError("with one --data file per site, put each site's files in a folder of its own "
                            "(A/clinical.csv, A/genes.csv, B/clinical.csv, ...), so that its inputs are found")
        files: dict[str, dict[str, tuple[pd.DataFrame, str]]] = {}
        for item in spec.inputs:
            files[item.kind] = {}
            for name in item.file:
                path = Path(name)
                site = folder.get(path.resolve().parent)
                if site is None:
                    raise DataError(f"{item.kind} file '{path}' is in no --data file's folder; put it beside its "
                                    "site's --data file")
                if site in files[item.kind]:
                    raise DataError(f"site '{site}' has two {item.kind} files; give one per site")
                files[item.kind][site] = (_read(item.kind, path, spec.skip_bad_images), path.name)
        for path, site in zip(paths, ids):
            parts = []
            for kind, found in files.items():
                none = next(iter(found.values()))[0].iloc[0:0]  # the columns every other site's file has
                frame, name = found.get(site, (none, f"(no {kind} file)"))
                parts.append(InputRows(kind, frame, name))
            raws.append((site, read_table(path), path.name, parts))
    sites = []
    for site, rows, source, parts in raws:
        raw, lost = join_site(site, rows, source, parts, spec.patient, spec.site)
        sites.append(SitePreparation(raw, share_name=True))
        for kind, n in lost.items():
            unmatched[kind][site] = n
    return sites, {"patients_without_outcome": unmatched}
