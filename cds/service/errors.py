"""The one place where errors become HTTP responses, each with a FHIR OperationOutcome body.

* `cds.errors.CdsError` subclasses carry their status and ``issue.code`` (400 invalid, 401 login,
  404 not-found, 412 processing, 503 transient / throttled / timeout with ``Retry-After``).
* FHIR failures (`cds.errors.FhirError` and its subclasses) are mapped in ONE table,
  `FHIR_OUTCOMES`: the HTTP status and ``issue.code`` when the data was required, and what an
  optional data domain becomes (always *incomplete*: the type is marked incomplete on the card and
  its criteria become unknown). Never a "not a candidate" answer. Every
  401 is the same: ``WWW-Authenticate: Bearer`` and an
  OperationOutcome with one generic message, whatever the reason (the reason is logged only).
* Starlette's HTTP errors (unknown route 404, wrong method 405) and FastAPI's request validation
  errors (400 instead of FastAPI's 422) get the same shape.
* Anything else is a 500 with a generic message (`CatchAllMiddleware`); the exception type and the
  code frames go to the log, never the exception message (it may quote data) and nothing to the client.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds.errors import (
    AuthenticationFailed,
    CdsError,
    FhirAccessDenied,
    FhirClientError,
    FhirError,
    FhirInvalidBody,
    FhirNotFound,
    FhirOutsideBase,
    FhirRedirect,
    FhirServerFault,
    FhirStatusError,
    FhirTimeout,
    FhirUnreachable,
    ServiceUnavailable,
)

log = logging.getLogger("cds.service")

_STATUS_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported"}


def operation_outcome(code: str, diagnostics: str | None, severity: str = "error") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(status: int, code: str, diagnostics: str | None) -> JSONResponse:
    severity = "fatal" if status >= 500 else "error"
    return JSONResponse(operation_outcome(code, diagnostics, severity), status_code=status)


AUTH_FAILED_MESSAGE = "authentication failed"


@dataclass(frozen=True, slots=True)
class FhirOutcome:
    """What a FHIR failure becomes: `http_status` + `issue_code` when the data was required (or
    `CDS_REQUIRE_ALL_DATA`); `optional` when the data domain was optional."""

    http_status: int
    issue_code: str
    optional: Literal["incomplete"] = "incomplete"


#: The one table of FHIR failures (most specific class first is not needed: looked up along the MRO).
FHIR_OUTCOMES: dict[type[FhirError], FhirOutcome] = {
    FhirError: FhirOutcome(412, "processing"),
    FhirUnreachable: FhirOutcome(412, "transient"),
    FhirTimeout: FhirOutcome(412, "timeout"),
    FhirStatusError: FhirOutcome(412, "processing"),
    FhirRedirect: FhirOutcome(412, "processing"),
    FhirClientError: FhirOutcome(412, "processing"),
    FhirAccessDenied: FhirOutcome(412, "security"),
    FhirNotFound: FhirOutcome(412, "not-found"),
    FhirServerFault: FhirOutcome(412, "transient"),
    FhirInvalidBody: FhirOutcome(412, "structure"),
    FhirOutsideBase: FhirOutcome(412, "security"),
}


def fhir_outcome(exc: FhirError) -> FhirOutcome:
    """The table's row for `exc` (its class, else its nearest listed ancestor)."""
    for cls in type(exc).__mro__:
        row = FHIR_OUTCOMES.get(cls)
        if row is not None:
            return row
    return FHIR_OUTCOMES[FhirError]  # pragma: no cover - FhirError itself is in the table


def error_status(exc: CdsError) -> tuple[int, str]:
    """HTTP status and OperationOutcome ``issue.code`` of an error."""
    if isinstance(exc, FhirError):
        row = fhir_outcome(exc)
        return row.http_status, row.issue_code
    return exc.http_status, exc.issue_code


def error_response(exc: CdsError) -> JSONResponse:
    if isinstance(exc, AuthenticationFailed):
        response = outcome_response(exc.http_status, exc.issue_code, AUTH_FAILED_MESSAGE)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    status, code = error_status(exc)
    response = outcome_response(status, code, exc.message)
    if isinstance(exc, ServiceUnavailable):
        response.headers["Retry-After"] = str(max(1, exc.retry_after))
    return response


async def _cds_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CdsError)
    return error_response(exc)


def _route_methods(routes: Any, scope: Any, methods: set[str]) -> None:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's wrapper of an included router
        if included is not None:
            _route_methods(included.routes, scope, methods)
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())


def _allowed_methods(request: Request) -> str | None:
    """Every method of every route matching the path (Starlette names only the first route's)."""
    methods: set[str] = set()
    _route_methods(request.app.router.routes, request.scope, methods)
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "processing" if exc.status_code < 500 else "exception")
    response = outcome_response(exc.status_code, code, str(exc.detail) if exc.detail else None)
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        allow = _allowed_methods(request)
        if allow:
            response.headers["Allow"] = allow
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    locations = sorted({".".join(str(p) for p in err.get("loc", ())) for err in exc.errors()})
    return outcome_response(400, "invalid", "invalid request: " + ", ".join(locations))


def _log_unexpected(exc: BaseException) -> None:
    # The exception message may quote data (PHI): log the type and the code frames only.
    log.error(
        "unhandled error",
        extra={
            "event": "error",
            "error": type(exc).__name__,
            "stack": "".join(traceback.format_tb(exc.__traceback__)),
        },
    )


class CatchAllMiddleware:
    """Turn any unhandled exception into a 500 OperationOutcome.

    Done here rather than with an ``Exception`` handler because Starlette re-raises after such a
    handler, and the server would then log the exception message (which may quote data).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            _log_unexpected(exc)
            if not started:
                await outcome_response(500, "exception", "internal error")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CdsError, _cds_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(CatchAllMiddleware)  # innermost user middleware: CORS still wraps it
