"""Request parsing (lenient and strict), errors, excluded patients, CORS, health, logs."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import respx
from service_helpers import PID, SERVICE, TOKEN, RecordingEngine, full_prefetch, hook_request, patient

from cards.models import CdsResponse
from cds.config import Settings


def _outcome(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    diagnostics: str = body["issue"][0].get("diagnostics", "")
    return diagnostics


async def test_malformed_json_is_400(client: httpx.AsyncClient, engine: RecordingEngine) -> None:
    response = await client.post(
        SERVICE, content=b'{"hook": "patient-view", ', headers={"Content-Type": "application/json"}
    )
    assert "not valid JSON" in _outcome(response, 400, "invalid")
    assert engine.calls == []


@pytest.mark.parametrize("body", [b"", b"[]", b'"patient-view"'])
async def test_non_object_bodies_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    _outcome(await client.post(SERVICE, content=body), 400, "invalid")


async def test_wrong_hook_is_400(client: httpx.AsyncClient, engine: RecordingEngine) -> None:
    response = await client.post(SERVICE, json=hook_request(full_prefetch(), hook="order-select"))
    assert "patient-view" in _outcome(response, 400, "invalid")
    assert engine.calls == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("context"), "context"),
        (lambda b: b["context"].pop("patientId"), "context.patientId"),
        (lambda b: b["context"].update(patientId="a b/../c"), "context.patientId"),
        (lambda b: b.update(fhirServer="file:///etc/passwd"), "fhirServer"),
        (lambda b: b.update(hook=42), "hook"),
    ],
)
async def test_invalid_fields_are_400_naming_the_field_not_the_value(
    client: httpx.AsyncClient, mutate: Any, field: str
) -> None:
    body = hook_request(full_prefetch())
    mutate(body)
    diagnostics = _outcome(await client.post(SERVICE, json=body), 400, "invalid")
    assert field in diagnostics
    assert "etc/passwd" not in diagnostics
    assert "a b/../c" not in diagnostics


async def test_unknown_service_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/cds-services/no-such-service", json=hook_request(full_prefetch()))
    _outcome(response, 404, "not-found")
    response = await client.post("/cds-services/no-such-service/feedback", json={"feedback": []})
    _outcome(response, 404, "not-found")


async def test_unknown_route_and_wrong_method_get_operation_outcomes(client: httpx.AsyncClient) -> None:
    _outcome(await client.get("/nothing-here"), 404, "not-found")
    _outcome(await client.get(SERVICE), 405, "not-supported")


async def test_lenient_body_unknown_keys_extension_and_epic_fields(
    client: httpx.AsyncClient, engine: RecordingEngine
) -> None:
    body = hook_request(full_prefetch(), token=None)
    body["extension"] = {"com.epic.cdshooks.request.bpa-trigger-action": "1", "nested": {"x": [1, None]}}
    body["com.example.unknown"] = {"anything": True}
    body["context"]["encounterId"] = None
    body["context"]["selections"] = []
    body["fhirAuthorization"] = None
    response = await client.post(SERVICE, json=body)
    assert response.status_code == 200
    assert engine.last["patient_id"] == PID


async def test_cds_hooks_1x_body_is_accepted(client: httpx.AsyncClient, engine: RecordingEngine) -> None:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "user": "Practitioner/example",
        "patient": PID,
        "context": {},
        "prefetch": full_prefetch(),
    }
    response = await client.post(SERVICE, json=body)
    assert response.status_code == 200
    assert engine.last["patient_id"] == PID


async def test_prefetch_key_null_as_a_whole_with_no_server_is_412(client: httpx.AsyncClient) -> None:
    body = hook_request(None, fhir_server=None, token=None)
    body["prefetch"] = None
    _outcome(await client.post(SERVICE, json=body), 412, "processing")


async def test_excluded_patient_gets_no_card(client: httpx.AsyncClient, engine: RecordingEngine) -> None:
    prefetch = full_prefetch()
    prefetch["patient"] = patient(birth="1940-01-01")  # 86 on the as-of date
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert engine.reports[-1].verdict.value == "excluded"


async def test_excluded_card_setting_shows_a_quiet_card(
    make_client: Any, settings: Settings, engine: RecordingEngine
) -> None:
    prefetch = full_prefetch()
    prefetch["patient"] = patient(birth="1940-01-01")
    async with make_client(settings.model_copy(update={"show_excluded_card": True})) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    cards = CdsResponse.model_validate(response.json()).cards
    assert len(cards) == 1
    card = cards[0]
    assert card.indicator == "info"
    assert card.summary.lower().startswith("not a candidate")
    assert card.suggestions is None
    assert "**Against (1):** Age 18-65" in (card.detail or "")  # the deciding criterion, first


async def test_every_response_card_validates_against_the_card_models(client: httpx.AsyncClient) -> None:
    response = await client.post(SERVICE, json=hook_request(full_prefetch()))
    raw = response.json()
    parsed = CdsResponse.model_validate(raw)
    assert parsed.to_json() == raw  # nothing dropped, nothing null


async def test_cors_preflight_allows_the_sandbox(client: httpx.AsyncClient) -> None:
    for origin in ("https://sandbox.cds-hooks.org", "http://localhost:3000"):
        response = await client.options(
            SERVICE,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Content-Type, Authorization",
            },
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        methods = response.headers["access-control-allow-methods"]
        assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in methods.split(",")}
        headers = response.headers["access-control-allow-headers"].lower()
        assert "content-type" in headers
        assert "authorization" in headers
    discovery = await client.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert discovery.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"


async def test_cors_refuses_other_origins(client: httpx.AsyncClient) -> None:
    response = await client.options(
        SERVICE, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_logs_are_json_with_instance_and_timing_and_no_phi_or_token(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    from cds.service.logs import JsonFormatter

    respx_mock.get(url__startswith="http://fhir.test/fhir/").mock(return_value=httpx.Response(500))
    caplog.set_level(logging.INFO, logger="cds")
    prefetch = full_prefetch()
    del prefetch["procedures"]
    ok = await client.post(SERVICE, json=hook_request(prefetch), headers={"Authorization": "Bearer jwt-HEADER-99"})
    failed = await client.post(SERVICE, json=hook_request(None))
    assert ok.status_code == 200
    assert failed.status_code == 412
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("cds")]
    hooks = [r for r in caplog.records if getattr(r, "event", None) == "hook"]
    assert [getattr(r, "status", None) for r in hooks] == [200, 412]
    assert all(getattr(r, "hookInstance", None) == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea" for r in hooks)
    assert all(isinstance(getattr(r, "totalMs", None), float) for r in hooks)
    assert getattr(hooks[0], "outcome", None) == "card"
    assert getattr(hooks[0], "incomplete", None) == ["Procedure"]
    text = "\n".join(lines)
    for secret in (PID, TOKEN, "jwt-HEADER-99", "Testperson", "1990-04-01", "fhir.test"):
        assert secret not in text, f"{secret!r} leaked into the logs"


async def test_unexpected_errors_are_500_without_details_in_body_or_logs(
    make_client: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Ada Testperson born 1990-04-01"  # a message quoting data, as validation errors do

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(secret)

    caplog.set_level(logging.INFO, logger="cds")
    async with make_client(settings, evaluator=broken) as client:
        response = await client.post(SERVICE, json=hook_request(full_prefetch()))
    assert _outcome(response, 500, "exception") == "internal error"
    assert "Testperson" not in response.text
    from cds.service.logs import JsonFormatter

    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "ValueError" in text
    assert "Testperson" not in text


async def test_pre_1_0_wrapped_prefetch_values_are_unwrapped(
    client: httpx.AsyncClient, engine: RecordingEngine, respx_mock: respx.MockRouter
) -> None:
    failed = respx_mock.get("http://fhir.test/fhir/Procedure").mock(
        return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
    )
    prefetch = {key: {"response": {"status": "200 OK"}, "resource": value} for key, value in full_prefetch().items()}
    prefetch["procedures"] = {"response": {"status": "500 Internal Server Error"}, "resource": None}
    response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200
    assert engine.ids("Patient") == {PID}
    assert engine.ids("Condition") == {"cond-sle"}
    assert failed.call_count == 1  # the failed one is fetched
