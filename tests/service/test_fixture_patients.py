"""End to end with the real engine on the fixture patients: by prefetch and by FHIR (respx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from service_helpers import FHIR, SERVICE, TOKEN

from cards.codes import REPORT_EXTENSION_KEY
from cards.models import CdsResponse
from cds.service.demo import build_request, load_bundle

PATIENTS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "patients"

EXPECTED_FILE = PATIENTS_DIR.parent / "expected.json"
EXPECTED: dict[str, Any] = json.loads(EXPECTED_FILE.read_text()) if EXPECTED_FILE.exists() else {}
pytestmark = pytest.mark.skipif(not EXPECTED, reason="fixtures/expected.json not generated yet")

# A spread of verdicts and data shapes for the slower FHIR-path test.
FHIR_PATH_SAMPLE = [
    pid
    for pid in (
        "base-candidate",
        "var-age-66",
        "var-sledai-missing",
        "var-pred-no-dose",
        "real-active-sle",
        "real-synthea-like",
        "real-non-lupus",
        "real-si-units",
    )
    if pid in EXPECTED
]


def _verdict(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    cards = CdsResponse.model_validate(body).cards
    assert CdsResponse(cards=cards).to_json() == body
    if not cards:
        return "excluded"
    assert len(cards) == 1
    verdict: str = body["cards"][0]["extension"][REPORT_EXTENSION_KEY]["verdict"]
    assert verdict != "excluded"
    assert "possible candidate" in cards[0].summary.lower()
    return verdict


@pytest.mark.parametrize("pid", sorted(EXPECTED))
async def test_fixture_patient_by_prefetch(client: httpx.AsyncClient, pid: str) -> None:
    request = build_request(load_bundle(PATIENTS_DIR / f"{pid}.json"), fhir_server=None)
    assert _verdict(await client.post(SERVICE, json=request)) == EXPECTED[pid]["verdict"]


def _serve_bundle(mock: respx.MockRouter, bundle: dict[str, Any]) -> None:
    """A FHIR server holding one patient's record, answering the service's queries."""
    resources = [e["resource"] for e in bundle.get("entry", [])]

    def read(request: httpx.Request, rid: str) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        found = [r for r in resources if r["resourceType"] == "Patient" and r["id"] == rid]
        return httpx.Response(200, json=found[0]) if found else httpx.Response(404)

    def search(request: httpx.Request, rtype: str) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        tokens = {name: set(request.url.params.get(name, "").split(",")) for name in ("code", "category")}
        tokens = {name: wanted for name, wanted in tokens.items() if wanted != {""}}
        matching = []
        for r in resources:
            if r["resourceType"] != rtype:
                continue
            for name, wanted in tokens.items():
                concepts = r.get(name, [])
                codings = [
                    c for cc in (concepts if isinstance(concepts, list) else [concepts]) for c in cc.get("coding", [])
                ]
                if not any(f"{c.get('system')}|{c.get('code')}" in wanted for c in codings):
                    break
            else:
                matching.append(r)
        # Pages of at most 100 (fewer than the service's _count of 200) to exercise next links.
        size = min(int(request.url.params["_count"]), 100)
        offset = int(request.url.params.get("_offset", "0"))
        page = matching[offset : offset + size]
        body: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in page]}
        if offset + size < len(matching):
            query = "&".join(f"{k}={v}" for k, v in request.url.params.items() if k != "_offset")
            body["link"] = [{"relation": "next", "url": f"{FHIR}/{rtype}?{query}&_offset={offset + size}"}]
        return httpx.Response(200, json=body)

    mock.get(url__regex=rf"^{FHIR}/Patient/(?P<rid>[^/?]+)$").mock(side_effect=read)
    mock.get(url__regex=rf"^{FHIR}/(?P<rtype>[A-Za-z]+)(\?.*)?$").mock(side_effect=search)


@pytest.mark.parametrize("pid", FHIR_PATH_SAMPLE)
async def test_fixture_patient_without_prefetch_through_fhir(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, pid: str
) -> None:
    bundle = load_bundle(PATIENTS_DIR / f"{pid}.json")
    _serve_bundle(respx_mock, bundle)
    request = build_request(bundle, fhir_server=FHIR)
    del request["prefetch"]
    request["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer"}
    assert _verdict(await client.post(SERVICE, json=request)) == EXPECTED[pid]["verdict"]
    assert len(respx_mock.calls) >= 8
    if pid == "real-active-sle":  # 409 trial Observations: pages through next links
        observation_calls = [c for c in respx_mock.calls if c.request.url.path.endswith("/Observation")]
        by_code = [c for c in observation_calls if "code" in c.request.url.params]
        windowed = [c for c in by_code if "date" in c.request.url.params]
        history = [c for c in by_code if "date" not in c.request.url.params]  # SLICC tests, any date
        assert (len(windowed), len(history)) == (3, 3)  # the monthly WBC/C3/dsDNA panels are SLICC tests too
        by_category = [c for c in observation_calls if "category" in c.request.url.params]
        assert len(by_category) == 1  # the survey/exam Observations (SLEDAI-2K scores) fit one page


def test_expected_file_lists_existing_patients() -> None:
    for pid in EXPECTED:
        assert Path(PATIENTS_DIR / f"{pid}.json").exists()
