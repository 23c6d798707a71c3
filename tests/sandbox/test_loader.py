"""`sandbox.loader`: loading Bundles into a real HAPI FHIR 8.8 JPA server, idempotently.

The session fixture `hapi_base_url` (tests/conftest.py) builds ``sandbox/hapi`` if needed and starts
HAPI on a free port (about 25 s). Set ``HAPI_SANDBOX_URL=http://127.0.0.1:8090/fhir`` to reuse a
server that is already running (``python -m sandbox --keep-running``).
"""

from __future__ import annotations

import httpx
import pytest

from sandbox import SandboxError, load_bundles
from tests.sandbox.builders import SNOMED, collection, observation, patient, total


def test_load_bundles_rejects_numeric_and_missing_ids() -> None:
    # Checked before anything is sent, so no server is needed.
    with pytest.raises(SandboxError, match="HAPI-0960"):
        load_bundles("http://127.0.0.1:9/fhir", [collection(patient("12345"))])
    no_id = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient"}}],
    }
    with pytest.raises(SandboxError, match="has no id"):
        load_bundles("http://127.0.0.1:9/fhir", [no_id])


@pytest.mark.integration
def test_load_bundles_is_idempotent(fhir: httpx.Client, hapi_base_url: str) -> None:
    bundle = collection(
        patient("sbx-idem-a"),
        observation("sbx-idem-a-wbc", "sbx-idem-a", "6690-2", 2.8, "10*3/uL", "2025-01-02T09:00:00Z"),
        patient("sbx-idem-b", gender="male"),
    )
    # A transaction with urn:uuid references and POSTs, as exported by many tools.
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:0b8e6a5c-2f4d-4e8a-9a57-3c1f1f0e9d01",
                "resource": patient("sbx-idem-c"),
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
    ids_first = load_bundles(hapi_base_url, [bundle, transaction])
    assert ids_first == ["sbx-idem-a", "sbx-idem-b", "sbx-idem-c"]
    patients = f"{hapi_base_url}/Patient?_id=sbx-idem-a,sbx-idem-b,sbx-idem-c&_summary=count"
    observations = f"{hapi_base_url}/Observation?subject=Patient/sbx-idem-a&_summary=count"
    counts_first = (total(fhir, patients), total(fhir, observations))

    ids_second = load_bundles(hapi_base_url, [bundle, transaction])
    assert ids_second == ids_first
    assert (total(fhir, patients), total(fhir, observations)) == counts_first == (3, 1)
    # Same content again: HAPI keeps version 1 (no new versions were written).
    assert fhir.get(f"{hapi_base_url}/Patient/sbx-idem-a").json()["meta"]["versionId"] == "1"
    # The urn:uuid reference now points at the client-assigned id.
    condition = fhir.get(f"{hapi_base_url}/Condition/sbx-idem-c-sle").json()
    assert condition["subject"]["reference"] == "Patient/sbx-idem-c"
