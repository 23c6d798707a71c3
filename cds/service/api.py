"""HTTP routes: discovery, the patient-view services, feedback, the report page, health and readiness.

One CDS service per enabled trial (`cds.service.state.TrialService`, id ``<trial-id>-prescreen``):
discovery lists them all; a hook call or feedback names its service and is answered for that
service's trial only (an unknown id is 404 + OperationOutcome). Every card, report, report page,
log line of a hook or feedback call and feedback row names the trial.

Every route but ``/health``, ``/ready`` and ``/report/<token>`` (opened by a clinician's browser; its
random, short-lived token is the credential) depends on `authenticate_client` (the CDS client's JWT,
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
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from cards.models import Card, CdsResponse
from cards.render import ReportLink, referred_card, render_cards, shows_card, trial_label
from cds.bounded import abounded, check_declared
from cds.config import Settings
from cds.errors import CdsError, FhirServerNotAllowed, InvalidRequest, ServiceUnavailable
from cds.fhir.safejson import JsonRejected, loads_bounded
from cds.fhir.smart_backend import resource_scopes
from cds.service.alerts import AlertStatus, chart_suppression
from cds.service.errors import error_response
from cds.service.feedback import parse_feedback
from cds.service.limits import Deadline, release_memory_soon
from cds.service.models import CdsRequest, ServiceDescription, parse_request
from cds.service.openapi import FEEDBACK_BODY, HOOK_BODY, responses
from cds.service.prefetch import GatheredData, gather_data, prefetch_templates
from cds.service.report_page import PAGE_HEADERS, expired_html, report_html
from cds.service.state import HOOK, ServiceState, ServiceTrial, TrialService
from cds.store.database import DatabaseUnavailable

log = logging.getLogger("cds.service")

router = APIRouter()


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.cds
    return state


def service_description(state: ServiceState, service: TrialService) -> ServiceDescription:
    trial = service.trial
    # the SMART scopes of what this trial's queries (and the alert gate's) read
    types = (q.resource_type for q in (*service.queries, *state.gate_queries))
    scopes = resource_scopes(types, context="patient", version=1)
    return ServiceDescription(
        hook=HOOK,
        id=service.id,
        title=f"Clinical trial prescreen: {trial_label(trial)}",
        description=(
            f"Prescreens the open chart for clinical trial {trial_label(trial)} and shows an "
            "information card when the patient is a possible candidate, with the criteria met, not "
            "met and to verify. Not an eligibility decision."
        ),
        prefetch=prefetch_templates((*service.queries, *state.gate_queries)),
        usageRequirements=(
            f"Read access to the patient's record, by prefetch or by FHIR with the SMART scopes {scopes} "
            "(SMART v2: the same types with .rs). Without prefetch the service queries fhirServer itself."
        ),
    )


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
        slot.callback(release_memory_soon)  # when the slot is released: give the memory back
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
        # counted as it arrives: Content-Length may lie
        async for chunk in abounded(stream, limit, lambda: InvalidRequest(f"request body larger than {limit} bytes")):
            size += len(chunk)
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
    declared_size = check_declared(
        request.headers.get("content-length"), limit, lambda: InvalidRequest(f"request body larger than {limit} bytes")
    )
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


def _base_url(request: Request, state: ServiceState) -> str:
    """The service's public base URL for links: ``CDS_PUBLIC_BASE_URL``, else the URL called."""
    return state.settings.public_base_url or str(request.base_url).rstrip("/")


# The alert state only ever quiets a card: if its database fails, the hook is still answered (the
# card shown, without a report link if the page could not be stored) and the failure logged.


async def _alert_state(
    state: ServiceState,
    service: TrialService,
    fhir_server: str | None,
    patient_id: str,
    now: datetime,
    record: dict[str, Any],
) -> tuple[str | None, AlertStatus]:
    try:
        key = await run_in_threadpool(state.alerts.patient_key, fhir_server, patient_id)
        return key, await run_in_threadpool(state.alerts.status, key, service.trial.id, now)
    except Exception as exc:
        record["alertState"] = f"unavailable ({type(exc).__name__})"
        return None, AlertStatus()


