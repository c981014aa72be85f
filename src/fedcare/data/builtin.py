"""Registry of datasets shipped with fedcare, and what `fedcare datasets` shows about them."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data import heart_disease, synthetic_multimodal, synthetic_scans
from fedcare.data.labels import LabelEncoding
from fedcare.data.manifest import read_manifest
from fedcare.data.multimodal import IMAGE_KIND, InputRows, join_site
from fedcare.data.raw import RawSite
from fedcare.data.readers import read_table
from fedcare.data.targets import reads
from fedcare.data.values import canonical, clean_column, parse_numbers


@dataclass(frozen=True)
class BuiltinDataset:
    """A bundled dataset: where its sites' rows come from, how to prepare them, how to cite it.

    Preparation follows the same federated protocol as the user's files (fedcare.data.prepare):
    each site reads only its own rows with `read_site`; the coordinator knows the recipe (target
    columns, categorical columns, a fixed label encoding if any) and the `extra` preprocessing
    entries built from each site's count of rows dropped on reading.
    """

    name: str
    task: str
    description: str
    source: str
    citation: str
    site_ids: tuple[str, ...]
    read_site: Callable[[str], tuple[RawSite, int]]  # one site's text cells, rows dropped on reading
    extra: Callable[[dict[str, int]], dict[str, Any]]  # site_id -> rows dropped on reading
    label: str | None = None
    time: str | None = None
    event: str | None = None
    categorical: tuple[str, ...] = ()
    inputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # kind -> the column patterns it takes
    label_encoding: LabelEncoding | None = None  # fixed instead of inferred from the sites' values
    requires: str | None = None  # optional package the dataset is loaded from
    # settings chosen on the dataset's validation rows (benchmarks/dataset_defaults.py), per
    # personalization mode ("none": no personalization, and any mode without its own entry)
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mask: str | None = None  # the segmentation mask column, the target of --task segmentation
    patient: str | None = None  # the patient column: a patient's rows stay in one split
    image_size: tuple[int, ...] | None = None  # the common image size unless --image-size

    def drop_for(self, task: str | None) -> tuple[str, ...]:
        """Columns that are not features: with a mask column, the target the task does not use."""
        if self.mask is None:
            return ()
        return (self.label,) if reads(task) == "mask" else (self.mask,)  # type: ignore[return-value]

    def site_rows(self) -> list[dict[str, Any]]:
        """Rows per site (None for all when the optional package is missing)."""
        try:
            return [{"site_id": s, "rows": len(self.read_site(s)[0].frame)} for s in self.site_ids]
        except DataError:
            if self.requires is None:
                raise
            return [{"site_id": s, "rows": None} for s in self.site_ids]


HEART_LABEL = LabelEncoding(
    column=heart_disease.LABEL,
    task="binary",
    classes=("no disease", "disease"),
    mapping={"0": 0, "1": 1, "2": 1, "3": 1, "4": 1},  # num > 0 = disease, as in FLamby
)


def _heart_site(site_id: str) -> tuple[RawSite, int]:
    frame, dropped = heart_disease.read_site(site_id)
    return RawSite(site_id, frame, f"processed.{site_id}.data"), dropped


def _heart_extra(dropped: dict[str, int]) -> dict[str, Any]:
    return {"dataset": "heart-disease", "rows_dropped_missing": dict(dropped),
            "columns_dropped": list(heart_disease.DROPPED)}


OVARIAN = "ovarian-genomics"
OVARIAN_NEEDS = f"dataset '{OVARIAN}' needs the survset package: pip install 'fedcare[datasets]'"
OVARIAN_TIME, OVARIAN_EVENT, OVARIAN_SITE = "time", "event", "fac_group"
OVARIAN_GENES = 158
OVARIAN_STUDIES = ("4", "9", "13", "16")  # joint.Cox's study codes (`group`), as SurvSet stores them
OVARIAN_SOURCE = "survset dataOvarian1"


def survset_frame(name: str, needs: str) -> pd.DataFrame:
    """One of the tables the survset package ships (nothing is downloaded); `needs` is the error
    when survset is not installed."""
    try:
        from SurvSet.data import SurvLoader
    except ImportError:
        raise DataError(needs) from None
    with warnings.catch_warnings():  # survset's stored frames trip a numpy deprecation warning on load
        warnings.simplefilter("ignore", DeprecationWarning)
        return SurvLoader().load_dataset(name)["df"]


def _survset_ovarian() -> pd.DataFrame:
    """SurvSet's copy of joint.Cox's dataOvarian1."""
    frame = survset_frame("dataOvarian1", OVARIAN_NEEDS)
    genes = [c for c in frame.columns if c.startswith("num_")]
    for column in (OVARIAN_TIME, OVARIAN_EVENT, OVARIAN_SITE, "fac_debulk"):
        if column not in frame.columns:
            raise DataError(f"survset's dataOvarian1 lacks column '{column}'; this survset version is not supported")
    if len(genes) != OVARIAN_GENES:
        raise DataError(f"survset's dataOvarian1 has {len(genes)} genes, expected {OVARIAN_GENES}; "
                        "this survset version is not supported")
    return frame


def _ovarian_site(site_id: str) -> tuple[RawSite, int]:
    """One study's rows as text cells, like a read file; rows with time <= 0 dropped (and counted)."""
    raw = _survset_ovarian()
    renamed = {c: c.removeprefix("num_").removeprefix("fac_") for c in raw.columns
               if c.startswith(("num_", "fac_")) and c != OVARIAN_SITE}
    frame = pd.DataFrame({renamed.get(c, c): clean_column(raw[c]) for c in raw.columns if c != "pid"}, dtype=object)
    found = {canonical(v) for v in frame[OVARIAN_SITE].tolist() if v is not None}
    if found != set(OVARIAN_STUDIES):
        raise DataError(f"survset's dataOvarian1 has studies {sorted(found)}, expected {list(OVARIAN_STUDIES)}")
    study = site_id.removeprefix("study-")
    frame = frame[frame[OVARIAN_SITE].map(lambda v: v is not None and canonical(v) == study)]
    # Two patients are censored at time 0: not in any risk set or comparable pair, so dropping them
    # changes neither the Cox loss nor the C-index (a censored time 0 is accepted in users' files).
    positive = parse_numbers(frame[OVARIAN_TIME]) > 0
    rows = frame[positive].drop(columns=[OVARIAN_SITE])
    return RawSite(site_id, rows, OVARIAN_SOURCE), int((~positive).sum())


