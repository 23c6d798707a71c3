"""HTTP routes: discovery, the patient-view service, feedback, health."""

from __future__ import annotations

import json
import logging
import time
from datetime import date
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cards.models import CdsResponse
from cards.render import render_cards, trial_label
from cds.errors import CdsError, FhirServerNotAllowed, InvalidRequest, NotFound
from cds.service.feedback import parse_feedback
from cds.service.models import CdsRequest, ServiceDescription, parse_request
from cds.service.prefetch import gather_data, prefetch_templates
from cds.service.state import HOOK, SERVICE_ID, ServiceState

log = logging.getLogger("cds.service")

router = APIRouter()

LARGE_BODY = 1_000_000  # bytes

READ_TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Procedure",
    "AllergyIntolerance",
)


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


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InvalidRequest(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("the request body is empty")
    try:
        if len(raw) > LARGE_BODY:  # a big record: decode off the event loop
            return await run_in_threadpool(json.loads, raw)
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON") from None


def _check_fhir_server(state: ServiceState, cds_request: CdsRequest) -> None:
    allowed = state.settings.fhir_allowed_servers
    server = cds_request.fhirServer
    if server is None or not allowed:
        return
    if not any(server == a.rstrip("/") or server.startswith(a.rstrip("/") + "/") for a in allowed):
        raise FhirServerNotAllowed("fhirServer is not on the allow-list")


@router.get("/cds-services")
async def discovery(request: Request) -> dict[str, Any]:
    description = service_description(_state(request))
    return {"services": [description.model_dump(exclude_none=True)]}


@router.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> JSONResponse:
    started = time.perf_counter()
    state = _state(request)
    settings = state.settings
    record: dict[str, Any] = {"event": "hook", "service": service_id, "hook": None, "hookInstance": None}
    try:
        _check_service(service_id)
        cds_request = parse_request(await _read_json(request, settings.max_request_bytes))
        record["hook"] = cds_request.hook
        record["hookInstance"] = cds_request.hookInstance
        if cds_request.hook != HOOK:
            raise InvalidRequest(f"this service answers the {HOOK} hook only")
        _check_fhir_server(state, cds_request)

        data = await gather_data(
            cds_request,
            state.queries,
            state.gateway,
            deadline_seconds=settings.fhir_deadline,
            require_all=settings.require_all_data,
        )
        fetched = time.perf_counter()
        record["sources"] = data.sources()
        record["resources"] = len(data.resources)
        if data.incomplete:
            record["incomplete"] = list(data.incomplete)

        as_of = settings.as_of or date.today()
        # The engine is CPU-bound (model validation, unit conversion): keep it off the event loop.
        report = await run_in_threadpool(
            partial(
                state.evaluator,
                data.resources,
                patient_id=cds_request.context.patientId,
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


@router.post("/cds-services/{service_id}/feedback")
async def post_feedback(service_id: str, request: Request) -> dict[str, Any]:
    state = _state(request)
    _check_service(service_id)
    items = parse_feedback(await _read_json(request, state.settings.max_request_bytes))
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


@router.get("/cds-services/{service_id}/feedback")
async def list_feedback(service_id: str, request: Request, card: str | None = None) -> dict[str, Any]:
    """Stored feedback, oldest first (for coordinators and tests; protect it in production)."""
    state = _state(request)
    _check_service(service_id)
    rows = await run_in_threadpool(partial(state.store.list, service_id, card=card))
    return {"feedback": rows}


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    state = _state(request)
    return {"status": "ok", "service": SERVICE_ID, "trial": state.trial.id}
