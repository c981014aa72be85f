"""The task board: what each site is asked now, and what it answered.

The round engine (one thread) posts a task for some sites and waits; the web handlers (other threads)
hand each site its open task when it polls and file its answer. Sites only ever poll: the coordinator
never connects to a hospital. A round closes when every asked site answered, or when its deadline has
passed and the quorum is met; until the quorum is met the run is *paused* and says why. A site
that missed a deadline is *silent* until it polls again: later tasks do not wait for it, so a dead
hospital costs the run one deadline, not one per task.

A poll waits on the web server's event loop, not in a thread: held-open polls, however many, never
take the threads that other requests (health, admin status, uploads) need. Each site may hold at
most `MAX_OPEN_POLLS` at once, so one site's token cannot pile them up either.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fedcare.core.errors import FedcareError
from fedcare.core.params import Params


class Refused(Exception):
    """A site's request that the board turns down; `status` is the HTTP code the handler answers with."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RunStopped(FedcareError):
    """An admin stopped the run while the engine waited for sites."""


@dataclass(frozen=True)
class Part:
    """A site's own share of a task: what it downloads and what its update must mirror (the
    broadcast without an encoder of an input the site lacks, FitRequest.skip)."""

    blob: bytes
    digest: str
    message: Params


@dataclass
class Task:
    """One question to some sites: `bodies` holds each site's JSON, `blob` the arrays it downloads
    (safetensors bytes) and `message` the arrays an update must mirror; a site in `parts` has its
    own blob and message instead (one Part per distinct scope, shared by the sites that have it)."""

    id: str
    kind: str
    round: int
    bodies: dict[str, dict]
    blob: bytes | None = None
    message: Params | None = None
    digest: str | None = None  # SHA-256 of blob: computed here unless the caller already knows it
    answer_bytes: int = 0  # what a JSON answer may hold beyond the coordinator's JSON limit (a masked vector)
    parts: Mapping[str, Part] = field(default_factory=dict)  # site -> its own download, if not `blob`
    answers: dict[str, object] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)  # last refusal per site that has not answered

    def __post_init__(self) -> None:
        # a site that already holds these exact bytes (the evaluated params are the next round's
        # broadcast) skips the download; the digest also lets it check what it downloads
        if self.blob is not None and self.digest is None:
            self.digest = hashlib.sha256(self.blob).hexdigest()

    def blob_for(self, site_id: str) -> bytes | None:
        part = self.parts.get(site_id)
        return self.blob if part is None else part.blob

    def message_for(self, site_id: str) -> Params | None:
        part = self.parts.get(site_id)
        return self.message if part is None else part.message

    def body_for(self, site_id: str) -> dict:
        part = self.parts.get(site_id)
        digest, blob = (self.digest, self.blob) if part is None else (part.digest, part.blob)
        params = {} if digest is None else {"params": {"sha256": digest, "bytes": len(blob)}}
        return {"id": self.id, "kind": self.kind, "round": self.round, **params, **self.bodies[site_id]}


StatusHook = Callable[[str, str], None]  # (status, reason): "running" / "paused"
MAX_OPEN_POLLS = 4  # per site: its agent holds one; a restarted agent may leave one behind for a while


