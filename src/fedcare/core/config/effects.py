"""The effects section: which individual-effect learners a run with a treatment arm trains, and
which direction of the outcome is better (what a recommendation maximises)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from fedcare.core.config.base import Section, one_or_many

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig

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

    def check(self, config: FederationConfig) -> None:
        """The effects exchange sends each site's sums (XᵀX, Σψ, ...) in clear and the CATE learners
        train more models on the same rows: neither the reported ε nor secure aggregation would cover them."""
        if config.data.treatment is None:
            return
        privacy = config.privacy
        given = [flag for flag, on in (("dp_epsilon", privacy.dp_epsilon is not None),
                                       ("site_dp_epsilon", privacy.site_dp_epsilon is not None),
                                       ("secure_aggregation", privacy.secure_aggregation)) if on]
        if given:
            raise ValueError(f"treatment effects do not run with {given[0]}: each site's effect sums are sent "
                             "without noise or masking and the CATE learners train more models on the same rows; "
                             "remove one or the other")
