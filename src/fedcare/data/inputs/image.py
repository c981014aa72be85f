"""The image input: one column of a manifest whose cells are image files (DICOM file or series
folder, NIfTI, PNG/JPEG/TIFF; 2-D or 3-D), read at the site, a batch at a time, never sent.

Its federated preprocessing, as questions under the input's name:
  image.probe  (before the split) -> the site's spatial axes (2 or 3) and channels, from its first
               image (the manifest reader has already checked that all its images agree);
  image.stats  (after the split, training images only, each resampled to the common size) -> per
               channel the number of voxels, their mean and the sum of squared deviations (M2).
The coordinator merges them (Chan et al.'s pairwise update, exact) into one mean and standard
deviation per channel that every site applies: z = (x - mean) / std. No image, and no voxel
value, leaves a site. Its default encoder is `image` (a CNN in the learning layer), not `vector`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcare.core.errors import ConfigError, DataError
from fedcare.data.answers import AGAIN, check_count, check_number, reading
from fedcare.data.dataset import SPLITS, InputShape
from fedcare.data.imagefiles import read_image, resample
from fedcare.data.inputs.base import InputJob
from fedcare.data.splitting import SplitIndices

DEFAULT_SIZE = 64  # per spatial axis, without --image-size


def default_size(dims: int, size: Sequence[int] | None) -> tuple[int, ...]:
    """The common size: the config's, or DEFAULT_SIZE per axis; its length must be the images' axes."""
    if size is None:
        return (DEFAULT_SIZE,) * dims
    if len(size) != dims:
        raise ConfigError(f"the images are {dims}-D but --image-size gives {len(size)} sizes "
                          f"({list(size)}); give {dims}")
    return tuple(int(n) for n in size)


@dataclass(frozen=True, eq=False)
class ImageColumn:
    """A split's images, unread: each read, resampled to `size` and standardised on `read`."""

    paths: tuple[str, ...]
    size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: np.ndarray) -> ImageColumn:
        return ImageColumn(tuple(self.paths[i] for i in np.asarray(rows, dtype=np.int64)), self.size, self.mean,
                           self.std)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), len(self.mean), *self.size), dtype=np.float32)
        shift = np.asarray(self.mean, dtype=np.float32).reshape(-1, *[1] * len(self.size))
        scale = np.asarray(self.std, dtype=np.float32).reshape(shift.shape)
        for k, row in enumerate(np.asarray(rows, dtype=np.int64)):
            values = resample(read_image(self.paths[row]), self.size)
            if values.shape[0] != len(self.mean):
                raise DataError(f"image '{self.paths[row]}' has {values.shape[0]} channels, the others "
                                f"{len(self.mean)}; convert it or drop its row")
            out[k] = (values - shift) / scale
        return out