async def _record_issued(
    state: ServiceState,
    service: TrialService,
    cards: list[Card],
    patient_key: str | None,
    now: datetime,
    record: dict[str, Any],
    page: tuple[str, str] | None = None,
) -> bool:
    """Store what the answer issued, in one transaction: the cards (when the patient key is known)
    and the report page ``(html, token)`` their link opens. False (logged) if it could not be
    stored: the caller then answers without the link."""
    uuids = [card.uuid for card in cards if card.uuid]
    if page is None and (patient_key is None or not uuids):
        return True
    try:
        await run_in_threadpool(state.alerts.issue, uuids, patient_key, service.trial.id, now, page)
    except Exception as exc:
        record["alertState"] = f"unavailable ({type(exc).__name__})"
        if page is not None:
            record["reportPage"] = record["alertState"]
        return False
    return True


async def _gather_gate(state: ServiceState, cds_request: CdsRequest, fetch: bool) -> GatheredData | None:
    """The alert gate's data (prefetch, else FHIR); None if it could not be read at all."""
    try:
        return await gather_data(
            cds_request,
            state.gate_queries,
            state.gateway,
            deadline_seconds=state.settings.fhir_deadline,
            require_all=False,
            fetch=fetch,
        )
    except Exception:  # the gate only ever removes a card: failing to read it must not fail the call
        log.warning("alert gate data could not be read", extra={"event": "gate.unread"})
        return None


def _chart_gate(
    state: ServiceState,
    service: TrialService,
    gate: GatheredData | None,
    patient_id: str,
    as_of: date,
    record: dict[str, Any],
) -> str | None:
    """Why the chart says no card (opt-out Consent, ResearchSubject, referral), or None. Types that
    could not be read are logged (``gateUnread``) and do not stop the card."""
    if gate is None:
        record["gateUnread"] = sorted({q.resource_type for q in state.gate_queries})
        return None
    if gate.incomplete:
        record["gateUnread"] = list(gate.incomplete)
    return chart_suppression(gate.resources, patient_id=patient_id, trial_id=service.trial.id, today=as_of)


async def _fast_path_data(
    state: ServiceState,
    service: TrialService,
    cds_request: CdsRequest,
    fetch: bool,
    deadline: Deadline,
    since: date,
    record: dict[str, Any],
) -> GatheredData | None:
    """What the not-applicable fast path reads (the Patient and the Conditions,
    `TrialService.fast_path_queries`) when the prefetch alone holds all of it, read without any FHIR
    request; None when something would have to be fetched, or the prefetch is refused (the caller
    then reads the alert state first, so a snoozed card costs no FHIR round trip, and gathers
    everything as usual). The other prefetch keys are not read at all on this path: whatever they
    hold, a chart without the trial's disease gets no card."""
    if not cds_request.prefetch:
        return None
    try:
        data = await gather_data(
            cds_request,
            service.fast_path_queries,
            state.gateway,
            deadline_seconds=min(state.settings.fhir_deadline, deadline.left("reading the prefetch")),
            require_all=state.settings.require_all_data,
            fetch=False,
            log_record=record,
            since=since,
        )
    except CdsError:
        return None
    if fetch and any(not o.ok or o.truncated for o in data.outcomes):
        return None  # fetching would complete it
    return data


def _certainly_excluded(settings: Settings, trial: ServiceTrial, data: GatheredData, patient_id: str) -> bool:
    """The fast path: no applicability code on complete, valid Condition data means `excluded` for
    certain, so no card can be shown (unless excluded patients get one)."""
    return not settings.show_excluded_card and trial.certainly_excluded_without_evaluation(
        data.resources, patient_id=patient_id, searched=data.searched, incomplete=data.incomplete
    )


def _fast_path(record: dict[str, Any], started: float, data: GatheredData) -> JSONResponse:
    """No card for a chart without the trial's disease: nothing stored, nothing else read."""
    record["sources"] = data.sources()
    record["resources"] = len(data.resources)
    record.update(
        status=200, outcome="no-card", verdict="excluded", cards=0, fastPath=True,
        fetchMs=round((time.perf_counter() - started) * 1000, 1),
    )  # fmt: skip
    return JSONResponse(_NO_CARDS)


