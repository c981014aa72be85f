"""Which event loop and HTTP parser the coordinator's uvicorn runs on.

With the optional extra `fedcare[fast]` (uvloop and httptools, both compiled) the coordinator's event
loop spends about a quarter less CPU per round on TLS and HTTP than on the pure-Python fallback
(asyncio's loop and h11), and its rounds are shorter (benchmarks/RESULTS.md §7). Without the extra
it runs on the fallback, which behaves the same. `FEDCARE_HTTP=h11` forces the fallback where both are
installed (to compare the two, or to rule the compiled parser out). The coordinator logs the choice once it
listens, not before: a start that fails (a busy port, a damaged database) stays one line.

httptools puts no bound on a request's headers (h11 refuses an incomplete head past 16 KiB), so the
coordinator runs it through `BoundedHttpTools`, which refuses a head larger than `MAX_HEAD` bytes
with 431 and closes the connection: an unauthenticated client cannot grow the coordinator's memory
with an endless header.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from fedcare.core.errors import ConfigError

MAX_HEAD = 16 * 1024  # bytes of request line + headers; h11's own default limit, so both stacks agree
ENV = "FEDCARE_HTTP"
CHOICES = ("auto", "h11")

_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: 32\r\nconnection: close\r\n\r\nRequest header fields too large.")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def uvicorn_options(choice: str | None = None) -> tuple[dict[str, Any], str]:
    """uvicorn.Config's `loop` and `http` (and the head limit h11 applies), and a line saying which:
    uvloop and httptools when both are installed, else asyncio and h11."""
    choice = (os.environ.get(ENV, "auto") if choice is None else choice).strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    fast = choice == "auto" and installed("uvloop") and installed("httptools")
    if fast:
        return ({"loop": "uvloop", "http": bounded_httptools(), "h11_max_incomplete_event_size": MAX_HEAD},
                "HTTP stack: uvloop event loop, httptools parser (fedcare[fast])")
    why = f"{ENV}=h11" if choice == "h11" else "uvloop and httptools not both installed; fedcare[fast] adds them"
    return ({"loop": "asyncio", "http": "h11", "h11_max_incomplete_event_size": MAX_HEAD},
            f"HTTP stack: asyncio event loop, h11 parser ({why})")


def bounded_httptools() -> type:
    """uvicorn's httptools protocol with a bound on the request head (built on first use: the module
    imports without httptools)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class BoundedHttpTools(HttpToolsProtocol):
        """Counts the bytes received while a request's head is incomplete; past MAX_HEAD: 431, closed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head = 0  # bytes of the current head so far; -1 from its end to the end of its body

        def data_received(self, data: bytes) -> None:
            if self._head >= 0:
                self._head += len(data)
            super().data_received(data)  # the parser's callbacks below move _head
            if self._head > MAX_HEAD and not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

        def on_headers_complete(self) -> None:
            self._head = -1
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._head = 0  # a kept-alive connection's next request starts a head of its own

    return BoundedHttpTools
