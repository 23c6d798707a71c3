"""One wording of the verdict and its counts, shared by the card, the report page and `cds screen`.

* "to verify" counts the criteria that are ``unknown`` *and that data could settle*; the
  investigator's overall judgment (always ``unknown``, no data can settle it) is never counted - it
  applies to every patient and the card says the study team confirms eligibility;
* "against" counts the criteria that rule the patient out (an inclusion not met or an exclusion met);
* the labels never say "eligible": ``likely-candidate`` and ``possible-candidate`` are both a
  **possible candidate** for a clinician (the first with every checkable criterion in the patient's
  favour), ``excluded`` is **not a candidate**.
"""

from __future__ import annotations

from cds.engine.model import CriterionResult, Report, Status, Verdict

VERDICT_LEAD = {
    Verdict.LIKELY_CANDIDATE: "Possible candidate",
    Verdict.POSSIBLE_CANDIDATE: "Possible candidate",
    Verdict.EXCLUDED: "Not a candidate",
}


def to_verify(report: Report) -> list[CriterionResult]:
    """Criteria the chart could settle but did not (``unknown``, settleable), in report order."""
    return [r for r in report.criteria if r.status is Status.UNKNOWN and r.settleable]


def against(report: Report) -> list[CriterionResult]:
    """Criteria that rule the patient out."""
    return [r for r in report.criteria if r.fails]


def verdict_tail(report: Report) -> str:
    """``2 to verify`` / ``all checkable criteria met`` / ``1 against``."""
    verdict = report.verdict
    if verdict is Verdict.EXCLUDED:
        return f"{len(against(report))} against"
    if verdict is Verdict.LIKELY_CANDIDATE:
        return "all checkable criteria met"
    return f"{len(to_verify(report))} to verify"


def verdict_label(report: Report) -> str:
    """``Possible candidate: 2 to verify`` - the same words in the card, the report page and the CLI."""
    return f"{VERDICT_LEAD[report.verdict]}: {verdict_tail(report)}"
