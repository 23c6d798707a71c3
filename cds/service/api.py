"""HTTP routes: discovery, the patient-view service, feedback, health and readiness.

Every route but ``/health`` and ``/ready`` depends on `authenticate_client` (the CDS client's JWT,
see `cds.service.auth`), which runs before the body is read. Bodies are read by `read_json`: size
bounded while streaming (a lying or absent Content-Length changes nothing), time bounded, and
decoded with depth, number and unicode bounds (`cds.fhir.safejson`). A large body (declared, or
once it grows past ``CDS_LARGE_BODY_BYTES``) is read only while it holds a large-body slot, kept
until the response (`cds.service.limits`). The ``fhirServer`` of a hook call is checked against the
allow-list before anything is fetched (`cds.fhir.urls`). A hook call has one deadline
(``CDS_REQUEST_DEADLINE``) covering fetching, queueing and the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import date
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from cards.models import CdsResponse
from cards.render import render_cards, trial_label
from cds.engine.record import READ_TYPES
from cds.errors import CdsError, FhirServerNotAllowed, InvalidRequest, NotFound, ServiceUnavailable
from cds.fhir.safejson import JsonRejected, loads_bounded
from cds.service.errors import error_response
from cds.service.feedback import parse_feedback
from cds.service.limits import Deadline
from cds.service.models import CdsRequest, ServiceDescription, parse_request
from cds.service.openapi import FEEDBACK_BODY, HOOK_BODY, responses
from cds.service.prefetch import gather_data, prefetch_templates
from cds.service.state import HOOK, SERVICE_ID, ServiceState
from cds.store.database import DatabaseUnavailable

log = logging.getLogger("cds.service")

router = APIRouter()


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.cds
    return state


def service_description(state: ServiceState) -> ServiceDescription:
    trial = state.trial
    scopes = " ".join(f"patient/{t}.read" for t in READ_TYPES)
    return ServiceDescription(
        hook=HOOK,
        id=SERVICE_ID,
        title=f"Clinical trial prescreen: {trial_label(trial)}",
        description=(
            f"Prescreens the open chart for clinical trial {trial_label(trial)} and shows an "
            "information card when the patient is a possible candidate, with the criteria met, not "
            "met and to verify. Not an eligibility decision."
        ),
        prefetch=prefetch_templates(state.queries),
        usageRequirements=(
            f"Read access to the patient's record, by prefetch or by FHIR with the SMART scopes {scopes} "
            "(SMART v2: the same types with .rs). Without prefetch the service queries fhirServer itself."
        ),
    )


def _check_service(service_id: str) -> None:
    if service_id != SERVICE_ID:
        raise NotFound("unknown CDS service")


def expected_audience(request: Request, public_base_url: str | None) -> str:
    """The URL the client called, as a JWT `aud` must name it (no query string).

    Behind a proxy, `public_base_url` (``CDS_PUBLIC_BASE_URL``) replaces the scheme, host and port
    the service sees, so `aud` is compared with the URL the EHR actually called, not a Host header.
    """
    path = request.url.path
    if public_base_url:
        return public_base_url.rstrip("/") + path
    return str(request.url.replace(query="", fragment=""))


async def authenticate_client(request: Request) -> None:
    """Dependency of every CDS route: 401 unless the CDS client's JWT verifies (when required)."""
    state = _state(request)
    if state.authenticator is None:
        return
    audience = expected_audience(request, state.settings.public_base_url)
    await state.authenticator.authenticate(request.headers.get("authorization"), audience)


AUTHENTICATED = [Depends(authenticate_client)]


async def _drain(stream: AsyncIterator[bytes], size: int, limit: int) -> None:
    """Read and discard the rest of a refused body (bounded), so the client can read the answer."""
    with contextlib.suppress(ClientDisconnect):
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                return


async def _take_large_slot(
    state: ServiceState, slot: contextlib.AsyncExitStack, deadline: Deadline, stream: AsyncIterator[bytes], size: int
) -> None:
    """Hold a large-body slot until `slot` closes; when refused (503), the body is drained first."""
    try:
        await slot.enter_async_context(state.large_bodies.hold(deadline))
    except ServiceUnavailable:
        async with asyncio.timeout(state.settings.request_read_timeout):
            await _drain(stream, size, state.settings.max_request_bytes)
        raise