def _ovarian_extra(dropped: dict[str, int]) -> dict[str, Any]:
    return {"dataset": OVARIAN, "source": OVARIAN_SOURCE, "rows_dropped_nonpositive_time": sum(dropped.values()),
            "columns_dropped": ["pid"]}


# Chosen on validation rows by benchmarks/dataset_defaults.py --select (RESULTS.md §11); fedbn is not here:
# it needs batch_norm, which the config checks before any default is applied.
_MLP = {"model": "mlp", "hidden": [16]}
HEART_DEFAULTS = {
    "none": {"lr": 0.01, "local_epochs": 5},
    "finetune": {"lr": 0.01, "local_epochs": 5, "finetune_epochs": 5},
    "ditto": {"lr": 0.01, "local_epochs": 5, "ditto_lambda": 1.0, "model": "linear"},
    "fedper": {"lr": 0.01, "local_epochs": 5, **_MLP},
    "fedrep": {"lr": 0.03, "local_epochs": 5, **_MLP},
}
OVARIAN_DEFAULTS = {"none": {"rounds": 30, "local_epochs": 1, "batch_size": 64, "lr": 0.01}}
SYNTHETIC_SCANS = "synthetic-scans"


def _scans_site(site_id: str) -> tuple[RawSite, int]:
    """One synthetic site's manifest rows (the files generated first if the cache lacks them)."""
    manifest = read_manifest(synthetic_scans.ensure(), None, site=site_id)
    frame = manifest.frame.drop(columns=["site"])
    return RawSite(site_id, frame, "manifest.csv"), 0


def _scans_extra(dropped: dict[str, int]) -> dict[str, Any]:
    return {"dataset": SYNTHETIC_SCANS, "synthetic": True, "generator_seed": synthetic_scans.SEED}


SYNTHETIC_MULTIMODAL = "synthetic-multimodal"
SYNTHETIC_MULTIMODAL_MISSING = "synthetic-multimodal-missing"


def _multimodal_site(missing: bool) -> Callable[[str], tuple[RawSite, int]]:
    """One synthetic site's patients, joined from its clinical, omics and image files (fedcare.data.multimodal);
    a file the variant leaves out is read as none of the site's rows."""
    def read(site_id: str) -> tuple[RawSite, int]:
        folder = synthetic_multimodal.ensure() / site_id
        lacks = synthetic_multimodal.MISSING_VARIANT.get(site_id) if missing else None
        parts = []
        for kind, name in (("omics", synthetic_multimodal.OMICS), (IMAGE_KIND, synthetic_multimodal.IMAGES)):
            if kind == lacks:
                parts.append(InputRows(kind, read_table(folder / name).iloc[0:0], f"(no {name})"))
            else:
                frame = read_manifest(folder / name).frame if kind == IMAGE_KIND else read_table(folder / name)
                parts.append(InputRows(kind, frame, name))
        clinical = synthetic_multimodal.CLINICAL
        return join_site(site_id, read_table(folder / clinical), clinical, parts, synthetic_multimodal.PATIENT)[0], 0
    return read


def _multimodal_extra(name: str) -> Callable[[dict[str, int]], dict[str, Any]]:
    return lambda dropped: {"dataset": name, "synthetic": True, "generator_seed": synthetic_multimodal.SEED}


