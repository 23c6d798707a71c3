"""The patient's record: raw FHIR R4 JSON validated into `fhir.resources.R4B` models at the boundary.

Only this module builds FHIR models. A resource that is not valid FHIR, of a type the engine does
not read, or about another patient is dropped and listed as a `DataIssue` (with its reference and
the kind of problem, never its content). `searched` holds the resource types whose data was actually
obtained (queried, even if empty): criteria whose data domain was not searched are `unknown`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from cds.engine.model import MEDICATION_TYPES as MEDICATION_TYPES  # the medication resource types
from cds.engine.model import DataIssue, DataIssueKind
from cds.fhirjson import refers_to_patient

READ_TYPES: tuple[str, ...] = (
    "Patient",
    "Condition",
    "Observation",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "MedicationDispense",
    "Procedure",
    "AllergyIntolerance",
    "DiagnosticReport",
    "QuestionnaireResponse",  # a SLEDAI-2K form (item scores or a total)
)
# Medication resources are read only as the target of a medicationReference.
AUX_TYPES: tuple[str, ...] = ("Medication",)

# Where each resource type points at its patient (also used to check prefetch).
SUBJECT_FIELD = {
    "Condition": "subject",
    "Observation": "subject",
    "MedicationStatement": "subject",
    "MedicationRequest": "subject",
    "MedicationAdministration": "subject",
    "MedicationDispense": "subject",
    "Procedure": "subject",
    "AllergyIntolerance": "patient",
    "DiagnosticReport": "subject",
    "QuestionnaireResponse": "subject",
}


@dataclass
class PatientRecord:
    patient_id: str
    patient: Any | None = None
    resources: dict[str, list[Any]] = field(default_factory=lambda: {t: [] for t in READ_TYPES})
    medications: dict[str, Any] = field(default_factory=dict)  # "Medication/<id>" -> model
    searched: frozenset[str] = frozenset()
    issues: list[DataIssue] = field(default_factory=list)
    # Resources received per type (about this patient), before the pre-filter kept what the
    # criteria can read: what "N searched" evidence counts.
    received: dict[str, int] = field(default_factory=dict)
    # Activity dates of medication resources the pre-filter did not validate (no criterion's drug):
    # they still tell whether the medication list is current (`facts.medication_activity_dates`).
    medication_activity: list[date] = field(default_factory=list)
    # Facts derived from the whole record once (e.g. the DiagnosticReport index); engine-internal.
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def of(self, resource_type: str) -> list[Any]:
        return self.resources.get(resource_type, [])

    def count(self, resource_type: str) -> int:
        """How many resources of the type were received for this patient (kept or not)."""
        return self.received.get(resource_type, 0)

    def has_searched(self, *types: str) -> bool:
        return all(t in self.searched for t in types)

    def has_searched_any(self, *types: str) -> bool:
        return any(t in self.searched for t in types)


def _ref_of(raw: Mapping[str, Any]) -> str:
    rtype = raw.get("resourceType")
    rid = raw.get("id")
    rtype_s = rtype if isinstance(rtype, str) and rtype.isascii() and len(rtype) < 64 else "Resource"
    if isinstance(rid, str) and 0 < len(rid) <= 64 and rid.replace("-", "").replace(".", "").isalnum():
        return f"{rtype_s}/{rid}"
    return f"{rtype_s}/(no valid id)"


def about_patient(raw: Mapping[str, Any], patient_id: str) -> bool:
    """Whether a resource's patient field (`SUBJECT_FIELD`) names this patient (types without one: True)."""
    key = SUBJECT_FIELD.get(str(raw.get("resourceType")))
    return key is None or refers_to_patient(raw.get(key), patient_id)


def _validation_problem(rtype: str, err: ValidationError) -> str:
    locs = sorted({".".join(str(p) for p in e["loc"][:2]) for e in err.errors()[:5]})
    return f"not valid FHIR R4 {rtype} (fields: {', '.join(locs) or '?'})"


def build_record(
    resources: Iterable[Mapping[str, Any]],
    *,
    patient_id: str,
    searched: Collection[str] | None = None,
    keep: Callable[[str, Mapping[str, Any]], bool] | None = None,
) -> PatientRecord:
    """Validate raw resources into a PatientRecord.

    `keep(type, raw)` may drop resources the criteria cannot use before models are built (a cheap
    pre-filter on raw codes); dropped resources are not data issues.
    """
    record = PatientRecord(patient_id=patient_id)
    present: set[str] = set()
    for raw in resources:
        if not isinstance(raw, Mapping):
            record.issues.append(
                DataIssue("Resource/(not an object)", "not a JSON object", DataIssueKind.NOT_JSON_OBJECT)
            )
            continue
        rtype = raw.get("resourceType")
        if rtype not in READ_TYPES and rtype not in AUX_TYPES:
            unsupported = rtype if isinstance(rtype, str) and rtype.isascii() and len(rtype) < 64 else None
            record.issues.append(
                DataIssue(
                    _ref_of(raw), "resource type not read by this service", DataIssueKind.UNSUPPORTED_TYPE, unsupported
                )
            )
            continue
        assert isinstance(rtype, str)
        if rtype == "Patient":
            if raw.get("id") != patient_id:
                record.issues.append(
                    DataIssue(_ref_of(raw), "Patient resource for another patient", DataIssueKind.WRONG_PATIENT, rtype)
                )
                continue
        elif rtype != "Medication" and not about_patient(raw, patient_id):
            record.issues.append(DataIssue(_ref_of(raw), "not about this patient", DataIssueKind.WRONG_PATIENT, rtype))
            continue
        present.add(rtype)
        record.received[rtype] = record.received.get(rtype, 0) + 1
        if keep is not None and not keep(rtype, raw):
            continue
        try:
            model = get_fhir_model_class(rtype).model_validate(raw)
        except ValidationError as err:
            record.issues.append(
                DataIssue(_ref_of(raw), _validation_problem(rtype, err), DataIssueKind.INVALID_FHIR, rtype)
            )
            continue
        except (TypeError, ValueError, RecursionError):
            record.issues.append(
                DataIssue(_ref_of(raw), f"not valid FHIR R4 {rtype}", DataIssueKind.INVALID_FHIR, rtype)
            )
            continue
        if rtype == "Patient":
            record.patient = model
        elif rtype == "Medication":
            med_id = getattr(model, "id", None)
            if med_id:
                record.medications[f"Medication/{med_id}"] = model
        else:
            record.resources[rtype].append(model)
    record.searched = frozenset(searched) if searched is not None else frozenset(present)
    return record
