"""The coordinator's HTTP API (FastAPI): sites poll for tasks and post answers; an admin starts and
stops runs. Every refused request gets a 4xx with one line saying why, and a line in the audit log
with the site's id (repeats counted, not stored one by one: auditlog.py); nothing a site sends can
make the service answer 5xx or stop. JSON bodies have their own small limit (`max_json`), checked
before they are read whole, and are parsed strictly (jsonbody.py).

Sites: GET /v1/task (long-poll) · GET /v1/tasks/{id}/params · PUT /v1/tasks/{id}/update ·
POST /v1/tasks/{id}/answer. Admin: POST /v1/run · POST /v1/run/stop · GET /v1/status · GET /v1/audit.
A browser: GET /live, the live view behind the admin credential (liveview.py).
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time,
# and they name aliases local to create_app
from collections.abc import Sequence
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fedcare.core.errors import DataError, FedcareError, ParamsError
from fedcare.core.serialization import MAX_METRICS, MAX_SCALAR, METRIC_NAME, finite_number, update_from_bytes
from fedcare.transports.network.auditlog import RefusalLog
from fedcare.transports.network.board import Board, Refused
from fedcare.transports.network.jsonbody import BadJson, parse
from fedcare.transports.network.livedrift import check_drift_answer
from fedcare.transports.network.liveview import add_live_view
from fedcare.transports.network.secure import ANSWERS, check_answer
from fedcare.transports.network.store import Store

API = "/v1"
_BINARY_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
_JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
_SPLITS = ("train", "val", "test")


class Credentials(Protocol):
    def site_for(self, token: str) -> str | None: ...
    def is_admin(self, token: str) -> bool: ...


class Control(Protocol):
    """What the API needs of the coordinator that runs the rounds."""

    board: Board
    store: Store
    max_body: int
    max_json: int     # largest JSON answer, bytes: far below max_body (parsed JSON takes ~20x its size)
    poll_wait: float
    recent: Sequence[Any]  # the latest rounds' records, for the live view

    def participants(self) -> list[str]: ...
    def train_rows(self, site_id: str) -> int | None: ...  # the training rows it declared in preparation
    def start(self, config: dict | None = None) -> str: ...
    def stop(self) -> None: ...
    def status(self) -> dict: ...


def create_app(control: Control, credentials: Credentials, extensions: Sequence[Any] = ()) -> FastAPI:
    """`extensions`: callables given (app, Site, Admin) that add routes of their own (liveapi.py)."""
    app = FastAPI(title="fedcare coordinator", version="1",
                  description="Sites poll for declarative tasks and send back updates and scalar metrics.")
    bearer = HTTPBearer(auto_error=False, description="a site token (fedcare certs site) or the admin token")

    refusals = RefusalLog(control.store)

    def refuse(request: Request, site_id: str | None, status: int, reason: str) -> JSONResponse:
        refusals.refused(site_id, f"{request.method} {request.url.path}", status, reason)
        return JSONResponse({"detail": reason}, status_code=status)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        return refuse(request, getattr(request.state, "site_id", None), exc.status, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return refuse(request, getattr(request.state, "site_id", None), 422,
                      f"invalid request: {where}: {first.get('msg', 'malformed')}")

    Token = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

    # The credential checks and the task handlers a round goes through are coroutines: each does
    # microseconds of work (a stat of the registry, a lookup under the board's lock, a SQLite write
    # at most every few seconds per site), less than the hop to a worker thread and back that
    # FastAPI makes for a plain function, which on a busy machine also waits for that thread to run.
    async def site(request: Request, token: Token) -> str:
        """The authenticated site: its token's owner, if that site takes part in the federation."""
        site_id = _registry(credentials.site_for, token.credentials) if token else None
        if site_id is None:
            raise Refused(401, "unknown or revoked site credential; ask the coordinator's operator for one "
                               "(fedcare certs site NAME)")
        request.state.site_id = site_id
        if site_id not in control.participants():
            raise Refused(403, f"site '{site_id}' is not taking part in this federation")
        control.store.seen(site_id)
        return site_id

    async def admin(token: Token) -> None:
        if token is None or not _registry(credentials.is_admin, token.credentials):
            raise Refused(401, "admin credential required (the token in admin.json from fedcare certs init)")

    Site = Annotated[str, Depends(site)]
    Admin = Annotated[None, Depends(admin)]

    @app.get(f"{API}/health")
    async def health() -> dict:
        """Liveness, without credentials (for load balancers and monitoring)."""
        return {"ok": True}

    @app.get(f"{API}/task", responses={204: {"description": "nothing to do yet; poll again"}})
    async def next_task(site_id: Site, wait: Annotated[float, Query(ge=0, le=60)] = 20.0) -> Any:
        """Long-poll: the site's open task (declarative: a kind, a round, hyperparameters), or 204.
        It waits on the event loop, so held-open polls take no thread from other requests."""
        task = await control.board.poll(site_id, min(wait, control.poll_wait))
        # the board's task bodies are JSON values already: JSONResponse writes them as FastAPI would,
        # without its walk over every value of the plan first (jsonable_encoder), twice per site and round
        return Response(status_code=204) if task is None else JSONResponse(task)

    @app.get(f"{API}/tasks/{{task_id}}/params", response_class=Response,
             responses={200: {"content": {"application/octet-stream": {}}}})
    async def params(task_id: str, site_id: Site) -> Response:
        """The arrays of an open task (safetensors bytes, made before the task opened)."""
        task = control.board.task_for(site_id, task_id)
        blob = task.blob_for(site_id)  # a site lacking an input: the params without its encoder
        if blob is None:
            raise Refused(404, f"task {task_id} has no params to download")
        return Response(blob, media_type="application/octet-stream")

    @app.put(f"{API}/tasks/{{task_id}}/update", openapi_extra=_BINARY_BODY)
    async def update(task_id: str, request: Request, site_id: Site) -> dict:
        """A fit task's update: safetensors bytes mirroring the task's params, with the site's id,
        the round it was trained for, its number of examples (at most the training rows it declared)
        and scalar metrics in the metadata."""
        task = control.board.task_for(site_id, task_id)
        message = task.message_for(site_id)  # exactly the arrays this site was sent
        if task.kind != "fit" or message is None:
            raise Refused(409, f"task {task_id} is a {task.kind} task; send its answer to /answer")
        body = await _read(request, control.max_body)
        try:
            compress = task.bodies[site_id].get("request", {}).get("compress", "none")  # what the site was asked
            received = update_from_bytes(body, message, round_=task.round, compress=compress, sender=site_id)
        except ParamsError as exc:
            reason = f"update refused: {exc}{_scope_hint(task, site_id)}"
            control.board.refuse(site_id, task_id, reason)
            raise Refused(422, reason) from None
        if received.site_id != site_id:
            raise Refused(403, f"the update claims to come from '{received.site_id[:64]}', not from '{site_id}'")
        declared = control.train_rows(site_id)
        if declared is not None and received.num_examples > declared:
            reason = (f"update refused: it claims {received.num_examples} examples, more than the {declared} "
                      "training rows this site declared in data preparation")
            control.board.refuse(site_id, task_id, reason)
            raise Refused(422, reason)
        control.board.answer(site_id, task_id, (received, len(body)))
        control.store.audit(site_id, f"update {task_id}", 200, f"{len(body)} bytes, {received.num_examples} examples")
        return {"accepted": task_id}

    @app.post(f"{API}/tasks/{{task_id}}/answer", openapi_extra=_JSON_BODY)
    async def answer(task_id: str, request: Request, site_id: Site) -> dict:
        """A JSON answer: metrics (evaluate, personalize, local) or preparation aggregates (prepare)."""
        task = control.board.task_for(site_id, task_id)
        body = await _read(request, control.max_json + task.answer_bytes)
        try:
            value = parse(body)
        except BadJson as exc:
            raise Refused(400, f"answer is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise Refused(422, "answer must be a JSON object")
        if task.kind == "fit":  # a site that declines a round (its privacy budget is spent) says why
            if set(value) != {"declined"} or not isinstance(value["declined"], str):
                raise Refused(422, f"task {task_id} is a fit task: PUT the update to /update, or answer "
                                   '{"declined": "reason"}')
            control.board.answer(site_id, task_id, f"declined: {value['declined'][:500]}")
            return {"accepted": task_id}
        if task.kind in ANSWERS:
            try:
                check_answer(task.kind, value, site_id)
            except Refused as exc:  # the round says why, if no good answer follows
                control.board.refuse(site_id, task_id, exc.reason)
                raise
            if "declined" in value:
                value = f"declined: {value['declined'][:500]}"
        elif task.kind == "drift":  # a live phase's statistics of the newly arrived rows (livedrift.py)
            try:
                value = check_drift_answer(value, site_id)
            except DataError as exc:
                control.board.refuse(site_id, task_id, str(exc))
                raise Refused(422, f"drift answer refused: {exc}") from None
        elif task.kind == "prepare":
            declined = set(value) == {"declined"} and isinstance(value["declined"], str)  # outside its policy
            if not declined and (set(value) != {"answer"} or not isinstance(value["answer"], dict)):
                raise Refused(422, 'a preparation answer is {"answer": {...}}, an object, or {"declined": "reason"}')
        else:
            _check_metrics(value.get("metrics"), task.bodies[site_id].get("splits", _SPLITS))
            _check_rows(value.get("rows", []), site_id)
        control.board.answer(site_id, task_id, value)
        return {"accepted": task_id}

    @app.post(f"{API}/run", openapi_extra={"requestBody": {"required": False, "content": {
        "application/json": {"schema": {"type": "object"}}}}})
    async def start(request: Request, _: Admin) -> dict:
        """Start a run (admin), with the coordinator's config or with {"config": {flat keys}}; the
        previous run must be over."""
        body = await _read(request, control.max_json)
        config = None
        if body.strip():
            try:
                value = parse(body)
            except BadJson as exc:
                raise Refused(400, f"body is not valid JSON ({exc})") from None
            if not isinstance(value, dict) or set(value) - {"config"} or not isinstance(value.get("config", {}), dict):
                raise Refused(422, 'the body must be {"config": {flat config keys}} or empty')
            config = value.get("config")
        return {"run_id": control.start(config)}

    @app.post(f"{API}/run/stop")
    def stop(_: Admin) -> dict:
        """Stop the run (admin): sites finish their current task and are told the run is over."""
        control.stop()
        return {"stopped": True}

    @app.get(f"{API}/status")
    def status(_: Admin) -> dict:
        """The run's state: running, paused (and why), completed, stopped or failed; its rounds."""
        return control.status()

    @app.get(f"{API}/audit")
    def audit(_: Admin, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[dict]:
        """The latest audit-log lines: refused requests (repeats counted) and accepted updates, with the
        site's id."""
        refusals.flush()
        return control.store.audit_log(limit)

    add_live_view(app, control, lambda token: bool(_registry(credentials.is_admin, token)), refusals.refused, _read)
    for extend in extensions:
        extend(app, Site, Admin)
    return app


def _scope_hint(task, site_id: str) -> str:
    """Why an update's arrays may not be the model's: the site was sent the model without some encoders."""
    if site_id not in task.parts:
        return ""
    skip = task.bodies[site_id].get("request", {}).get("skip", [])
    return f" (this site lacks an input: it neither receives nor sends arrays under {', '.join(map(repr, skip))})"


def _registry(lookup, token: str):
    """A credential lookup; a registry file the operator broke is the coordinator's fault (503), and
    no token is accepted until it is fixed."""
    try:
        return lookup(token)
    except FedcareError as exc:
        raise Refused(503, f"the coordinator cannot read its credential registry ({exc}); its operator must fix it") from None


async def _read(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"body larger than the coordinator's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body larger than the coordinator's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_metrics(metrics: object, splits: object) -> None:
    """{split: {metric: finite number or null}} for the splits the task asked about."""
    if not isinstance(metrics, dict):
        raise Refused(422, "answer needs 'metrics': {split: {metric: number}}")
    for split, values in metrics.items():
        if split not in splits:
            raise Refused(422, f"metrics for split {split[:30]!r}, which the task did not ask for")
        if not isinstance(values, dict) or len(values) > MAX_METRICS:
            raise Refused(422, f"metrics of split '{split}' must be an object of at most {MAX_METRICS} numbers")
        for name, value in values.items():
            if not METRIC_NAME.fullmatch(name):
                raise Refused(422, f"metric name {name[:70]!r} of split '{split}' is not a short identifier")
            if value is not None and not finite_number(value):
                raise Refused(422, f"metric '{name}' of split '{split}' must be null or a finite number of magnitude "
                                   f"at most {MAX_SCALAR:g}")


def _check_rows(rows: object, site_id: str) -> None:
    """A local baseline's metric rows: objects of scalars (they go to metrics.jsonl as they are), each
    about this site's own local model: no site writes rows under another's name."""
    if not isinstance(rows, list) or len(rows) > 100_000:
        raise Refused(422, "'rows' must be a list of metric objects")
    for row in rows:
        if not isinstance(row, dict) or len(row) > 2 * MAX_METRICS or not all(map(METRIC_NAME.fullmatch, row)) \
                or not all(_scalar(v) for v in row.values()):
            raise Refused(422, "each row must be an object of at most 64 short names of scalar values")
        if row.get("site") != site_id or row.get("model") != "local":
            raise Refused(422, f"a local-baseline row must be about this site's local model (site '{site_id}', "
                               f"model 'local'), not site {str(row.get('site'))[:64]!r}, model "
                               f"{str(row.get('model'))[:20]!r}")


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, bool) or finite_number(value) or (isinstance(value, str) and len(value) <= 1000)
