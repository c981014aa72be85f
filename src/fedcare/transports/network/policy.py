"""A hospital's approval policy: the runs its agent accepts without a person (`fedcare site --policy
policy.yaml`). The agent checks the plan of every run against it before it answers anything, so an
agent can run unattended as a service and still never train on a run the hospital did not agree to.

Every key is optional and only narrows what is accepted; unknown keys are refused (a typo must not
silently accept more). A run outside the policy is refused with one line naming the setting.

    models: [linear, mlp]           # accepted model values
    algorithms: [fedavg, fedprox]
    personalization: [none, finetune, ditto]
    labels: [disease]               # the label (or survival time and event) columns a run may learn
    max_rounds: 100
    max_local_epochs: 5
    secure_aggregation: true        # require it
    max_dp_epsilon: 8               # require record-level DP with at most this ε
    max_site_dp_epsilon: 10         # require site-level DP with at most this ε
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedcare.core.errors import ConfigError


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] | None = None
    algorithms: tuple[str, ...] | None = None
    personalization: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    max_rounds: int | None = Field(None, ge=1)
    max_local_epochs: int | None = Field(None, ge=1)
    secure_aggregation: bool = False
    max_dp_epsilon: float | None = Field(None, gt=0)
    max_site_dp_epsilon: float | None = Field(None, gt=0)

    def refusal(self, config: Mapping[str, Any]) -> str | None:
        """Why a run's config (its flat keys, as the plan carries them) is outside the policy; None if inside."""
        for key, accepted in (("model", self.models), ("algorithm", self.algorithms),
                              ("personalization", self.personalization)):
            if accepted is not None and config.get(key) not in accepted:
                return f"{key} '{config.get(key)}' is not one of the accepted {', '.join(accepted)}"
        if self.labels is not None:
            targets = [config.get(k) for k in ("label", "time", "event") if config.get(k)]
            if not targets:
                return f"the run learns a built-in dataset's label, not one of the accepted labels {', '.join(self.labels)}"
            other = [t for t in targets if t not in self.labels]
            if other:
                return f"the run learns column '{other[0]}', not one of the accepted labels {', '.join(self.labels)}"
        for key, limit in (("rounds", self.max_rounds), ("local_epochs", self.max_local_epochs)):
            if limit is not None and config.get(key, 0) > limit:
                return f"{key} {config.get(key)} is more than the accepted {limit}"
        if self.secure_aggregation and not config.get("secure_aggregation"):
            return "secure_aggregation is off and this site requires it"
        for key, limit in (("dp_epsilon", self.max_dp_epsilon), ("site_dp_epsilon", self.max_site_dp_epsilon)):
            if limit is None:
                continue
            value = config.get(key)
            if value is None:
                return f"{key} is not set and this site requires it, at most {limit:g}"
            if value > limit:
                return f"{key} {value:g} is more than the accepted {limit:g}"
        return None


def load_policy(path: Path) -> Policy:
    """Read a policy file; a missing, malformed or empty one is one line."""
    if not path.is_file():
        raise ConfigError(f"policy file '{path}' not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"policy file '{path}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"policy file '{path}' accepts everything: list what this site accepts "
                          "(models, algorithms, max_rounds, ...; see docs/deployment.md)")
    try:
        return Policy(**{k: ([v] if isinstance(v, str) else v) for k, v in values.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"policy file '{path}': unknown key '{where}'; the keys are: "
                              f"{', '.join(Policy.model_fields)}") from None
        raise ConfigError(f"policy file '{path}': {where}: {err['msg']}") from None
