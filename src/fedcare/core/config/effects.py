"""The effects section: which individual-effect learners a run with a treatment arm trains, and
which direction of the outcome is better (what a recommendation maximises)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fedcare.core.config.base import Section, one_or_many

LEARNERS = ("t", "s", "dr")


class EffectSettings(Section):
    learners: tuple[str, ...] = Field(LEARNERS, alias="learner",
                                      description="CATE learners: t, s, dr (repeatable), or none")
    outcome_better: Literal["higher", "lower"] = Field(
        "higher", description="which outcome is better: the recommended arm maximises (higher) or minimises it")

    @field_validator("learners", mode="before")
    @classmethod
    def _learners(cls, v: object) -> object:
        v = one_or_many(v)
        if v in (("none",), ()):
            return ()
        unknown = [x for x in v if x not in LEARNERS]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(f"unknown learner '{unknown[0]}': use t, s, dr or none")
        return tuple(dict.fromkeys(v))  # type: ignore[arg-type]
