"""The hook fetches everything the engine reads: the prefetch templates and the FHIR fallback come from
what the criteria declare they read (`cds.engine.reads`), and evaluating a whole record equals
evaluating what the service's own queries retrieve from it (their search semantics simulated over the
record by `PrefetchQuery.selects`)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import FHIR, PID, SERVICE, TOKEN, hook_request, patient, sle_condition

import cds.engine.rules as rules_module
import cds.trials.lupus.rules as lupus_rules
import cds.trials.lupus.sledai as lupus_sledai
import cds.trials.lupus.slicc as lupus_slicc
from cds.engine import evaluate
from cds.engine.definition import OBSERVATION_CATEGORY
from cds.engine.model import Report, Status
from cds.engine.reads import reads
from cds.service.demo import build_request, load_bundle, prefetch_from_bundle
from cds.service.prefetch import CATEGORY_KEY, PrefetchQuery, queries_for
from cds.trials.nct04582136 import TRIAL
from tests.fhir_json import searchset, without_uuids

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = json.loads((ROOT / "expected.json").read_text(encoding="utf-8"))
AS_OF = date(2026, 11, 1)
QUERIES = queries_for(TRIAL)
SEARCHED = frozenset(q.resource_type for q in QUERIES)


def retrieved(resources: list[dict[str, Any]], patient_id: str, since: date | None = None) -> list[dict[str, Any]]:
    """What the service's queries return from this record (prefetch: no date; fallback: `since`),
    each resource once, as `gather_data` passes them on."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for query in QUERIES:
        for r in resources:
            if query.selects(r, patient_id, since) and (r["resourceType"], r["id"]) not in seen:
                seen.add((r["resourceType"], r["id"]))
                out.append(r)
    return out


def report(resources: list[dict[str, Any]], patient_id: str) -> Report:
    return evaluate(resources, patient_id=patient_id, as_of=AS_OF, searched=SEARCHED)


def _fixture(pid: str) -> list[dict[str, Any]]:
    bundle = load_bundle(ROOT / "patients" / f"{pid}.json")
    return [e["resource"] for e in bundle["entry"]]


@pytest.mark.parametrize("pid", sorted(EXPECTED))
def test_whole_record_equals_what_the_templates_and_the_fallback_retrieve(pid: str) -> None:
    resources = _fixture(pid)
    whole = report(resources, pid)
    assert report(retrieved(resources, pid), pid) == whole  # prefetch templates (no date)
    since = TRIAL.observation_cutoff(AS_OF)
    assert report(retrieved(resources, pid, since), pid) == whole  # FHIR fallback (date=ge<since>)


# ------------------------------------------------------------------ generated records

CODES = [*TRIAL.observation_codes, ("http://loinc.org", "718-7"), ("http://loinc.org", "8310-5")]
CATEGORIES = [None, "laboratory", "vital-signs", "survey", "exam", "social-history"]
TEXTS = [None, "SLEDAI-2K total", "SLEDAI 2K", "Hemoglobin", "PHQ-9 total", "SELENA-SLEDAI"]


@st.composite
def observation(draw: st.DrawFn, n: int) -> dict[str, Any]:
    coded = draw(st.booleans())
    code: dict[str, Any] = {}
    if coded:
        system, value = draw(st.sampled_from(CODES))
        code["coding"] = [{"system": system, "code": value}]
    else:
        code["coding"] = [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679", "code": str(3040100 + n)}]
    text = draw(st.sampled_from(TEXTS))
    if text:
        code["text"] = text
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{n}",
        "status": draw(st.sampled_from(["final", "final", "amended", "preliminary"])),
        "subject": {"reference": f"Patient/{PID}"},
        "code": code,
        "effectiveDateTime": (AS_OF - timedelta(days=draw(st.integers(0, 60)))).isoformat(),
        "valueQuantity": {"value": draw(st.integers(0, 20)), "unit": "{score}"},
    }
    category = draw(st.sampled_from(CATEGORIES))
    if category:
        o["category"] = [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category}]}]
    return o


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 8))
    observations = [draw(observation(i)) for i in range(n)]
    return [patient(), sle_condition(), *observations]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_generated_records_whole_equals_retrieved(resources: list[dict[str, Any]]) -> None:
    whole = report(resources, PID)
    assert report(retrieved(resources, PID), PID) == whole
    assert report(retrieved(resources, PID, TRIAL.observation_cutoff(AS_OF)), PID) == whole


