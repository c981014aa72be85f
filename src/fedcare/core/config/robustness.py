"""The robustness section: the rule that combines the sites' updates, and simulated hostile sites."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fedcare.core.config.base import Section


class RobustnessSettings(Section):
    aggregator: Literal["mean", "median", "trimmed-mean", "krum", "centered-clip"] = "mean"
    trim_beta: float = Field(0.1, ge=0, lt=0.5, description="share trimmed at each end by trimmed-mean")
    krum_f: int = Field(1, ge=0, description="hostile sites Krum tolerates")
    krum_m: int | None = Field(None, ge=1, description="updates Krum averages (default n − f: multi-Krum)")
    clip_tau: float | None = Field(None, gt=0, description="centered-clip radius (default: the round's median distance)")
    norm_bound: float | None = Field(None, gt=0, description="clip every update to this multiple of the round's "
                                     "median norm")
    attack: Literal["sign-flip", "scale", "gaussian", "label-flip", "nan"] | None = Field(
        None, description="simulate hostile sites (simulation only)")
    attackers: tuple[str, ...] | int = Field(1, description="attacking sites: a count (the K largest sites) or their ids")
    attack_scale: float = Field(10.0, gt=0, description="factor of 'scale', standard deviation of 'gaussian'")

    @field_validator("attackers", mode="before")
    @classmethod
    def _attackers(cls, v: object) -> object:
        if isinstance(v, str):
            return int(v) if v.isdigit() else (v,)
        if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], str) and v[0].isdigit():
            return int(v[0])
        return v