def _multimodal(name: str, missing: bool) -> BuiltinDataset:
    lacks = (" Variant: site-2 has no images, site-3 no omics." if missing else "")
    return BuiltinDataset(
        name=name,
        task="binary",
        description="SYNTHETIC multimodal patients (generated, not patients): 4 sites, clinical table + 50 genes + "
                    "16x16 images per patient, joined by patient id; the outcome depends on one effect in each "
                    f"modality; ~15% of patients lack omics, ~15% an image.{lacks} Written from a fixed seed into "
                    "the cache at first use (needs the imaging extra)",
        source="generated by fedcare.data.synthetic_multimodal (seed 0); no real patients",
        citation="synthetic demo data; cite fedcare",
        site_ids=synthetic_multimodal.SITES,
        read_site=_multimodal_site(missing),
        extra=_multimodal_extra(name),
        label=synthetic_multimodal.LABEL,
        categorical=("sex",),
        requires="pillow",
        patient=synthetic_multimodal.PATIENT,
        image_size=(synthetic_multimodal.SIZE,) * 2,
    )


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "heart-disease": BuiltinDataset(
        name="heart-disease",
        task="binary",
        description="UCI Heart Disease, 4 hospitals, predict coronary artery disease (FLamby Fed-Heart-Disease preprocessing)",
        source="UCI Machine Learning Repository, Heart Disease (1988), CC BY 4.0; PIs: A. Janosi, W. Steinbrunn, "
               "M. Pfisterer, R. Detrano",
        citation="du Terrail et al., FLamby: Datasets and Benchmarks for Cross-Silo Federated Learning in "
                 "Realistic Healthcare Settings, NeurIPS 2022 Datasets and Benchmarks",
        site_ids=heart_disease.SITES,
        read_site=_heart_site,
        extra=_heart_extra,
        label=heart_disease.LABEL,
        categorical=heart_disease.CATEGORICAL,
        label_encoding=HEART_LABEL,
        defaults=HEART_DEFAULTS,
    ),
    OVARIAN: BuiltinDataset(
        name=OVARIAN,
        task="survival",
        description="Ovarian cancer, 4 studies, time to recurrence from 158 genes' expression (omics input) and "
                    "debulking status (tabular input) (optional: needs the survset package, from the fedcare "
                    "'datasets' extra)",
        source="SurvSet (Drysdale 2022), dataset dataOvarian1 from the R package joint.Cox (Emura et al.), "
               "derived from curatedOvarianData (Ganzfried et al. 2013)",
        citation="Drysdale, SurvSet: An open-source time-to-event dataset repository, arXiv:2203.03094 (2022); "
                 "Ganzfried et al., curatedOvarianData, Database 2013",
        site_ids=tuple(f"study-{s}" for s in OVARIAN_STUDIES),
        read_site=_ovarian_site,
        extra=_ovarian_extra,
        time=OVARIAN_TIME,
        event=OVARIAN_EVENT,
        categorical=("debulk",),
        inputs={"omics": ("*",)},  # every gene; debulking status, a category, stays tabular
        requires="survset",
        defaults=OVARIAN_DEFAULTS,
    ),
    SYNTHETIC_SCANS: BuiltinDataset(
        name=SYNTHETIC_SCANS,
        task="binary",
        description="SYNTHETIC scans (generated, not patients): 4 sites with their own scanner (noise, bias field, "
                    "contrast, blur, resolution), 2-D images (48 to 80 pixels, resampled to 32x32 unless "
                    "--image-size), lesion present (label) or its segmentation mask (--task segmentation); "
                    "written from a fixed seed into the cache at first use (needs the imaging extra)",
        source="generated by fedcare.data.synthetic_scans (seed 0); no real images",
        citation="synthetic demo data; cite fedcare",
        site_ids=synthetic_scans.SITES,
        read_site=_scans_site,
        extra=_scans_extra,
        label="label",
        inputs={"image": ("path",)},
        requires="pillow",
        mask="mask",
        patient="patient",
        image_size=(32, 32),  # lesions stay a few pixels wide, and a default run takes minutes on 2 cores
    ),
    SYNTHETIC_MULTIMODAL: _multimodal(SYNTHETIC_MULTIMODAL, missing=False),
    SYNTHETIC_MULTIMODAL_MISSING: _multimodal(SYNTHETIC_MULTIMODAL_MISSING, missing=True),
}


def get_builtin(name: str) -> BuiltinDataset:
    """Look up a built-in dataset, listing the names when it is unknown."""
    if name not in BUILTIN_DATASETS:
        raise DataError(f"unknown dataset '{name}'; built-in datasets are: {', '.join(BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name]


_MODULES = {"survset": "SurvSet", "pillow": "PIL"}  # pip name -> import name


def _available(d: BuiltinDataset) -> bool:
    if d.requires is None:
        return True
    try:
        return importlib.util.find_spec(_MODULES.get(d.requires, d.requires)) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def dataset_info() -> list[dict[str, Any]]:
    """One JSON-able entry per built-in dataset, for `fedcare datasets`.

    A dataset whose optional package is missing is still listed, with `available` False and
    rows None (unknown).
    """
    return [
        {"name": d.name, "task": d.task, "description": d.description, "sites": d.site_rows(),
         "source": d.source, "citation": d.citation, "available": _available(d)}
        for d in BUILTIN_DATASETS.values()
    ]
