"""A run's checkpoints, in runs/<name>/checkpoints/: the coordinator's state after the last completed
round, each site's own state for that round, and the federated metric rows so far. Written after
every round, files whole and renamed into place, in an order that a crash at any moment leaves
a consistent set: rows and site states first (named by round), the coordinator's file last."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from fedcare.core.params import Params
from fedcare.core.serialization import load_params, save_params
from fedcare.federation.checkpoint import EngineCheckpoint
from fedcare.runfolder import file_stem


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
