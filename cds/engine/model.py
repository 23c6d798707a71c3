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


@dataclass(frozen=True, slots=True)
class DataIssue:
    """A record that was present but not used (invalid, wrong patient, wrong type...)."""

    reference: str
    problem: str

    def to_json(self) -> dict[str, str]:
        return {"reference": self.reference, "problem": self.problem}


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
