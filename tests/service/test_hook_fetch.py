"""The patient-view service: prefetch, FHIR fallback through the gateway (respx), 412s."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest
import respx
from service_helpers import (
    FHIR,
    GATE_KEYS,
    PID,
    SEARCH_KEYS,
    SERVICE,
    TOKEN,
    RecordingEngine,
    full_prefetch,
    hook_request,
    outcome_resource,
    patient,
    procedure,
    searchset,
    sle_condition,
)

from cards.codes import REPORT_EXTENSION_KEY
from cds.config import Settings

ALL_TYPES = {"Patient", *SEARCH_KEYS.values()}  # what the engine reads
FETCHED_TYPES = {*ALL_TYPES, *GATE_KEYS.values()}  # plus the alert gate (opt-out Consent, study referral...)


class FakeFhir:
    """A respx-mocked FHIR server: answers reads/searches, records headers and concurrency."""

    def __init__(self, mock: respx.MockRouter, data: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.data = {"Condition": [sle_condition()], **(data or {})}
        self.requests: list[httpx.Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.02
        mock.get(f"{FHIR}/Patient/{PID}").mock(side_effect=self._read)
        for rtype in (*SEARCH_KEYS.values(), *GATE_KEYS.values()):
            mock.get(f"{FHIR}/{rtype}").mock(side_effect=self._search)

    async def _enter(self, request: httpx.Request) -> None:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1

    async def _read(self, request: httpx.Request) -> httpx.Response:
        await self._enter(request)
        return httpx.Response(200, json=patient())

    async def _search(self, request: httpx.Request) -> httpx.Response:
        await self._enter(request)
        rtype = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json=searchset(self.data.get(rtype, [])))

    def types_requested(self) -> set[str]:
        return {r.url.path.removeprefix("/fhir/").split("/")[0] for r in self.requests}


async def test_full_prefetch_needs_no_fhir_call(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    response = await client.post(SERVICE, json=hook_request(full_prefetch()))
    assert response.status_code == 200
    assert len(respx_mock.calls) == 0
    assert engine.last["searched"] == ALL_TYPES
    assert engine.last["incomplete"] == ()
    assert engine.ids("Condition") == {"cond-sle"}
    assert engine.last["patient_id"] == PID
    cards = response.json()["cards"]
    assert len(cards) == 1
    assert "possible candidate" in cards[0]["summary"].lower()
    assert cards[0]["extension"][REPORT_EXTENSION_KEY]["patient"] == f"Patient/{PID}"


async def test_no_prefetch_fetches_everything_in_parallel_with_the_bearer_token(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    fhir = FakeFhir(respx_mock, {"Procedure": [procedure()]})
    response = await client.post(SERVICE, json=hook_request(None))
    assert response.status_code == 200
    assert fhir.types_requested() == FETCHED_TYPES
    assert len(fhir.requests) == 1 + len(SEARCH_KEYS) + len(GATE_KEYS)  # the read and one search per template
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in fhir.requests)
    assert fhir.max_in_flight == len(fhir.requests), "the FHIR reads must run concurrently"
    searches = [r for r in fhir.requests if "patient" in r.url.params]
    assert all(r.url.params["patient"] == PID for r in searches)
    assert len(searches) == len(SEARCH_KEYS) + len(GATE_KEYS)
    coded = [r for r in fhir.requests if r.url.path.endswith("/Observation") and "code" in r.url.params]
    codes = {c for r in coded for c in r.url.params["code"].split(",")}  # windowed and whole-record queries
    assert "http://loinc.org|4485-9" in codes
    assert all(r.url.params["_count"] == "200" for r in coded)
    assert engine.last["searched"] == ALL_TYPES
    assert engine.ids("Procedure") == {"proc-1"}
    assert engine.ids("Patient") == {PID}
    assert len(response.json()["cards"]) == 1


async def test_no_token_sends_no_authorization_header(client: httpx.AsyncClient, respx_mock: respx.MockRouter) -> None:
    fhir = FakeFhir(respx_mock)
    response = await client.post(SERVICE, json=hook_request(None, token=None))
    assert response.status_code == 200
    assert fhir.requests
    assert all("Authorization" not in r.headers for r in fhir.requests)


async def test_partial_prefetch_fetches_only_the_missing_keys(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    fhir = FakeFhir(respx_mock, {"Procedure": [procedure()]})
    prefetch = full_prefetch()
    del prefetch["procedures"]
    del prefetch["observations"]
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert fhir.types_requested() == {"Procedure", "Observation"}
    assert engine.ids("Procedure") == {"proc-1"}
    assert engine.last["searched"] == ALL_TYPES


async def test_null_prefetch_keys_are_fetched(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    fhir = FakeFhir(respx_mock)
    prefetch = full_prefetch()
    prefetch["patient"] = None
    prefetch["conditions"] = None
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert fhir.types_requested() == {"Patient", "Condition"}
    assert engine.ids("Patient") == {PID}
    assert engine.ids("Condition") == {"cond-sle"}


async def test_operation_outcome_value_is_refetched_and_outcome_entries_are_skipped(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    fhir = FakeFhir(respx_mock)
    prefetch = full_prefetch()
    prefetch["medicationRequests"] = outcome_resource("prefetch failed")
    bundle = searchset([sle_condition()])
    bundle["entry"].append({"resource": outcome_resource(), "search": {"mode": "outcome"}})
    prefetch["conditions"] = bundle
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert fhir.types_requested() == {"MedicationRequest"}
    assert all(r["resourceType"] != "OperationOutcome" for r in engine.last["resources"])
    assert engine.ids("Condition") == {"cond-sle"}


async def test_prefetched_bundle_next_links_are_followed_with_the_token(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    page2 = respx_mock.get(f"{FHIR}", params={"_getpages": "abc", "_getpagesoffset": "1"}).mock(
        return_value=httpx.Response(
            200, json=searchset([procedure(pid_="proc-2")], next_url=f"{FHIR}?_getpages=abc&_getpagesoffset=2")
        )
    )
    page3 = respx_mock.get(f"{FHIR}", params={"_getpages": "abc", "_getpagesoffset": "2"}).mock(
        return_value=httpx.Response(200, json=searchset([procedure(pid_="proc-3")]))
    )
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([procedure()], next_url=f"{FHIR}?_getpages=abc&_getpagesoffset=1")
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert page2.call_count == 1
    assert page3.call_count == 1
    assert page2.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert engine.ids("Procedure") == {"proc-1", "proc-2", "proc-3"}
    assert engine.last["incomplete"] == ()


async def test_paging_is_bounded_and_marks_the_type_incomplete(
    make_client: Any, settings: Settings, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params["_getpagesoffset"])
        return httpx.Response(
            200,
            json=searchset([procedure(pid_=f"proc-{n}")], next_url=f"{FHIR}?_getpages=abc&_getpagesoffset={n + 1}"),
        )

    pages = respx_mock.get(f"{FHIR}", params={"_getpages": "abc"}).mock(side_effect=endless)
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([procedure(pid_="proc-0")], next_url=f"{FHIR}?_getpages=abc&_getpagesoffset=1")
    async with make_client(settings.model_copy(update={"fhir_max_pages": 3})) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert pages.call_count == 2  # 3 pages in all, the first one prefetched
    assert engine.ids("Procedure") == {"proc-0", "proc-1", "proc-2"}
    assert engine.last["incomplete"] == ("Procedure",)
    card = response.json()["cards"][0]
    assert "data incomplete" in card["summary"]
    assert "could not read procedures" in card["detail"]  # clinician wording (TYPE_LABELS)


async def test_next_link_to_another_host_is_not_followed(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    evil = respx_mock.get(url__startswith="http://evil.test").mock(return_value=httpx.Response(200, json=searchset()))
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([procedure()], next_url=f"http://evil.test/steal?x={FHIR}")
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert evil.call_count == 0
    assert engine.last["incomplete"] == ("Procedure",)


def _assert_outcome(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["severity"] in ("error", "fatal")
    return body


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_fhir_server_down_answers_412(make_client: Any, settings: Settings, engine: RecordingEngine) -> None:
    server = f"http://127.0.0.1:{_closed_port()}/fhir"
    async with make_client(settings.model_copy(update={"fhir_allowed_servers": [server]})) as client:
        started = time.perf_counter()
        response = await client.post(SERVICE, json=hook_request(None, fhir_server=server))
        elapsed = time.perf_counter() - started
    body = _assert_outcome(response, 412, "transient")
    assert "could not be reached" in body["issue"][0]["diagnostics"]
    assert elapsed < 2.0
    assert engine.calls == []


async def test_slow_fhir_server_answers_412_within_the_budget(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter, settings: Settings
) -> None:
    fhir = FakeFhir(respx_mock)
    fhir.delay = 5.0
    started = time.perf_counter()
    response = await client.post(SERVICE, json=hook_request(None))
    elapsed = time.perf_counter() - started
    body = _assert_outcome(response, 412, "timeout")
    assert "did not answer within" in body["issue"][0]["diagnostics"]
    assert elapsed < settings.fhir_timeout + 1.0
    assert engine.calls == []


@pytest.mark.parametrize(
    ("response", "text", "code"),
    [
        (httpx.Response(503, text="unavailable"), "HTTP 503", "transient"),
        (httpx.Response(401, json=outcome_resource("expired")), "refused access (HTTP 401)", "security"),
        (httpx.Response(403, text="no"), "refused access (HTTP 403)", "security"),
        (httpx.Response(200, text="{not json"), "not valid JSON", "structure"),
        (httpx.Response(200, json=patient()), "did not return a Bundle", "structure"),
    ],
)
async def test_required_data_errors_answer_412_never_an_empty_card_list(
    client: httpx.AsyncClient,
    engine: RecordingEngine,
    respx_mock: respx.MockRouter,
    response: httpx.Response,
    text: str,
    code: str,
) -> None:
    respx_mock.get(f"{FHIR}/Condition").mock(return_value=response)
    prefetch = full_prefetch()
    del prefetch["conditions"]
    answer = await client.post(SERVICE, json=hook_request(prefetch))
    body = _assert_outcome(answer, 412, code)
    assert text in body["issue"][0]["diagnostics"]
    assert "Condition" in body["issue"][0]["diagnostics"]
    assert engine.calls == []


async def test_missing_patient_resource_answers_412(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{FHIR}/Patient/{PID}").mock(return_value=httpx.Response(404, json=outcome_resource()))
    prefetch = full_prefetch()
    del prefetch["patient"]
    body = _assert_outcome(await client.post(SERVICE, json=hook_request(prefetch)), 412, "not-found")
    assert "Patient" in body["issue"][0]["diagnostics"]
    assert engine.calls == []


async def test_no_prefetch_and_no_fhir_server_answers_412(client: httpx.AsyncClient, engine: RecordingEngine) -> None:
    prefetch = full_prefetch()
    del prefetch["conditions"]
    response = await client.post(SERVICE, json=hook_request(prefetch, fhir_server=None, token=None))
    body = _assert_outcome(response, 412, "processing")
    assert "no fhirServer" in body["issue"][0]["diagnostics"]
    assert engine.calls == []


async def test_optional_type_failure_gives_an_incomplete_card(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{FHIR}/MedicationStatement").mock(return_value=httpx.Response(500))
    prefetch = full_prefetch()
    del prefetch["medicationStatements"]
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert engine.last["incomplete"] == ("MedicationStatement",)
    assert "MedicationStatement" not in engine.last["searched"]
    card = response.json()["cards"][0]
    assert "possible candidate — data incomplete" in card["summary"].lower()
    assert "medication statements" in card["detail"]
    assert card["extension"][REPORT_EXTENSION_KEY]["incomplete"] == ["MedicationStatement"]


async def test_require_all_data_turns_optional_failures_into_412(
    make_client: Any, settings: Settings, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{FHIR}/MedicationStatement").mock(return_value=httpx.Response(500))
    prefetch = full_prefetch()
    del prefetch["medicationStatements"]
    async with make_client(settings.model_copy(update={"require_all_data": True})) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    _assert_outcome(response, 412, "transient")
    assert engine.calls == []


async def test_fhir_server_outside_the_allow_list_is_refused(
    make_client: Any, settings: Settings, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    allowed = settings.model_copy(update={"fhir_allowed_servers": ["https://ehr.example.org/fhir"]})
    async with make_client(allowed) as client:
        response = await client.post(SERVICE, json=hook_request(None))
    _assert_outcome(response, 400, "forbidden")
    assert len(respx_mock.calls) == 0
    assert engine.calls == []


def _old_low_wbc() -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": "wbc-old", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
        "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": "2023-03-01T08:00:00Z",
        "valueQuantity": {"value": 2.1, "unit": "10*9/L", "system": "http://unitsofmeasure.org", "code": "10*9/L"},
    }  # fmt: skip


def _withdrawn_report() -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "id": "cbc-withdrawn", "status": "entered-in-error",
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
        "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": "2023-03-01T08:00:00Z",
        "result": [{"reference": "Observation/wbc-old"}],
    }  # fmt: skip


def _cited(report: Any, reference: str) -> bool:
    return reference in json.dumps(report.to_json())


async def test_an_old_report_entered_in_error_is_fetched_and_withdraws_its_results(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    """Regression: over HTTP (no prefetch: every Oracle Health call) the report search was bounded by
    the 30-day window, so a 2023 report entered in error was never fetched and the 2023 result it
    withdraws still counted for SLICC 2012; the service now also searches, at any date, the reports
    entered in error, as `cds screen` reads the whole chart."""
    # a generic lupus code: the diagnosis then rests on SLICC 2012 computed from the whole chart
    lupus = sle_condition()
    lupus["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "200936003"}]}
    fhir = FakeFhir(respx_mock, {"Condition": [lupus], "Observation": [_old_low_wbc()]})
    withdrawn = _withdrawn_report()

    async def reports(request: httpx.Request) -> httpx.Response:
        await fhir._enter(request)
        if request.url.params.get("status") == "entered-in-error":
            assert "date" not in request.url.params
            return httpx.Response(200, json=searchset([withdrawn] if withdrawn["status"] == "entered-in-error" else []))
        assert request.url.params["date"].startswith("ge")  # the windowed search: nothing from 2023
        return httpx.Response(200, json=searchset([]))

    respx_mock.get(f"{FHIR}/DiagnosticReport").mock(side_effect=reports)
    response = await client.post(SERVICE, json=hook_request(None))
    assert response.status_code == 200
    assert engine.ids("DiagnosticReport") == {"cbc-withdrawn"}
    assert not _cited(engine.reports[-1], "Observation/wbc-old"), "a withdrawn result is never evidence"

    withdrawn["status"] = "final"  # the same report, not withdrawn: the 2023 result counts
    await client.post(SERVICE, json=hook_request(None))
    assert engine.ids("DiagnosticReport") == set()  # the windowed search does not reach 2023
    assert _cited(engine.reports[-1], "Observation/wbc-old")
