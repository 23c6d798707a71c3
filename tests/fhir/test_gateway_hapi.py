"""The service's FHIR path against a real HAPI FHIR R4 server (no prefetch, real paging).

Uses the session's HAPI sandbox (tests/conftest.py: started once, or ``HAPI_SANDBOX_URL``).
Run with ``pytest -m integration``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.config import Settings
from cds.fhir.gateway import FhirGateway, GatewayLimits
from cds.service.app import create_app
from cds.service.demo import build_request, load_bundle

PATIENTS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "patients"

pytestmark = pytest.mark.integration

PATIENTS = ["base-candidate", "var-age-66", "var-sledai-missing", "real-active-sle", "real-si-units"]
EXPECTED_FILE = PATIENTS_DIR.parent / "expected.json"


@pytest.fixture(scope="module")
def hapi(hapi_with_fixtures: str) -> str:
    """The session's HAPI server (tests/conftest.py) with every fixture patient loaded."""
    return hapi_with_fixtures


@pytest.fixture
async def gateway() -> AsyncIterator[FhirGateway]:
    gw = FhirGateway(GatewayLimits(timeout=10.0, page_size=25, max_pages=50))
    yield gw
    await gw.aclose()


async def test_search_with_token_list_and_hapi_paging(hapi: str, gateway: FhirGateway) -> None:
    client = gateway.client(hapi, None)
    codes = "http://loinc.org|4485-9,http://loinc.org|33799-8"
    result = await gateway.search(client, "Observation", {"patient": "real-active-sle", "code": codes})
    expected = [
        e["resource"]
        for e in load_bundle(PATIENTS_DIR / "real-active-sle.json")["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and any(f"{c.get('system')}|{c.get('code')}" in codes.split(",") for c in e["resource"]["code"]["coding"])
    ]
    assert len(expected) > 25, "the fixture should need more than one page"
    assert result.pages > 1
    assert not result.truncated
    assert sorted(r["id"] for r in result.resources) == sorted(r["id"] for r in expected)
    patient = await gateway.read(client, "Patient", "real-active-sle")
    assert patient["id"] == "real-active-sle"


@pytest.mark.parametrize("pid", PATIENTS)
async def test_service_without_prefetch_against_hapi(hapi: str, tmp_path: Any, pid: str) -> None:
    expected = json.loads(EXPECTED_FILE.read_text())[pid]["verdict"]
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/fb.sqlite3",
        as_of=date(2026, 11, 1),
        fhir_timeout=10.0,
        fhir_deadline=30.0,
        fhir_page_size=50,
        fhir_allowed_servers=[hapi],
        auth_required=False,
    )
    app = create_app(settings)
    request = build_request(load_bundle(PATIENTS_DIR / f"{pid}.json"), fhir_server=hapi)
    del request["prefetch"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test", timeout=60) as client:
            response = await client.post("/cds-services/nct04582136-prescreen", json=request)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    verdict = cards[0]["extension"]["org.nct04582136-cds.report"]["verdict"] if cards else "excluded"
    assert verdict == expected
    if cards:
        assert "incomplete" not in cards[0]["extension"]["org.nct04582136-cds.report"]