# ------------------------------------------------------------------ declarations


def test_every_rule_type_declares_what_it_reads() -> None:
    modules = (rules_module, lupus_rules, lupus_sledai, lupus_slicc)
    rule_types = [
        cls
        for module in modules
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and hasattr(cls, "evaluate") and cls is not rules_module.Rule
    ]
    assert len(rule_types) > 15
    for rule_type in rule_types:
        assert rule_type in reads.registry, f"{rule_type.__name__} does not declare what it reads"


def test_queries_are_derived_from_the_declarations() -> None:
    assert {q.resource_type for q in QUERIES} == set(TRIAL.resource_types)
    codes = next(q for q in QUERIES if q.key == "observations").search_params(PID)["code"].split(",")
    assert set(codes) == {f"{s}|{c}" for s, c in TRIAL.observation_codes}
    assert TRIAL.observation_lookback_days == max(
        r.lookback_days or 0 for c in TRIAL.criteria for r in TRIAL.reads_of(c)
    )


def test_site_sledai_codes_from_settings_are_queried() -> None:
    site = ("urn:oid:1.2.840.114350.1.13.0.1.7.2.707679", "SLEDAI2K-TOTAL")
    trial = TRIAL.with_policy(sledai_local_codes=(site,))
    assert site in trial.observation_codes
    assert site not in TRIAL.observation_codes
    assert f"{site[0]}|{site[1]}" in queries_for(trial)[2].search_params(PID)["code"].split(",")


def test_longer_windows_lengthen_the_fallback_lookback() -> None:
    wbc = next(c for c in TRIAL.criteria if c.id == "exc-leukopenia")
    longer = dataclasses.replace(wbc, rule=dataclasses.replace(wbc.rule, window_days=60))
    trial = dataclasses.replace(TRIAL, criteria=tuple(longer if c is wbc else c for c in TRIAL.criteria))
    assert trial.observation_lookback_days == 60
    assert trial.observation_cutoff(AS_OF) == AS_OF - timedelta(days=60)


@pytest.mark.parametrize(
    ("query", "resource", "selected"),
    [
        (PrefetchQuery("o", "Observation", (("patient", "x"), ("code", "http://loinc.org|1-8"))), {}, True),
        (PrefetchQuery("o", "Observation", (("patient", "x"), ("code", "1-8"))), {}, True),
        (PrefetchQuery("o", "Observation", (("patient", "x"), ("code", "http://other|1-8"))), {}, False),
        (PrefetchQuery("o", "Observation", (("patient", "x"), ("category", "http://c|survey"))), {}, False),
        (
            PrefetchQuery("o", "Observation", (("patient", "x"), ("category", "http://c|lab,http://c|survey"))),
            {"category": [{"coding": [{"system": "http://c", "code": "survey"}]}]},
            True,
        ),
        (PrefetchQuery("o", "Observation", (("patient", "x"),)), {"subject": {"reference": "Patient/y"}}, False),
    ],
)
def test_selects_states_fhir_token_search_semantics(
    query: PrefetchQuery, resource: dict[str, Any], selected: bool
) -> None:
    base = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "Patient/x"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
    }
    assert query.selects({**base, **resource}, "x") is selected


# ------------------------------------------------------------------ the regression


