"""An image manifest: a CSV or Parquet table with one row per image.

  path     the image: a DICOM file, a folder holding one DICOM series, NIfTI, PNG/JPEG/TIFF
  label    its class (classification), or
  mask     its segmentation mask file (--task segmentation)
  site     the site holding it (optional in a site's own manifest)
  patient  the patient (optional): a patient's images stay in one split

Relative paths resolve against the manifest's folder. Reading a manifest checks every file it
names once (readable, 2-D or 3-D, a mask the size of its image, every image with the same axes as
most; the masks unless the task is a classification); a bad file stops the reading with one line naming it, or with `skip_bad_images` its row is
dropped and counted. The images themselves stay where they are.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.dataset import DataSpec
from fedcare.data.imagefiles import BadImage, read_image
from fedcare.data.readers import read_table
from fedcare.data.targets import reads

PATH, LABEL, MASK, SITE, PATIENT = "path", "label", "mask", "site", "patient"


@dataclass(frozen=True)
class Manifest:
    frame: pd.DataFrame  # text cells, paths made absolute, bad rows dropped
    skipped: tuple[str, ...]  # one line per skipped file


def target_column(task: str | None) -> str:
    return MASK if reads(task) == "mask" else LABEL


def read_manifest(path: str | Path, task: str | None = None, skip_bad_images: bool = False,
                  site: str | None = None) -> Manifest:
    """The manifest's rows (only one site's, given `site`) with absolute paths, every named file checked once."""
    path = Path(path)
    frame = read_table(path)
    if site is not None:
        frame = frame[frame[SITE] == site] if SITE in frame.columns else frame
    required = (PATH,) if task is None else (PATH, target_column(task))  # a site agent learns the task later
    for column in required:
        if column not in frame.columns:
            what = "image files" if column == PATH else ("mask files (--task segmentation)" if column == MASK
                                                         else "classes")
            raise DataError(f"manifest '{path.name}' has no '{column}' column (its {what}); "
                            f"its columns are: {', '.join(map(str, frame.columns))}")
    for column in (PATH, MASK):
        if column in frame.columns:
            frame[column] = [None if v is None else str((path.parent / str(v)).resolve()) for v in frame[column]]
    masks = MASK in frame.columns and (task is None or target_column(task) == MASK)
    files = [PATH, *([MASK] if masks else [])]
    kinds: dict[int, tuple[int, int]] = {}  # row -> (spatial axes, channels)
    bad: dict[int, str] = {}
    for row, cells in frame[files].iterrows():
        try:
            for column in files:
                if cells[column] is None:
                    raise BadImage(f"row {row + 2} of manifest '{path.name}' has no {column}")
            image = read_image(cells[PATH])
            kinds[row] = (image.ndim - 1, image.shape[0])
            if masks:
                mask = read_image(cells[MASK])
                if mask.shape[1:] != image.shape[1:]:
                    raise BadImage(f"mask '{cells[MASK]}' is {list(mask.shape[1:])}, its image "
                                   f"{list(image.shape[1:])}; a mask must have its image's size")
        except BadImage as exc:
            bad[row] = str(exc)
    usual = Counter(kinds.values()).most_common(1)
    for row, kind in kinds.items():
        if usual and kind != usual[0][0] and row not in bad:
            bad[row] = (f"image '{frame.at[row, PATH]}' is {kind[0]}-D with {kind[1]} channel(s), most images of "
                        f"'{path.name}' are {usual[0][0][0]}-D with {usual[0][0][1]}")
    if bad and not skip_bad_images:
        first = bad[min(bad)]
        more = f" ({len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise DataError(f"{first}{more}; fix or remove its row, or pass --skip-bad-images to skip bad files")
    if bad:
        warnings.warn(f"manifest '{path.name}': skipped {len(bad)} bad image file(s), the first: {bad[min(bad)]}",
                      stacklevel=2)
    kept = frame.drop(index=sorted(bad))
    if kept.empty:
        raise DataError(f"manifest '{path.name}' names no usable image")
    return Manifest(kept, tuple(bad[r] for r in sorted(bad)))


def manifest_spec(spec: DataSpec, columns: list[str]) -> DataSpec:
    """The data spec a manifest means: its path column is the image input, its label (or mask) the
    target, its site and patient columns what they say; the other target column is dropped."""
    if spec.label is not None or spec.image_columns:
        raise ConfigError("--images reads the manifest's own columns (path, label or mask, site, patient): "
                          "drop --label and --image-columns")
    target = target_column(spec.task)
    other = LABEL if target == MASK else MASK
    return spec.model_copy(update={
        "images": None, "files": (spec.images,), "image_columns": (PATH,), "label": target,
        "site": SITE if SITE in columns else spec.site,
        "patient": PATIENT if PATIENT in columns else spec.patient,
        "drop": tuple(dict.fromkeys((*spec.drop, *([other] if other in columns else [])))),
    })