_NO_CARDS: dict[str, Any] = CdsResponse(cards=[]).to_json()


@router.get("/cds-services", dependencies=AUTHENTICATED, responses=responses(401))
async def discovery(request: Request) -> dict[str, Any]:
    state = _state(request)
    return {
        "services": [
            service_description(state, service).model_dump(exclude_none=True) for service in state.services.values()
        ]
    }


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
        service = state.service(service_id)  # 404 for an unknown id, before the body is read
        trial = service.trial
        record["trial"] = trial.id
        cds_request = parse_request(await read_json(request, state, slot, deadline))
        record["hook"] = cds_request.hook
        record["hookInstance"] = cds_request.hookInstance
        if cds_request.hook != HOOK:
            raise InvalidRequest(f"this service answers the {HOOK} hook only")
        fetch = _fetching(state, cds_request)  # before anything is fetched
        as_of = settings.as_of or date.today()
        now = datetime.now(UTC)
        patient_id = cds_request.context.patientId
        since = trial.observation_cutoff(as_of)
        # The common call (a chart with no applicability code, its Patient and Conditions
        # prefetched) is answered from those two keys alone: no card can be shown, so no other
        # key, alert state, gate or engine is read.
        fast = await _fast_path_data(state, service, cds_request, fetch, deadline, since, record)
        if fast is not None and _certainly_excluded(settings, trial, fast, patient_id):
            return _fast_path(record, started, fast)
        del fast
        patient_key, quiet = await _alert_state(state, service, cds_request.fhirServer, patient_id, now, record)
        if quiet.snoozed_until is not None:  # dismissed by a clinician: no card, nothing fetched
            record.update(status=200, outcome="no-card", suppressed="snoozed", cards=0)
            return JSONResponse(CdsResponse(cards=[]).to_json())

        referred_on = quiet.referred_on  # a referral made from a card: a quiet reminder instead
        gate_task = None if referred_on is not None else asyncio.create_task(_gather_gate(state, cds_request, fetch))
        try:
            data = await gather_data(
                cds_request,
                service.queries,
                state.gateway,
                deadline_seconds=min(settings.fhir_deadline, deadline.left("fetching FHIR data")),
                require_all=settings.require_all_data,
                fetch=fetch,
                log_record=record,
                since=since,
            )
        except BaseException:
            if gate_task is not None:
                gate_task.cancel()
            raise
        if _certainly_excluded(settings, trial, data, patient_id):  # on Conditions fetched
            if gate_task is not None:
                gate_task.cancel()
            return _fast_path(record, started, data)
        if referred_on is not None:
            card = referred_card(trial, referred_on.isoformat(), new_uuid=state.new_uuid)
            await _record_issued(state, service, [card], patient_key, now, record)
            record.update(status=200, outcome="card", suppressed="referred", cards=1)
            return JSONResponse(CdsResponse(cards=[card]).to_json())
        gate = await gate_task if gate_task is not None else None
        fetched = time.perf_counter()
        suppressed = _chart_gate(state, service, gate, patient_id, as_of, record)
        if suppressed is not None:
            record.update(status=200, outcome="no-card", suppressed=suppressed, cards=0)
            return JSONResponse(CdsResponse(cards=[]).to_json())
        record["sources"] = data.sources()
        record["resources"] = len(data.resources)
        if data.incomplete:
            record["incomplete"] = list(data.incomplete)
        # Before any model is built, let go of what the engine will not read: the decoded prefetch
        # document, and the Observations no criterion reads (on a 20,000-Observation prefetch, most
        # of the call's memory). The report is the same (`Trial.without_unread_observations`).
        cds_request.prefetch = None
        resources = trial.without_unread_observations(data.resources, patient_id=patient_id, as_of=as_of)
        data = dataclasses.replace(data, resources=resources)

        # The engine is CPU-bound (model validation, unit conversion): off the event loop, in a
        # bounded pool, within the deadline (past it: 503, never a verdict).
        report = await state.engine.run(
            partial(
                service.evaluator,
                data.resources,
                patient_id=patient_id,
                as_of=as_of,
                searched=data.searched,
                incomplete=data.incomplete,
            ),
            deadline,
        )
        evaluated = time.perf_counter()
        if report.trial != trial.id:  # a miswired engine: never show another trial's report
            raise RuntimeError("the engine answered for another trial")
        render = partial(
            render_cards,
            report,
            trial,
            show_excluded=settings.show_excluded_card,
            new_uuid=state.new_uuid,
            wording=service.wording,
        )
        page: tuple[str, str] | None = None  # the report page behind the card's link: (html, token)
        report_link: ReportLink | None = None
        if shows_card(report, show_excluded=settings.show_excluded_card):
            page = (report_html(report, trial), state.new_token())
            report_link = ReportLink(f"{_base_url(request, state)}/report/{page[1]}", settings.report_link_type)
        cards = render(report_link=report_link)
        if cards and not await _record_issued(state, service, cards, patient_key, now, record, page) and page:
            cards = render(report_link=None)  # the page could not be stored: no link to it
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
    service = state.service(service_id)
    async with contextlib.AsyncExitStack() as slot:
        items = parse_feedback(await read_json(request, state, slot, _deadline(state)))
    stored = await run_in_threadpool(state.store.add, service.id, items)
    # Only this service's cards are snoozed or marked referred by feedback sent to it.
    applied = await run_in_threadpool(state.alerts.apply_feedback, items, datetime.now(UTC), service.trial.id)
    log.info(
        "feedback stored",
        extra={
            "event": "feedback",
            "service": service.id,
            "trial": service.trial.id,
            "items": stored,
            "applied": applied,
            "outcomes": sorted({i.outcome or "-" for i in items}),
        },
    )
    return {"stored": stored}


