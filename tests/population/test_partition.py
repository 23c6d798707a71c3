"""Grouping NDJSON by patient: references, shared Medications, partitions, orphans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.errors import InputFileError
from cds.fhirjson import subject_patient as patient_of
from cds.population.partition import (
    MEDICATIONS_FILE,
    group_partition,
    load_medications,
    partition_files,
    partition_of,
)


def write_ndjson(path: Path, resources: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return path


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({"resourceType": "Patient", "id": "p1"}, "p1"),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "Observation", "subject": {"reference": "http://x/fhir/Patient/p1/_history/3"}}, "p1"),
        ({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "Condition", "subject": {"reference": "Group/g1"}}, None),
        ({"resourceType": "Condition"}, None),
        ({"resourceType": "Patient"}, None),
    ],
)
def test_patient_of(resource: dict[str, object], expected: str | None) -> None:
    assert patient_of(resource) == expected


def test_partition_is_stable_and_in_range() -> None:
    ks = {partition_of(f"p{i}", 7) for i in range(200)}
    assert ks == set(range(7))
    assert partition_of("abc", 7) == partition_of("abc", 7)


def test_partition_and_group_keep_each_patient_whole_and_share_medications(tmp_path: Path) -> None:
    resources: list[dict[str, object]] = []
    for i in range(30):
        pid = f"p{i}"
        resources.append({"resourceType": "Patient", "id": pid})
        resources.append({"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/{pid}"}})
        resources.append(
            {
                "resourceType": "MedicationRequest",
                "id": f"mr{i}",
                "subject": {"reference": f"Patient/{pid}"},
                "medicationReference": {"reference": f"Medication/m{i % 2}"},
            }
        )
    resources.append({"resourceType": "Medication", "id": "m0"})
    resources.append({"resourceType": "Medication", "id": "m1"})
    resources.append({"resourceType": "Condition", "id": "orphan", "subject": {"reference": "Patient/nobody"}})
    resources.append({"resourceType": "Condition", "id": "loose"})
    src = write_ndjson(tmp_path / "in.ndjson", resources)

    summary = partition_files([src], tmp_path / "parts", 4)
    assert (summary.patients, summary.medications, summary.unassigned) == (30, 2, 1)
    meds = load_medications(tmp_path / "parts" / MEDICATIONS_FILE)
    assert set(meds) == {"Medication/m0", "Medication/m1"}

    seen: dict[str, list[str]] = {}
    orphans = 0
    for part in summary.files:
        patients, n = group_partition(part, meds)
        orphans += n
        assert [pid for pid, _ in patients] == sorted(pid for pid, _ in patients)
        for pid, records in patients:
            seen[pid] = sorted(f"{r['resourceType']}/{r['id']}" for r in records)
    assert orphans == 1
    assert len(seen) == 30
    assert seen["p3"] == ["Condition/c3", "Medication/m1", "MedicationRequest/mr3", "Patient/p3"]


def test_bad_ndjson_line_is_reported_with_its_number(tmp_path: Path) -> None:
    src = tmp_path / "bad.ndjson"
    src.write_text('{"resourceType": "Patient", "id": "a"}\n{oops\n')
    with pytest.raises(InputFileError, match="line 2 is not valid JSON"):
        partition_files([src], tmp_path / "parts", 2)
