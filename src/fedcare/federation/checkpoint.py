"""Checkpoints, so a stopped run (a crash, `kill -9`) continues to the same result as an uninterrupted one.

`EngineCheckpoint` is the coordinator's state after a completed round: enough to resume at the next
round and reach the same final model (every seed derives from (seed, round, site), so nothing else
carries over). One safetensors file: arrays for the params, the best params so far and every piece's
state; JSON metadata for the counters.

`Checkpoints` is the run folder's checkpoints/: that file, each site's own state for the round, and
the federated metric rows so far. Written after every round in an order that a crash at any moment
leaves a consistent set: rows and site states first, the coordinator's file last. Files are whole
and renamed into place, except rows.jsonl, which grows: each checkpoint appends its round's rows
(a round costs its own rows, not all the rows so far), after cutting off whatever a failed or
interrupted attempt left past the last checkpoint's rows; the coordinator's file holds the
SHA-256 and byte length of the rows up to its round, and a resume keeps exactly those.

Every file carries a SHA-256 over its content (arrays, names, dtypes, shapes and counters) in its
own metadata, and the coordinator's file also holds the digest of the metric rows up to its round;
a networked run's `rounds/round-N.safetensors` (the params sent to the sites) must hold the params
of the checkpoint's round. So one flipped byte anywhere stops a resume with one line naming the
file, instead of continuing to a different model."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    bytes_upload: int = 0      # the part of bytes_sent the sites sent

    def save(self, path: Path, extra: Mapping[str, object] | None = None) -> None:
        """`extra`: more counters for the metadata (Checkpoints adds the rows' digest)."""
        arrays = {f"params/{k}": v for k, v in self.params.items()}
        same = self.best_params is self.params  # without early stopping: store the model once, not twice
        if not same:
            arrays |= {f"best/{k}": v for k, v in self.best_params.items()}
        for i, state in enumerate(self.states):
            arrays |= {f"state/{i}/{k}": v for k, v in state.items()}
        save_checked(path, arrays, {"round": self.round, "best_round": self.best_round, "best_score": self.best_score,
                                    "pieces": len(self.states), "bytes_sent": self.bytes_sent,
                                    "bytes_upload": self.bytes_upload,
                                    "best_is_params": same, **(extra or {})})

    @classmethod
    def load(cls, path: Path) -> EngineCheckpoint:
        return cls.read(path)[0]

    @classmethod
    def read(cls, path: Path) -> tuple[EngineCheckpoint, dict]:
        """The checkpoint and its metadata (the rows' digest among it)."""
        arrays, meta = load_checked(path)
        try:
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
                       int(meta.get("bytes_sent", 0)), int(meta.get("bytes_upload", 0))), meta
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise ConfigError(f"checkpoint '{path}' cannot be read ({exc}); start the run again") from None


def _digest(arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.reshape(-1).view(np.uint8))  # the bytes tobytes() would copy, read in place
    return h.hexdigest()


