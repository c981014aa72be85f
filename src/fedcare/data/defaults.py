"""A bundled dataset's own defaults: the settings chosen on its validation rows
(benchmarks/dataset_defaults.py, RESULTS.md §11) fill every key the user did not set, so
`fedcare simulate --dataset ovarian-genomics` with no other flag gives the figures the benchmark
reports. A key the user set (flag, YAML, Python) always wins; a run's config.yaml sets every key,
so re-running it gives the same run."""

from __future__ import annotations

from fedcare.core.config import KEYS, FederationConfig
from fedcare.data.builtin import get_builtin


def dataset_defaults(cfg: FederationConfig) -> dict[str, object]:
    """The flat keys the dataset's defaults would set for this config's personalization mode."""
    if cfg.data.dataset is None:
        return {}
    defaults = get_builtin(cfg.data.dataset).defaults
    return dict(defaults.get(cfg.personalization.mode, defaults.get("none", {})))


def with_dataset_defaults(cfg: FederationConfig) -> FederationConfig:
    """`cfg` with the dataset's defaults for every key it leaves unset."""
    unset = {key: value for key, value in dataset_defaults(cfg).items()
             if KEYS[key][1] not in getattr(cfg, KEYS[key][0]).model_fields_set}
    return cfg.replace(**unset) if unset else cfg
