"""HTTP routes: discovery, the patient-view service, feedback, health.

Every route but ``/health`` depends on `authenticate_client` (the CDS client's JWT, see
`cds.service.auth`), which runs before the body is read. Bodies are read by `read_json`: size
bounded while streaming (a lying or absent Content-Length changes nothing), time bounded, and
decoded with depth, number and unicode bounds (`cds.fhir.safejson`). The ``fhirServer`` of a hook
call is checked against the allow-list before anything is fetched (`cds.fhir.urls`).
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from cds.errors import CdsError, FhirServerNotAllowed, InvalidRequest, NotFound
from cds.fhir.safejson import JsonRejected, loads_bounded
from cds.service.feedback import parse_feedback
from cds.service.models import CdsRequest, ServiceDescription, parse_request
from cds.service.openapi import FEEDBACK_BODY, HOOK_BODY, responses
from cds.service.prefetch import gather_data, prefetch_templates
from cds.service.state import HOOK, SERVICE_ID, ServiceState

log = logging.getLogger("cds.service")

router = APIRouter()

LARGE_BODY = 1_000_000  # bytes


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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise InvalidRequest(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():  # counted as it arrives: Content-Length may lie
            size += len(chunk)
            if size > limit:
                raise InvalidRequest(f"request body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def read_json(request: Request, state: ServiceState) -> Any:
    """The request body as JSON, bounded in size, time, depth and content (400 otherwise)."""
    settings = state.settings
    try:
        async with asyncio.timeout(settings.request_read_timeout):
            raw = await _read_body(request, settings.max_request_bytes)
    except TimeoutError:
        raise InvalidRequest("the request body was not received in time") from None
    if not raw.strip():
        raise InvalidRequest("the request body is empty")
    decode = partial(loads_bounded, raw, max_depth=settings.max_json_depth)
    try:
        if len(raw) > LARGE_BODY:  # a big record: decode off the event loop
            return await run_in_threadpool(decode)
        return decode()
    except JsonRejected as exc:
        reason = str(exc)
        message = "not valid JSON" if reason == "not valid JSON" else f"refused: {reason}"
        raise InvalidRequest(f"the request body is {message}") from None


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
    responses=responses(400, 401, 404, 412),
)
async def call_service(service_id: str, request: Request) -> JSONResponse:
    started = time.perf_counter()
    state = _state(request)
    settings = state.settings
    record: dict[str, Any] = {"event": "hook", "service": service_id, "hook": None, "hookInstance": None}
    try:
        _check_service(service_id)
        cds_request = parse_request(await read_json(request, state))
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
            deadline_seconds=settings.fhir_deadline,
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
        # The engine is CPU-bound (model validation, unit conversion): keep it off the event loop.
        report = await run_in_threadpool(
            partial(
                state.evaluator,
                data.resources,
                patient_id=patient_id,
                as_of=as_of,
                searched=data.searched,
                incomplete=data.incomplete,
            )
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
        raise
    except Exception as exc:
        record.update(status=500, outcome="error", error=type(exc).__name__)
        raise
    finally:
        record["totalMs"] = round((time.perf_counter() - started) * 1000, 1)
        level = logging.INFO if record.get("status") == 200 else logging.WARNING
        log.log(level, "hook call", extra=record)


@router.post(
    "/cds-services/{service_id}/feedback",
    dependencies=AUTHENTICATED,
    openapi_extra=FEEDBACK_BODY,
    responses=responses(400, 401, 404),
)
async def post_feedback(service_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    _check_service(service_id)
    items = parse_feedback(await read_json(request, state))
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
