"""cds.bundles: real export shapes (directories, transaction bundles with urn:uuid, Bulk Data NDJSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cds.bundles import BundleContents, InputError, input_files, read_inputs, skipped_summary, split_bundle
from cds.errors import InputFileError

P1 = "11111111-1111-4111-8111-111111111111"
P2 = "22222222-2222-4222-8222-222222222222"
MED = "33333333-3333-4333-8333-333333333333"
SNOMED = "http://snomed.info/sct"


def _write_ndjson(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources), encoding="utf-8")
    return path


def _patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "birthDate": "1990-01-01", "gender": "female", **extra}


def _condition(cid: str, patient_ref: str, code: str = "55464009") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "onsetDateTime": "2020-01-01",
    }


def _contents(results: list[BundleContents | InputError]) -> list[BundleContents]:
    return [r for r in results if isinstance(r, BundleContents)]


def test_transaction_bundle_urn_uuid_references_are_resolved_to_type_and_id() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{P1}", "resource": {"resourceType": "Patient"}, "request": {"method": "POST"}},
            {"fullUrl": f"urn:uuid:{MED}", "resource": {"resourceType": "Medication", "id": "m1"}},
            {
                "fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444",
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "mr1",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": f"urn:uuid:{P1}"},
                    "medicationReference": {"reference": f"urn:uuid:{MED}"},
                    "requester": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"},
                },
            },
        ],
    }
    contents = split_bundle(bundle, source="tx.json")
    (patient,) = contents.patients
    assert patient.patient_id == P1  # an entry without an id takes its urn:uuid
    by_type = {r["resourceType"]: r for r in patient.resources}
    assert by_type["Patient"]["id"] == P1
    request = by_type["MedicationRequest"]
    assert request["subject"] == {"reference": f"Patient/{P1}"}
    assert request["medicationReference"] == {"reference": "Medication/m1"}
    # references that name no entry of the bundle are left as they are
    assert request["requester"]["reference"].startswith("Practitioner?identifier=")
    assert contents.unassigned == 0


def test_transaction_bundle_reference_to_a_patient_outside_the_bundle_is_unassigned() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{P1}", "resource": _patient(P1)},
            {"fullUrl": "urn:uuid:c", "resource": _condition("c1", f"urn:uuid:{P2}")},
        ],
    }
    contents = split_bundle(bundle)
    assert contents.unassigned == 1
    assert [r["resourceType"] for r in contents.patients[0].resources] == ["Patient"]


def test_ndjson_export_groups_each_patient_across_files(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "Patient.ndjson", [_patient("a"), _patient("b")])
    _write_ndjson(
        tmp_path / "Condition.ndjson", [_condition("c1", "Patient/a"), _condition("c2", "Patient/b", "38341003")]
    )
    _write_ndjson(tmp_path / "Encounter.ndjson", [{"resourceType": "Encounter", "id": f"e{i}"} for i in range(5)])
    (contents,) = _contents(list(read_inputs([tmp_path])))
    resources = {p.patient_id: sorted(r.get("id", "") for r in p.resources) for p in contents.patients}
    assert resources == {"a": ["a", "c1"], "b": ["b", "c2"]}
    assert contents.searched == frozenset({"Patient", "Condition"})
    assert contents.skipped == {str(tmp_path / "Encounter.ndjson"): {"Encounter": 5}}


def test_ndjson_files_of_different_directories_are_different_exports(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        _write_ndjson(tmp_path / name / "Patient.ndjson", [_patient(f"p-{name}")])
    results = _contents(list(read_inputs([tmp_path])))
    assert [[p.patient_id for p in c.patients] for c in results] == [["p-one"], ["p-two"]]


def test_ndjson_bad_line_names_the_file_and_marks_its_type_incomplete(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "Patient.ndjson", [_patient("a")])
    bad = tmp_path / "Condition.ndjson"
    bad.write_text(json.dumps(_condition("c1", "Patient/a")) + "\n{broken\n", encoding="utf-8")
    results = list(read_inputs([tmp_path]))
    errors = [r for r in results if isinstance(r, InputError)]
    (contents,) = _contents(results)
    (error,) = errors
    assert f"{bad}:2" in error.message
    assert "Condition" in error.message
    assert contents.incomplete == frozenset({"Condition"})


def test_ndjson_bad_file_of_unknown_type_marks_every_clinical_type_incomplete(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "Patient.ndjson", [_patient("a")])
    (tmp_path / "export-part-7.ndjson").write_text('{"no": "resourceType"}\n', encoding="utf-8")
    (contents,) = _contents(list(read_inputs([tmp_path])))
    assert {"Condition", "Observation", "MedicationRequest", "Procedure"} <= contents.incomplete
    assert "Patient" not in contents.incomplete


def test_ndjson_export_without_patients_is_an_error(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "Condition.ndjson", [_condition("c1", "Patient/a")])
    (error,) = list(read_inputs([tmp_path]))
    assert isinstance(error, InputError)
    assert "no Patient resource in the NDJSON export" in error.message


def test_directory_is_read_recursively_json_and_ndjson_only(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "x.json").write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _patient("x")}]}),
        encoding="utf-8",
    )
    _write_ndjson(tmp_path / "a" / "Patient.ndjson", [_patient("y")])
    (tmp_path / "notes.txt").write_text("not FHIR", encoding="utf-8")
    assert [p.relative_to(tmp_path).as_posix() for p in input_files([tmp_path])] == [
        "a/Patient.ndjson",
        "a/b/x.json",
    ]
    ids = sorted(p.patient_id for c in _contents(list(read_inputs([tmp_path]))) for p in c.patients)
    assert ids == ["x", "y"]


def test_lone_resource_of_an_unread_type_is_skipped_not_an_error(tmp_path: Path) -> None:
    """Synthea's Bulk Data output has a `parameters.json` (a Parameters import manifest)."""
    path = tmp_path / "parameters.json"
    path.write_text(json.dumps({"resourceType": "Parameters", "parameter": []}), encoding="utf-8")
    (contents,) = list(read_inputs([path]))
    assert isinstance(contents, BundleContents)
    assert contents.patients == []
    assert contents.skipped == {str(path): {"Parameters": 1}}


