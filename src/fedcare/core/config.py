"""The federation config: one typed model for the CLI flags, the YAML file and the Python API.

Unknown keys are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedcare.core.errors import ConfigError

TaskKind = Literal["binary", "multiclass", "regression", "survival"]


class FederationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # data
    dataset: str | None = Field(None, description="built-in dataset name")
    data: tuple[str, ...] = Field((), description="CSV/Parquet file(s): one with a site column, or one per site")
    site: str | None = Field(None, description="site column")
    label: str | None = Field(None, description="label column")
    time: str | None = Field(None, description="survival: time-to-event column (with event, instead of label)")
    event: str | None = Field(None, description="survival: event column, 1 = event observed, 0 = censored")
    task: TaskKind | None = Field(None, description="override the task inferred from the label")
    drop: tuple[str, ...] = Field((), description="identifier columns to drop")
    categorical: tuple[str, ...] = Field((), description="columns to treat as categorical")
    test_fraction: float = Field(0.34, gt=0, lt=1)
    split_seed: int = 43
    val_fraction: float = Field(0.0, ge=0, lt=1, description="validation share carved from each site's training split")
    partition: Literal["iid", "dirichlet", "quantity"] | None = None
    num_sites: int = Field(4, ge=1)
    alpha: float = Field(0.5, gt=0)
    partition_seed: int = 0

    # learning
    model: Literal["linear", "logistic", "mlp"] = "linear"  # logistic = linear with a sigmoid/softmax loss
    hidden: tuple[int, ...] = (32,)
    batch_norm: bool = Field(False, description="MLP with batch norm after each hidden layer (for fedbn)")
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(16, ge=1)
    local_epochs: int = Field(1, ge=1)
    threads: int = Field(1, ge=1, description="PyTorch threads for local training; 1 suits tabular models "
                         "(more threads on tiny matrices only wait on each other), raise it for imaging")

    # federation
    algorithm: str = "fedavg"
    rounds: int = Field(50, ge=1)
    server_lr: float | None = Field(None, gt=0, description="server learning rate (default: 1.0 for fedavg, "
                                     "fedprox and cyclic; 0.01 for fedadam, fedyogi, fedadagrad)")
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal weight μ")
    personalization: Literal["none", "finetune", "fedper", "fedrep", "fedbn", "ditto"] = Field(
        "none", description="what each site keeps or adapts for its own patients")
    ditto_lambda: float = Field(0.1, ge=0, description="Ditto: pull of the personal model towards the global one")
    finetune_epochs: int = Field(5, ge=1, description="epochs of local fine-tuning (personalization finetune)")
    server_momentum: float = Field(0.0, ge=0, lt=1)
    weighting: Literal["examples", "uniform"] = "examples"
    site_weights: dict[str, float] = Field(default_factory=dict)
    aggregator: Literal["mean", "median", "trimmed-mean", "krum", "centered-clip"] = "mean"
    trim_beta: float = Field(0.1, ge=0, lt=0.5, description="share trimmed at each end by trimmed-mean")
    krum_f: int = Field(1, ge=0, description="hostile sites Krum tolerates")
    krum_m: int | None = Field(None, ge=1, description="updates Krum averages (default n − f: multi-Krum)")
    clip_tau: float | None = Field(None, gt=0, description="centered-clip radius (default: the round's median distance)")
    norm_bound: float | None = Field(None, gt=0, description="clip every update to this multiple of the round's median norm")
    attack: Literal["sign-flip", "scale", "gaussian", "label-flip", "nan"] | None = Field(
        None, description="simulate hostile sites (simulation only)")
    attackers: tuple[str, ...] | int = Field(1, description="attacking sites: a count (the K largest sites) or their ids")
    attack_scale: float = Field(10.0, gt=0, description="factor of 'scale', standard deviation of 'gaussian'")
    fraction: float = Field(1.0, gt=0, le=1, description="share of sites selected each round")
    min_sites: int = Field(1, ge=1)
    patience: int | None = Field(None, ge=1, description="stop when the validation metric has not improved for this many rounds")
    dp_epsilon: float | None = Field(None, gt=0, description="record-level DP: each site's ε budget for the run (DP-SGD)")
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="record-level DP: δ")
    dp_clip: float = Field(1.0, gt=0, description="record-level DP: per-patient gradient norm bound")
    site_dp_epsilon: float | None = Field(None, gt=0, description="site-level DP (DP-FedAvg): the run's ε budget "
                                          "for each hospital's participation")
    site_dp_delta: float = Field(1e-5, gt=0, lt=1, description="site-level DP: δ")
    site_dp_clip: float = Field(1.0, gt=0, description="site-level DP: the update norm bound C (the starting C "
                                "with site_dp_clip_quantile)")
    site_dp_clip_quantile: float | None = Field(None, ge=0, le=1, description="site-level DP: adapt C to this "
                                                "quantile of the update norms (adaptive clipping)")
    secure_aggregation: bool = Field(False, description="the coordinator sees only the sum of the updates "
                                     "(masked vectors, Bonawitz et al.)")
    secagg_max_dropouts: int = Field(0, ge=0, description="secure aggregation: sites that may drop after "
                                     "masking in a round without losing it")
    baselines: bool = True
    checkpoint_every: int = Field(1, ge=0, description="write a resumable checkpoint every N rounds (0 = never)")
    seed: int = 0
    out: str | None = Field(None, description="run folder; default runs/<dataset>-<algorithm>-seed<seed>")

    @field_validator("data", "drop", "categorical", "hidden", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        if isinstance(v, (str, int, os.PathLike)):
            v = (v,)
        return tuple(os.fspath(x) if isinstance(x, os.PathLike) else x for x in v)  # type: ignore[union-attr]

    @field_validator("attackers", mode="before")
    @classmethod
    def _attackers(cls, v: object) -> object:
        if isinstance(v, str):
            return int(v) if v.isdigit() else (v,)
        if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], str) and v[0].isdigit():
            return int(v[0])
        return v

    @field_validator("out", mode="before")
    @classmethod
    def _path(cls, v: object) -> object:
        return os.fspath(v) if isinstance(v, os.PathLike) else v

    @model_validator(mode="after")
    def _check(self) -> FederationConfig:
        if self.dataset is None and not self.data:
            object.__setattr__(self, "dataset", "heart-disease")
        if self.dataset is not None and self.data:
            raise ValueError("give either dataset or data, not both")
        if self.data and not self.label and not (self.time or self.event):
            raise ValueError("data needs label: the name of the label column (--label), "
                             "or time and event for survival (--time, --event)")
        if self.personalization == "fedbn" and not (self.model == "mlp" and self.batch_norm):
            raise ValueError("personalization fedbn keeps batch-norm layers local: use model mlp with batch_norm")
        if self.patience is not None and self.val_fraction == 0:
            raise ValueError("patience needs a validation split: set val_fraction > 0 (e.g. 0.2)")
        self._check_site_privacy()
        return self

    def _check_site_privacy(self) -> None:
        """Combinations site-level DP and secure aggregation cannot honour, refused in one line."""
        if self.secure_aggregation:
            if self.aggregator != "mean" or self.norm_bound is not None:
                rule = "norm_bound" if self.aggregator == "mean" else f"aggregator {self.aggregator}"
                raise ValueError(f"secure aggregation gives the coordinator only the sum of the updates, and {rule} "
                                 "needs each update: use aggregator mean without norm_bound")
            if self.algorithm in ("scaffold", "cyclic"):
                raise ValueError(f"secure aggregation does not run with {self.algorithm}: "
                                 + ("scaffold needs each site's control variate" if self.algorithm == "scaffold"
                                    else "cyclic trains one site per round, and a sum needs at least 2"))
        elif self.secagg_max_dropouts:
            raise ValueError("secagg_max_dropouts needs secure_aggregation")
        if self.site_dp_epsilon is None:
            if self.site_dp_clip_quantile is not None:
                raise ValueError("site_dp_clip_quantile (adaptive clipping) needs site_dp_epsilon")
            return
        if self.aggregator != "mean" or self.norm_bound is not None:
            raise ValueError("site-level DP (DP-FedAvg) clips, averages and noises the updates itself: "
                             "use aggregator mean without norm_bound")
        if self.algorithm in ("scaffold", "cyclic"):
            raise ValueError(f"site-level DP does not run with {self.algorithm}: "
                             + ("its control variates would be sent unclipped and unnoised"
                                if self.algorithm == "scaffold" else
                                "the accountant assumes sites drawn at random each round, cyclic takes them in turn"))
        if self.site_weights:
            raise ValueError("site-level DP averages the sites uniformly (a site's size is private): "
                             "remove site_weights")

    @property
    def dataset_name(self) -> str:
        return self.dataset or Path(self.data[0]).stem

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/{self.dataset_name}-{self.algorithm}-seed{self.seed}")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def make_config(values: dict) -> FederationConfig:
    """Validate a dict of settings; a bad value becomes one line naming the key."""
    try:
        return FederationConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown config key '{where}'; see `fedcare simulate --help` for the keys") from None
        raise ConfigError(f"{where}: {msg}" if where != "config" else msg) from None


def load_config(path: str | Path, overrides: dict | None = None) -> FederationConfig:
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
    values.update(overrides or {})
    return make_config(values)
