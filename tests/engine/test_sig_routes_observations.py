"""The readers behind the real-export shapes: sig text, the route table, Observation values, sex."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from cds.engine import observations, routes, sig
from cds.engine.definition import SNOMED, RouteClass
from cds.engine.sex import BIRTH_SEX_URL, US_CORE_SEX_URL, clinical_sex

R = RouteClass


@pytest.mark.parametrize(
    ("text", "mg", "count", "per_day", "as_needed"),
    [
        ("Take 2 tablets (10 mg total) by mouth daily", 10, None, 1, False),
        ("5 mg PO BID", 5, None, 2, False),
        ("Take 1 tablet by mouth three times daily", None, 1, 3, False),
        ("Inject 20 mg subcutaneously once weekly", 20, None, 1 / 7, False),
        ("1 tablet by mouth Monday, Wednesday and Friday", None, 1, 3 / 7, False),
        ("Take 1 tablet by mouth every 8 hours as needed for pain", None, 1, 3, True),
        ("Take 1 tablet (200 mg) by mouth twice a day", 200, None, 2, False),
        ("500 mg every other day", 500, None, 0.5, False),
    ],
)
def test_sig_parses_unambiguous_text(
    text: str, mg: float | None, count: float | None, per_day: float, as_needed: bool
) -> None:
    parsed = sig.parse(text)
    assert parsed is not None
    assert parsed.problem is None
    assert parsed.mg_per_admin == mg
    assert parsed.count_per_admin == count
    assert parsed.per_day == pytest.approx(per_day, abs=1e-6)
    assert parsed.as_needed is as_needed


@pytest.mark.parametrize(
    "text",
    [
        "Take 1-2 tablets by mouth daily",
        "Take as directed",
        "Take 4 tablets daily for 5 days then 3 tablets daily",
        "Take 1 tablet daily or twice daily",
        "Take 2 tablets 5 mg by mouth daily",
        "10 mg in the morning and 5 mg at night",
        "prednisone taper",
        "Take 1 tablet by mouth up to twice daily",
    ],
)
def test_ambiguous_sig_leaves_the_dose_unknown(text: str) -> None:
    parsed = sig.parse(text)
    assert parsed is not None
    assert parsed.problem is not None


@pytest.mark.parametrize(
    ("system", "code", "route"),
    [
        (SNOMED, "26643006", R.ORAL),
        (SNOMED, "47625008", R.INTRAVENOUS),
        (SNOMED, "34206005", R.OTHER_SYSTEMIC),
        (SNOMED, "78421000", R.OTHER_SYSTEMIC),
        (SNOMED, "6064005", R.TOPICAL),
        (SNOMED, "54485002", R.OPHTHALMIC),
        (SNOMED, "447694001", R.INHALED),
        (SNOMED, "37161004", R.RECTAL),
        (SNOMED, "46713006", R.NASAL),
        (routes.V3_ROUTE, "PO", R.ORAL),
        (routes.V3_ROUTE, "IV", R.INTRAVENOUS),
        (routes.V3_ROUTE, "IVINJ", R.INTRAVENOUS),
        (routes.V3_ROUTE, "IVPUSH", R.INTRAVENOUS),
        (routes.V3_ROUTE, "SQ", R.OTHER_SYSTEMIC),
        (routes.V3_ROUTE, "SC", R.OTHER_SYSTEMIC),
        (routes.V3_ROUTE, "IM", R.OTHER_SYSTEMIC),
        (routes.V3_ROUTE, "TOPICAL", R.TOPICAL),
        (routes.V3_ROUTE, "OPTHALTA", R.OPHTHALMIC),
        (routes.V3_ROUTE, "IPINHL", R.INHALED),
        (routes.V3_ROUTE, "NASINHL", R.NASAL),
        ("urn:oid:1.2.3", "15", R.UNKNOWN),  # a local code means nothing by itself
    ],
)
def test_route_table_codes(system: str, code: str, route: RouteClass) -> None:
    assert routes.classify_coding(system, code) is route


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Subcutaneous", R.OTHER_SYSTEMIC),
        ("subcutaneous injection", R.OTHER_SYSTEMIC),
        ("Intramuscular", R.OTHER_SYSTEMIC),
        ("IM", R.OTHER_SYSTEMIC),
        ("Oral", R.ORAL),
        ("by mouth", R.ORAL),
        ("Intravenous", R.INTRAVENOUS),
        ("IV Push", R.INTRAVENOUS),
        ("Topical", R.TOPICAL),
        ("Cutaneous", R.TOPICAL),
        ("Ophthalmic", R.OPHTHALMIC),
        ("Inhalation", R.INHALED),
        ("Nasal", R.NASAL),
        ("Rectal", R.RECTAL),
        ("Vaginal", R.OTHER_LOCAL),
        ("methylprednisolone 40 MG/ML Injectable Suspension", R.INTRAVENOUS),
        ("tacrolimus 1 MG Oral Capsule", R.ORAL),
        ("something", R.UNKNOWN),
    ],
)
def test_route_table_text(text: str, route: RouteClass) -> None:
    assert routes.classify_text(text) is route


def test_route_code_wins_over_its_display() -> None:
    route = CodeableConcept.model_validate(
        {"coding": [{"system": SNOMED, "code": "34206005", "display": "Subcutaneous route"}], "text": "SubQ"}
    )
    assert routes.classify(route) is R.OTHER_SYSTEMIC


def _obs(**value: Any) -> Any:
    return Observation.model_validate(
        {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **value}
    )


@pytest.mark.parametrize(
    ("value", "number", "comparator", "unit", "qualitative"),
    [
        ({"valueQuantity": {"value": 5.2, "unit": "K/uL"}}, 5.2, None, "10*3/uL", None),
        ({"valueString": ">60"}, 60, ">", None, None),
        ({"valueString": "<0.5 mg/dL"}, 0.5, "<", "mg/dL", None),
        ({"valueString": "POSITIVE"}, None, None, None, "positive"),
        ({"valueString": "Not Detected"}, None, None, None, "negative"),
        ({"valueInteger": 12}, 12, None, None, None),
        ({"valueBoolean": False}, None, None, None, "negative"),
        ({"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260373001"}]}}, None, None, None, "positive"),
        ({"valueCodeableConcept": {"text": "Negative"}}, None, None, None, "negative"),
    ],
)
def test_observation_value_shapes(
    value: dict[str, Any], number: float | None, comparator: str | None, unit: str | None, qualitative: str | None
) -> None:
    raw = observations.read_value(_obs(**value))
    assert (raw.number, raw.comparator, raw.unit, raw.qualitative) == (number, comparator, unit, qualitative)


def test_observation_shape_not_understood_has_a_problem() -> None:
    assert observations.read_value(_obs(valueString="see comment")).problem is not None
    assert observations.read_value(_obs(valueRange={"low": {"value": 1}})).problem is not None
    assert observations.read_value(_obs(valueString="1,200")).problem is not None


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("7-56", (7, None), (56, None)),
        ("0.0-1.2 mg/dL", (0.0, "mg/dL"), (1.2, "mg/dL")),
        ("<40", None, (40, None)),
        (">= 60 mL/min/1.73m2", (60, "mL/min/{1.73_m2}"), None),
        ("3.5 - 5.0", (3.5, None), (5.0, None)),
    ],
)
def test_reference_range_text_forms(text: str, low: Any, high: Any) -> None:
    bounds = observations.parse_range_text(text)
    assert bounds is not None
    assert (bounds.low, bounds.high) == (low, high)


def test_reference_range_text_not_a_range() -> None:
    assert observations.parse_range_text("Negative") is None
    assert observations.parse_range_text("10-5") is None


def _patient(**fields: Any) -> Any:
    return Patient.model_validate({"resourceType": "Patient", "id": "p", **fields})


def test_clinical_sex_agreement_and_conflict() -> None:
    assert clinical_sex(_patient(gender="male")).sex == "male"
    both = _patient(gender="male", extension=[{"url": BIRTH_SEX_URL, "valueCode": "M"}])
    assert clinical_sex(both).sex == "male"
    conflict = clinical_sex(_patient(gender="male", extension=[{"url": BIRTH_SEX_URL, "valueCode": "F"}]))
    assert conflict.sex is None
    assert conflict.conflicting
    us_core = _patient(extension=[{"url": US_CORE_SEX_URL, "valueCode": "248152002"}])
    assert clinical_sex(us_core).sex == "female"
    assert clinical_sex(_patient(gender="unknown")).sex is None
