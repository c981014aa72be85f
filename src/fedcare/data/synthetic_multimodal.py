"""`synthetic-multimodal`: a GENERATED three-modality demo (no patient, no real record, gene or scan),
written from a fixed seed into the cache folder at first use, as real files in the layout a hospital
would have (docs/multimodal.md):

    <site>/clinical.csv  pid, age, sex, bmi, marker, outcome    (the outcome and the tabular input)
    <site>/omics.csv     pid, gene_000 ... gene_049              (the omics input)
    <site>/images.csv    pid, path   + <site>/img/<pid>.png      (the image input, 16x16 grey)

Four sites. The outcome (0/1) is 1 when t + g + m + noise > 0, where each modality carries one
independent standard-normal effect: t in the tabular `marker` (with age and bmi as weak
covariates), g in the mean of genes 0-4 (the other 45 genes are noise with a per-site batch
offset), m in the brightness of a blob in the image. No single modality can reach what all three
together can, so a fused model has something to beat. About 15 % of patients have no omics row
and 15 % no image (at random, whatever their outcome); some omics and image rows belong to
patients without a clinical row (no outcome: counted, not examples).

`synthetic-multimodal-missing` is the same patients with whole inputs missing: site-2 has no image
files and site-3 no omics file. The folder is FEDCARE_CACHE (default ~/.cache/fedcare)/
synthetic-multimodal-v1, written whole under a temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcare.core.errors import DataError
from fedcare.data.synthetic_scans import cache_folder, write_once

SEED = 0
VERSION = "v1"
SITES = ("site-1", "site-2", "site-3", "site-4")
PATIENTS = (140, 110, 160, 120)  # per site, with a clinical row
GENES, SIGNAL_GENES, SIZE = 50, 5, 16
LACKING = 0.15  # share of patients without omics, and (independently) without an image
ORPHANS = 4  # per site and input: rows of patients who have no clinical row
MISSING_VARIANT = {"site-2": "image", "site-3": "omics"}  # the input each site lacks in the variant
CLINICAL, OMICS, IMAGES = "clinical.csv", "omics.csv", "images.csv"
PATIENT, LABEL = "pid", "outcome"


def _image(rng: np.random.Generator, effect: float) -> np.ndarray:
    """A 16x16 grey picture: textured background, a blob whose brightness carries the effect."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    cy, cx = rng.uniform(5, 11, 2)
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 2.5 ** 2))
    picture = 90 + 12 * rng.standard_normal((SIZE, SIZE)) + (80 + 35 * effect) * blob
    return np.clip(picture, 0, 255).astype(np.uint8)


def _write_site(folder: Path, index: int, site: str, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    n, extra = PATIENTS[index], ORPHANS
    ids = np.array([f"{site}-p{k:04d}" for k in range(n + extra)])
    t, g, m = rng.standard_normal((3, n + extra))
    age = rng.normal(60 + 3 * index, 10, n + extra).round(0)
    bmi = rng.normal(26 - index, 4, n + extra).round(1)
    sex = rng.choice(["F", "M"], n + extra)
    marker = (t - 0.2 * (age - 60) / 10 - 0.2 * (bmi - 26) / 4 + 0.3 * rng.standard_normal(n + extra)).round(3)
    outcome = (t + g + m + 0.5 * rng.standard_normal(n + extra) > 0).astype(int)
    (folder / site / "img").mkdir(parents=True)
    pd.DataFrame({PATIENT: ids[:n], "age": age[:n], "sex": sex[:n], "bmi": bmi[:n], "marker": marker[:n],
                  LABEL: outcome[:n]}).to_csv(folder / site / CLINICAL, index=False)
    # the orphans (rows n:) have omics and images but no clinical row
    has_omics = np.concatenate([rng.random(n) >= LACKING, np.ones(extra, dtype=bool)])
    has_image = np.concatenate([rng.random(n) >= LACKING, np.ones(extra, dtype=bool)])
    batch = rng.normal(0, 0.5, GENES)  # the site's own offset of every gene
    genes = rng.standard_normal((n + extra, GENES)) + batch
    genes[:, :SIGNAL_GENES] += g[:, None] * np.sqrt(SIGNAL_GENES) * 0.8
    omics = pd.DataFrame(genes.round(4), columns=[f"gene_{j:03d}" for j in range(GENES)])
    omics.insert(0, PATIENT, ids)
    order = rng.permutation(n + extra)  # another file's row order than the clinical one
    omics.iloc[order[has_omics[order]]].to_csv(folder / site / OMICS, index=False)
    paths = []
    for k in order[has_image[order]]:
        path = f"img/{ids[k]}.png"
        Image.fromarray(_image(rng, float(m[k]))).save(folder / site / path)
        paths.append((ids[k], path))
    pd.DataFrame(paths, columns=[PATIENT, "path"]).to_csv(folder / site / IMAGES, index=False)


def _write(folder: Path, seed: int) -> None:
    for i, site in enumerate(SITES):
        _write_site(folder, i, site, seed)


def ensure(seed: int = SEED) -> Path:
    """The generated folder (one subfolder per site), written first if the cache lacks it."""
    folder = cache_folder() / (f"synthetic-multimodal-{VERSION}" + ("" if seed == SEED else f"-seed{seed}"))
    if (folder / SITES[-1] / IMAGES).is_file():
        return folder
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("dataset 'synthetic-multimodal' needs the imaging extra: pip install 'fedcare[imaging]'"
                        ) from None
    write_once(folder, folder / SITES[-1] / IMAGES, lambda tmp: _write(tmp, seed))
    return folder

