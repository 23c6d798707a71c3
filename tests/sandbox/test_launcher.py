"""`sandbox.launcher`: the HAPI FHIR server it builds and starts (R4, paging, errors as OperationOutcome)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sandbox import HapiSandbox, load_bundles
from tests.sandbox.builders import collection, observation, patient


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
def test_search_is_paged_by_50_with_next_links_on_the_base(fhir: httpx.Client, hapi_base_url: str) -> None:
    pid = "sbx-paging"
    observations = [
        observation(f"{pid}-obs-{i:03d}", pid, "6690-2", 4.0 + i / 100, "10*3/uL", f"2024-{1 + i % 12:02d}-01")
        for i in range(120)
    ]
    # Patient last and small batches: the loader must still send the Patient first.
    load_bundles(hapi_base_url, [collection(*observations, patient(pid))], batch_size=50)

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


def test_command_passes_disk_and_bulk_load_switches_only_when_asked(tmp_path: Path) -> None:
    classpath = tmp_path / "classpath.txt"
    classpath.write_text("/jars/a.jar")
    default = HapiSandbox(8123).command(classpath)
    bulk = HapiSandbox(8123, disk=True, bulk_load=True).command(classpath)
    assert not any(a.startswith(("--hapi.sandbox.bulk-load", "--hapi.sandbox.jdbc-url")) for a in default)
    assert "--hapi.sandbox.bulk-load=true" in bulk
    assert any(a.startswith("--hapi.sandbox.jdbc-url=jdbc:h2:file:") for a in bulk)
