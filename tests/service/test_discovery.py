from __future__ import annotations

import re

import httpx
from service_helpers import ENGINE_TYPES

from cds.trials import REGISTERED
from cds.trials.nct04582136 import TRIAL

# The spec's recommended subset: instance read, or type search with patient= and token parameters.
READ = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/\{\{context\.patientId\}\}$")
SEARCH = re.compile(
    r"^(?P<type>[A-Z][A-Za-z]+)\?patient=\{\{context\.patientId\}\}"
    r"(&code=(?P<codes>[^&]+))?(&category=(?P<categories>[^&]+))?(&status=(?P<statuses>[^&]+))?$"
)


async def test_discovery_lists_one_patient_view_service_per_registered_trial(client: httpx.AsyncClient) -> None:
    response = await client.get("/cds-services")
    assert response.status_code == 200
    services = response.json()["services"]
    assert [s["id"] for s in services] == [f"{t}-prescreen" for t in REGISTERED]
    service = services[0]
    assert service["hook"] == "patient-view"
    assert service["id"] == "nct04582136-prescreen"
    assert service["title"]
    assert service["description"]
    assert "NCT04582136" in service["title"]
    for rtype in ENGINE_TYPES:
        assert f"patient/{rtype}.read" in service["usageRequirements"]
    assert all(v not in (None, "", [], {}) for v in service.values())


async def test_each_services_smart_scopes_are_what_its_queries_read(client: httpx.AsyncClient) -> None:
    """SMART scopes derive from the trial's reads (and the alert gate's), not from a fixed list."""
    for service in (await client.get("/cds-services")).json()["services"]:
        scoped = set(re.findall(r"patient/([A-Za-z]+)\.read", service["usageRequirements"]))
        templated = {t.split("?")[0].split("/")[0] for t in service["prefetch"].values()}
        assert scoped == templated


async def test_prefetch_templates_cover_every_engine_type_within_the_query_subset(
    client: httpx.AsyncClient,
) -> None:
    prefetch = (await client.get("/cds-services")).json()["services"][0]["prefetch"]
    types = {}
    for key, template in prefetch.items():
        match = READ.match(template) or SEARCH.match(template)
        assert match, f"{key}: {template} is outside the recommended query subset"
        types[match["type"]] = template
    assert set(types) == {*ENGINE_TYPES, "Consent", "ResearchSubject", "ServiceRequest"}  # + the alert gate
    assert READ.match(types["Patient"])
    assert types["Condition"] == "Condition?patient={{context.patientId}}"


async def test_observation_template_filters_to_every_trial_code_including_local_sledai(
    client: httpx.AsyncClient,
) -> None:
    prefetch = (await client.get("/cds-services")).json()["services"][0]["prefetch"]
    match = SEARCH.match(prefetch["observations"])
    assert match
    assert match["codes"]
    tokens = match["codes"].split(",")
    expected = {f"{system}|{code}" for system, code in TRIAL.observation_codes}
    assert set(tokens) == expected
    assert len(tokens) == len(set(tokens))
    local = [t for t in tokens if not t.startswith("http://loinc.org|")]
    assert any("SLEDAI" in t for t in local), "the local SLEDAI-2K code must be queried too"


async def test_observation_categories_where_data_is_recognised_by_text_are_fetched_too(
    client: httpx.AsyncClient,
) -> None:
    prefetch = (await client.get("/cds-services")).json()["services"][0]["prefetch"]
    match = SEARCH.match(prefetch["observationsByCategory"])
    assert match
    assert match["type"] == "Observation"
    assert set(match["categories"].split(",")) == {f"{s}|{c}" for s, c in TRIAL.observation_categories}
    assert "http://terminology.hl7.org/CodeSystem/observation-category|survey" in match["categories"].split(",")