async def _read_body(
    state: ServiceState, stream: AsyncIterator[bytes], large: bool, slot: contextlib.AsyncExitStack, deadline: Deadline
) -> bytes:
    settings = state.settings
    limit = settings.max_request_bytes
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in stream:  # counted as it arrives: Content-Length may lie
            size += len(chunk)
            if size > limit:
                raise InvalidRequest(f"request body larger than {limit} bytes")
            chunks.append(chunk)
            if not large and size > settings.large_body_bytes:  # no (or a lying) Content-Length
                large = True
                await _take_large_slot(state, slot, deadline, stream, size)
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def read_json(request: Request, state: ServiceState, slot: contextlib.AsyncExitStack, deadline: Deadline) -> Any:
    """The request body as JSON, bounded in size, time, depth and content (400 otherwise). A large
    body first takes a large-body slot, entered on `slot` (held until the caller closes it); no
    slot in time is 503 with Retry-After."""
    settings = state.settings
    limit = settings.max_request_bytes
    declared = request.headers.get("content-length")
    declared_size = int(declared) if declared is not None and declared.strip().isdigit() else None
    if declared_size is not None and declared_size > limit:
        raise InvalidRequest(f"request body larger than {limit} bytes")
    stream = request.stream()
    large = declared_size is not None and declared_size > settings.large_body_bytes
    if large:  # wait before reading: meanwhile the body stays in the client's socket, not here
        await _take_large_slot(state, slot, deadline, stream, 0)
    try:
        async with asyncio.timeout(min(settings.request_read_timeout, max(deadline.remaining(), 0.0))):
            raw = await _read_body(state, stream, large, slot, deadline)
    except TimeoutError:
        raise InvalidRequest("the request body was not received in time") from None
    if not raw.strip():
        raise InvalidRequest("the request body is empty")
    decode = partial(loads_bounded, raw, max_depth=settings.max_json_depth)
    try:
        if len(raw) > settings.large_body_bytes:  # a big record: decode off the event loop
            return await run_in_threadpool(decode)
        return decode()
    except JsonRejected as exc:
        reason = str(exc)
        message = "not valid JSON" if reason == "not valid JSON" else f"refused: {reason}"
        raise InvalidRequest(f"the request body is {message}") from None


def _deadline(state: ServiceState) -> Deadline:
    return Deadline(state.settings.request_deadline, retry_after=state.settings.retry_after)


def _fetching(state: ServiceState, cds_request: CdsRequest) -> bool:
    """Whether this call may fetch from its fhirServer; `FhirServerNotAllowed` (400) if it names a
    server off the allow-list. With no allow-list configured the service never fetches."""
    allowed = state.fhir_allowed
    server = cds_request.fhirServer
    if server is None or allowed.empty:
        return False
    if allowed.match(server) is None:
        raise FhirServerNotAllowed("fhirServer is not on the allow-list")
    return True


@router.get("/cds-services", dependencies=AUTHENTICATED, responses=responses(401))
async def discovery(request: Request) -> dict[str, Any]:
    description = service_description(_state(request))
    return {"services": [description.model_dump(exclude_none=True)]}