@router.get("/cds-services/{service_id}/feedback", dependencies=AUTHENTICATED, responses=responses(400, 401, 404))
async def list_feedback(
    service_id: str, request: Request, card: str | None = None, limit: str | None = None, offset: str | None = None
) -> dict[str, Any]:
    """Stored feedback, oldest first, one page at a time (``limit`` <= 1000, default 100; ``offset``):
    the answer says the ``total`` and, while more rows follow, the ``next`` offset. It holds user
    comments: like every CDS route it requires the client's JWT when authentication is on. Each row
    names its service (``serviceId``) and that service's trial (``trial``)."""
    state = _state(request)
    service = state.service(service_id)
    page_size = _int_param("limit", limit, DEFAULT_PAGE, 1, MAX_PAGE)
    start = _int_param("offset", offset, 0, 0, 10**12)
    page = await run_in_threadpool(partial(state.store.page, service.id, card=card, limit=page_size, offset=start))
    rows = [{**row, "trial": service.trial.id} for row in page.rows]
    body: dict[str, Any] = {"feedback": rows, "total": page.total, "limit": page_size, "offset": start}
    if start + len(page.rows) < page.total:
        body["next"] = start + len(page.rows)
    return body


DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _int_param(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not value.strip().isdigit() or not low <= int(value) <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}")
    return int(value)


_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


@router.get(  # the token is the credential: no JWT (a clinician's browser opens it)
    "/report/{token}",
    response_class=HTMLResponse,
    responses={404: {"description": "Unknown or expired report link (an HTML page)", "content": {"text/html": {}}}},
)
async def report_page(token: str, request: Request) -> HTMLResponse:
    """The full report behind a card's link, while its token is valid; 404 (a plain page) otherwise."""
    state = _state(request)
    html = None
    if _TOKEN.fullmatch(token):
        html = await run_in_threadpool(state.alerts.load_report, token, datetime.now(UTC))
    if html is None:
        return HTMLResponse(expired_html(), status_code=404, headers=PAGE_HEADERS)
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/health")  # open: liveness only, no data
async def health(request: Request) -> dict[str, Any]:
    return {"status": "ok", "services": _services(_state(request))}


def _services(state: ServiceState) -> list[dict[str, str]]:
    """The CDS services of this process and their trials (no data)."""
    return [{"id": s.id, "trial": s.trial.id} for s in state.services.values()]


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
    return JSONResponse({"status": "ready", "services": _services(state), "database": state.database.backend})
