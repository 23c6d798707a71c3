"""Hand-built engine Reports for the card tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cds.engine.model import CriterionResult, DataIssue, DataIssueKind, Evidence, Flag, Kind, Report, Status


@dataclass(frozen=True)
class FakeTrial:
    id: str = "NCT04582136"
    title: str = "Sirolimus in active SLE (NCT04582136)"
    url: str = "https://clinicaltrials.gov/study/NCT04582136"


TRIAL = FakeTrial()


def criterion(
    cid: str,
    status: Status,
    kind: Kind = Kind.INCLUSION,
    *,
    evidence: tuple[Evidence, ...] = (),
    title: str = "",
    reason: str = "reason",
    settleable: bool = True,
    depends_on: tuple[str, ...] = (),
) -> CriterionResult:
    return CriterionResult(
        id=cid,
        kind=kind,
        status=status,
        reason=reason,
        evidence=evidence,
        title=title,
        settleable=settleable,
        depends_on=depends_on,
    )


AGE = criterion(
    "inc-age",
    Status.MET,
    title="Age 18-65",
    reason="age 36 is within 18-65",
    evidence=(Evidence("Patient/p1", "age on the as-of date", value="36", unit="a", date="1990-04-01"),),
)
C3 = criterion(
    "inc-serology",
    Status.MET,
    title="Serologically active",
    reason="C3 below 0.9 g/L",
    evidence=(
        Evidence(
            "Observation/o1",
            "C3",
            value="0.8",
            unit="g/L",
            date="2026-10-20",
            original="80 mg/dL",
            flags=(Flag.LLN_ASSUMED,),
        ),
    ),
)
SLEDAI = criterion("inc-sledai", Status.UNKNOWN, title="Clinical SLEDAI-2K >= 4", reason="no SLEDAI-2K recorded")
PREGNANCY_ABSENT = criterion(
    "exc-pregnancy", Status.NOT_MET, Kind.EXCLUSION, title="Pregnant or breast-feeding", reason="not pregnant"
)
JUDGMENT = criterion(
    "exc-investigator-judgment",
    Status.UNKNOWN,
    Kind.EXCLUSION,
    title="Investigator judgment",
    reason="requires investigator judgment",
    settleable=False,
)
TOO_OLD = criterion("inc-age", Status.NOT_MET, title="Age 18-65", reason="age 86 is above 65")


def report(*criteria: CriterionResult, incomplete: tuple[str, ...] = (), issues: int = 0) -> Report:
    return Report(
        trial="NCT04582136",
        patient="Patient/p1",
        as_of=date(2026, 11, 1),
        criteria=criteria,
        data_issues=tuple(
            DataIssue(f"Observation/bad{i}", "invalid", DataIssueKind.INVALID_FHIR, "Observation")
            for i in range(issues)
        ),
        incomplete=incomplete,
    )


POSSIBLE = report(AGE, C3, SLEDAI, PREGNANCY_ABSENT, JUDGMENT)
LIKELY = report(AGE, C3, PREGNANCY_ABSENT, JUDGMENT)
EXCLUDED = report(TOO_OLD, C3, SLEDAI)