def _sledai_by_text(pid: str = PID) -> dict[str, Any]:
    """A SLEDAI-2K total as an EHR flowsheet row: a site-specific code only, named in its text."""
    return {
        "resourceType": "Observation",
        "id": "flowsheet-sledai",
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey"}]}],
        "code": {
            "coding": [
                {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679", "code": "3040104", "display": "SLEDAI"}
            ],
            "text": "SLEDAI-2K total",
        },
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": (AS_OF - timedelta(days=5)).isoformat(),
        "valueQuantity": {"value": 10, "unit": "{score}"},
    }


def _sledai_status(report: Report) -> Status:
    return next(c.status for c in report.criteria if c.id == "inc-sledai")


def _record() -> list[dict[str, Any]]:
    return [patient(), sle_condition(), _sledai_by_text()]


async def test_sledai_total_recognised_by_text_is_fetched_by_templates_and_fallback(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    # `cds screen` reads it from the file ...
    assert _sledai_status(report(_record(), PID)) is Status.MET
    # ... the prefetch templates select it (by its survey category), as an EHR fills them ...
    bundle = {"resourceType": "Bundle", "entry": [{"resource": r} for r in _record()]}
    prefetch = prefetch_from_bundle(bundle, QUERIES, PID)
    assert [e["resource"]["id"] for e in prefetch[CATEGORY_KEY]["entry"]] == ["flowsheet-sledai"]
    assert _sledai_status(report(retrieved(_record(), PID), PID)) is Status.MET
    with_prefetch = await client.post(SERVICE, json=hook_request(prefetch))
    assert with_prefetch.status_code == 200, with_prefetch.text

    # ... and the FHIR fallback asks for it: a FHIR server answering with FHIR search semantics.
    def search(request: httpx.Request, rtype: str) -> httpx.Response:
        query = next(
            q
            for q in QUERIES
            if q.resource_type == rtype
            # the parameters and their values: two Observation queries search by `code` (windowed, history)
            and q.search_params(PID)
            == {k: v for k, v in request.url.params.items() if k not in (q.since_param, "_count")}
        )
        bound = request.url.params.get(query.since_param) if query.since_param else None
        since = date.fromisoformat(bound.removeprefix("ge")) if bound else None
        return httpx.Response(200, json=searchset(r for r in _record() if query.selects(r, PID, since)))

    respx_mock.get(f"{FHIR}/Patient/{PID}").mock(return_value=httpx.Response(200, json=patient()))
    respx_mock.get(url__regex=rf"^{FHIR}/(?P<rtype>[A-Za-z]+)\?.*$").mock(side_effect=search)
    fetched = await client.post(SERVICE, json=hook_request(None, token=TOKEN))
    assert fetched.status_code == 200, fetched.text
    category_calls = [c for c in respx_mock.calls if "category" in c.request.url.params]
    assert len(category_calls) == 1
    a, b = with_prefetch.json()["cards"], fetched.json()["cards"]
    assert without_uuids(a) == without_uuids(b)
    report_json = b[0]["extension"]["org.nct04582136-cds.report"]
    sledai = next(c for c in report_json["criteria"] if c["id"] == "inc-sledai")
    assert sledai["status"] == "met"


def test_build_request_prefetches_the_category_template() -> None:
    request = build_request(load_bundle(ROOT / "patients" / "base-candidate.json"), fhir_server=None)
    entries = request["prefetch"][CATEGORY_KEY].get("entry", [])
    assert entries
    assert all(
        any(c["code"] in ("survey", "exam") for cat in e["resource"]["category"] for c in cat["coding"])
        for e in entries
    )


def test_text_only_total_outside_the_fetched_categories_is_not_read_by_the_file_path_either() -> None:
    """The engine reads only what the hook fetches: a total named only in text, in a category the
    service does not fetch, is left out everywhere (the criterion stays unknown, never met)."""
    uncategorised = {
        **_sledai_by_text(),
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
    }
    record = [patient(), sle_condition(), uncategorised]
    assert retrieved(record, PID) == [patient(), sle_condition()]
    assert _sledai_status(report(record, PID)) is Status.UNKNOWN
    assert report(record, PID) == report(retrieved(record, PID), PID)
    site = TRIAL.with_policy(observation_text_categories=((OBSERVATION_CATEGORY, "laboratory"),))
    assert (OBSERVATION_CATEGORY, "laboratory") in site.observation_categories
    read = evaluate(record, patient_id=PID, as_of=AS_OF, searched=SEARCHED, trial=site)
    assert _sledai_status(read) is Status.MET


def test_a_diagnosticreport_read_at_any_date_is_searched_without_a_date_bound() -> None:
    """Regression (merge of NCT06155604): the DiagnosticReport fallback search was bounded by the
    Observation look-back although `inc-ln-biopsy` reads kidney biopsy reports at any date, so a
    biopsy report older than 90 days was never fetched over HTTP and the criterion stayed unknown."""
    from cds.trials import get

    ln_trial = get("nct06155604")
    assert "DiagnosticReport" in ln_trial.whole_record_types
    (ln_reports,) = [q for q in queries_for(ln_trial) if q.resource_type == "DiagnosticReport"]
    assert ln_reports.since_param is None
    assert "date" not in ln_reports.search_params("p1", date(2026, 1, 1))
    # NCT04582136 reads DiagnosticReports only as lab panels inside its windows: still bounded
    # (plus the reports that withdraw results, at any date: see the next test).
    (sle_reports,) = [q for q in queries_for(TRIAL) if q.key == "diagnosticReports"]
    assert sle_reports.since_param == "date"
    assert sle_reports.search_params("p1", date(2026, 1, 1))["date"] == "ge2026-01-01"


def test_reports_that_withdraw_results_are_searched_over_the_whole_record() -> None:
    """Regression (noticed in issue 15, fixed in issue 14's round): SLICC 2012 reads results at any
    date and a report entered in error withdraws the results it lists, but the DiagnosticReport
    fallback search was bounded by the 30-day window: over HTTP (every Oracle Health call: no
    prefetch) an old withdrawn report was never fetched and its results still counted, while
    `cds screen` on the same chart ignored them."""
    from cds.trials import get

    (withdrawn,) = [q for q in queries_for(TRIAL) if q.key == "withdrawnReports"]
    assert withdrawn.template() == "DiagnosticReport?patient={{context.patientId}}&status=entered-in-error"
    assert withdrawn.since_param is None
    assert withdrawn.search_params("p1", date(2026, 1, 1)) == {"patient": "p1", "status": "entered-in-error"}
    report = {"resourceType": "DiagnosticReport", "id": "r", "subject": {"reference": "Patient/p1"}}
    assert withdrawn.selects({**report, "status": "entered-in-error"}, "p1", date(2026, 1, 1))
    assert not withdrawn.selects({**report, "status": "final"}, "p1")
    # NCT06155604 reads every report at any date already: no second query
    assert [q.key for q in queries_for(get("nct06155604")) if q.resource_type == "DiagnosticReport"] == [
        "diagnosticReports"
    ]


def test_sledai_questionnaire_responses_are_fetched_bounded_by_authored() -> None:
    """Issue 12: a SLEDAI-2K form (QuestionnaireResponse) was read when present but never fetched
    by the hook; it is now a declared read, searched by `authored` within the SLEDAI window."""
    (form_query,) = [q for q in QUERIES if q.resource_type == "QuestionnaireResponse"]
    assert form_query.template() == "QuestionnaireResponse?patient={{context.patientId}}"
    assert form_query.search_params(PID, date(2026, 10, 2)) == {"patient": PID, "authored": "ge2026-10-02"}
    form = {
        "resourceType": "QuestionnaireResponse",
        "id": "sledai-form",
        "status": "completed",
        "subject": {"reference": f"Patient/{PID}"},
        "authored": "2026-10-20T09:30:00Z",
    }
    assert form_query.selects(form, PID, date(2026, 10, 2))
    assert not form_query.selects(form, PID, date(2026, 10, 21))
    assert not form_query.selects({**form, "authored": None}, PID, date(2026, 10, 2))
