"""Reading one image file into a numpy array, and resampling it to a common size.

The formats are read by their own well-kept libraries, none of them importing torch, so the data
layer stays free of it: DICOM with pydicom (one file, or a folder holding one series, slices
ordered by their position), NIfTI (`.nii`, `.nii.gz`) with nibabel, PNG/JPEG/TIFF with Pillow.
Resampling is scipy's spline zoom (linear for intensities, nearest for masks). These packages
come with the `imaging` extra: `pip install 'fedcare[imaging]'`.

An image is returned as float32 (channels, *spatial): one channel for DICOM, NIfTI and grey
pictures, three for colour pictures (an alpha channel is dropped). Axes are taken as the file
stores them, without reorientation: a collection should use one format and one orientation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedcare.core.errors import DataError

NEEDS = "reading images needs the imaging extra: pip install 'fedcare[imaging]'"
PICTURES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI = (".nii", ".nii.gz")


class BadImage(DataError):
    """One file that cannot be used, named in the message."""


def _dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
    except ImportError:
        raise DataError(NEEDS) from None

    def pixels(ds) -> np.ndarray:
        values = ds.pixel_array.astype(np.float32)
        return values * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)

    if path.is_dir():
        slices = [pydicom.dcmread(f) for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
        if not slices:
            raise ValueError("the folder holds no DICOM files")

        def position(ds) -> float:
            where = getattr(ds, "ImagePositionPatient", None)
            return float(where[2]) if where is not None else float(getattr(ds, "InstanceNumber", 0) or 0)

        slices.sort(key=position)
        shapes = {s.pixel_array.shape for s in slices}
        if len(shapes) != 1:
            raise ValueError(f"its slices have different sizes {sorted(shapes)}: not one series")
        volume = np.stack([pixels(s) for s in slices])
        return volume[None] if volume.shape[0] > 1 else volume
    ds = pydicom.dcmread(path)
    values = pixels(ds)
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) > 1:  # colour: (rows, columns, samples)
        return np.moveaxis(values[..., :3], -1, 0)
    return values[None]  # one frame (rows, columns), or a multi-frame volume (frames, rows, columns)


def _nifti(path: Path) -> np.ndarray:
    try:
        import nibabel
    except ImportError:
        raise DataError(NEEDS) from None
    values = np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
    while values.ndim > 3 and values.shape[-1] == 1:
        values = values[..., 0]
    return values[None]


def _picture(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(NEEDS) from None
    with Image.open(path) as picture:
        if picture.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
            picture = picture.convert("L" if picture.mode == "LA" else "RGB")
        values = np.asarray(picture, dtype=np.float32)
    return np.moveaxis(values, -1, 0) if values.ndim == 3 else values[None]


def read_image(path: str | Path) -> np.ndarray:
    """One image as float32 (channels, *spatial); an unreadable file raises BadImage naming it."""
    path = Path(path)
    name = path.name.lower()
    try:
        if not path.exists():
            raise ValueError("no such file or folder")
        if path.is_dir() or name.endswith(".dcm") or "." not in name:
            values = _dicom(path)
        elif name.endswith(NIFTI):
            values = _nifti(path)
        elif name.endswith(PICTURES):
            values = _picture(path)
        else:
            raise ValueError("not a DICOM, NIfTI, PNG, JPEG or TIFF file (by its name)")
    except DataError as exc:
        if isinstance(exc, BadImage) or str(exc) == NEEDS:
            raise
        raise BadImage(f"image '{path}' cannot be read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - every reader's own error becomes one line naming the file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadImage(f"image '{path}' cannot be read: {reason}") from None
    if values.size == 0:
        raise BadImage(f"image '{path}' holds no pixels")
    if values.ndim - 1 not in (2, 3):
        raise BadImage(f"image '{path}' has {values.ndim - 1} spatial axes; images must be 2-D or 3-D")
    if not np.isfinite(values).all():
        raise BadImage(f"image '{path}' holds values that are not finite numbers")
    return values


def resample(values: np.ndarray, size: Sequence[int], mask: bool = False) -> np.ndarray:
    """(channels, *spatial) to (channels, *size): linear for intensities, nearest for masks."""
    from scipy.ndimage import zoom

    factors = [n / m for n, m in zip(size, values.shape[1:])]
    if all(f == 1 for f in factors):
        return values
    out = np.stack([zoom(channel, factors, order=0 if mask else 1, mode="nearest", grid_mode=False)
                    for channel in values])
    return out.astype(values.dtype, copy=False)
