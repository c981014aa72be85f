"""The coordinator's checkpoint after a completed round: enough to resume the run at the next round
and reach the same final model as an uninterrupted run (every seed derives from (seed, round, site),
so nothing else carries over). One safetensors file: arrays for the params, the best params so far
and every piece's state; JSON metadata for the counters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedcare.algorithms.pieces import State
from fedcare.core.errors import ConfigError, ParamsError
from fedcare.core.params import Params
from fedcare.core.serialization import load_params, save_params


@dataclass(frozen=True)
class EngineCheckpoint:
    round: int                 # the last completed round
    params: Params
    states: list[State]        # one per strategy piece, in chain order
    best_params: Params
    best_round: int
    best_score: float | None
    bytes_sent: int = 0

    def save(self, path: Path) -> None:
        arrays = {f"params/{k}": v for k, v in self.params.items()}
        same = self.best_params is self.params  # without early stopping: store the model once, not twice
        if not same:
            arrays |= {f"best/{k}": v for k, v in self.best_params.items()}
        for i, state in enumerate(self.states):
            arrays |= {f"state/{i}/{k}": v for k, v in state.items()}
        save_params(path, arrays, {"round": self.round, "best_round": self.best_round, "best_score": self.best_score,
                                   "pieces": len(self.states), "bytes_sent": self.bytes_sent, "best_is_params": same})

    @classmethod
    def load(cls, path: Path) -> EngineCheckpoint:
        try:
            arrays, meta = load_params(path)
            pieces = int(meta["pieces"])
            states: list[State] = [{} for _ in range(pieces)]
            params: Params = {}
            best: Params = {}
            for name, value in arrays.items():
                kind, _, rest = name.partition("/")
                if kind == "params":
                    params[rest] = value.copy()
                elif kind == "best":
                    best[rest] = value.copy()
                elif kind == "state":
                    i, _, key = rest.partition("/")
                    states[int(i)][key] = value.copy()
            if meta.get("best_is_params"):
                best = params
            return cls(int(meta["round"]), params, states, best, int(meta["best_round"]), meta["best_score"],
                       int(meta.get("bytes_sent", 0)))
        except (KeyError, ValueError, IndexError, ParamsError) as exc:
            raise ConfigError(f"checkpoint '{path}' cannot be read ({exc}); start the run again") from None