def test_lone_resource_of_a_read_type_is_still_not_a_bundle(tmp_path: Path) -> None:
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(_patient("a")), encoding="utf-8")
    (error,) = list(read_inputs([path]))
    assert isinstance(error, InputError)
    assert "not a FHIR Bundle" in error.message


def test_skipped_summary_is_one_line_sorted_by_count() -> None:
    line = skipped_summary("f.json", {"Claim": 3, "Encounter": 50, "CarePlan": 3})
    assert "\n" not in line
    assert line == (
        "note: f.json: skipped 56 resource(s) of types not read by this service (Encounter 50, CarePlan 3, Claim 3)"
    )


def test_bundle_entry_not_a_list_is_an_input_error() -> None:
    with pytest.raises(InputFileError, match=r"Bundle\.entry is not a list"):
        split_bundle({"resourceType": "Bundle", "type": "collection", "entry": {}})


def test_ndjson_shared_medication_goes_only_to_patients_referencing_it(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "Patient.ndjson", [_patient("a"), _patient("b")])
    _write_ndjson(
        tmp_path / "Medication.ndjson",
        [{"resourceType": "Medication", "id": "m1"}, {"resourceType": "Medication", "id": "m2"}],
    )
    _write_ndjson(
        tmp_path / "MedicationRequest.ndjson",
        [
            {
                "resourceType": "MedicationRequest",
                "id": "mr1",
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/a"},
                "medicationReference": {"reference": "Medication/m1"},
            }
        ],
    )
    (contents,) = _contents(list(read_inputs([tmp_path])))
    ids = {p.patient_id: sorted(r["id"] for r in p.resources) for p in contents.patients}
    assert ids == {"a": ["a", "m1", "mr1"], "b": ["b"]}
    assert "Medication" in contents.searched


@pytest.mark.parametrize(
    "name", ["Condition.ndjson", "Condition-2.ndjson", "Condition_2.ndjson", "Condition.002.ndjson"]
)
def test_ndjson_bad_file_type_is_taken_from_bulk_data_file_names(tmp_path: Path, name: str) -> None:
    _write_ndjson(tmp_path / "Patient.ndjson", [_patient("a")])
    (tmp_path / name).write_text("{broken\n", encoding="utf-8")
    (contents,) = _contents(list(read_inputs([tmp_path])))
    assert contents.incomplete == frozenset({"Condition"})
