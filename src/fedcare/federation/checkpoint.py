"""Checkpoints, so a stopped run (a crash, `kill -9`) continues to the same result as an uninterrupted one.

`EngineCheckpoint` is the coordinator's state after a completed round: enough to resume at the next
round and reach the same final model (every seed derives from (seed, round, site), so nothing else
carries over). One safetensors file: arrays for the params, the best params so far and every piece's
state; JSON metadata for the counters.

`Checkpoints` is the run folder's checkpoints/: that file, each site's own state for the round, and
the federated metric rows so far. Written after every round, files whole and renamed into place, in
an order that a crash at any moment leaves a consistent set: rows and site states first (named by
round), the coordinator's file last."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedcare.algorithms.pieces import State
from fedcare.core.errors import ConfigError, ParamsError
from fedcare.core.params import Params
from fedcare.core.serialization import load_params, save_params
from fedcare.federation.runfolder import file_stem


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


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.path = run_dir / "checkpoints"

    def save(self, checkpoint: EngineCheckpoint, site_states: Mapping[str, Params], rows: Iterable[dict]) -> None:
        r = checkpoint.round
        (self.path / "sites").mkdir(parents=True, exist_ok=True)
        with (self.path / "rows.jsonl").open("a") as f:
            f.writelines(json.dumps({**row, "checkpoint": r}, sort_keys=True) + "\n" for row in rows)
        for site, state in site_states.items():
            if state:
                save_params(self.path / "sites" / f"{file_stem(site)}.round-{r}.safetensors", state)
        checkpoint.save(self.path / "coordinator.safetensors")
        for old in (self.path / "sites").glob(f"*.round-{r - 1}.safetensors"):
            old.unlink()

    def load(self, site_ids: Iterable[str]) -> tuple[EngineCheckpoint, dict[str, Params], list[dict]] | None:
        """The last complete checkpoint, its site states and the rows up to it; None if there is none."""
        if not (self.path / "coordinator.safetensors").is_file():
            return None
        checkpoint = EngineCheckpoint.load(self.path / "coordinator.safetensors")
        r = checkpoint.round
        states = {}
        for site in site_ids:
            path = self.path / "sites" / f"{file_stem(site)}.round-{r}.safetensors"
            states[site] = load_params(path)[0] if path.is_file() else {}
        kept = []
        rows_file = self.path / "rows.jsonl"
        if rows_file.is_file():
            for line in rows_file.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the crash
                    continue
                if row["checkpoint"] <= r:
                    kept.append(row)
            # drop rows of a round that was under way at the crash: it will be run again
            tmp = rows_file.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in kept))
            tmp.replace(rows_file)
        rows = [{k: v for k, v in row.items() if k != "checkpoint"} for row in kept]
        return checkpoint, states, rows