class Board:
    def __init__(self, on_status: StatusHook | None = None):
        self._cond = threading.Condition()
        self._open: Task | None = None
        self._closed: dict[str, set[str]] = {}  # closed task id -> the sites it was for
        self._final: dict | None = None
        self._stopped: str | None = None
        self._silent: set[str] = set()  # missed a deadline and not polled since: later tasks do not wait for them
        self._on_status = on_status or (lambda status, reason: None)
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()  # polls waiting
        self._retired = False  # replaced by a new run's board
        self._polls: dict[str, int] = {}  # site -> polls it holds open now

    def retire(self) -> None:
        """A new run has its own board: polls held open here end now (204), so their sites poll the
        new one at once instead of when their poll times out."""
        with self._cond:
            self._retired = True
            self._changed()

    def _changed(self) -> None:
        """Wake everyone who waits on the board (call with the lock held)."""
        self._cond.notify_all()
        for loop, event in self._waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # its loop closed (the server is shutting down): nobody to wake
                pass

    # ----- engine side --------------------------------------------------------------------------

    def ask(self, task: Task, deadline: float, quorum: int) -> Task:
        """Open `task`, wait until it can close, close it and return it with its answers."""
        with self._cond:
            self._open = task
            self._changed()
        try:
            self._wait(task, deadline, quorum)
        finally:
            with self._cond:
                self._closed[task.id] = set(task.bodies)
                self._open = None
        return task

    def _wait(self, task: Task, deadline: float, quorum: int) -> None:
        end = time.monotonic() + deadline
        paused: list[str] | bool = False  # the sites the pause message named
        with self._cond:
            while True:
                if self._stopped is not None:
                    raise RunStopped(self._stopped)
                done = len(task.answers)
                awaited = set(task.bodies) - set(task.answers) - self._silent
                if done == len(task.bodies) or (not awaited and done >= quorum):
                    break
                late = time.monotonic() >= end
                if late and done >= quorum:
                    break
                missing = sorted(set(task.bodies) - set(task.answers))
                if late and missing != paused:  # say so, and again whenever who we wait for changes
                    self._on_status("paused", f"task {task.id}: {done} of {len(task.bodies)} sites answered by the "
                                              f"deadline and {quorum} are needed; waiting for {', '.join(missing)}")
                    paused = missing
                self._cond.wait(timeout=max(0.01, min(1.0, end - time.monotonic())) if not late else 1.0)
            self._silent |= set(task.bodies) - set(task.answers)
        if paused:
            self._on_status("running", "")

    def finish(self, body: dict) -> None:
        """The run is over: every poll from now on gets a 'done' task with `body`."""
        with self._cond:
            self._final = body
            self._changed()

    def stop(self, reason: str) -> None:
        with self._cond:
            self._stopped = reason
            self._changed()

    # ----- site side (web handlers) -------------------------------------------------------------

    async def poll(self, site_id: str, timeout: float) -> dict | None:
        """The site's open, unanswered task (waiting up to `timeout` s for one), or None."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        with self._cond:
            if self._polls.get(site_id, 0) >= MAX_OPEN_POLLS:
                raise Refused(429, f"this site already holds {MAX_OPEN_POLLS} polls open; wait for one to answer")
            self._polls[site_id] = self._polls.get(site_id, 0) + 1
            if site_id in self._silent:
                self._silent.discard(site_id)  # it is back: tasks wait for it again
                self._changed()
        try:
            while True:
                event = asyncio.Event()
                with self._cond:
                    found = self._for(site_id)
                    if found is not None or loop.time() >= end or self._retired:
                        return found
                    self._waiters.add((loop, event))
                try:
                    await asyncio.wait_for(event.wait(), max(0.0, end - loop.time()))
                except TimeoutError:
                    pass
                finally:
                    with self._cond:
                        self._waiters.discard((loop, event))
        finally:
            with self._cond:
                self._polls[site_id] -= 1

    def _for(self, site_id: str) -> dict | None:
        task = self._open
        if task is not None and site_id in task.bodies and site_id not in task.answers:
            return task.body_for(site_id)
        if self._final is not None:
            return {"id": "done", "kind": "done", "round": 0, **self._final}
        return None

    def task_for(self, site_id: str, task_id: str) -> Task:
        """The open task `task_id` if this site may still answer it; Refused with the reason otherwise."""
        with self._cond:
            task = self._open
            if task is not None and task.id == task_id and site_id in task.bodies:
                if site_id in task.answers:
                    raise Refused(409, f"duplicate: task {task_id} already has this site's answer")
                return task
            if site_id in self._closed.get(task_id, ()):
                raise Refused(409, f"late: task {task_id} is closed; the site's answer was not used")
            current = f"; the open task is {task.id}" if task is not None and site_id in task.bodies else ""
            raise Refused(409, f"stale: task {task_id} is not open for this site{current}")

    def answer(self, site_id: str, task_id: str, value: object) -> None:
        with self._cond:
            task = self.task_for(site_id, task_id)
            task.answers[site_id] = value
            task.refusals.pop(site_id, None)
            self._changed()

    def refuse(self, site_id: str, task_id: str, reason: str) -> None:
        """Remember why a site's answer was refused: the round reports it if no good answer follows."""
        with self._cond:
            task = self._open
            if task is not None and task.id == task_id:
                task.refusals[site_id] = reason

    def open_task(self) -> Mapping[str, object] | None:
        with self._cond:
            task = self._open
            if task is None:
                return None
            return {"id": task.id, "kind": task.kind, "round": task.round, "sites": sorted(task.bodies),
                    "answered": sorted(task.answers)}
