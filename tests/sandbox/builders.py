"""Small FHIR builders for the sandbox tests."""

from __future__ import annotations

from typing import Any

import httpx

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1985-03-14", **extra}


def observation(oid: str, pid: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


def collection(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def total(client: httpx.Client, url: str) -> int:
    r = client.get(url)
    r.raise_for_status()
    return int(r.json()["total"])