@router.post(
    "/cds-services/{service_id}",
    dependencies=AUTHENTICATED,
    openapi_extra=HOOK_BODY,
    responses=responses(400, 401, 404, 412, 503),
)
async def call_service(service_id: str, request: Request) -> JSONResponse:
    started = time.perf_counter()
    state = _state(request)
    settings = state.settings
    deadline = _deadline(state)
    slot = contextlib.AsyncExitStack()  # a large body's slot, held until the answer is built
    record: dict[str, Any] = {"event": "hook", "service": service_id, "hook": None, "hookInstance": None}
    try:
        _check_service(service_id)
        cds_request = parse_request(await read_json(request, state, slot, deadline))
        record["hook"] = cds_request.hook
        record["hookInstance"] = cds_request.hookInstance
        if cds_request.hook != HOOK:
            raise InvalidRequest(f"this service answers the {HOOK} hook only")
        fetch = _fetching(state, cds_request)  # before anything is fetched
        as_of = settings.as_of or date.today()

        data = await gather_data(
            cds_request,
            state.queries,
            state.gateway,
            deadline_seconds=min(settings.fhir_deadline, deadline.left("fetching FHIR data")),
            require_all=settings.require_all_data,
            fetch=fetch,
            log_record=record,
            since=state.trial.observation_cutoff(as_of),
        )
        fetched = time.perf_counter()
        record["sources"] = data.sources()
        record["resources"] = len(data.resources)
        if data.incomplete:
            record["incomplete"] = list(data.incomplete)

        patient_id = cds_request.context.patientId
        if not settings.show_excluded_card and state.trial.certainly_excluded_without_evaluation(
            data.resources, patient_id=patient_id, searched=data.searched, incomplete=data.incomplete
        ):
            # Most charts opened are not lupus patients: no lupus code on complete, valid Condition
            # data means `excluded` for certain, and an excluded patient gets no card.
            record.update(
                status=200, outcome="no-card", verdict="excluded", cards=0, fastPath=True,
                fetchMs=round((fetched - started) * 1000, 1),
            )  # fmt: skip
            return JSONResponse(CdsResponse(cards=[]).to_json())
        # The engine is CPU-bound (model validation, unit conversion): off the event loop, in a
        # bounded pool, within the deadline (past it: 503, never a verdict).
        report = await state.engine.run(
            partial(
                state.evaluator,
                data.resources,
                patient_id=patient_id,
                as_of=as_of,
                searched=data.searched,
                incomplete=data.incomplete,
            ),
            deadline,
        )
        evaluated = time.perf_counter()
        cards = render_cards(report, state.trial, show_excluded=settings.show_excluded_card, new_uuid=state.new_uuid)
        body = CdsResponse(cards=cards).to_json()
        record.update(
            status=200,
            outcome="card" if cards else "no-card",
            verdict=report.verdict.value,
            cards=len(cards),
            dataIssues=len(report.data_issues),
            fetchMs=round((fetched - started) * 1000, 1),
            evaluateMs=round((evaluated - fetched) * 1000, 1),
        )
        return JSONResponse(body)
    except CdsError as exc:
        record.update(status=exc.http_status, outcome="error", error=type(exc).__name__, detail=exc.message)
        if isinstance(exc, ServiceUnavailable):
            return error_response(exc)  # answered here, so the log line below carries the 503
        raise
    except Exception as exc:
        record.update(status=500, outcome="error", error=type(exc).__name__)
        raise
    finally:
        await slot.aclose()
        record["totalMs"] = round((time.perf_counter() - started) * 1000, 1)
        level = logging.INFO if record.get("status") == 200 else logging.WARNING
        log.log(level, "hook call", extra=record)


@router.post(
    "/cds-services/{service_id}/feedback",
    dependencies=AUTHENTICATED,
    openapi_extra=FEEDBACK_BODY,
    responses=responses(400, 401, 404, 503),
)
async def post_feedback(service_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    _check_service(service_id)
    async with contextlib.AsyncExitStack() as slot:
        items = parse_feedback(await read_json(request, state, slot, _deadline(state)))
    stored = await run_in_threadpool(state.store.add, service_id, items)
    log.info(
        "feedback stored",
        extra={
            "event": "feedback",
            "service": service_id,
            "items": stored,
            "outcomes": sorted({i.outcome or "-" for i in items}),
        },
    )
    return {"stored": stored}


@router.get("/cds-services/{service_id}/feedback", dependencies=AUTHENTICATED, responses=responses(400, 401, 404))
async def list_feedback(service_id: str, request: Request, card: str | None = None) -> dict[str, Any]:
    """Stored feedback, oldest first (for coordinators and tests). It holds user comments: like
    every CDS route it requires the client's JWT when authentication is on."""
    state = _state(request)
    _check_service(service_id)
    rows = await run_in_threadpool(partial(state.store.list, service_id, card=card))
    return {"feedback": rows}


@router.get("/health")  # open: liveness only, no data
async def health(request: Request) -> dict[str, str]:
    state = _state(request)
    return {"status": "ok", "service": SERVICE_ID, "trial": state.trial.id}


@router.get("/ready", responses=responses(503))  # open: readiness for a load balancer, no data
async def ready(request: Request) -> JSONResponse:
    """200 while this process can serve: its database answers within the connect timeout; else 503
    with Retry-After (a load balancer takes the replica out of rotation meanwhile)."""
    state = _state(request)
    settings = state.settings
    try:
        async with asyncio.timeout(settings.database_connect_timeout + 1.0):
            await run_in_threadpool(state.database.ping)
    except (TimeoutError, ServiceUnavailable):
        log.warning("not ready: database unavailable", extra={"event": "ready", "status": 503})
        return error_response(
            DatabaseUnavailable("not ready: the database is unavailable", retry_after=settings.retry_after)
        )
    return JSONResponse({"status": "ready", "service": SERVICE_ID, "database": state.database.backend})
