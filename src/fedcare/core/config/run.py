"""The run section: the seed, the baselines, checkpoints and where the run folder goes."""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from fedcare.core.config.base import Section


class RunSettings(Section):
    baselines: bool = True
    checkpoint_every: int = Field(1, ge=0, description="write a resumable checkpoint every N rounds (0 = never)")
    eval_every: int = Field(1, ge=1, description="evaluate the global model every N rounds (and after the last)")
    eval_sites: int = Field(0, ge=0, description="evaluate a seeded sample of N sites per evaluated round (0 = all)")
    seed: int = 0
    out: str | None = Field(None, description="run folder; default runs/<dataset>-<algorithm>-seed<seed>")

    @field_validator("out", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        return os.fspath(v) if isinstance(v, os.PathLike) else v
