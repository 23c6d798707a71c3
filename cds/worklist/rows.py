"""Worklist rows: ranking, filters, the CSV export and the attrition per criterion (pure functions).

Ranking: likely candidates (every checkable criterion in the patient's favour) before possible
candidates, fewer criteria to verify first; patients referred by a clinician whose population
result is "not a candidate" come last (the coordinator still sees the referral). Ties: trial, then
patient id, then FHIR server, so the order is stable.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds.worklist.reports import TrialInfo

LIKELY = "likely-candidate"
POSSIBLE = "possible-candidate"
EXCLUDED = "excluded"
REFERRED = "referred"  # a filter value: referred by a clinician from the point-of-care card
VERDICT_FILTERS = {LIKELY: "Likely candidates", POSSIBLE: "Possible candidates", REFERRED: "Referred by clinician"}

# Worklist status -> FHIR R4 ResearchSubject.status (http://hl7.org/fhir/research-subject-status).
# See cds/worklist/README.md for why each code.
RESEARCH_SUBJECT_STATUS: dict[str, str] = {
    "new": "potential-candidate",
    "contacted": "candidate",
    "interested": "screening",
    "declined": "not-registered",
    "ineligible": "ineligible",
    "enrolled": "on-study",
}
STATUSES: tuple[str, ...] = tuple(RESEARCH_SUBJECT_STATUS)
NEW = "new"


@dataclass(frozen=True, slots=True)
class Candidate:
    result_id: int
    run_id: str
    trial: str
    patient_id: str
    verdict: str
    to_verify: tuple[tuple[str, str], ...]  # (criterion id, title), report order
    against: int
    referred_on: date | None = None
    status: str = NEW
    fhir_server: str = ""  # the run's FHIR base URL: a patient id is unique only within its server

    @property
    def research_subject_status(self) -> str:
        return RESEARCH_SUBJECT_STATUS.get(self.status, RESEARCH_SUBJECT_STATUS[NEW])


def to_verify_of(report: Mapping[str, Any], trial: TrialInfo) -> tuple[tuple[str, str], ...]:
    """Criteria ``unknown`` that data could settle (the investigator's judgment is not counted)."""
    out = []
    for c in report.get("criteria") or ():
        if not isinstance(c, Mapping):
            continue
        cid = str(c.get("id", ""))
        if c.get("status") not in ("met", "not_met") and cid not in trial.unsettleable:
            out.append((cid, str(c.get("title") or cid)))
    return tuple(out)


def fails(criterion: Mapping[str, Any]) -> bool:
    """The criterion rules the patient out (an inclusion not met, an exclusion met)."""
    if criterion.get("kind") == "exclusion":
        return criterion.get("status") == "met"
    return criterion.get("status") == "not_met"


def rank_key(c: Candidate) -> tuple[int, int, str, str, str]:
    order = {LIKELY: 0, POSSIBLE: 1}.get(c.verdict, 2)
    return (order, len(c.to_verify), c.trial, c.patient_id, c.fhir_server)


def ranked(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=rank_key)


def matches(c: Candidate, *, trial: str = "", verdict: str = "", criterion: str = "", status: str = "") -> bool:
    if trial and c.trial != trial:
        return False
    if verdict == REFERRED:
        if c.referred_on is None:
            return False
    elif verdict and c.verdict != verdict:
        return False
    if criterion and criterion not in {cid for cid, _ in c.to_verify}:
        return False
    return not (status and c.status != status)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


CSV_HEADER = (
    "trial",
    "patient",
    "verdict",
    "to_verify_count",
    "to_verify",
    "against",
    "referred_by_clinician",
    "status",
    "research_subject_status",
    "run",
    "fhir_server",
)


def to_csv(candidates: Sequence[Candidate]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for c in candidates:
        writer.writerow(
            csv_cell(v)
            for v in (
                c.trial,
                c.patient_id,
                c.verdict,
                len(c.to_verify),
                "; ".join(cid for cid, _ in c.to_verify),
                c.against,
                c.referred_on.isoformat() if c.referred_on else "",
                c.status,
                c.research_subject_status,
                c.run_id,
                c.fhir_server,
            )
        )
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class AttritionRow:
    id: str
    title: str
    kind: str
    against: int  # patients this criterion rules out
    to_verify: int  # patients for whom it is unknown (settleable)
    remaining: int  # patients left after this and every earlier criterion (funnel)


@dataclass(frozen=True, slots=True)
class Attrition:
    run_id: str
    trial: str
    patients: int
    rows: tuple[AttritionRow, ...]


def attrition(run_id: str, trial: TrialInfo, reports: Iterable[Mapping[str, Any]]) -> Attrition:
    """Per criterion, in the trial's order: how many patients it rules out, how many it leaves to
    verify, and how many remain after it and every criterion before it (OHDSI-style attrition)."""
    order = [cid for cid, _ in trial.criteria]
    titles = dict(trial.criteria)
    kinds: dict[str, str] = {}
    against: dict[str, int] = {}
    verify: dict[str, int] = {}
    first_fail: dict[str, int] = {}
    patients = 0
    for report in reports:
        patients += 1
        failed_at: int | None = None
        for c in report.get("criteria") or ():
            if not isinstance(c, Mapping):
                continue
            cid = str(c.get("id", ""))
            if cid not in titles:
                titles[cid] = str(c.get("title") or cid)
                order.append(cid)
            kinds[cid] = "exclusion" if c.get("kind") == "exclusion" else "inclusion"
            if fails(c):
                against[cid] = against.get(cid, 0) + 1
                position = order.index(cid)
                failed_at = position if failed_at is None else min(failed_at, position)
            elif c.get("status") not in ("met", "not_met") and cid not in trial.unsettleable:
                verify[cid] = verify.get(cid, 0) + 1
        if failed_at is not None:
            first_fail[order[failed_at]] = first_fail.get(order[failed_at], 0) + 1
    rows = []
    remaining = patients
    for cid in order:
        remaining -= first_fail.get(cid, 0)
        rows.append(
            AttritionRow(
                id=cid,
                title=titles[cid],
                kind=kinds.get(cid, "inclusion"),
                against=against.get(cid, 0),
                to_verify=verify.get(cid, 0),
                remaining=remaining,
            )
        )
    return Attrition(run_id=run_id, trial=trial.id, patients=patients, rows=tuple(rows))