@dataclass(frozen=True)
class ImageFit:
    """The common size and the federated mean and standard deviation per channel."""

    kind: str
    size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    voxels: int

    @property
    def shape(self) -> InputShape:
        return InputShape(self.kind, (len(self.mean), *self.size))

    def to_json(self) -> dict[str, Any]:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> dict[str, Any]:
        return {"images": {self.kind: {"size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                                       "training_voxels": self.voxels}}}


def merge_moments(parts: Sequence[tuple[int, float, float]]) -> tuple[int, float, float]:
    """(count, mean, M2) of the union from each part's (Chan, Golub and LeVeque's pairwise update)."""
    n, mean, m2 = 0, 0.0, 0.0
    for k, mu, s in parts:
        if k == 0:
            continue
        delta, total = mu - mean, n + k
        mean += delta * k / total
        m2 += s + delta * delta * n * k / total
        n = total
    return n, mean, m2


class ImageSite:
    """The image input at one site: its manifest column of files, probed, summarised and read there."""

    def __init__(self, name: str, columns: Sequence[str], source: str | None, site_id: str) -> None:
        if len(columns) != 1:
            raise ConfigError(f"the {name} input takes one column of image files, got {len(columns)}: "
                              f"{', '.join(columns)}")
        self.name, self.column, self.site_id = name, columns[0], site_id
        self._paths: tuple[str, ...] | None = None

    def answer(self, phase: str, question: Mapping[str, Any], rows: pd.DataFrame,
               split: SplitIndices | None) -> dict:
        self._paths = tuple(str(p) for p in rows[self.column].tolist())
        if phase == "probe":
            first = read_image(self._paths[0])
            return {"dims": first.ndim - 1, "channels": int(first.shape[0])}
        if phase == "stats":
            if split is None:
                raise DataError(f"site '{self.site_id}' got '{self.name}.stats' before 'split'; {AGAIN}")
            with reading(f"the '{self.name}.stats' question to site '{self.site_id}'"):
                size = tuple(check_count(n) for n in question["size"])
            per_channel: list[list[tuple[int, float, float]]] = []
            for row in split.train:
                values = resample(read_image(self._paths[row]), size).astype(np.float64)
                for c, channel in enumerate(values):
                    if c == len(per_channel):
                        per_channel.append([])
                    mean = float(channel.mean())
                    per_channel[c].append((channel.size, mean, float(((channel - mean) ** 2).sum())))
            moments = [merge_moments(parts) for parts in per_channel]
            return {"channels": [{"count": n, "mean": mu, "m2": m2} for n, mu, m2 in moments]}
        raise DataError(f"site '{self.site_id}' got an unknown question '{self.name}.{phase}'; {AGAIN}")

    def encode(self, fitted: Mapping[str, Any], split: SplitIndices) -> dict[str, ImageColumn]:
        if self._paths is None:
            raise DataError(f"site '{self.site_id}' got 'finish' before '{self.name}.stats'; {AGAIN}")
        with reading(f"the 'finish' question to site '{self.site_id}'"):
            size = tuple(check_count(n) for n in fitted["size"])
            mean = tuple(check_number(m) for m in fitted["mean"])
            std = tuple(check_number(s) for s in fitted["std"])
        whole = ImageColumn(self._paths, size, mean, std)
        return {part: whole[getattr(split, part)] for part in SPLITS}


class Image:
    name = "image"
    encoder = "image"
    columns_key = "image_columns"

    def site(self, columns: Sequence[str], source: str | None, site_id: str) -> ImageSite:
        return ImageSite(self.name, columns, source, site_id)

    def plan_columns(self, job: InputJob) -> dict[str, int]:
        """Every site's images must have the same axes and channels."""
        found = []
        for site, answer in job.ask("probe", {}):
            with reading(f"the '{job.name}.probe' answer of site '{site}'"):
                found.append((site, check_count(answer["dims"]), check_count(answer["channels"])))
        first = found[0]
        for site, dims, channels in found[1:]:
            if (dims, channels) != first[1:]:
                raise DataError(f"site '{site}' has {dims}-D images with {channels} channel(s), site '{first[0]}' "
                                f"{first[1]}-D with {first[2]}; every site needs images of one kind")
        return {"dims": first[1], "channels": first[2]}

    def fit(self, job: InputJob, planned: dict[str, int]) -> ImageFit:
        size = default_size(planned["dims"], job.spec.image_size if job.spec is not None else None)
        parts: list[list[tuple[int, float, float]]] = [[] for _ in range(planned["channels"])]
        for site, answer in job.ask("stats", {"size": list(size)}):
            with reading(f"the '{job.name}.stats' answer of site '{site}'"):
                channels = answer["channels"]
                if len(channels) != planned["channels"]:
                    raise ValueError(f"{len(channels)} channels, not {planned['channels']}")
                for c, moments in enumerate(channels):
                    m2 = check_number(moments["m2"])
                    if m2 < 0:
                        raise ValueError("a negative sum of squared deviations")
                    parts[c].append((check_count(moments["count"]), check_number(moments["mean"]), m2))
        merged = [merge_moments(p) for p in parts]
        if merged[0][0] == 0:
            raise DataError("no site has a training image; every site needs some")
        std = [float(np.sqrt(m2 / n)) if m2 > 0 else 1.0 for n, _, m2 in merged]
        return ImageFit(job.name, size, tuple(mu for _, mu, _ in merged), tuple(std), merged[0][0])


IMAGE = Image()
