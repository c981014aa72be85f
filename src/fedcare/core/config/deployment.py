"""The deployment section: how a networked run waits for its sites and what it accepts from them.
A simulation records these keys and does not use them."""

from __future__ import annotations

from pydantic import Field

from fedcare.core.config.base import Section


class DeploymentSettings(Section):
    deadline: float = Field(600.0, gt=0, description="seconds a round waits for its sites before closing on "
                            "quorum (min_sites)")
    max_body_mb: float = Field(512.0, gt=0, description="largest upload the coordinator accepts from a site, MB")
    max_json_mb: float = Field(4.0, gt=0, description="largest JSON answer the coordinator accepts from a site, MB "
                               "(parsed JSON takes some 20 times its size in memory)")