def save_checked(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> None:
    """save_params with a SHA-256 over everything the file holds, in its own metadata."""
    save_params(path, arrays, {**meta, "sha256": _digest(arrays, meta)})


def load_checked(path: Path) -> tuple[Params, dict]:
    """load_params, refused with one line unless the file's SHA-256 matches its content."""
    try:
        arrays, meta = load_params(path)
    except ParamsError as exc:
        raise damaged(path, str(exc)) from None
    digest = meta.pop("sha256", None)
    if digest is None:
        raise damaged(path, "it carries no checksum (written by an older fedcare, or its metadata is damaged)")
    if digest != _digest(arrays, meta):
        raise damaged(path, "its SHA-256 does not match its content")
    return arrays, meta


def damaged(path: Path, why: str) -> ConfigError:
    return ConfigError(f"checkpoint file '{path}' is damaged: {why}; the run cannot resume from it: restore the "
                       "checkpoints folder from a backup and restart, or start the run again")


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.path = run_dir / "checkpoints"
        # rows.jsonl as the last checkpoint saved or loaded here left it: (its length in bytes, the
        # SHA-256 of those bytes); None until then (the first save reads the file once)
        self._rows: tuple[int, hashlib._Hash] | None = None

    def save(self, checkpoint: EngineCheckpoint, site_states: Mapping[str, Params], rows: Iterable[dict]) -> None:
        r = checkpoint.round
        (self.path / "sites").mkdir(parents=True, exist_ok=True)
        size, digest = self._rows_so_far(r)
        added = "".join(json.dumps({**row, "checkpoint": r}, sort_keys=True) + "\n" for row in rows).encode()
        with open(self.path / "rows.jsonl", "ab") as out:
            out.write(added)
        digest = digest.copy()
        digest.update(added)
        for site, state in site_states.items():
            if state:
                save_checked(self.path / "sites" / f"{file_stem(site)}.round-{r}.safetensors", state, {})
        checkpoint.save(self.path / "coordinator.safetensors",
                        {"rows_sha256": digest.hexdigest(), "rows_bytes": size + len(added)})
        self._rows = (size + len(added), digest)  # only once the coordinator's file holds them
        for old in (self.path / "sites").glob(f"*.round-{r - 1}.safetensors"):
            old.unlink()

    def _rows_so_far(self, r: int) -> tuple[int, hashlib._Hash]:
        """rows.jsonl cut back to the rows of the checkpoints before round `r` (an earlier attempt at
        this round, refused by the disk or interrupted, may have appended part of its rows): their
        length and SHA-256. Known from the last save here; otherwise read once, and the file rewritten
        whole with those rows."""
        rows_file = self.path / "rows.jsonl"
        if self._rows is not None and rows_file.is_file() and rows_file.stat().st_size >= self._rows[0]:
            size, digest = self._rows
            if rows_file.stat().st_size > size:
                os.truncate(rows_file, size)
            return size, digest
        text = "".join(self._rows_before(r)).encode()
        tmp = rows_file.with_suffix(".tmp")
        tmp.write_bytes(text)
        tmp.replace(rows_file)
        self._rows = (len(text), hashlib.sha256(text))
        return self._rows

    def save_round(self, round_: int, blob: bytes) -> None:
        """A networked run's global params of a completed round, as the bytes sent to the sites."""
        folder = self.path / "rounds"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".round-{round_}.tmp"
        tmp.write_bytes(blob)
        tmp.replace(folder / f"round-{round_}.safetensors")

    def load(self, site_ids: Iterable[str]) -> tuple[EngineCheckpoint, dict[str, Params], list[dict]] | None:
        """The last complete checkpoint, its site states and the rows up to it; None if there is none.
        A file whose checksum fails, or round files that disagree with it, raise ConfigError."""
        path = self.path / "coordinator.safetensors"
        if not path.is_file():
            return None
        checkpoint, meta = EngineCheckpoint.read(path)
        r = checkpoint.round
        self._check_round(checkpoint)
        states = {}
        for site in site_ids:
            state = self.path / "sites" / f"{file_stem(site)}.round-{r}.safetensors"
            states[site] = load_checked(state)[0] if state.is_file() else {}
        rows_file = self.path / "rows.jsonl"
        kept = self._rows_before(r + 1)
        if hashlib.sha256("".join(kept).encode()).hexdigest() != meta.get("rows_sha256"):
            raise damaged(rows_file, f"its rows up to round {r} do not match the checkpoint's SHA-256 of them")
        # drop rows of a round that was under way at the crash: it will be run again
        text = "".join(kept).encode()
        tmp = rows_file.with_suffix(".tmp")
        tmp.write_bytes(text)
        tmp.replace(rows_file)
        self._rows = (len(text), hashlib.sha256(text))
        rows = [{k: v for k, v in json.loads(line).items() if k != "checkpoint"} for line in kept]
        return checkpoint, states, rows

    def _rows_before(self, r: int) -> list[str]:
        """The lines of rows.jsonl of checkpoints before round `r`; a line cut short by a crash (or
        damaged: the coordinator's digest of the rows finds it) is left out."""
        rows_file = self.path / "rows.jsonl"
        kept = []
        if rows_file.is_file():
            for line in rows_file.read_text().splitlines(keepends=True):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("checkpoint"), int) and row["checkpoint"] < r:
                    kept.append(line)
        return kept

    def save_prepared(self, prepared: Mapping) -> None:
        """What data preparation taught the coordinator, beside the checkpoints, so a run can resume
        from its folder alone (its database lost)."""
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(prepared, sort_keys=True)
        tmp = self.path / ".prepared.tmp"
        tmp.write_text(json.dumps({"sha256": hashlib.sha256(text.encode()).hexdigest(), "prepared": prepared}))
        tmp.replace(self.path / "prepared.json")

    def load_prepared(self, otherwise: str) -> dict:
        path = self.path / "prepared.json"
        try:
            data = json.loads(path.read_text())
            prepared = data["prepared"]
            ok = data["sha256"] == hashlib.sha256(json.dumps(prepared, sort_keys=True).encode()).hexdigest()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"'{path}' cannot be read ({exc}); restore it from a backup, {otherwise}") from None
        if not ok:
            raise ConfigError(f"'{path}' is damaged: its SHA-256 does not match its content; restore it from a "
                              f"backup, {otherwise}")
        return prepared

    def _check_round(self, checkpoint: EngineCheckpoint) -> None:
        """A networked run: the round file of the checkpoint's round must hold its params exactly."""
        folder = self.path / "rounds"
        if not folder.is_dir():
            return  # a simulation keeps no round files
        path = folder / f"round-{checkpoint.round}.safetensors"
        if not path.is_file():
            raise damaged(path, f"it is missing, and the checkpoint is of round {checkpoint.round}")
        try:
            sent = load_params(path)[0]
        except ParamsError as exc:
            raise damaged(path, str(exc)) from None
        mine = checkpoint.params
        if set(sent) != set(mine) or any(sent[k].dtype != mine[k].dtype or sent[k].shape != mine[k].shape
                                         or sent[k].tobytes() != mine[k].tobytes() for k in mine):
            raise damaged(path, f"it differs from the params of round {checkpoint.round} in 'coordinator.safetensors'")
