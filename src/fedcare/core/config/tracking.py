"""The tracking section: where a run's metrics go as it runs, besides metrics.jsonl (always written)."""

from __future__ import annotations

from pydantic import Field, field_validator

from fedcare.core.config.base import Section, one_or_many

TRACKERS = ("mlflow", "tensorboard")


class TrackingSettings(Section):
    track: tuple[str, ...] = Field((), description="mlflow[:URI] (default ./mlruns) or tensorboard[:DIR] "
                                   "(default <run folder>/tensorboard); repeatable")

    @field_validator("track", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return one_or_many(v)

    @field_validator("track")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            if item.partition(":")[0] not in TRACKERS:
                raise ValueError(f"unknown tracker '{item}'; choose {' or '.join(f'{t}[:WHERE]' for t in TRACKERS)}")
        return v
