"""The live federation's HTTP routes (phases.py), added to the coordinator's app.

Sites: POST /v1/live/report (how its data file has grown: row counts and a content hash) ·
GET /v1/models/current (the current version's global model, safetensors). Admin: GET /v1/models ·
POST /v1/live/sites/{site}/remove. A malformed report is a 4xx with an audit line, like every refusal.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time,
# and they name the dependencies create_app passes in

import re
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from fedcare.core.errors import FedcareError
from fedcare.transports.network.board import Refused
from fedcare.transports.network.jsonbody import BadJson, parse
from fedcare.transports.network.phases import Phases
from fedcare.transports.network.server import (
    _read,  # the body read with its limit, as every route reads it
)

MAX_REPORT = 4096  # bytes: a report is three numbers and a hash
MAX_ROWS = 10**12
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_report(value: Any) -> tuple[int, int, str]:
    """(rows, new_rows, sha256) from a site's report, or a 422 saying what is wrong."""
    if not isinstance(value, dict) or set(value) != {"rows", "new_rows", "sha256"}:
        raise Refused(422, 'a data report is {"rows": int, "new_rows": int, "sha256": "<64 hex digits>"}')
    rows, new_rows, digest = value["rows"], value["new_rows"], value["sha256"]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (rows, new_rows)) \
            or not 0 <= new_rows <= rows <= MAX_ROWS:
        raise Refused(422, f"a data report needs whole numbers 0 <= new_rows <= rows <= {MAX_ROWS}")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise Refused(422, "a data report's sha256 must be 64 lowercase hex digits")
    return rows, new_rows, digest


def live_routes(phases: Phases):
    """The routes, as an extension `create_app` calls with its site and admin dependencies."""

    def extend(app: FastAPI, Site, Admin) -> None:
        @app.post("/v1/live/report", openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object"}}}}})
        async def report(request: Request, site_id: Site) -> dict:
            """How the site's data file has grown since it last prepared data: counts and a hash, never rows."""
            try:
                value = parse(await _read(request, MAX_REPORT))
            except BadJson as exc:
                raise Refused(400, f"report is not valid JSON ({exc})") from None
            rows, new_rows, digest = check_report(value)
            before = phases.live.reports().get(site_id)
            phases.live.report(site_id, rows, new_rows, digest)
            if before is None or (before["rows"], before["sha256"]) != (rows, digest):
                phases.c.store.audit(site_id, "live report", 200, f"{rows} rows, {new_rows} new since its last "
                                                                  f"preparation, sha256 {digest[:12]}")
            return {"accepted": True}

        @app.get("/v1/models/current", response_class=Response,
                 responses={200: {"content": {"application/octet-stream": {}}}, 204: {"description": "no newer one"}})
        def current(site_id: Site, have: Annotated[int, Query(ge=0, le=MAX_ROWS)] = 0) -> Response:
            """The current version's global model (safetensors), its number in `x-fedcare-version`;
            204 when the site already holds version `have` or no version exists yet."""
            version = phases.models.current()
            if version is None or version["version"] == have:
                return Response(status_code=204)
            blob = (phases.models.folder(version["version"]) / "global.safetensors").read_bytes()
            return Response(blob, media_type="application/octet-stream",
                            headers={"x-fedcare-version": str(version["version"])})

        @app.get("/v1/models")
        def models(_: Admin) -> list[dict]:
            """Every model version: number, when, run, rounds, headline metric, sites."""
            return phases.models.versions()

        @app.post("/v1/live/sites/{site_id}/remove")
        def remove(site_id: str, _: Admin) -> dict:
            """The site leaves: it may no longer call, and no later phase or quorum counts it."""
            try:
                phases.remove(site_id)
            except FedcareError as exc:
                raise Refused(404, str(exc)) from None
            return {"removed": site_id}

    return extend
