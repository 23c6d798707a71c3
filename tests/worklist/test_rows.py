"""Ranking, filters, the CSV export (formula injection) and the attrition per criterion."""

from __future__ import annotations

import csv
import io
from datetime import date

from cds.worklist.reports import TrialInfo
from cds.worklist.rows import (
    RESEARCH_SUBJECT_STATUS,
    Candidate,
    attrition,
    csv_cell,
    matches,
    ranked,
    to_csv,
    to_verify_of,
)

TRIAL = TrialInfo(
    id="T1",
    title="Trial",
    url="https://example.org",
    unsettleable=frozenset({"exc-judgment"}),
    criteria=(("inc-a", "A"), ("inc-b", "B"), ("exc-c", "C"), ("exc-judgment", "Judgment")),
)


def cand(pid: str, verdict: str, verify: int, *, trial: str = "T1", referred: date | None = None) -> Candidate:
    return Candidate(
        result_id=hash(pid) % 1000,
        run_id="run",
        trial=trial,
        patient_id=pid,
        verdict=verdict,
        to_verify=tuple((f"inc-{i}", f"I{i}") for i in range(verify)),
        against=1 if verdict == "excluded" else 0,
        referred_on=referred,
    )


def test_likely_before_possible_then_fewer_to_verify_first_referred_non_candidates_last() -> None:
    rows = [
        cand("p-3", "possible-candidate", 3),
        cand("x", "excluded", 0, referred=date(2026, 11, 1)),
        cand("p-1", "possible-candidate", 1),
        cand("l", "likely-candidate", 0),
    ]
    assert [c.patient_id for c in ranked(rows)] == ["l", "p-1", "p-3", "x"]


def test_filters_by_trial_verdict_referral_criterion_and_status() -> None:
    c = cand("p", "possible-candidate", 2, referred=date(2026, 11, 1))
    assert matches(c)
    assert matches(c, trial="T1", verdict="possible-candidate", criterion="inc-1", status="new")
    assert not matches(c, trial="T2")
    assert not matches(c, verdict="likely-candidate")
    assert matches(c, verdict="referred")
    assert not matches(cand("q", "possible-candidate", 2), verdict="referred")
    assert not matches(c, criterion="inc-7")
    assert not matches(c, status="contacted")


def test_to_verify_counts_unknown_settleable_criteria_only() -> None:
    report = {
        "criteria": [
            {"id": "inc-a", "status": "met"},
            {"id": "inc-b", "status": "unknown", "title": "B"},
            {"id": "exc-c", "status": "garbled"},  # unreadable status: to verify, never hidden
            {"id": "exc-judgment", "status": "unknown"},
        ]
    }
    assert to_verify_of(report, TRIAL) == (("inc-b", "B"), ("exc-c", "exc-c"))


def test_csv_cells_starting_like_a_formula_are_quoted() -> None:
    assert csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert csv_cell("+1") == "'+1"
    assert csv_cell("-2") == "'-2"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("\tx") == "'\tx"
    assert csv_cell("plain") == "plain"
    assert csv_cell(3) == "3"


def test_csv_export_has_one_row_per_candidate_with_research_subject_status() -> None:
    rows = [cand("=cmd", "possible-candidate", 2, referred=date(2026, 11, 1)), cand("b", "likely-candidate", 0)]
    parsed = list(csv.reader(io.StringIO(to_csv(rows))))
    assert parsed[0][:3] == ["trial", "patient", "verdict"]
    assert len(parsed) == 3
    assert parsed[1][1] == "'=cmd"
    assert parsed[1][3] == "2"
    assert parsed[1][4] == "inc-0; inc-1"
    assert parsed[1][6] == "2026-11-01"
    assert parsed[1][8] == "potential-candidate"
    assert parsed[2][6] == ""


def test_every_status_maps_to_an_r4_research_subject_status() -> None:
    r4 = {
        "candidate", "eligible", "follow-up", "ineligible", "not-registered", "off-study", "on-study",
        "on-study-intervention", "on-study-observation", "pending-on-study", "potential-candidate",
        "screening", "withdrawn",
    }  # fmt: skip
    assert set(RESEARCH_SUBJECT_STATUS) == {"new", "contacted", "interested", "declined", "ineligible", "enrolled"}
    assert set(RESEARCH_SUBJECT_STATUS.values()) <= r4


def test_attrition_counts_per_criterion_and_the_funnel() -> None:
    def r(a: str, b: str, c: str) -> dict[str, object]:
        return {
            "criteria": [
                {"id": "inc-a", "kind": "inclusion", "status": a},
                {"id": "inc-b", "kind": "inclusion", "status": b},
                {"id": "exc-c", "kind": "exclusion", "status": c},
                {"id": "exc-judgment", "kind": "exclusion", "status": "unknown"},
            ]
        }

    reports = [
        r("not_met", "not_met", "met"),  # out at inc-a (counted against a, b and c)
        r("met", "not_met", "not_met"),  # out at inc-b
        r("met", "unknown", "met"),  # out at exc-c
        r("met", "met", "unknown"),  # remains
        r("met", "met", "not_met"),  # remains
    ]
    a = attrition("run", TRIAL, reports)
    assert a.patients == 5
    by_id = {row.id: row for row in a.rows}
    assert [row.id for row in a.rows] == ["inc-a", "inc-b", "exc-c", "exc-judgment"]
    assert (by_id["inc-a"].against, by_id["inc-a"].remaining) == (1, 4)
    assert (by_id["inc-b"].against, by_id["inc-b"].to_verify, by_id["inc-b"].remaining) == (2, 1, 3)
    assert (by_id["exc-c"].against, by_id["exc-c"].to_verify, by_id["exc-c"].remaining) == (2, 1, 2)
    assert (by_id["exc-judgment"].to_verify, by_id["exc-judgment"].remaining) == (0, 2)
