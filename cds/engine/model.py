"""The engine's output: three-valued criterion results with evidence, and the report.

These are plain, immutable dataclasses with a stable JSON form (`to_json`). The JSON form is the
machine-readable report that the CLI prints and that cards carry in their `extension`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from typing import Any


class Status(enum.StrEnum):
    """Result of one criterion. For exclusions, MET means the exclusion applies."""

    MET = "met"
    NOT_MET = "not_met"
    UNKNOWN = "unknown"


class Kind(enum.StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"


class Verdict(enum.StrEnum):
    """Overall prescreen outcome. Never "eligible": the decision is the investigator's."""

    EXCLUDED = "excluded"
    LIKELY_CANDIDATE = "likely-candidate"
    POSSIBLE_CANDIDATE = "possible-candidate"


class Flag(enum.StrEnum):
    """Qualifiers attached to a piece of evidence."""

    ULN_ASSUMED = "ULN_ASSUMED"  # no referenceRange: a configured site default was used
    LLN_ASSUMED = "LLN_ASSUMED"
    DERIVED = "DERIVED"  # computed (e.g. eGFR from creatinine, dose from tablets x strength)
    COMPARATOR = "COMPARATOR"  # the value carried a comparator (<, >, <=, >=)
    PRELIMINARY = "PRELIMINARY"  # preliminary result: used only to flag review
    PROXY = "PROXY"  # a coded diagnosis used as proxy (e.g. for SLICC)
    NEEDS_REVIEW = "NEEDS_REVIEW"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One fact a criterion result rests on.

    `reference` is a FHIR relative reference ("Observation/abc") or, for facts that are not a
    single resource (e.g. "no Procedure records"), a short description of the data searched.
    """

    reference: str
    description: str
    value: str | None = None  # number as text, exactly as used (after conversion)
    unit: str | None = None  # UCUM unit of `value`
    date: str | None = None  # ISO date or partial date the fact refers to
    original: str | None = None  # the value as recorded, before unit conversion
    flags: tuple[Flag, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.reference, "description": self.description}
        for key in ("value", "unit", "date", "original"):
            v = getattr(self, key)
            if v is not None and v != "":
                out[key] = v
        if self.flags:
            out["flags"] = [f.value for f in self.flags]
        return out


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of a score or classification computed from the chart (a SLICC 2012 criterion, a
    SLEDAI-2K descriptor), so the investigator sees what was found and what is missing.

    `group` is the item's family: "clinical" / "immunologic" for SLICC, the organ domain
    ("renal", "hematologic", "constitutional") for SLEDAI. `points` is the item's weight when it
    has one (SLEDAI); it counts only when `status` is met.
    """

    id: str
    label: str
    group: str
    status: Status
    reason: str
    evidence: tuple[Evidence, ...] = ()
    points: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "group": self.group,
            "status": self.status.value,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.points is not None:
            out["points"] = self.points
        return out


@dataclass(frozen=True, slots=True)
class CriterionResult:
    id: str
    kind: Kind
    status: Status
    reason: str
    evidence: tuple[Evidence, ...] = ()
    title: str = ""
    settleable: bool = True  # False only for criteria no data can settle (investigator judgment)
    items: tuple[ItemResult, ...] = ()  # computed items behind the result (SLICC, SLEDAI), if any
    # The resource types the result depends on, sorted: the rule's declared reads (`Trial.reads_of`),
    # or fewer when the rule knows its outcome rests on fewer (`Outcome.depends_on`). Empty: not
    # known (e.g. a result built by hand), never "depends on nothing". Not in the JSON form.
    depends_on: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "status": self.status.value,
            "reason": self.reason,
            "evidence": [e.to_json() for e in self.evidence],
        }
        if self.title:
            out["title"] = self.title
        if self.items:
            out["items"] = [i.to_json() for i in self.items]
        return out

    @property
    def fails(self) -> bool:
        """True when this result rules the patient out."""
        if self.kind is Kind.INCLUSION:
            return self.status is Status.NOT_MET
        return self.status is Status.MET

    @property
    def favourable(self) -> bool:
        if self.kind is Kind.INCLUSION:
            return self.status is Status.MET
        return self.status is Status.NOT_MET


