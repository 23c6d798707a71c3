"""The one FHIR-JSON home: references (relative, absolute, versioned, urn:uuid), bundle entries,
dates and instants, codings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from cds import fhirjson
from cds.fhirjson import (
    Entry,
    bundle_entries,
    codes,
    coding_pairs,
    has_coding,
    parse_instant,
    reference_target,
    referenced_patient,
    refers_to_patient,
    resolve_local_references,
    span,
    subject_patient,
    token_match,
    with_local_ids,
)

URN = "urn:uuid:0b9f0d6e-1111-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/p1", ("Patient", "p1")),
        ("Patient/p1/_history/3", ("Patient", "p1")),
        ("https://ehr.test/fhir/Patient/p1", ("Patient", "p1")),
        ("https://ehr.test/fhir/Patient/p1/_history/2", ("Patient", "p1")),
        ("Medication/m-1", ("Medication", "m-1")),
        ("#contained", None),
        ("Patient?identifier=x|1", None),
        (URN, None),
        ("p1", None),
        ("patient/p1", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_reference_target(reference: object, expected: tuple[str, str] | None) -> None:
    assert reference_target(reference) == expected


def test_urn_uuid_references_resolve_through_the_bundle_full_urls() -> None:
    index = {URN: "Patient/p9"}
    assert reference_target(URN, index) == ("Patient", "p9")
    assert referenced_patient({"reference": URN}, index) == "p9"
    assert refers_to_patient({"reference": URN}, "p9", index)
    assert not refers_to_patient({"reference": URN}, "p9")


def test_subject_patient_reads_the_first_reference_field() -> None:
    assert subject_patient({"resourceType": "Patient", "id": "p1"}) == "p1"
    assert subject_patient({"resourceType": "Condition", "subject": {"reference": "Patient/p2"}}) == "p2"
    assert subject_patient({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p3"}}) == "p3"
    assert subject_patient({"resourceType": "Observation", "subject": {"reference": "Group/g"}}) is None
    assert subject_patient({"resourceType": "Observation", "subject": {"display": "no ref"}}) is None


def test_bundle_entries_skip_outcomes_and_count_junk() -> None:
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": URN, "resource": {"resourceType": "Patient"}},
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
            "junk",
            {"fullUrl": "x"},
        ],
    }
    entries, malformed = bundle_entries(bundle)
    assert entries == [Entry(URN, {"resourceType": "Patient"})]
    assert malformed == 2
    assert bundle_entries({"entry": "nope"}) == ([], 1)
    assert bundle_entries({}) == ([], 0)


def test_local_ids_and_reference_rewriting_copy_only_what_changes() -> None:
    shared = {"code": {"text": "x"}}
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": URN}, "note": shared}
    entries, index = with_local_ids([Entry(URN, {"resourceType": "Patient"}), Entry(None, condition)])
    pid = URN.removeprefix("urn:uuid:")
    assert entries[0].resource == {"resourceType": "Patient", "id": pid}
    assert index == {URN: f"Patient/{pid}"}
    resolved = resolve_local_references(condition, fhirjson.urn_index(index))
    assert resolved["subject"] == {"reference": f"Patient/{pid}"}
    assert resolved["note"] is shared
    assert condition["subject"] == {"reference": URN}
    unchanged = {"resourceType": "Condition", "subject": {"reference": "Patient/x"}}
    assert resolve_local_references(unchanged, index) is unchanged


@pytest.mark.parametrize(
    ("value", "earliest", "latest"),
    [
        ("1973", date(1973, 1, 1), date(1973, 12, 31)),
        ("2024-02", date(2024, 2, 1), date(2024, 2, 29)),
        ("2024-05-01", date(2024, 5, 1), date(2024, 5, 1)),
        ("2024-05-01T23:30:00+08:00", date(2024, 5, 1), date(2024, 5, 1)),
        ("2024-05-01T00:10:00-05:00", date(2024, 5, 1), date(2024, 5, 1)),
        (date(2020, 1, 2), date(2020, 1, 2), date(2020, 1, 2)),
    ],
)
def test_span_keeps_the_local_day_and_widens_partial_dates(value: object, earliest: date, latest: date) -> None:
    when = span(value)
    assert when is not None
    assert (when.earliest, when.latest) == (earliest, latest)


@pytest.mark.parametrize("value", ["2024-13", "yesterday", "", None, 5])
def test_span_of_junk_is_none(value: object) -> None:
    assert span(value) is None


def test_parse_instant_needs_a_timezone() -> None:
    assert parse_instant("2026-03-01T10:00:00Z") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    got = parse_instant("2026-03-01T10:00:00.250+02:00")
    assert got is not None
    assert got.utcoffset() == timedelta(hours=2)
    assert got.astimezone(UTC).hour == 8
    for bad in ("2026-03-01T10:00:00", "2026-03-01", "2026-03-01T25:00:00Z", None):
        assert parse_instant(bad) is None


def test_codings() -> None:
    concept = {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}, {"code": "M32.9"}, "junk"]}
    assert codes(concept) == {"55464009", "M32.9"}
    assert coding_pairs([concept, {"coding": "x"}]) == {("http://snomed.info/sct", "55464009")}
    assert has_coding(concept, {("http://snomed.info/sct", "55464009")})
    assert not has_coding(concept, {("http://loinc.org", "55464009")})
    assert has_coding([concept], {(None, "M32.9")})
    assert token_match([concept], ["http://snomed.info/sct|55464009"])
    assert token_match([concept], ["M32.9"])
    assert not token_match([concept], ["http://hl7.org/fhir/sid/icd-10-cm|M32.9"])


def _composed(bundle: dict[str, Any]) -> tuple[list[Any], int]:
    """`searchset_resources` as the composition of the entry helpers it fuses."""
    entries, malformed = bundle_entries(bundle)
    typed = [e for e in entries if not fhirjson.is_operation_outcome(e.resource)]
    kept = [e for e in typed if fhirjson.resource_type(e.resource) is not None]
    kept, index = with_local_ids(kept)
    urns = fhirjson.urn_index(index)
    return [resolve_local_references(e.resource, urns) for e in kept], malformed + len(typed) - len(kept)


ODD_BUNDLES: list[dict[str, Any]] = [
    {},
    {"entry": None},
    {"entry": {}},
    {"entry": [1, None, {"resource": []}, {"fullUrl": "x"}, {"search": "x", "resource": {"resourceType": "Patient"}}]},
    {
        "entry": [
            {"fullUrl": URN, "resource": {"resourceType": "Patient"}},
            {"fullUrl": "urn:uuid:", "resource": {"resourceType": "Patient"}},
            {"fullUrl": URN, "resource": {"resourceType": "Patient", "id": "later"}},
            {"fullUrl": "https://h/fhir/Patient/z", "resource": {"resourceType": "Patient", "id": "z"}},
            {"resource": {"resourceType": "Condition", "subject": {"reference": URN}, "note": [{"reference": URN}]}},
            {"resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:unknown"}}},
            {"resource": {"resourceType": "OperationOutcome"}},
            {"resource": {"resourceType": "Condition", "id": "o"}, "search": {"mode": "outcome"}},
            {"resource": {"id": "untyped"}},
            {"resource": {"resourceType": ""}},
            {"resource": {"resourceType": 3}},
            {"fullUrl": 5, "resource": {"resourceType": "Observation", "id": "o5"}},
        ]
    },
    {
        "entry": [
            MappingProxyType({"fullUrl": URN, "resource": MappingProxyType({"resourceType": "Patient"})}),
            {
                "resource": MappingProxyType(
                    {"resourceType": "Condition", "subject": MappingProxyType({"reference": URN})}
                )
            },
            {"resource": {"resourceType": "Condition", "id": "c"}, "search": MappingProxyType({"mode": "outcome"})},
        ]
    },
]


@pytest.mark.parametrize("bundle", ODD_BUNDLES)
def test_searchset_resources_is_the_composition_of_the_entry_helpers(bundle: dict[str, Any]) -> None:
    assert fhirjson.searchset_resources(bundle) == _composed(bundle)


def test_searchset_resources_resolves_urn_references_and_counts_junk() -> None:
    resources, malformed = fhirjson.searchset_resources(ODD_BUNDLES[4])
    pid = URN.removeprefix("urn:uuid:")
    assert [r.get("id") for r in resources] == [pid, "", "later", "z", None, None, "o5"]
    assert resources[4]["subject"] == {"reference": "Patient/later"}  # the last entry with that fullUrl wins
    assert resources[4]["note"] == [{"reference": "Patient/later"}]
    assert resources[5]["subject"] == {"reference": "urn:uuid:unknown"}
    assert malformed == 3
    assert fhirjson.searchset_resources({"entry": "nope"}) == ([], 1)


def test_is_mapping_accepts_dicts_and_other_mappings() -> None:
    assert fhirjson.is_mapping({})
    assert fhirjson.is_mapping(MappingProxyType({"a": 1}))
    assert not fhirjson.is_mapping([("a", 1)])
    assert fhirjson.resource_type(MappingProxyType({"resourceType": "Patient"})) == "Patient"
    assert fhirjson.resource_id(MappingProxyType({"id": "p"})) == "p"
