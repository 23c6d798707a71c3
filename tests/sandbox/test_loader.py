"""The local HAPI FHIR sandbox (cds.sandbox) against a real HAPI FHIR 8.8 JPA server.

The session fixture `hapi_base_url` (tests/conftest.py) builds ``sandbox/hapi`` if needed and starts
HAPI on a free port (about 25 s).
Set ``HAPI_SANDBOX_URL=http://127.0.0.1:8090/fhir`` to reuse a server that is already running
(``python -m cds.sandbox --keep-running``). Run with ``pytest -m integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cds.sandbox import (
    SandboxError,
    generate_cohort,
    load_bundles,
    load_cohort,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


@pytest.fixture
def fhir(hapi_base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60.0, headers={"Accept": "application/fhir+json"}) as client:
        yield client


def _patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1985-03-14", **extra}


def _observation(oid: str, pid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def _collection(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def _total(client: httpx.Client, url: str) -> int:
    r = client.get(url)
    r.raise_for_status()
    return int(r.json()["total"])


# ------------------------------------------------------------------ no server needed


def test_generate_cohort_is_deterministic_and_realistic() -> None:
    first = list(generate_cohort(300, seed=11))
    assert first == list(generate_cohort(300, seed=11))
    assert first != list(generate_cohort(300, seed=12))
    assert [b["id"] for b in first[:2]] == ["cohort-000001", "cohort-000002"]
    resources = [e["resource"] for b in first for e in b["entry"]]
    assert all(not r["id"].isdigit() for r in resources)
    sle = {
        r["subject"]["reference"]
        for r in resources
        if r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"] == "55464009"
    }
    assert 10 <= len(sle) <= 60  # about 10 % of 300
    codes = {r["code"]["coding"][0]["code"] for r in resources if r["resourceType"] == "Observation"}
    assert codes == {"6690-2", "4485-9", "33799-8"}


def test_load_bundles_rejects_numeric_and_missing_ids() -> None:
    # Checked before anything is sent, so no server is needed.
    with pytest.raises(SandboxError, match="HAPI-0960"):
        load_bundles("http://127.0.0.1:9/fhir", [_collection(_patient("12345"))])
    no_id = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient"}}],
    }
    with pytest.raises(SandboxError, match="has no id"):
        load_bundles("http://127.0.0.1:9/fhir", [no_id])


# ------------------------------------------------------------------ against HAPI


@pytest.mark.integration
def test_metadata_is_r4(fhir: httpx.Client, hapi_base_url: str) -> None:
    r = fhir.get(f"{hapi_base_url}/metadata")
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["software"]["name"] == "HAPI FHIR Server"
    resources = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert {"Patient", "Observation", "Condition", "MedicationRequest"} <= resources.keys()
    assert "code" in {p["name"] for p in resources["Observation"]["searchParam"]}


@pytest.mark.integration
def test_load_bundles_is_idempotent(fhir: httpx.Client, hapi_base_url: str) -> None:
    collection = _collection(
        _patient("sbx-idem-a"),
        _observation("sbx-idem-a-wbc", "sbx-idem-a", "6690-2", 2.8, "10*3/uL", "2025-01-02T09:00:00Z"),
        _patient("sbx-idem-b", gender="male"),
    )
    # A transaction with urn:uuid references and POSTs, as exported by many tools.
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b8e6a5c-2f4d-4e8a-9a57-3c1f1f0e9d01",
                "resource": _patient("sbx-idem-c"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:7d1f1a50-64c1-4a7b-8f7e-2a9b5a0c4e02",
                "resource": {
                    "resourceType": "Condition",
                    "id": "sbx-idem-c-sle",
                    "code": {"coding": [{"system": SNOMED, "code": "55464009"}]},
                    "subject": {"reference": "urn:uuid:0b8e6a5c-2f4d-4e8a-9a57-3c1f1f0e9d01"},
                },
                "request": {"method": "POST", "url": "Condition"},
            },
        ],
    }
    ids_first = load_bundles(hapi_base_url, [collection, transaction])
    assert ids_first == ["sbx-idem-a", "sbx-idem-b", "sbx-idem-c"]
    patients = f"{hapi_base_url}/Patient?_id=sbx-idem-a,sbx-idem-b,sbx-idem-c&_summary=count"
    observations = f"{hapi_base_url}/Observation?subject=Patient/sbx-idem-a&_summary=count"
    counts_first = (_total(fhir, patients), _total(fhir, observations))

    ids_second = load_bundles(hapi_base_url, [collection, transaction])
    assert ids_second == ids_first
    assert (_total(fhir, patients), _total(fhir, observations)) == counts_first == (3, 1)
    # Same content again: HAPI keeps version 1 (no new versions were written).
    assert fhir.get(f"{hapi_base_url}/Patient/sbx-idem-a").json()["meta"]["versionId"] == "1"
    # The urn:uuid reference now points at the client-assigned id.
    condition = fhir.get(f"{hapi_base_url}/Condition/sbx-idem-c-sle").json()
    assert condition["subject"]["reference"] == "Patient/sbx-idem-c"


@pytest.mark.integration
def test_search_is_paged_by_50_with_next_links_on_the_base(fhir: httpx.Client, hapi_base_url: str) -> None:
    pid = "sbx-paging"
    observations = [
        _observation(f"{pid}-obs-{i:03d}", pid, "6690-2", 4.0 + i / 100, "10*3/uL", f"2024-{1 + i % 12:02d}-01")
        for i in range(120)
    ]
    # Patient last and small batches: the loader must still send the Patient first.
    load_bundles(hapi_base_url, [_collection(*observations, _patient(pid))], batch_size=50)

    url: str | None = f"{hapi_base_url}/Observation?subject=Patient/{pid}&_sort=_id"
    page_sizes: list[int] = []
    collected: list[str] = []
    while url is not None:
        r = fhir.get(url)
        assert r.status_code == 200, r.text
        bundle = r.json()
        entries = bundle.get("entry", [])
        page_sizes.append(len(entries))
        collected += [e["resource"]["id"] for e in entries]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if url is not None:
            assert url.startswith(f"{hapi_base_url}?_getpages="), url
    assert page_sizes == [50, 50, 20]
    assert len(set(collected)) == 120
    assert sorted(collected) == sorted(o["id"] for o in observations)


@pytest.mark.integration
def test_unknown_search_parameter_is_400_with_operation_outcome(fhir: httpx.Client, hapi_base_url: str) -> None:
    r = fhir.get(f"{hapi_base_url}/Observation", params={"not-a-search-param": "x"})
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert "HAPI-0524" in outcome["issue"][0]["diagnostics"]


@pytest.mark.integration
def test_load_cohort_200(fhir: httpx.Client, hapi_base_url: str) -> None:
    ids = load_cohort(hapi_base_url, 200, seed=3)
    assert ids == [f"cohort-{i:06d}" for i in range(1, 201)]
    assert _total(fhir, f"{hapi_base_url}/Patient?_id=cohort-000001,cohort-000200&_summary=count") == 2

    expected_sle = sum(
        1
        for bundle in generate_cohort(200, seed=3)
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Condition" and e["resource"]["code"]["coding"][0]["code"] == "55464009"
    )
    sle_url = f"{hapi_base_url}/Condition?code={SNOMED}|55464009&_tag=urn:cds:sandbox|cohort&_summary=count"
    assert _total(fhir, sle_url) == expected_sle
    wbc = _total(fhir, f"{hapi_base_url}/Observation?code={LOINC}|6690-2&subject=Patient/cohort-000001&_summary=count")
    assert 1 <= wbc <= 3
