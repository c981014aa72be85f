"""The coordinator's HTTP stack: uvloop + httptools when installed (fedcare[fast]), asyncio + h11
otherwise, and the same bound on a request's head with either (a real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from fedcare.core.errors import ConfigError
from fedcare.transports.network.httpstack import MAX_HEAD, installed, uvicorn_options

FAST = installed("uvloop") and installed("httptools")


def test_the_choice_is_said_in_one_line_and_a_bad_value_is_one_line(monkeypatch):
    forced, line = uvicorn_options("h11")
    assert (forced["loop"], forced["http"]) == ("asyncio", "h11")
    assert line == "HTTP stack: asyncio event loop, h11 parser (FEDCARE_HTTP=h11)"
    auto, _ = uvicorn_options("auto")
    assert (auto["loop"] == "uvloop") == FAST and (auto["http"] == "h11") != FAST
    monkeypatch.setenv("FEDCARE_HTTP", "httptools-please")
    with pytest.raises(ConfigError, match="FEDCARE_HTTP='httptools-please': expected one of auto, h11"):
        uvicorn_options()


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _exchange(port: int, *requests: bytes) -> bytes:
    """Send the requests on one connection and read until the server closes it or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        for request in requests:
            try:
                conn.sendall(request)
            except (BrokenPipeError, ConnectionResetError):  # refused and closed while we were still sending
                break
        conn.settimeout(1.0)
        out = b""
        try:
            while chunk := conn.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


@pytest.mark.parametrize("choice", ["h11", "auto"])
def test_a_head_past_the_bound_is_refused_with_either_parser(choice):
    if choice == "auto" and not FAST:
        pytest.skip("uvloop and httptools are not installed (fedcare[fast])")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="critical", lifespan="off",
                                           **uvicorn_options(choice)[0]))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 10
        while not server.started and time.monotonic() < end:
            time.sleep(0.02)
        get = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
        put = b"PUT /u HTTP/1.1\r\nhost: x\r\ncontent-length: 70000\r\n\r\n" + b"\0" * 70000  # a big body is fine
        served = _exchange(port, get, put, get)  # kept alive: each request's head is counted on its own
        assert served.count(b"HTTP/1.1 200") == 3
        header = b"x-filler: " + b"a" * (4 * MAX_HEAD) + b"\r\n"
        refused = _exchange(port, b"GET / HTTP/1.1\r\nhost: x\r\n" + header * 64)
        assert refused.split(b"\r\n", 1)[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 431 Request Header Fields Too Large")
        after_one = _exchange(port, get, b"GET / HTTP/1.1\r\nhost: x\r\n" + header * 64)
        assert after_one.count(b"HTTP/1.1 200") == 1 and after_one.split(b"ok", 1)[1].startswith(b"HTTP/1.1 4")
    finally:
        server.should_exit = True
        thread.join(10)
