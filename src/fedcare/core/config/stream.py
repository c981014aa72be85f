"""The stream section: replay a dataset in time order, window by window (federation/stream.py), and
watch each site for drift (federation/drift.py). Off unless `time_column` is set."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from fedcare.core.config.base import Section

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig

WINDOW_LENGTH = re.compile(r"^([1-9][0-9]{0,4})([dwy])$")  # 90d, 12w, 1y


class StreamSettings(Section):
    time_column: str | None = Field(None, description="replay the data in the order of this column (numbers, or "
                                    "dates with --window), window by window")
    windows: int | None = Field(None, ge=2, le=100, description="cut the time column into this many windows of "
                                "about equal rows (rows with the same time stay together)")
    window: str | None = Field(None, description="a window's length when the time column holds dates: Nd, Nw or Ny "
                               "(90d, 12w, 1y), from the earliest date")
    rounds_per_window: int = Field(5, ge=1, description="continued strategy: at most this many rounds per new window, "
                                   "warm-started from the last model")
    window_patience: int | None = Field(None, ge=1, description="continued strategy: end a window's rounds when "
                                        "the validation metric has not improved for this many rounds, keeping the "
                                        "best round (needs val_fraction > 0)")
    window_metric: str | None = Field(None, description="the validation metric --window-patience reads (default: "
                                      "the headline); a loss (neg_partial_loglik, log_loss) moves more smoothly "
                                      "than a rank metric on small validation splits")
    window_lrs: list[float] | None = Field(None, min_length=1, max_length=8, description="continued strategy: "
                                           "each window, train from the same warm start at each of these learning "
                                           "rates and keep the model with the best validation metric (needs "
                                           "--window-patience); every try's rounds are counted")
    replay_windows: int | None = Field(None, ge=1, description="a site keeps only its last N windows' rows for "
                                       "training (default: all it has seen)")
    drift_threshold: float = Field(0.05, gt=0, description="a drift notice fires when a site's metric on its new "
                                   "rows is worse by more than this")
    drift_smd: float = Field(0.5, gt=0, description="... or a feature's standardised mean difference reaches this "
                             "(and 4 standard errors)")

    @field_validator("window_lrs")
    @classmethod
    def _lrs(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not all(math.isfinite(x) and x > 0 for x in v):
            raise ValueError(f"window_lrs {v}: every learning rate must be a finite number > 0")
        return v

    @field_validator("window")
    @classmethod
    def _length(cls, v: str | None) -> str | None:
        if v is not None and not WINDOW_LENGTH.match(v.strip()):
            raise ValueError(f"window '{v}' is not a length like 90d, 12w or 1y")
        return None if v is None else v.strip()

    @property
    def active(self) -> bool:
        return self.time_column is not None

    def check(self, config: FederationConfig) -> None:
        if not self.active:
            if self.windows is not None or self.window is not None:
                raise ValueError("--windows and --window cut the time column: set --time-column too")
            return
        if self.window_patience is not None and config.data.val_fraction == 0:
            raise ValueError("--window-patience stops on the validation metric: set val_fraction > 0 (e.g. 0.2)")
        if self.window_metric is not None and self.window_patience is None:
            raise ValueError("--window-metric is what --window-patience reads: set --window-patience too")
        if self.window_lrs is not None and self.window_patience is None:
            raise ValueError("--window-lrs keeps the learning rate with the best validation metric: set "
                             "--window-patience too")
        if (self.windows is None) == (self.window is None):
            raise ValueError("a stream needs one of --windows K (equal-row windows) or --window LENGTH (dates)")
        if config.data.dataset is not None or not config.data.files:
            raise ValueError("a stream replays your own files (--data FILE with --time-column); the built-in "
                             "datasets have no time column")
        refused = {"secure aggregation": config.privacy.secure_aggregation,
                   "record-level DP": config.privacy.dp_epsilon is not None,
                   "site-level DP": config.privacy.site_dp_epsilon is not None,
                   "a simulated attack": config.robustness.attack is not None,
                   "personalization": config.personalization.mode != "none",
                   "a treatment column": config.data.treatment is not None,
                   f"the {config.backend.backend} backend": config.backend.backend != "in-process",
                   "an image manifest": config.data.images is not None,
                   "--track": bool(config.tracking.track)}
        for what, asked in refused.items():
            if asked:
                raise ValueError(f"a stream replay trains the plain federated model in this process; {what} is not "
                                 "carried across windows (its budget, masks or state), so drop it or --time-column")
        if self.time_column in (config.data.label, config.data.time, config.data.event, config.data.site):
            raise ValueError(f"the time column '{self.time_column}' is also a target or the site column; "
                             "name the column that orders the rows in time")
