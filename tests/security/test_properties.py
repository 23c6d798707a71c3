"""Property-based tests (hypothesis): the engine, the request models, JSON and URL parsing, escaping.

Example budgets are fixed (``EXAMPLES``) so the module runs in seconds; `test_example_counts`
documents the total.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cards.markdown import TERMINOLOGY_SYSTEMS, escape, table
from cards.models import CdsResponse
from cards.render import render_cards
from cds.config import Settings
from cds.engine import evaluate
from cds.engine.model import Status
from cds.errors import InvalidRequest
from cds.fhir.safejson import JsonRejected, loads_bounded
from cds.fhir.urls import UrlAllowList, UrlError, parse_url
from cds.service.app import create_app
from cds.service.models import CdsRequest, parse_request
from cds.trials.nct04582136 import TRIAL
from tests.security.test_hostile_input import gfm, terminology_link

PID = "p1"
AS_OF = date(2026, 11, 1)
EXAMPLES = {
    "engine_semivalid": 300,
    "engine_junk": 150,
    "request_model": 300,
    "json": 300,
    "url": 400,
    "escape": 300,
    "service": 120,
}


def budget(name: str) -> settings:
    return settings(max_examples=EXAMPLES[name], deadline=None, suppress_health_check=list(HealthCheck), database=None)


def test_example_counts() -> None:
    assert sum(EXAMPLES.values()) >= 1800


pytestmark = pytest.mark.usefixtures("strict_engine")


# ---------------------------------------------------------------- generators

CRITERIA = tuple(c.id for c in TRIAL.criteria)
SUBJECT = {"reference": f"Patient/{PID}"}
dates = st.one_of(
    st.dates(date(1900, 1, 1), date(2030, 1, 1)).map(str),
    st.sampled_from(["2026", "2026-10", "2026-10-31T23:59:59Z", "2026-11-01T00:00:00+14:00", "not-a-date"]),
)
units = st.sampled_from(
    [
        *("mg/dL", "g/L", "U/L", "10*9/L", "10*3/uL", "[IU]/mL", "U/mL", "mg/(24.h)", "mg/g", "mL/min/{1.73_m2}"),
        *("umol/L", "mmol/L", "mg", "%", "{score}", "kg", "bogus unit", ""),
    ]
)
numbers = st.one_of(st.integers(-5, 10**7), st.floats(-1e6, 1e12, allow_nan=False, allow_infinity=False))
quantity = st.fixed_dictionaries(
    {"value": numbers},
    optional={
        "unit": units,
        "code": units,
        "system": st.just("http://unitsofmeasure.org"),
        "comparator": st.sampled_from(["<", ">", "<=", ">="]),
    },
)
texts = st.text(max_size=30)
ids = st.text("abc123-.", min_size=1, max_size=6)


def concept(pairs: list[tuple[str, str]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda c, t: {"coding": [{"system": c[0], "code": c[1]}], **({"text": t} if t else {})},
        st.sampled_from(pairs),
        st.one_of(st.none(), texts),
    )


def status_concept(system: str, values: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(values).map(lambda v: {"coding": [{"system": system, "code": v}]})


SNOMED, ICD, RXNORM = (
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
)
CONDITION_CODES = [(SNOMED, "55464009"), (ICD, "M32.9"), (SNOMED, "200936003"), (ICD, "M32.0"), (SNOMED, "195967001")]
CONDITION_CODES += [
    (SNOMED, "77386006"),
    (SNOMED, "363346000"),
    (SNOMED, "95644001"),
    (ICD, "A15.0"),
    (SNOMED, "13645005"),
]
DRUGS = [(RXNORM, c) for c in ("312617", "979092", "314076", "35302", "42316", "3008", "1256", "5521", "8640", "68149")]
ROUTES = [(SNOMED, "26643006"), (SNOMED, "47625008"), (SNOMED, "6064005")]
period = st.fixed_dictionaries({}, optional={"start": dates, "end": dates})
timing = st.fixed_dictionaries(
    {},
    optional={
        "repeat": st.fixed_dictionaries(
            {},
            optional={
                "frequency": st.integers(0, 10),
                "period": st.floats(0.01, 1e5),
                "periodUnit": st.sampled_from(["d", "wk", "h", "mo", "min"]),
                "boundsPeriod": period,
            },
        )
    },
)
dosage = st.fixed_dictionaries(
    {},
    optional={
        "text": texts,
        "timing": timing,
        "asNeededBoolean": st.booleans(),
        "route": concept(ROUTES),
        "doseAndRate": st.lists(st.fixed_dictionaries({"doseQuantity": quantity}), max_size=2),
    },
)
observation = st.fixed_dictionaries(
    {
        "resourceType": st.just("Observation"),
        "id": ids,
        "status": st.sampled_from(["final", "preliminary", "amended", "entered-in-error", "cancelled"]),
        "code": concept(list(TRIAL.observation_codes)),
        "subject": st.just(SUBJECT),
    },
    optional={
        "effectiveDateTime": dates,
        "valueQuantity": quantity,
        "valueString": st.sampled_from(["Negative", "Positive", "pos", "neg", "12", ""]),
        "referenceRange": st.lists(st.fixed_dictionaries({}, optional={"low": quantity, "high": quantity}), max_size=2),
        "valueCodeableConcept": concept([(SNOMED, "10828004"), (SNOMED, "260385009")]),
    },
)
condition = st.fixed_dictionaries(
    {"resourceType": st.just("Condition"), "id": ids, "code": concept(CONDITION_CODES), "subject": st.just(SUBJECT)},
    optional={
        "clinicalStatus": status_concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", ["active", "resolved", "inactive", "remission"]
        ),
        "verificationStatus": status_concept(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", ["confirmed", "refuted", "entered-in-error"]
        ),
        "onsetDateTime": dates,
        "recordedDate": dates,
        "abatementDateTime": dates,
    },
)
medication_request = st.fixed_dictionaries(
    {
        "resourceType": st.just("MedicationRequest"),
        "id": ids,
        "status": st.sampled_from(["active", "completed", "stopped", "cancelled", "entered-in-error", "on-hold"]),
        "intent": st.sampled_from(["order", "plan"]),
        "subject": st.just(SUBJECT),
        "medicationCodeableConcept": concept(DRUGS),
    },
    optional={"authoredOn": dates, "dosageInstruction": st.lists(dosage, max_size=2)},
)
medication_statement = st.fixed_dictionaries(
    {
        "resourceType": st.just("MedicationStatement"),
        "id": ids,
        "status": st.sampled_from(["active", "completed", "stopped", "not-taken", "entered-in-error", "intended"]),
        "subject": st.just(SUBJECT),
        "medicationCodeableConcept": concept(DRUGS),
    },
    optional={"effectiveDateTime": dates, "effectivePeriod": period, "dosage": st.lists(dosage, max_size=2)},
)
medication_administration = st.fixed_dictionaries(
    {
        "resourceType": st.just("MedicationAdministration"),
        "id": ids,
        "status": st.sampled_from(["completed", "in-progress", "not-done", "entered-in-error"]),
        "subject": st.just(SUBJECT),
        "medicationCodeableConcept": concept(DRUGS),
        "effectiveDateTime": dates,
    },
    optional={"dosage": st.fixed_dictionaries({}, optional={"dose": quantity, "route": concept(ROUTES)})},
)
procedure = st.fixed_dictionaries(
    {
        "resourceType": st.just("Procedure"),
        "id": ids,
        "status": st.sampled_from(["completed", "in-progress", "not-done"]),
        "subject": st.just(SUBJECT),
        "code": concept([(SNOMED, "234336002"), (SNOMED, "387713003"), (SNOMED, "1269349006")]),
    },
    optional={"performedDateTime": dates, "performedPeriod": period},
)
allergy = st.fixed_dictionaries(
    {"resourceType": st.just("AllergyIntolerance"), "id": ids, "patient": st.just(SUBJECT), "code": concept(DRUGS)}
)
patient = st.fixed_dictionaries(
    {"resourceType": st.just("Patient"), "id": st.just(PID)},
    optional={
        "birthDate": st.one_of(dates, st.sampled_from(["1990", "1990-04"])),
        "gender": st.sampled_from(["male", "female", "other", "unknown"]),
        "deceasedBoolean": st.booleans(),
    },
)
semi_valid = st.lists(
    st.one_of(
        observation,
        condition,
        medication_request,
        medication_statement,
        medication_administration,
        procedure,
        allergy,
        patient,
    ),
    max_size=12,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
TYPES = ["Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest", "Procedure", "Encounter"]


@st.composite
def junk_resource(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    resource: dict[str, Any] = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "status",
                    "code",
                    "subject",
                    "valueQuantity",
                    "birthDate",
                    "dosage",
                    "effectiveDateTime",
                    "medicationCodeableConcept",
                    "onsetDateTime",
                ]
            ),
            json_values,
            max_size=6,
        )
    )
    resource["resourceType"] = draw(st.sampled_from(TYPES))
    if draw(st.booleans()):
        resource["subject"] = SUBJECT
    if resource["resourceType"] == "Patient" and draw(st.booleans()):
        resource["id"] = PID
    return resource


def _check_report(resources: list[Any]) -> None:
    report = evaluate(resources, patient_id=PID, as_of=AS_OF)
    assert tuple(c.id for c in report.criteria) == CRITERIA, "every criterion, in order"
    assert all(c.status in (Status.MET, Status.NOT_MET, Status.UNKNOWN) for c in report.criteria)
    json.dumps(report.to_json(), allow_nan=False)
    cards = render_cards(report, TRIAL, show_excluded=True)
    CdsResponse(cards=cards).to_json()


@budget("engine_semivalid")
@given(semi_valid)
def test_engine_never_raises_on_semi_valid_records(resources: list[dict[str, Any]]) -> None:
    _check_report(resources)


@budget("engine_junk")
@given(st.lists(junk_resource(), max_size=8))
def test_engine_never_raises_on_json_junk(resources: list[Any]) -> None:
    _check_report(resources)


# ---------------------------------------------------------------- request models

request_like = st.fixed_dictionaries(
    {},
    optional={
        "hook": st.one_of(st.just("patient-view"), json_values),
        "hookInstance": json_values,
        "fhirServer": st.one_of(st.just("https://ehr.test/fhir"), st.text(max_size=40), json_values),
        "fhirAuthorization": st.one_of(
            st.fixed_dictionaries({}, optional={"access_token": json_values, "expires_in": json_values}), json_values
        ),
        "context": st.one_of(
            st.fixed_dictionaries({}, optional={"patientId": st.one_of(ids, json_values), "userId": json_values}),
            json_values,
        ),
        "prefetch": st.one_of(st.dictionaries(st.text(max_size=12), json_values, max_size=4), json_values),
        "patient": json_values,
        "user": json_values,
        "oauth": json_values,
        "extension": json_values,
    },
)


@budget("request_model")
@given(st.one_of(request_like, json_values))
def test_request_model_accepts_or_refuses_cleanly(body: Any) -> None:
    try:
        request = parse_request(body)
    except InvalidRequest:
        return
    assert isinstance(request, CdsRequest)
    assert isinstance(request.context.patientId, str)
    assert request.fhirServer is None or request.fhirServer.startswith(("http://", "https://"))
    repr(request)  # never raises, never shows the token


# ---------------------------------------------------------------- JSON and URLs


@budget("json")
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_bounded_json_decoding_accepts_or_refuses_cleanly(raw: bytes) -> None:
    try:
        value = loads_bounded(raw, max_depth=8)
    except JsonRejected:
        return
    json.dumps(value, allow_nan=False).encode("utf-8")  # whatever is accepted can be written back


url_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, auth, host, port, path: f"{scheme}://{auth}{host}{port}{path}",
        st.sampled_from(["http", "https", "HTTPS", "ftp", ""]),
        st.sampled_from(["", "u@", "u:p@", "ehr.test@"]),
        st.one_of(
            st.sampled_from(
                [
                    "ehr.test",
                    "EHR.test.",
                    "ehr.test.evil",
                    "127.0.0.1",
                    "0x7f.1",
                    "2130706433",
                    "[::1]",
                    "[::ffff:7f00:1]",
                ]
            ),
            st.text(max_size=12),
        ),
        st.sampled_from(["", ":443", ":80", ":8080", ":0", ":99999", ":x"]),
        st.one_of(
            st.sampled_from(
                ["", "/", "/fhir", "/fhir/", "/fhir-evil", "/fhir/../x", "/fhir/%2e%2e", "/fhir?x", "/fhir#f"]
            ),
            st.text(max_size=12),
        ),
    ),
)
ALLOW = UrlAllowList(["https://ehr.test/fhir"])


@budget("url")
@given(url_text)
def test_url_parsing_and_the_allow_list_are_consistent(text: str) -> None:
    try:
        url = parse_url(text)
    except UrlError:
        assert not ALLOW.allows(text)
        return
    assert url.scheme in ("http", "https")
    assert parse_url(str(url)) == url, "canonical form is stable"
    if ALLOW.allows(text):
        assert (url.scheme, url.host, url.port) == ("https", "ehr.test", 443)
        assert url.path == "/fhir" or url.path.startswith("/fhir/")
        assert "@" not in text.split("//", 1)[-1].split("/", 1)[0]


# ---------------------------------------------------------------- markdown escaping

MD = gfm()


@budget("escape")
@given(
    st.text(max_size=80)
    | st.text(alphabet="[]()<>`*_~|&@:/.\\!#-\n\r\t\u202e\u200bwhtp", max_size=60)
    | st.lists(
        st.sampled_from(
            [*TERMINOLOGY_SYSTEMS, "https://", "www.", ".evil", "|", "/", "@", " ", "(", ")", ":", ";", "x", "1"]
        )
    ).map("".join)
)
def test_escaped_text_renders_as_plain_text_in_one_cell(text: str) -> None:
    cell = escape(text)
    assert "\n" not in cell
    assert "\r" not in cell
    html = MD.render(table(("A", "B"), [(cell, "end")]))
    assert html.count("<tr>") == 2
    assert html.count("<td>") == 2, "the value stays in its cell"
    hrefs = re.findall(r'<a href="([^"]*)"', html)
    assert all(terminology_link(h) for h in hrefs), (text, hrefs)
    for tag in ("<img", "<script", "<code", "<em>", "<strong>", "<del>", "<h", "<br"):
        assert tag not in html.replace("<head", "").replace("<thead", ""), (text, tag)


# ---------------------------------------------------------------- the whole service

prefetch_values = st.one_of(
    json_values,
    st.builds(
        lambda r: {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": x} for x in r]},
        st.lists(junk_resource(), max_size=4),
    ),
    st.builds(
        lambda r: {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": x} for x in r]}, semi_valid
    ),
)
KEYS = [
    "patient",
    "conditions",
    "observations",
    "medicationStatements",
    "medicationRequests",
    "procedures",
    "allergies",
]


class Service:
    """The app with its lifespan running on a private event loop (hypothesis tests are synchronous)."""

    def __init__(self, settings_: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = create_app(settings_)
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self.lifespan.__aenter__())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://cds.test")

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, json=body))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.lifespan.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("props")
    settings_ = Settings(
        database_url=f"sqlite:///{tmp}/fb.sqlite3", as_of=AS_OF, auth_required=False, fhir_allowed_servers=[]
    )
    running = Service(settings_)
    yield running
    running.close()


@budget("service")
@given(st.dictionaries(st.sampled_from(KEYS), prefetch_values, max_size=7), st.one_of(st.none(), patient))
def test_service_answers_any_prefetch_with_200_400_or_412(service: Service, prefetch: dict[str, Any], pat: Any) -> None:
    if pat is not None:
        prefetch = {**prefetch, "patient": pat}
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/x", "patientId": PID},
        "prefetch": prefetch,
    }
    response = service.post("/cds-services/nct04582136-prescreen", body)
    assert response.status_code in (200, 400, 412), response.text
    payload = response.json()
    if response.status_code == 200:
        CdsResponse.model_validate(payload)
    else:
        assert payload["resourceType"] == "OperationOutcome"
