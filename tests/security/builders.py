"""Hook requests, FHIR data and app clients for the security tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import httpx

from cds.config import Settings
from cds.service.alerts import GATE_QUERIES
from cds.service.app import create_app
from cds.service.prefetch import queries_for
from cds.trials.nct04582136 import TRIAL
from tests.fhir_json import searchset

FHIR = "https://ehr.test/fhir"
PID = "pat-Zq81x"
TOKEN = "fhir-access-tok-9f31c"
AS_OF = date(2026, 11, 1)
SERVICE = "/cds-services/nct04582136-prescreen"
SNOMED = "http://snomed.info/sct"
SEARCH_KEYS = {q.key: q.resource_type for q in queries_for(TRIAL) if not q.read}  # prefetch key -> type
GATE_KEYS = {q.key: q.resource_type for q in GATE_QUERIES}  # Consent, ResearchSubject, referral ServiceRequest


def patient(pid: str = PID, birth: str = "1990-04-01") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Quuxworth", "given": ["Ysolde"]}],
        "gender": "female",
        "birthDate": birth,
    }


def sle_condition(pid: str = PID, cid: str = "cond-sle", text: str | None = None) -> dict[str, Any]:
    code: dict[str, Any] = {
        "coding": [{"system": SNOMED, "code": "55464009", "display": "Systemic lupus erythematosus"}]
    }
    if text is not None:
        code["text"] = text
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": code,
        "onsetDateTime": "2020-03-01",
    }


def observation(pid: str = PID, oid: str = "obs-1", loinc: str = "6690-2", value: float = 5.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "effectiveDateTime": "2026-10-20",
        "valueQuantity": {"value": value, "unit": "10*9/L", "system": "http://unitsofmeasure.org", "code": "10*9/L"},
    }


def full_prefetch(pid: str = PID, birth: str = "1990-04-01") -> dict[str, Any]:
    prefetch: dict[str, Any] = {"patient": patient(pid, birth)}
    for key in (*SEARCH_KEYS, *GATE_KEYS):
        prefetch[key] = searchset()
    prefetch["conditions"] = searchset([sle_condition(pid)])
    return prefetch


def hook_request(
    prefetch: dict[str, Any] | None = None,
    *,
    fhir_server: str | None = FHIR,
    token: str | None = TOKEN,
    pid: str = PID,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": pid},
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def base_settings(tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/feedback.sqlite3",
        "as_of": AS_OF,
        "auth_required": False,
        "fhir_allowed_servers": [FHIR],
        "fhir_timeout": 0.5,
        "fhir_connect_timeout": 0.5,
        "fhir_deadline": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def app_client(
    settings: Settings, *, base_url: str = "http://cds.test", **kwargs: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An app (lifespan run) and an in-process httpx client for it."""
    app = create_app(settings, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def assert_outcome(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body
