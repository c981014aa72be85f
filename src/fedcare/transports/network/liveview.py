"""The coordinator's live view: one page on the coordinator's own TLS port, behind the admin
credential, showing the run's status, the sites and when each was last heard from, the rounds, the
latest round's metrics, ε and anomalies per site, and the audit log; it reloads itself.

How a browser gets in without weakening the admin token: a login form POSTs the token (never in a
URL, so never in a log or a browser history); the coordinator checks it as it checks a bearer token
and answers with a random session id in a cookie that is HttpOnly (no script reads it), Secure
(TLS only), SameSite=Strict (no other site's page can send it) and short-lived (LIFETIME). Only its
SHA-256 is kept, in memory: a restart logs every browser out. The cookie opens the live view only,
never the API: starting and stopping runs still needs the bearer token. The page has no scripts and
a Content-Security-Policy that forbids them, so the run's text (site ids, audit lines) cannot run.
"""

from __future__ import annotations

import hashlib
import html
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

COOKIE = "fedcare_live"
PATH = "/live"
LIFETIME = 15 * 60  # seconds a login lasts
MAX_SESSIONS = 64   # logins held at once; the oldest is dropped beyond this
REFRESH = 3         # seconds between the page's reloads
AUDIT_LINES = 30
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                      "frame-ancestors 'none'; base-uri 'none'",
           "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
STYLE = ("body{font-family:sans-serif;margin:1.5em}td,th{padding:2px 8px;text-align:left}table{border-collapse:"
         "collapse;margin:0.4em 0 1em}tr:nth-child(even){background:#f3f3f3}.flagged{color:#b00;font-weight:bold}")
e = html.escape


class Sessions:
    """Live-view logins: the SHA-256 of each session id and when it expires."""

    def __init__(self, lifetime: float = LIFETIME, limit: int = MAX_SESSIONS):
        self._expires: dict[str, float] = {}
        self._lock = threading.Lock()
        self.lifetime, self.limit = lifetime, limit

    @staticmethod
    def _digest(session: str) -> str:
        return hashlib.sha256(session.encode()).hexdigest()

    def open(self) -> str:
        session = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._expires = {k: t for k, t in self._expires.items() if t > now}
            while len(self._expires) >= self.limit:
                self._expires.pop(min(self._expires, key=self._expires.__getitem__))
            self._expires[self._digest(session)] = now + self.lifetime
        return session

    def valid(self, session: str | None) -> bool:
        if not session or len(session) > 100:
            return False
        with self._lock:
            return self._expires.get(self._digest(session), 0.0) > time.monotonic()

    def close(self, session: str | None) -> None:
        if session:
            with self._lock:
                self._expires.pop(self._digest(session), None)


