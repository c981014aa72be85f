"""Recommendations for new patients from a run's federated outcome models: each arm's predicted
outcome, each treated arm's effect against the control with a 95 % interval, and the arm with the
best predicted outcome.

The models are the ridge outcome regressions of every arm fitted from the sites' summed XᵀX and Xᵀy
(fedcare.federation.effects), with their coefficient covariances from the same sums, so an effect's
interval is √(xᵀ(Σ_a + Σ_0)x) wide on each side ×1.96: a linear model's interval, honest when the
effect is close to linear in the encoded features. Stored as `recommender.safetensors` in the run
folder with the fitted preprocessing in its metadata; never pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcare.algorithms.effects import Z95, predict_outcomes, with_intercept
from fedcare.core.errors import ConfigError
from fedcare.core.serialization import load_params, save_params
from fedcare.data.newrows import encode_rows

FILE = "recommender.safetensors"


@dataclass(frozen=True)
class Recommender:
    arms: tuple[str, ...]          # control first
    better: str                    # "higher" or "lower"
    outcome: str                   # what the outcome is (e.g. "risk difference ... of infection = 1")
    encoding: Mapping[str, Any]    # each input's fitted preprocessing
    coef: np.ndarray               # (K, d)
    cov: np.ndarray                # (K, d, d)

    def save(self, folder: Path) -> None:
        meta = {"arms": list(self.arms), "better": self.better, "outcome": self.outcome, "encoding": self.encoding}
        save_params(folder / FILE, {"coef": self.coef, "cov": self.cov}, {"recommender": meta})

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        path = Path(folder) / FILE
        if not path.is_file():
            raise ConfigError(f"'{folder}' holds no recommender; run fedcare simulate with --treatment first")
        try:
            arrays, meta = load_params(path)
            m = meta["recommender"]
            return cls(tuple(str(a) for a in m["arms"]), str(m["better"]), str(m["outcome"]), dict(m["encoding"]),
                       np.asarray(arrays["coef"], dtype=np.float64), np.asarray(arrays["cov"], dtype=np.float64))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"'{path}' is not a recommender this fedcare version reads; run the study again") from None

    def recommend(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per patient: `outcome:<arm>` for every arm, `effect:<arm>` with `low:<arm>` and
        `high:<arm>` for every treated arm, `recommended`, and whether its interval excludes 0."""
        inputs = encode_rows(frame, self.encoding)
        x = np.hstack([v.reshape(len(v), -1).astype(np.float64) for v in inputs.values()])
        if x.shape[1] + 1 != self.coef.shape[1]:
            raise ConfigError(f"the patients encode to {x.shape[1]} features, the run's models take "
                              f"{self.coef.shape[1] - 1}; use the table layout the run was trained on")
        mu = predict_outcomes(x, self.coef)
        d = with_intercept(x)
        out = pd.DataFrame(index=frame.index)
        for a, arm in enumerate(self.arms):
            out[f"outcome:{arm}"] = mu[:, a]
        sign = 1.0 if self.better == "higher" else -1.0
        gain = np.zeros((len(x), len(self.arms)))
        better = np.zeros((len(x), len(self.arms)), dtype=bool)  # the whole interval better than control
        worse = np.ones((len(x), len(self.arms)), dtype=bool)    # the whole interval worse than control
        for a, arm in enumerate(self.arms[1:], start=1):
            effect = mu[:, a] - mu[:, 0]
            se = np.sqrt(np.einsum("ij,jk,ik->i", d, self.cov[a] + self.cov[0], d))
            out[f"effect:{arm}"], out[f"low:{arm}"], out[f"high:{arm}"] = effect, effect - Z95 * se, effect + Z95 * se
            gain[:, a] = sign * effect
            better[:, a], worse[:, a] = sign * effect - Z95 * se > 0, sign * effect + Z95 * se < 0
        best = gain.argmax(axis=1)
        out["recommended"] = [self.arms[b] for b in best]
        out["interval_excludes_0"] = [bool(better[i, b]) if b else bool(worse[i, 1:].all()) for i, b in enumerate(best)]
        return out
