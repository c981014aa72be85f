"""The federation config: one typed section per capability, one flat key per setting.

The CLI flags, the YAML file and the Python API all speak flat keys (`rounds: 30`, `--dp-epsilon 3`,
`simulate(lr=0.1)`); each key belongs to one section (`data`, `model`, `training`, `algorithm`,
`personalization`, `robustness`, `privacy`, `deployment`, `run`, `effects`, `backend`), which validates it and the rules it shares with
other sections. A new capability adds a section module and one line to SECTIONS. Unknown keys are
refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedcare.core.config.algorithm import AlgorithmSettings
from fedcare.core.config.backend import BackendSettings
from fedcare.core.config.base import Section
from fedcare.core.config.compression import CompressionSettings
from fedcare.core.config.data import COLUMN_KEYS, DEFAULT_DATASET, DataSpec
from fedcare.core.config.deployment import DeploymentSettings
from fedcare.core.config.effects import EffectSettings
from fedcare.core.config.evaluation import EvaluationSettings
from fedcare.core.config.model import ModelSpec
from fedcare.core.config.personalization import PersonalizationSettings
from fedcare.core.config.privacy import PrivacySettings
from fedcare.core.config.robustness import RobustnessSettings
from fedcare.core.config.run import RunSettings
from fedcare.core.config.stream import StreamSettings
from fedcare.core.config.tracking import TrackingSettings
from fedcare.core.config.training import TrainingSettings
from fedcare.core.errors import ConfigError

__all__ = ["SECTIONS", "AlgorithmSettings", "BackendSettings", "CompressionSettings", "DataSpec", "DeploymentSettings",
           "EvaluationSettings", "FederationConfig", "ModelSpec", "TrackingSettings",
           "PersonalizationSettings", "PrivacySettings", "RobustnessSettings", "RunSettings", "Section", "StreamSettings", "TrainingSettings", "flat_key",
           "load_config", "make_config", "resolve_config"]

SECTIONS: dict[str, type[Section]] = {
    "data": DataSpec,
    "model": ModelSpec,
    "training": TrainingSettings,
    "algorithm": AlgorithmSettings,
    "personalization": PersonalizationSettings,
    "robustness": RobustnessSettings,
    "privacy": PrivacySettings,
    "deployment": DeploymentSettings,
    "run": RunSettings,
    "effects": EffectSettings,
    "backend": BackendSettings,
    "compression": CompressionSettings,
    "evaluation": EvaluationSettings,
    "tracking": TrackingSettings,
    "stream": StreamSettings,
}


def _keys() -> dict[str, tuple[str, str]]:
    """flat key -> (section, field)."""
    keys: dict[str, tuple[str, str]] = {}
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            key = info.alias or name
            if key in keys:
                raise RuntimeError(f"config key '{key}' is claimed by sections '{keys[key][0]}' and '{section}'")
            keys[key] = (section, name)
    return keys


KEYS = _keys()
_FLAT = {where: key for key, where in KEYS.items()}


def flat_key(section: str, field: str) -> str:
    """The flat key (and, with '-' for '_', the CLI flag) of a section's field."""
    return _FLAT.get((section, field), field)


class FederationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    algorithm: AlgorithmSettings = Field(default_factory=AlgorithmSettings)
    personalization: PersonalizationSettings = Field(default_factory=PersonalizationSettings)
    robustness: RobustnessSettings = Field(default_factory=RobustnessSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    effects: EffectSettings = Field(default_factory=EffectSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, values: Any) -> Any:
        """Flat keys into their sections; a section given whole (a Section object) is kept as it is.
        Keys that belong to no section stay at the top, where they are refused as unknown."""
        if not isinstance(values, Mapping):
            return values
        given: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            if key in SECTIONS and isinstance(value, SECTIONS[key]):
                given[key] = value
            elif key in KEYS:
                section, name = KEYS[key]
                parts[section][name] = value
            else:
                given[key] = value
        data = parts["data"]
        if "data" not in given and data.get("dataset") is None and not data.get("files") \
                and not any(data.get(k) for k in COLUMN_KEYS) and not data.get("images") \
                and not data.get("image_columns"):
            data["dataset"] = DEFAULT_DATASET  # columns described without files: the sites hold the files
        for section, fields in parts.items():
            if section not in given:
                given[section] = fields
            elif fields:  # a section object and some of its keys: the keys win
                given[section] = SECTIONS[section].model_validate({**given[section].model_dump(), **fields})
        return given

    @model_validator(mode="after")
    def _check(self) -> FederationConfig:
        for section in SECTIONS:
            getattr(self, section).check(self)
        return self

    def flat(self, mode: str = "python") -> dict[str, Any]:
        """Every setting under its flat key: what make_config, the YAML file and the CLI take."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            for name, value in getattr(self, section).model_dump(mode=mode).items():
                out[flat_key(section, name)] = value
        return out

    def replace(self, **values: object) -> FederationConfig:
        """The same config with some flat keys changed, validated again."""
        return make_config({**self.flat(), **values})

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out or f"runs/{self.data.name}-{self.algorithm.name}-seed{self.run.seed}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.flat(mode="json"), sort_keys=False)


def make_config(values: Mapping[str, Any]) -> FederationConfig:
    """Validate a dict of flat settings; a bad value becomes one line naming the key."""
    try:
        return FederationConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 2 and loc[0] in SECTIONS:
            loc = [flat_key(loc[0], loc[1]), *loc[2:]]
        where = ".".join(loc) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where.replace("-", "_"), KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"unknown config key '{where}'; {hint}see `fedcare simulate --help` for the keys") from None
        raise ConfigError(f"{where}: {msg}" if where != "config" else msg) from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> FederationConfig:
    """Read a YAML config; data paths are taken relative to the file; `overrides` (CLI flags) win."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    data = values.get("data")
    if data:
        files = [data] if isinstance(data, str) else list(data)
        values["data"] = [str(f) if Path(f).is_absolute() else str(path.parent / f) for f in files]
    if isinstance(values.get("images"), str) and not Path(values["images"]).is_absolute():
        values["images"] = str(path.parent / values["images"])
    values.update(overrides or {})
    return make_config(values)


def resolve_config(config: FederationConfig | Mapping | str | Path | None, **overrides: object) -> FederationConfig:
    """Accept a config object, a dict of flat keys, or a YAML path; keyword overrides win."""
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if isinstance(config, FederationConfig):
        return config.replace(**overrides) if overrides else config
    return make_config({**dict(config or {}), **overrides})