def add_live_view(app: FastAPI, control, is_admin: Callable[[str], bool], refused: Callable[..., None],
                  read: Callable[[Request, int], Awaitable[bytes]]) -> Sessions:
    """The live view's routes on the coordinator's app (kept out of the OpenAPI description: they
    are a browser's pages, not the API)."""
    sessions = Sessions()

    @app.get(PATH, include_in_schema=False)
    def page(request: Request) -> Response:
        if not sessions.valid(request.cookies.get(COOKIE)):
            return _html(login_page(), 200)
        return _html(live_page(control), 200)

    @app.post(f"{PATH}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        body = await read(request, 4096)
        try:
            token = parse_qs(body.decode("utf-8"), max_num_fields=2).get("token", [""])[0].strip()
        except (UnicodeDecodeError, ValueError):
            token = ""
        if not token or not is_admin(token):
            refused(None, f"POST {PATH}/login", 401, "live view: wrong admin token")
            return _html(login_page("that is not the admin token (admin.json from fedcare certs init)"), 401)
        response = RedirectResponse(PATH, status_code=303)
        response.set_cookie(COOKIE, sessions.open(), max_age=int(sessions.lifetime), path=PATH, secure=True,
                            httponly=True, samesite="strict")
        return response

    @app.post(f"{PATH}/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse(PATH, status_code=303)
        response.delete_cookie(COOKIE, path=PATH, secure=True, httponly=True, samesite="strict")
        return response

    return sessions


def _html(text: str, status: int) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _doc(title: str, body: str, refresh: bool = False) -> str:
    meta = f"<meta http-equiv='refresh' content='{REFRESH}'>" if refresh else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{e(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def login_page(message: str = "") -> str:
    note = f"<p id='error' class='flagged'>{e(message)}</p>" if message else ""
    return _doc("fedcare coordinator · log in", (
        "<h1>fedcare coordinator</h1><p>The live view needs the admin token (the <code>token</code> in admin.json).</p>"
        f"{note}<form method='post' action='{PATH}/login'><label>admin token "
        "<input type='password' name='token' id='token' autocomplete='off' required></label> "
        "<button type='submit' id='login'>log in</button></form>"))


def _when(at: float | None) -> str:
    return "—" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _num(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else e(str(value))


def _table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table id='{table_id}'><tr>{head}</tr>{body}</table>"


def live_page(control) -> str:
    """The page as the coordinator sees the run now: every value escaped, nothing but text."""
    status = control.status()
    now = time.time()
    seen = control.store.sites_seen()
    recent = list(control.recent)
    parts = ["<h1>fedcare coordinator</h1>",
             f"<form method='post' action='{PATH}/logout'><button id='logout'>log out</button></form>",
             f"<p id='updated'>as of {e(_when(now))} (reloads every {REFRESH} s)</p>"]
    if status.get("status") == "idle":
        parts.append("<p id='status'>no run yet</p>")
    else:
        reason = f" ({e(status['reason'])})" if status.get("reason") else ""
        waiting = status.get("waiting_for") or []
        parts.append(f"<p id='status'>run <b>{e(status['run_id'])}</b>: <b id='state'>{e(status['status'])}</b>"
                     f"{reason}" + (f" · waiting for {e(', '.join(waiting))}" if waiting else "") + "</p>")
    parts.append("<h2>sites</h2>" + _table("sites", ["site", "last heard from", "seconds ago"], [
        [e(s), e(_when(seen.get(s))), "—" if s not in seen else f"{now - seen[s]:.0f}"] for s in status.get("sites", [])]))
    scores = {r.round: r.val_score for r in recent}
    rounds = status.get("rounds") or []
    parts.append("<h2>rounds</h2>" + _table("rounds", ["round", "answered", "refused", "validation score"], [
        [str(r["round"]), e(", ".join(r["answered"])), e("; ".join(f"{s}: {w}" for s, w in r["refused"].items())),
         _num(scores[r["round"]]) if scores.get(r["round"]) is not None else "—"] for r in rounds[-20:]]))
    if recent:
        parts.append(_latest(recent[-1]))
    audit = control.store.audit_log(AUDIT_LINES)
    parts.append("<h2>audit log (latest)</h2>" + _table("audit", ["at", "site", "action", "status", "detail"], [
        [e(_when(a["at"])), e(str(a["site_id"] or "")), e(a["action"]), str(a["status"]), e(a["detail"])]
        for a in audit]))
    return _doc("fedcare coordinator · live", "".join(parts), refresh=True)


def _latest(record) -> str:
    """The latest round per site: training figures (loss, ε), test metrics, the update's anomaly report."""
    test_names = sorted({k for splits in record.evaluation.values() for k in splits.get("test", {})
                         if not k.endswith(("_low", "_high"))})
    train_names = sorted({k for values in record.train.values() for k in values if k != "num_examples"})
    rows = []
    for site in sorted(set(record.evaluation) | set(record.train)):
        test = record.evaluation.get(site, {}).get("test", {})
        train = record.train.get(site, {})
        report = record.anomalies.get(site, {})
        flag = "<span class='flagged'>flagged</span>" if report.get("flagged") else ""
        rows.append([e(site), *[_num(train[k]) if k in train else "—" for k in train_names],
                     *[_num(test[k]) if test.get(k) is not None else "—" for k in test_names],
                     _num(report["norm"]) if "norm" in report else "—",
                     _num(report["cosine_consensus"]) if "cosine_consensus" in report else "—", flag])
    header = ["site", *train_names, *[f"test {k}" for k in test_names], "update norm", "cosine to median", ""]
    return f"<h2>round {record.round}, per site</h2>" + _table("latest", header, rows)
