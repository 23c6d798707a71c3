"""`gather_data` read directly: what a complete prefetch gives without any I/O, what the outcomes
keep once the resources are merged, and the prefetch checks (`misfit`) on odd references."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import respx
from service_helpers import FHIR, PID, full_prefetch, hook_request, patient, procedure, sle_condition

from cds.fhir.gateway import FhirGateway, GatewayLimits
from cds.service.models import CdsRequest, parse_request
from cds.service.prefetch import PrefetchQuery, gather_data, misfit, queries_for
from cds.trials.nct04582136 import TRIAL
from tests.fhir_json import searchset

QUERIES = queries_for(TRIAL)


@pytest.fixture
async def gateway() -> AsyncIterator[FhirGateway]:
    gw = FhirGateway(GatewayLimits(timeout=0.5, connect_timeout=0.5))
    yield gw
    await gw.aclose()


def request(prefetch: dict[str, Any], fhir_server: str | None = FHIR) -> CdsRequest:
    return parse_request(hook_request(prefetch, fhir_server=fhir_server))


@respx.mock(assert_all_called=False)
async def test_gathered_outcomes_hold_no_resource(gateway: FhirGateway, respx_mock: respx.MockRouter) -> None:
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([procedure(), procedure(pid_="proc-2")])
    data = await gather_data(request(prefetch), QUERIES, gateway, deadline_seconds=5)
    assert not respx_mock.calls  # a complete prefetch is read without the FHIR server
    assert [r["id"] for r in data.resources] == [PID, "cond-sle", "proc-1", "proc-2"]
    counts = {o.query.key: o.count for o in data.outcomes}
    assert (counts["patient"], counts["conditions"], counts["procedures"]) == (1, 1, 2)
    assert all(not hasattr(o, "resources") for o in data.outcomes)
    held = {id(x) for o in data.outcomes for x in gc.get_referents(o)}
    assert not any(id(r) in held for r in data.resources)
    assert not any(isinstance(x, list) for o in data.outcomes for x in gc.get_referents(o))


async def test_a_complete_prefetch_needs_no_time_but_a_fetch_keeps_the_deadline(gateway: FhirGateway) -> None:
    prefetch = full_prefetch()
    del prefetch["procedures"]

    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(2)
        return httpx.Response(200, json=searchset())

    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{FHIR}/Procedure").mock(side_effect=slow)
        data = await gather_data(request(prefetch), QUERIES, gateway, deadline_seconds=0.05)
    by_key = {o.query.key: o for o in data.outcomes}
    assert by_key["procedures"].problem == "FHIR reads did not finish within the deadline"
    assert (by_key["procedures"].fhir_error, by_key["procedures"].count) == (True, 0)
    assert all(o.ok and o.source == "prefetch" for k, o in by_key.items() if k != "procedures")
    assert data.incomplete == ("Procedure",)
    assert [r["id"] for r in data.resources] == [PID, "cond-sle"]


async def test_a_prefetched_bundle_with_a_next_link_is_paged_from_the_server(gateway: FhirGateway) -> None:
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([procedure()], next_url=f"{FHIR}/Procedure?page=2")
    with respx.mock() as mock:
        mock.get(f"{FHIR}/Procedure", params={"page": "2"}).mock(
            return_value=httpx.Response(200, json=searchset([procedure(pid_="proc-2")]))
        )
        data = await gather_data(request(prefetch), QUERIES, gateway, deadline_seconds=5)
    outcome = next(o for o in data.outcomes if o.query.key == "procedures")
    assert (outcome.source, outcome.count, outcome.truncated) == ("prefetch+fhir", 2, False)
    # Without a FHIR server the same Bundle is read as it is, marked truncated.
    alone = await gather_data(request(prefetch, fhir_server=None), QUERIES, gateway, deadline_seconds=5)
    outcome = next(o for o in alone.outcomes if o.query.key == "procedures")
    assert (outcome.source, outcome.count, outcome.truncated) == ("prefetch", 1, True)
    assert "Procedure" in alone.incomplete


async def test_a_refused_prefetch_value_is_fetched_in_its_place(gateway: FhirGateway) -> None:
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([procedure(pid="someone-else")])
    with respx.mock() as mock:
        mock.get(f"{FHIR}/Procedure").mock(return_value=httpx.Response(200, json=searchset([procedure()])))
        log: dict[str, Any] = {}
        data = await gather_data(request(prefetch), QUERIES, gateway, deadline_seconds=5, log_record=log)
    outcome = next(o for o in data.outcomes if o.query.key == "procedures")
    assert (outcome.source, outcome.prefetch_rejected, outcome.count) == ("fhir", "other-patient", 1)
    assert log["prefetchRejected"] == {"procedures": "other-patient"}


async def test_prefetch_values_that_are_other_mappings_are_still_accepted(gateway: FhirGateway) -> None:
    prefetch = full_prefetch()
    prefetch["patient"] = MappingProxyType(patient())
    prefetch["conditions"] = MappingProxyType(
        {"resourceType": "Bundle", "entry": [MappingProxyType({"resource": MappingProxyType(sle_condition())})]}
    )
    data = await gather_data(request(prefetch, fhir_server=None), QUERIES, gateway, deadline_seconds=5)
    assert data.resources == [patient(), sle_condition()]
    assert all(type(r) is dict for r in data.resources)


CONDITIONS = next(q for q in QUERIES if q.key == "conditions")


@pytest.mark.parametrize(
    ("patient_id", "reference", "expected"),
    [
        ("p1", "Patient/p1", None),
        ("p1", "https://ehr.test/fhir/Patient/p1", None),
        ("p1", "Patient/p1/_history/2", None),
        ("p1", "Patient/p2", "other-patient"),
        ("p1", "Group/p1", "other-patient"),
        ("a/b", "Patient/a/b", "other-patient"),  # not a Patient reference at all
        ("a?b", "Patient/a?b", "other-patient"),  # a conditional reference
        ("", "Patient/", "other-patient"),
    ],
)
def test_misfit_reads_subject_references_as_references(patient_id: str, reference: str, expected: str | None) -> None:
    resource = {"resourceType": "Condition", "id": "c", "subject": {"reference": reference}}
    assert misfit(CONDITIONS, [resource], patient_id) == expected
    proxied = {**resource, "subject": MappingProxyType({"reference": reference})}
    assert misfit(CONDITIONS, [proxied], patient_id) == expected


def test_misfit_types() -> None:
    statements = PrefetchQuery("medicationStatements", "MedicationStatement", (("patient", "x"),))
    medication = {"resourceType": "Medication", "id": "m"}
    assert misfit(statements, [medication], PID) is None
    assert misfit(CONDITIONS, [medication], PID) == "wrong-type"
    assert misfit(CONDITIONS, [{"resourceType": "Condition"}], PID) == "other-patient"
    read = next(q for q in QUERIES if q.read)
    assert misfit(read, [patient()], PID) is None
    assert misfit(read, [patient("other")], PID) == "other-patient"