class DataIssueKind(enum.StrEnum):
    """Why a record that was present was not used (`cds.engine.record.build_record`)."""

    NOT_JSON_OBJECT = "not_json_object"  # not a JSON object: its type, hence what it held, is unknown
    UNSUPPORTED_TYPE = "unsupported_type"  # a resource type the engine does not read
    WRONG_PATIENT = "wrong_patient"  # about another patient (or no patient reference)
    INVALID_FHIR = "invalid_fhir"  # a type the criteria read, but not valid FHIR R4: it may hold a deciding fact


MEDICATION_TYPES = frozenset(
    {"MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense"}
)
# Types read only through others: a Medication is the target of the medication resources'
# medicationReference, so an unusable Medication makes them doubtful.
READ_THROUGH: dict[str, frozenset[str]] = {"Medication": MEDICATION_TYPES}


@dataclass(frozen=True, slots=True)
class DataIssue:
    """A record that was present but not used (invalid, wrong patient, wrong type...).

    `kind` says why, `resource_type` which type it concerns (None: not known, e.g. not a JSON
    object); `problem` is wording for people only: nothing decides on it.
    """

    reference: str
    problem: str
    kind: DataIssueKind
    resource_type: str | None = None

    @property
    def doubtful_types(self) -> frozenset[str] | None:
        """The resource types whose data this issue makes incomplete: those of a record that should
        have been read but could not be (invalid FHIR); nothing for records that were not this
        patient's or of a type nothing reads; None when it could be any type (not a JSON object)."""
        if self.kind is DataIssueKind.NOT_JSON_OBJECT:
            return None
        if self.kind is DataIssueKind.INVALID_FHIR:
            if self.resource_type is None:
                return None
            return frozenset({self.resource_type}) | READ_THROUGH.get(self.resource_type, frozenset())
        return frozenset()

    def to_json(self) -> dict[str, str]:
        out = {"reference": self.reference, "problem": self.problem, "kind": self.kind.value}
        if self.resource_type is not None:
            out["resourceType"] = self.resource_type
        return out


@dataclass(frozen=True, slots=True)
class Report:
    trial: str
    patient: str  # "Patient/<id>"
    as_of: date
    criteria: tuple[CriterionResult, ...]
    data_issues: tuple[DataIssue, ...] = ()
    incomplete: tuple[str, ...] = field(default=())  # data domains that could not be read

    @property
    def verdict(self) -> Verdict:
        return verdict_of(self.criteria)

    @property
    def doubtful_types(self) -> frozenset[str] | None:
        """The resource types whose data is not complete: those that could not be read
        (`incomplete`), and those with records that should have been read but were unusable
        (`DataIssue.doubtful_types`). None: any type may be doubtful."""
        doubtful = set(self.incomplete)
        for issue in self.data_issues:
            types = issue.doubtful_types
            if types is None:
                return None
            doubtful |= types
        return frozenset(doubtful)

    @property
    def exclusion_settled(self) -> bool:
        """Does the exclusion stand whatever the data that was not read or not usable held?

        True when no data is doubtful, or when some failing criterion depends only on resource
        types read completely (its `depends_on`, from the rule's declared reads). A failing criterion
        whose dependencies are not known settles nothing while anything is doubtful. Decided from
        these typed facts only, never from evidence or message wording. Only meaningful for an
        `excluded` verdict.
        """
        doubtful = self.doubtful_types
        if doubtful is None:
            return False
        if not doubtful:
            return True
        return any(r.fails and r.depends_on and not set(r.depends_on) & doubtful for r in self.criteria)

    def by_id(self, criterion_id: str) -> CriterionResult:
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trial": self.trial,
            "patient": self.patient,
            "asOf": self.as_of.isoformat(),
            "verdict": self.verdict.value,
            "criteria": [c.to_json() for c in self.criteria],
        }
        if self.incomplete:
            out["incomplete"] = list(self.incomplete)
        if self.data_issues:
            out["dataIssues"] = [d.to_json() for d in self.data_issues]
        return out


def verdict_of(results: tuple[CriterionResult, ...] | list[CriterionResult]) -> Verdict:
    """excluded if anything fails; likely if every settleable criterion is favourable; else possible."""
    if any(r.fails for r in results):
        return Verdict.EXCLUDED
    if all(r.favourable for r in results if r.settleable):
        return Verdict.LIKELY_CANDIDATE
    return Verdict.POSSIBLE_CANDIDATE
