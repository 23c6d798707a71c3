"""Every FHIR failure class at the transport (respx), its outcome in the one table, and no leak of
ids, URLs or tokens in messages and logs."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from cds import errors
from cds.errors import (
    FhirAccessDenied,
    FhirClientError,
    FhirError,
    FhirInvalidBody,
    FhirNotFound,
    FhirRedirect,
    FhirServerFault,
    FhirTimeout,
    FhirUnreachable,
    combined_fhir_error,
)
from cds.fhir.gateway import FhirGateway, GatewayLimits
from cds.service.errors import FHIR_OUTCOMES, error_response, fhir_outcome

BASE = "https://ehr.test/fhir"
TOKEN = "tok-5ecret-9"
PID = "pat-77"


@pytest.fixture
async def gateway() -> AsyncIterator[FhirGateway]:
    gw = FhirGateway(GatewayLimits(timeout=0.5, connect_timeout=0.5, max_response_bytes=5000))
    yield gw
    await gw.aclose()


def _bundle() -> dict[str, object]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": []}


CASES = [
    ("connect-error", httpx.ConnectError("refused"), FhirUnreachable, "could not be reached"),
    ("timeout", httpx.ReadTimeout("slow"), FhirTimeout, "did not answer within"),
    ("401", httpx.Response(401), FhirAccessDenied, "refused access (HTTP 401)"),
    ("403", httpx.Response(403), FhirAccessDenied, "refused access (HTTP 403)"),
    ("404", httpx.Response(404), FhirNotFound, "HTTP 404"),
    ("410", httpx.Response(410), FhirNotFound, "HTTP 410"),
    ("422", httpx.Response(422), FhirClientError, "HTTP 422"),
    ("302", httpx.Response(302, headers={"Location": "https://evil.test/"}), FhirRedirect, "redirect"),
    ("500", httpx.Response(500, text=f"Patient/{PID} blew up"), FhirServerFault, "HTTP 500"),
    ("503", httpx.Response(503), FhirServerFault, "HTTP 503"),
    ("invalid-json", httpx.Response(200, text="{not json"), FhirInvalidBody, "not acceptable JSON"),
    ("empty-body", httpx.Response(200, text=""), FhirInvalidBody, "empty body"),
    ("too-large", httpx.Response(200, text=" " * 6000 + "{}"), FhirInvalidBody, "more than 5000 bytes"),
    ("not-a-bundle", httpx.Response(200, json={"resourceType": "Patient", "id": PID}), FhirInvalidBody, "Bundle"),
]


@pytest.mark.parametrize(("answer", "kind", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_each_search_failure_has_its_class(
    gateway: FhirGateway,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    answer: httpx.Response | Exception,
    kind: type[FhirError],
    message: str,
) -> None:
    route = respx_mock.get(f"{BASE}/Condition")
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    caplog.set_level(logging.WARNING, logger="cds.fhir")
    with pytest.raises(FhirError) as info:
        await gateway.search(gateway.client(BASE, TOKEN), "Condition", {"patient": PID})
    assert type(info.value) is kind
    assert message in info.value.message
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert kind.__name__ in logged
    for leak in (PID, TOKEN, "ehr.test", "evil.test", "blew up"):
        assert leak not in info.value.message
        assert leak not in logged


async def test_read_of_the_wrong_resource_type_is_an_invalid_body(
    gateway: FhirGateway, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/Patient/{PID}").mock(return_value=httpx.Response(200, json=_bundle()))
    with pytest.raises(FhirInvalidBody, match="did not return a Patient"):
        await gateway.read(gateway.client(BASE, TOKEN), "Patient", PID)


async def test_next_link_to_a_foreign_host_is_not_followed_and_keeps_the_token(
    gateway: FhirGateway, respx_mock: respx.MockRouter
) -> None:
    page = {**_bundle(), "link": [{"relation": "next", "url": f"https://evil.test/fhir?steal={BASE}"}]}
    respx_mock.get(f"{BASE}/Condition").mock(return_value=httpx.Response(200, json=page))
    foreign = respx_mock.get(host="evil.test").mock(return_value=httpx.Response(200, json=_bundle()))
    result = await gateway.search(gateway.client(BASE, TOKEN), "Condition", {"patient": PID})
    assert result.truncated
    assert not foreign.called


async def test_relative_next_link_is_read_under_the_base(gateway: FhirGateway, respx_mock: respx.MockRouter) -> None:
    first = {**_bundle(), "link": [{"relation": "next", "url": "Condition?page=2"}]}
    second = {**_bundle(), "entry": [{"resource": {"resourceType": "Condition", "id": "c2"}}]}
    respx_mock.get(f"{BASE}/Condition", params={"page": "2"}).mock(return_value=httpx.Response(200, json=second))
    respx_mock.get(f"{BASE}/Condition", params={"patient": PID}).mock(return_value=httpx.Response(200, json=first))
    result = await gateway.search(gateway.client(BASE, TOKEN), "Condition", {"patient": PID})
    assert [r["id"] for r in result.resources] == ["c2"]
    assert not result.truncated


async def test_urn_uuid_references_of_a_page_are_resolved(gateway: FhirGateway) -> None:
    urn = "urn:uuid:3f1c1a2e-0000-4000-8000-000000000001"
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": urn, "resource": {"resourceType": "Patient"}},
            {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": urn}}},
        ],
    }
    result = await gateway.follow(None, page)
    patient, condition = result.resources
    assert patient["id"] == urn.removeprefix("urn:uuid:")
    assert condition["subject"] == {"reference": f"Patient/{patient['id']}"}


def test_every_fhir_error_class_has_a_row_and_none_answers_success() -> None:
    classes = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, FhirError)}
    assert classes == set(FHIR_OUTCOMES)
    for row in FHIR_OUTCOMES.values():
        assert row.http_status == 412
        assert row.optional == "incomplete"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FhirTimeout("t"), "timeout"),
        (FhirUnreachable("u"), "transient"),
        (FhirAccessDenied("a", 401), "security"),
        (FhirNotFound("n", 404), "not-found"),
        (FhirServerFault("s", 503), "transient"),
        (FhirInvalidBody("i"), "structure"),
    ],
)
def test_the_table_decides_the_response(error: FhirError, code: str) -> None:
    response = error_response(error)
    assert response.status_code == 412
    assert fhir_outcome(error).issue_code == code
    assert f'"code":"{code}"' in response.body.decode()


def test_combined_error_keeps_a_common_class_only() -> None:
    same = combined_fhir_error([FhirServerFault("a", 503), FhirServerFault("b", 503)], "both")
    assert type(same) is FhirServerFault
    assert same.message == "both"
    mixed = combined_fhir_error([FhirServerFault("a", 503), FhirTimeout("b")], "mixed")
    assert type(mixed) is FhirError


def test_the_service_never_imports_fhirpy() -> None:
    code = "import sys, cds.service.app, cds.fhir.gateway; print('fhirpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
