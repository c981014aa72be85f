"""The process backend: worker processes on this machine, each hosting a shard of sites.

A worker is `python -m fedcare.transports.workers`, a child of the simulation's process, spoken to
over its stdin and stdout: length-prefixed messages of JSON and safetensors (fedcare.transports.shard),
never pickle. Its stderr is the simulation's, so its warnings reach the user.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO

from fedcare.learning.batched import warm_up
from fedcare.transports.shard import Host

_LEN = struct.Struct("<Q")


def _write(stream: BinaryIO, message: bytes) -> None:
    stream.write(_LEN.pack(len(message)))
    stream.write(message)
    stream.flush()


def _read(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (size,) = _LEN.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


class ProcessPool:
    """`count` worker processes; messages to each are answered in the order they were sent. They
    start at once and warm up while their first message (their shard) is still being made."""

    def __init__(self, count: int):
        # the workers import this very fedcare, installed or not
        here = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
        self._procs = [subprocess.Popen([sys.executable, "-m", "fedcare.transports.workers"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(count)]

    def __len__(self) -> int:
        return len(self._procs)

    def send(self, worker: int, message: bytes) -> None:
        _write(self._procs[worker].stdin, message)  # type: ignore[arg-type]

    def receive(self, worker: int) -> bytes:
        reply = _read(self._procs[worker].stdout)  # type: ignore[arg-type]
        if reply is None:
            code = self._procs[worker].wait()
            raise RuntimeError(f"worker process {worker} ended (exit code {code}); its error is printed above")
        return reply

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdin:
                proc.stdin.close()  # end of input: the worker returns
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def main() -> None:
    """The worker's loop: answer each message until the input ends."""
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt a message
    warm_up()  # while the simulation's process still reads and prepares the data
    host = Host()
    while (message := _read(inp)) is not None:
        _write(out, host.handle(message))


if __name__ == "__main__":
    main()
