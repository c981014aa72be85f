"""The data section: what to load and how to split it. It is also the data layer's own spec
(fedcare.data.DataSpec), so the rules on its values live here once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedcare.core.config.base import Section, one_or_many
from fedcare.core.errors import ConfigError

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig

PARTITIONS = ("iid", "dirichlet", "quantity")
DEFAULT_DATASET = "heart-disease"
# keys that describe the columns of the user's own files: given without `data` (a coordinator's config,
# whose sites hold the files), they mean own files, never the default built-in dataset
COLUMN_KEYS = ("site", "label", "time", "event", "drop", "categorical", "omics_columns")
OWN_DATA = "own-data"  # the name of a dataset of files the sites hold: a site's file name is its own business
IMAGE_DATASETS = ("synthetic-scans", "synthetic-multimodal", "synthetic-multimodal-missing")  # built-in datasets of images


class InputFile(BaseModel):
    """One more input of a multimodal layout (fedcare.data.multimodal): its kind and its file, or one
    file per site (each in its site's folder, beside the site's --data file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    file: tuple[str, ...]

    @field_validator("file", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return one_or_many(v)


class DataSpec(Section):
    dataset: str | None = Field(None, description="built-in dataset name")
    files: tuple[str, ...] = Field((), alias="data",
                                   description="CSV/Parquet file(s): one with a site column, or one per site")
    site: str | None = Field(None, description="site column")
    label: str | None = Field(None, description="label column")
    time: str | None = Field(None, description="survival: time-to-event column (with event, instead of label)")
    event: str | None = Field(None, description="survival: event column, 1 = event observed, 0 = censored")
    task: str | None = Field(None, description="override the task inferred from the label")
    drop: tuple[str, ...] = Field((), description="identifier columns to drop")
    categorical: tuple[str, ...] = Field((), description="columns to treat as categorical")
    omics_columns: tuple[str, ...] = Field((), description="columns (or shell patterns such as 'gene_*') that form "
                                           "the omics input, standardised gene by gene")
    # treatment effects (docs/treatment.md)
    treatment: str | None = Field(None, description="arm column: estimate each arm's effect against the control")
    control: str | None = Field(None, description="the control arm (default: the first arm in sorted order)")
    propensity: float | None = Field(None, description="known probability of each treated arm (a randomised "
                                     "trial); without it the propensity is learned")
    # images (fedcare.data.inputs.image): a manifest of image files, one row per image
    images: str | None = Field(None, description="image manifest (CSV/Parquet): columns path, label or mask, "
                               "site, optional patient; relative paths resolve against the manifest")
    image_columns: tuple[str, ...] = Field((), description="columns whose cells are image files (a manifest: path)")
    image_size: tuple[int, ...] | None = Field(None, description="every image resampled to this size, e.g. "
                                               "[64, 64] (default: 64 per axis)")
    skip_bad_images: bool = Field(False, description="skip and count unreadable images instead of stopping")
    patient: str | None = Field(None, description="patient id column: a patient's rows stay in one split")
    # several files per patient, joined by the patient column (fedcare.data.multimodal, docs/multimodal.md)
    inputs: tuple[InputFile, ...] = Field((), description="more inputs of each patient, joined to --data by "
                                          "--patient: a list of {kind: omics|image, file: FILE(S)}")
    test_fraction: float = 0.34
    split_seed: int = 43
    val_fraction: float = Field(0.0, description="validation share carved from each site's training split")
    partition: str | None = Field(None, description="iid, dirichlet or quantity: simulated sites from one file")
    num_sites: int = 4
    alpha: float = 0.5
    partition_seed: int = 0

    @field_validator("files", "drop", "categorical", "omics_columns", "image_columns", "image_size", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return one_or_many(v)

    def check_values(self) -> None:
        """Contradictory or out-of-range values, refused before anything is read (by the config and by
        the data layer)."""
        if self.dataset is not None and self.files:
            raise ConfigError("pass either --dataset or --data, not both")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test fraction must be between 0 and 1, got {self.test_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val fraction must be in [0, 1), got {self.val_fraction}")
        if self.partition is not None and self.partition not in PARTITIONS:
            raise ConfigError(f"unknown partition '{self.partition}': use iid, dirichlet or quantity")
        if self.num_sites < 1:
            raise ConfigError(f"--num-sites must be at least 1, got {self.num_sites}")
        if self.alpha <= 0:
            raise ConfigError(f"--alpha must be positive, got {self.alpha}")
        if self.image_size is not None and (len(self.image_size) not in (2, 3) or min(self.image_size) < 4
                                            or max(self.image_size) > 1024):
            raise ConfigError(f"--image-size takes 2 or 3 sizes between 4 and 1024, got {list(self.image_size)}")
        if self.images is not None and (self.files or self.dataset is not None):
            raise ConfigError("pass --images MANIFEST alone, without --data or --dataset")
        self._check_inputs()
        self._check_treatment()

    def _check_inputs(self) -> None:
        if not self.inputs:
            return
        if not self.files:
            raise ConfigError("inputs are joined to the --data file that holds the outcome: pass --data too")
        if self.patient is None:
            raise ConfigError("several files per patient are joined by a patient id: pass --patient COLUMN")
        if any(not i.file for i in self.inputs):
            raise ConfigError("every entry of inputs needs a file: {kind: omics, file: genes.csv}")
        kinds = [i.kind for i in self.inputs]
        if "tabular" in kinds or len(set(kinds)) != len(kinds):
            raise ConfigError("give each input kind at most once (omics, image), besides the --data file, "
                              f"which is tabular; got {', '.join(kinds)}")
        if self.partition is not None:
            raise ConfigError("--partition cuts one table into sites; several files per patient need their own "
                              "sites: pass --site COLUMN or one folder per site")

    def _check_treatment(self) -> None:
        if self.treatment is None:
            if self.control is not None or self.propensity is not None:
                flag = "--control" if self.control is not None else "--propensity"
                raise ConfigError(f"{flag} needs --treatment: name the arm column")
            return
        if self.dataset is not None:
            raise ConfigError(f"--treatment applies to --data files; the built-in dataset '{self.dataset}' has no arm")
        if self.time is not None or self.event is not None:
            raise ConfigError("treatment effects take a binary or continuous --label; survival outcomes are not "
                              "supported yet: use the event column as a binary --label")
        if self.propensity is not None and not 0.0 < self.propensity < 1.0:
            raise ConfigError(f"--propensity must be between 0 and 1, got {self.propensity}")
        if self.treatment in (self.label, self.site):
            raise ConfigError(f"--treatment '{self.treatment}' is also the label or site column; name the arm column")

    def check(self, config: FederationConfig) -> None:
        self.check_values()
        if self.dataset is None and not self.label and not (self.time or self.event) and not self.images:
            raise ValueError("data needs label: the name of the label column (--label), "
                             "or time and event for survival (--time, --event)")

    @property
    def has_images(self) -> bool:
        return bool(self.images or self.image_columns or self.dataset in IMAGE_DATASETS
                    or any(i.kind == "image" for i in self.inputs))

    @property
    def name(self) -> str:
        """The dataset's name, the manifest's or the first file's, or OWN_DATA when the sites hold the files."""
        if self.dataset or not (self.files or self.images):
            return self.dataset or OWN_DATA
        return os.path.splitext(os.path.basename(self.images or self.files[0]))[0]
