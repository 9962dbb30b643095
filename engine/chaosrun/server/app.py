"""The HTTP side of ``chaosrun serve``: a Starlette app over :class:`~.service.Service`.

Every ``/v1`` route wants a bearer token (``Authorization: Bearer TOKEN``, or ``?token=``
for a kiosk): none or an unknown one is 401, a proctor's token on a route that acts is
403. Errors are JSON ``{"error": MESSAGE}``; a scenario's lint errors are 422 with each
error's file, line and column. ``/openapi.json`` describes all of it
(:mod:`chaosrun.server.openapi`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._spans import ScenarioErrors
from ..errors import ChaosrunError
from ..reports import report_as_csv, report_as_junit
from .openapi import document
from .service import KINDS, Busy, Invalid, NotFound, Service
from .store import StoreError, TokenRow

__all__ = ["make_app"]

STATIC = Path(__file__).parent / "static"
MAX_BODY = 4 * 1024 * 1024  # a scenario and an inventory as text
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="chaosrun"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def make_app(service: Service) -> Starlette:
    store = service.store

    def who(request: Request, *, acts: bool = False) -> TokenRow:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            token = request.query_params.get("token", "")
        row = store.token(token.strip()) if token.strip() else None
        if row is None:
            raise HTTPException(401, "a valid token is needed: Authorization: Bearer TOKEN")
        if acts and row.role != "operator":
            raise HTTPException(403, f"{row.name} is a {row.role}: only an operator may do this")
        return row

    def guarded(endpoint: Callable[[Request, TokenRow], Awaitable[Response]], *, acts: bool = False) -> Endpoint:
        async def wrapped(request: Request) -> Response:
            try:
                return await endpoint(request, who(request, acts=acts))
            except ScenarioErrors as exc:
                errors = [_lint_error(e.as_dict(), store.data / "exams") for e in exc.errors]
                return _error(422, f"{len(errors)} error(s) in the scenario or inventory", errors=errors)
            except NotFound as exc:
                return _error(404, str(exc))
            except Busy as exc:
                return _error(409, str(exc))
            except Invalid as exc:
                return _error(422, str(exc))
            except StoreError as exc:  # PostgreSQL (--db) restarting, the network to it down
                return _error(503, str(exc))
            except ChaosrunError as exc:
                return _error(422, str(exc))

        return wrapped

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes")
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Invalid(f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Invalid("the body is a JSON object")
        return data

    async def whoami(request: Request, user: TokenRow) -> Response:
        return JSONResponse({"name": user.name, "role": user.role})

    async def list_exams(request: Request, user: TokenRow) -> Response:
        return JSONResponse({"exams": [service.exam_json(e) for e in store.exams()]})

    async def create_exam(request: Request, user: TokenRow) -> Response:
        data = await body(request)
        fields = {"scenario": str, "inventory": str, "scenario_path": str, "inventory_path": str}
        for name, value in data.items():
            if name not in fields:
                raise Invalid(f"no field {name!r} (the fields: {', '.join(fields)})")
            if value is not None and not isinstance(value, str):
                raise Invalid(f"{name} is a string")
        if "\x00" in "".join(v for v in data.values() if isinstance(v, str)):
            raise Invalid("a NUL character in the body")
        row = service.create_exam(**{k: v for k, v in data.items() if v is not None})
        return JSONResponse(service.exam_json(row), status_code=201, headers={"Location": f"/v1/exams/{row.id}"})

    async def get_exam(request: Request, user: TokenRow) -> Response:
        return JSONResponse(service.exam_json(service.exam(request.path_params["exam"])))

    async def act(request: Request, user: TokenRow) -> Response:
        kind = request.path_params["kind"]
        op = service.start(request.path_params["exam"], kind, await body(request), user.name)
        return JSONResponse(op.as_json(), status_code=202)

    async def list_operations(request: Request, user: TokenRow) -> Response:
        row = service.exam(request.path_params["exam"])
        return JSONResponse({"operations": [op.as_json() for op in store.operations(row.id)]})

    async def get_operation(request: Request, user: TokenRow) -> Response:
        return JSONResponse(_operation(request).as_json())

    async def stop_operation(request: Request, user: TokenRow) -> Response:
        op = _operation(request)
        return JSONResponse(service.stop(op.exam, op.id).as_json(), status_code=202)

    def _operation(request: Request) -> Any:
        exam, op_id = request.path_params["exam"], request.path_params["operation"]
        service.exam(exam)
        op = store.operation(op_id)
        if op is None or op.exam != exam:
            raise NotFound(f"no operation {op_id} on exam {exam}")
        return op

    async def report(request: Request, user: TokenRow) -> Response:
        row = service.exam(request.path_params["exam"])
        wanted = request.query_params.get("operation")
        ops = [op for op in store.operations(row.id) if op.kind in ("run", "verify", "watch") and op.state != "running"]
        # the one asked for, else the newest grading, else the newest run
        ops = [op for op in ops if op.id == wanted] if wanted else [op for op in ops if op.kind != "run"] or ops
        found = next((r for op in reversed(ops) if (r := store.report(op.id)) is not None), None)
        if found is None:
            raise NotFound(f"exam {row.id} has no report yet" + (f" from {wanted}" if wanted else ""))
        accept = request.headers.get("accept", "")
        if "text/csv" in accept:
            return Response(report_as_csv(found), media_type="text/csv")
        if "application/xml" in accept or "junit" in accept:
            return Response(report_as_junit(found), media_type="application/xml")
        return JSONResponse(found)

    async def events(request: Request, user: TokenRow) -> Response:
        row = service.exam(request.path_params["exam"])
        after = _int(request.headers.get("last-event-id") or request.query_params.get("after") or "0")
        send, receive = service.subscribe(row.id)

        async def stream() -> AsyncIterator[ServerSentEvent]:
            seen = after
            try:
                for event in store.events(row.id, after):
                    seen = event["seq"]
                    yield _sse(event)
                async with receive:
                    async for event in receive:
                        if event["seq"] > seen:
                            seen = event["seq"]
                            yield _sse(event)
            finally:
                service.unsubscribe(row.id, send)

        return EventSourceResponse(stream(), ping=15, headers={"Cache-Control": "no-store"})

    async def room(request: Request, user: TokenRow) -> Response:
        row = service.exam(request.path_params["exam"])
        return JSONResponse({"exam": service.exam_json(row), **service.room(row.id).as_json()})

    async def environment(request: Request, user: TokenRow) -> Response:
        row = service.exam(request.path_params["exam"])
        name = request.path_params["env"]
        the_room = service.room(row.id)
        if name not in the_room.rows:
            raise NotFound(f"exam {row.id} has no environment {name}")
        steps: list[Any] = []
        for op in reversed(store.operations(row.id)):
            if (r := store.report(op.id)) is not None and "environments" in r:
                steps = next((e["steps"] for e in r["environments"] if e["name"] == name), [])
                break
        return JSONResponse(
            {
                "name": name,
                "row": the_room.rows[name].as_json(),
                "steps": steps,
                "events": store.events(row.id, env=name, limit=200),
                "audit": _audit_excerpt(store.operations(row.id), name),
            }
        )

    async def audit(request: Request, user: TokenRow) -> Response:
        from ..auditcheck import verify_audit_log

        row = service.exam(request.path_params["exam"])
        logs = []
        for path in sorted((row.folder / "audit").glob("*.jsonl")):
            try:
                verdict = verify_audit_log(path, service.key_path)
                check = {"ok": verdict.ok, "untrusted": verdict.untrusted, "message": verdict.message}
            except ChaosrunError as exc:
                check = {"ok": False, "untrusted": True, "message": str(exc)}
            logs.append({"name": path.name, "bytes": path.stat().st_size, "verification": check})
        return JSONResponse({"logs": logs})

    async def audit_log(request: Request, user: TokenRow) -> Response:
        row = service.exam(request.path_params["exam"])
        name = request.path_params["name"]
        path = row.folder / "audit" / name
        if "/" in name or not name.endswith(".jsonl") or not path.is_file():
            raise NotFound(f"exam {row.id} has no audit log {name}")
        return FileResponse(path, media_type="application/x-ndjson")

    listing, creating = guarded(list_exams), guarded(create_exam, acts=True)

    async def exams(request: Request) -> Response:
        return await (creating if request.method == "POST" else listing)(request)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document())

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # 405's Allow
        return response

    kinds = "{kind:str}"
    routes = [
        Route("/", index),
        Route("/openapi.json", openapi),
        Mount("/assets", app=StaticFiles(directory=STATIC), name="assets"),
        Route("/v1/whoami", guarded(whoami)),
        Route("/v1/exams", exams, methods=["GET", "POST"]),
        Route("/v1/exams/{exam}", guarded(get_exam)),
        Route("/v1/exams/{exam}/room", guarded(room)),
        Route("/v1/exams/{exam}/events", guarded(events)),
        Route("/v1/exams/{exam}/report", guarded(report)),
        Route("/v1/exams/{exam}/audit", guarded(audit)),
        Route("/v1/exams/{exam}/audit/{name}", guarded(audit_log)),
        Route("/v1/exams/{exam}/environments/{env}", guarded(environment)),
        Route("/v1/exams/{exam}/operations", guarded(list_operations)),
        Route("/v1/exams/{exam}/operations/{operation}", guarded(get_operation)),
        Route("/v1/exams/{exam}/operations/{operation}/stop", guarded(stop_operation, acts=True), methods=["POST"]),
        Route(f"/v1/exams/{{exam}}/{kinds}", guarded(act, acts=True), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: on_http_error})
    app.state.kinds = KINDS
    return app


def _sse(event: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(event), event=event["type"], id=str(event["seq"]))


def _int(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0


def _lint_error(error: dict[str, Any], exams: Path) -> dict[str, Any]:
    """A lint error as the API gives it: the file as the client named it (``scenario`` or
    ``inventory`` when it sent their text), line, column, message, hint."""
    file = str(error["file"])
    if Path(file).is_relative_to(exams):
        file = Path(file).name.split(".")[0]
    return {"file": file, "line": error["line"], "column": error["col"], "message": error["message"],
            "hint": error.get("hint")}  # fmt: skip


def _audit_excerpt(ops: list[Any], env: str, per_log: int = 50) -> list[dict[str, Any]]:
    """The newest records of ``env`` in the newest operations' audit logs (up to three)."""
    out = []
    for op in [o for o in reversed(ops) if o.audit][:3]:
        path = Path(op.audit)
        if not path.is_file():
            continue
        records = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("env") == env:
                records.append(record)
        out.append({"log": path.name, "operation": op.id, "records": records[-per_log:]})
    return out
