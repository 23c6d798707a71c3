"""`sandbox.cohort`: the synthetic cohort, deterministic per seed, and loaded into HAPI."""

from __future__ import annotations

import httpx
import pytest

from sandbox import generate_cohort, load_cohort
from tests.sandbox.builders import LOINC, SNOMED, total


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


@pytest.mark.integration
def test_load_cohort_200(fhir: httpx.Client, hapi_base_url: str) -> None:
    ids = load_cohort(hapi_base_url, 200, seed=3)
    assert ids == [f"cohort-{i:06d}" for i in range(1, 201)]
    assert total(fhir, f"{hapi_base_url}/Patient?_id=cohort-000001,cohort-000200&_summary=count") == 2

    expected_sle = sum(
        1
        for bundle in generate_cohort(200, seed=3)
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Condition" and e["resource"]["code"]["coding"][0]["code"] == "55464009"
    )
    sle_url = f"{hapi_base_url}/Condition?code={SNOMED}|55464009&_tag=urn:cds:sandbox|cohort&_summary=count"
    assert total(fhir, sle_url) == expected_sle
    wbc = total(fhir, f"{hapi_base_url}/Observation?code={LOINC}|6690-2&subject=Patient/cohort-000001&_summary=count")
    assert 1 <= wbc <= 3
