"""`synthetic-scans`: a GENERATED demo image collection (no patient, no real scan), written from a
fixed seed into the cache folder at first use, as real files plus a manifest.

No labelled multi-patient image set ships in any package this project can install, so the demo is
made here, and says so in its name. Four sites, each with its own "scanner", so that scanner shift
is real in the pixels: its own resolution (stored at 48 to 80 pixels a side, resampled to the
common size when read), noise level, smooth multiplicative bias field, contrast (gain, offset and
gamma), blur, and lesion conspicuity. Every image is a 2-D slice through an elliptical organ with a
smooth texture; about half hold a lesion (a small blob inside the organ). Per image: a class label
(lesion present, 0/1) and a mask (0 background, 1 organ, 2 lesion). Two images per patient (the
split keeps them together). Sites 1-3 store 16-bit PNG, site 4 NIfTI, so both readers are used.

The folder is FEDCARE_CACHE (default ~/.cache/fedcare)/synthetic-scans-v1; it is written whole under
a temporary name and renamed, so an interrupted first use leaves nothing half written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcare.core.errors import DataError

SEED = 0
VERSION = "v1"
IMAGES_PER_SITE = 160
SITES = ("scanner-1", "scanner-2", "scanner-3", "scanner-4")


@dataclass(frozen=True)
class Scanner:
    resolution: int    # pixels a side as stored
    noise: float       # Gaussian noise, in units of the organ's contrast
    bias: float        # amplitude of the smooth multiplicative bias field
    gain: float        # stored value = offset + gain * intensity ** gamma
    offset: float
    gamma: float
    blur: float        # Gaussian blur (pixels at the stored resolution)
    lesion: float      # lesion contrast over the organ
    prevalence: float  # share of images with a lesion
    nifti: bool = False


SCANNERS = {
    "scanner-1": Scanner(64, 0.05, 0.0, 1000.0, 100.0, 1.0, 0.0, 0.6, 0.5),
    "scanner-2": Scanner(48, 0.15, 0.3, 1400.0, 0.0, 1.0, 0.8, 0.6, 0.4),
    "scanner-3": Scanner(80, 0.10, 0.2, 800.0, 200.0, 0.8, 1.2, 0.5, 0.6),
    "scanner-4": Scanner(56, 0.25, 0.3, 1200.0, 400.0, 1.2, 0.5, 0.45, 0.5, nifti=True),
}


def cache_folder() -> Path:
    return Path(os.environ.get("FEDCARE_CACHE") or Path.home() / ".cache" / "fedcare")


def _smooth(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((n, n)), sigma=scale * n, mode="wrap")
    return field / (np.abs(field).max() + 1e-12)


def _scan(rng: np.random.Generator, s: Scanner, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """One slice (float) and its mask (0/1/2) at the scanner's resolution."""
    from scipy.ndimage import gaussian_filter

    n = s.resolution
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n - 0.5
    cy, cx = rng.uniform(-0.06, 0.06, 2)
    ry, rx = rng.uniform(0.28, 0.40, 2)
    angle = rng.uniform(0, np.pi)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    organ = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    mask = organ.astype(np.uint8)
    image = 0.1 + organ * (0.5 + 0.08 * _smooth(rng, n, 0.06))
    if lesion:
        r = rng.uniform(0.05, 0.10)
        for _ in range(100):  # a centre well inside the organ
            ly, lx = rng.uniform(-0.3, 0.3, 2)
            if (((lx - cx) * np.cos(angle) + (ly - cy) * np.sin(angle)) / (rx - r)) ** 2 + \
               ((-(lx - cx) * np.sin(angle) + (ly - cy) * np.cos(angle)) / (ry - r)) ** 2 <= 1.0:
                break
        blob = ((x - lx) / r) ** 2 + ((y - ly) / (r * rng.uniform(0.7, 1.3))) ** 2 <= 1.0
        blob &= organ
        mask[blob] = 2
        image = image + blob * s.lesion * (0.9 + 0.2 * rng.random())
    if s.blur:
        image = gaussian_filter(image, s.blur)
    image = image * (1.0 + s.bias * _smooth(rng, n, 0.25))
    image = image + s.noise * 0.5 * rng.standard_normal((n, n))
    stored = s.offset + s.gain * np.clip(image, 0.0, None) ** s.gamma
    return np.clip(stored, 0, 65535), mask


def _write(folder: Path, seed: int) -> None:
    from PIL import Image

    rows = ["path,mask,label,site,patient"]
    for i, site in enumerate(SITES):
        s = SCANNERS[site]
        rng = np.random.default_rng([seed, i])
        (folder / site).mkdir(parents=True)
        for k in range(IMAGES_PER_SITE):
            lesion = bool(rng.random() < s.prevalence)
            image, mask = _scan(rng, s, lesion)
            stem = f"{site}/img-{k:04d}"
            if s.nifti:
                import nibabel

                nibabel.save(nibabel.Nifti1Image(image.astype(np.float32), np.eye(4)), folder / f"{stem}.nii.gz")
                nibabel.save(nibabel.Nifti1Image(mask, np.eye(4)), folder / f"{stem}-mask.nii.gz")
                ext = ".nii.gz"
            else:
                Image.fromarray(image.astype(np.uint16)).save(folder / f"{stem}.png")
                Image.fromarray(mask).save(folder / f"{stem}-mask.png")
                ext = ".png"
            rows.append(f"{stem}{ext},{stem}-mask{ext},{int(lesion)},{site},{site}-p{k // 2:03d}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")


def ensure(seed: int = SEED) -> Path:
    """The manifest of the generated collection, written first if the cache lacks it."""
    folder = cache_folder() / (f"synthetic-scans-{VERSION}" + ("" if seed == SEED else f"-seed{seed}"))
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    try:
        import nibabel  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("dataset 'synthetic-scans' needs the imaging extra: pip install 'fedcare[imaging]'") from None
    write_once(folder, manifest, lambda tmp: _write(tmp, seed))
    return manifest


def write_once(folder: Path, done: Path, write: Callable[[Path], None]) -> None:
    """Generate a cache folder whole or not at all: `write` fills a temporary sibling, renamed into
    place; a process that lost the race keeps the winner's folder (`done` is its last file)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote it first
            if not done.is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
