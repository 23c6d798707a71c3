"""Render the engine's Report as CDS Hooks cards.

* ``possible-candidate`` / ``likely-candidate`` → one ``info`` card: summary that says "possible
  candidate" (never "eligible", no PHI; "— data incomplete" when the report is incomplete), a
  markdown detail with a table of criteria (to verify / not met / met, with evidence values and
  dates, all data escaped), a static ``source.topic``, a link to the trial on ClinicalTrials.gov,
  override reasons, one suggestion (refer to the study team: a draft ServiceRequest, see
  `cards.referral`) and the full report under ``extension[REPORT_EXTENSION_KEY]``.
* ``excluded`` → no card, unless ``show_excluded`` asks for a quiet "not a candidate" info card
  (same detail and report, no suggestion) - **or the exclusion is not settled**: when some data
  could not be read (``report.incomplete``) or some records were unusable (invalid FHIR, in
  ``report.data_issues``), the exclusion stands only if at least one failing criterion rests solely
  on data of types that were read completely (the resource types named by its evidence). Otherwise
  the patient might be a candidate whose deciding record is exactly the one that was not read, so
  the excluded card is shown, its summary saying "not a candidate on the data read — data
  incomplete" and its detail naming what could not be read. A FHIR failure never looks like a
  silent "not a candidate".

``isRecommended`` is false: the prescreen cannot establish eligibility, and an EHR may pre-select
recommended suggestions; a referral should be the clinician's deliberate choice, made with the
patient.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from cards.codes import OVERRIDE_REASONS, REPORT_EXTENSION_KEY, TOPIC
from cards.markdown import escape, table
from cards.models import SUMMARY_MAX, Action, Card, Link, Source, Suggestion
from cards.referral import referral_service_request
from cards.trial import TrialLike
from cds.engine.model import CriterionResult, Evidence, Flag, Kind, Report, Status, Verdict

UuidFactory = Callable[[], str]

INCOMPLETE = "data incomplete"

TYPE_LABELS = {
    "Patient": "patient demographics",
    "Condition": "conditions",
    "Observation": "laboratory and other observations",
    "MedicationStatement": "medication statements",
    "MedicationRequest": "medication orders",
    "MedicationAdministration": "medication administrations",
    "Procedure": "procedures",
    "AllergyIntolerance": "allergies",
}

FLAG_LABELS = {
    Flag.ULN_ASSUMED: "upper limit of normal assumed",
    Flag.LLN_ASSUMED: "lower limit of normal assumed",
    Flag.DERIVED: "derived",
    Flag.COMPARATOR: "value with comparator",
    Flag.PRELIMINARY: "preliminary result",
    Flag.PROXY: "coded diagnosis used as proxy",
    Flag.NEEDS_REVIEW: "needs review",
}


_TYPE_NAMES = re.compile(r"\b(" + "|".join(sorted(TYPE_LABELS, key=len, reverse=True)) + r")\b")


def evidence_types(result: CriterionResult) -> set[str]:
    """FHIR resource types named by a result's evidence references (``Observation/x``, "searched Condition")."""
    found: set[str] = set()
    for ev in result.evidence:
        found.update(_TYPE_NAMES.findall(ev.reference))
    return found


def doubtful_types(report: Report) -> set[str] | None:
    """Types whose data is not complete: unread/truncated ones, and ones with records that were not
    valid FHIR (they may have held the deciding fact). None: anything may be doubtful."""
    doubtful = set(report.incomplete)
    for issue in report.data_issues:
        if issue.problem.startswith("not valid FHIR"):
            doubtful.update(_TYPE_NAMES.findall(issue.reference) or ["?"])
        elif issue.problem == "not a JSON object":
            return None
    return doubtful


def exclusion_settled(report: Report) -> bool:
    """True if some failing criterion rests only on completely read data (see the module doc)."""
    doubtful = doubtful_types(report)
    if doubtful is None:
        return False
    if not doubtful:
        return True
    for result in report.criteria:
        if result.fails:
            types = evidence_types(result)
            if types and not types & doubtful:
                return True
    return False


def _unsettled(report: Report) -> bool:
    return report.verdict is Verdict.EXCLUDED and not exclusion_settled(report)


def _new_uuid() -> str:
    return str(uuid.uuid4())


def _group(result: CriterionResult) -> str:
    if result.status is Status.UNKNOWN:
        return "to verify"
    return "not met" if result.fails else "met"


_GROUP_ORDER = {"to verify": 0, "not met": 1, "met": 2}
# Row labels say what the finding means for the patient: an exclusion that does not apply is
# "absent" (not "met"), one that applies is "present".
_ROW_LABEL = {
    ("to verify", Kind.INCLUSION): "❓ To verify",
    ("to verify", Kind.EXCLUSION): "❓ To verify",
    ("not met", Kind.INCLUSION): "❌ Not met",
    ("not met", Kind.EXCLUSION): "❌ Present",
    ("met", Kind.INCLUSION): "✅ Met",
    ("met", Kind.EXCLUSION): "✅ Absent",
}


def _evidence_text(ev: Evidence) -> str:
    text = escape(ev.description)
    shown = ""
    if ev.value is not None:
        shown = f"{ev.value} {ev.unit}".strip() if ev.unit else ev.value
        if shown not in ev.description:
            text += f": {escape(shown)}"
    if ev.original and ev.original not in (ev.value, shown):
        text += f" (recorded as {escape(ev.original)})"
    if ev.date:
        text += f", {escape(ev.date)}"
    if ev.flags:
        text += " [" + ", ".join(FLAG_LABELS.get(f, f.value) for f in ev.flags) + "]"
    return text


def _items_text(result: CriterionResult) -> str:
    """The computed items behind a result (SLICC, SLEDAI) by status: ids only (no chart text)."""
    if not result.items:
        return ""
    parts = []
    for status, label in (("met", "items met"), ("unknown", "not found / to verify"), ("not_met", "absent")):
        ids = [i.id + (f" ({i.points})" if i.points and status == "met" else "") for i in result.items
               if i.status.value == status]  # fmt: skip
        if ids:
            parts.append(f"{label}: {', '.join(ids)}")
    return " — " + escape("; ".join(parts))


def _criterion_label(result: CriterionResult) -> str:
    kind = "Inclusion" if result.kind is Kind.INCLUSION else "Exclusion"
    name = f"{result.id}: {result.title}" if result.title else result.id
    return f"{escape(name)} ({kind.lower()})"


def criteria_table(report: Report) -> str:
    rows: list[tuple[str, ...]] = []
    ordered = sorted(report.criteria, key=lambda r: _GROUP_ORDER[_group(r)])
    for result in ordered:
        evidence = "; ".join(_evidence_text(e) for e in result.evidence) or "—"
        finding = escape(result.reason) + _items_text(result)
        rows.append((_ROW_LABEL[(_group(result), result.kind)], _criterion_label(result), finding, evidence))
    return table(("Result", "Criterion", "Finding", "Evidence"), rows)


def _counts(report: Report) -> dict[str, int]:
    counts = {"met": 0, "not met": 0, "to verify": 0}
    for result in report.criteria:
        counts[_group(result)] += 1
    return counts


def incomplete_text(report: Report) -> str:
    names = ", ".join(f"{TYPE_LABELS.get(t, t)} ({t})" for t in report.incomplete)
    return f"**Data incomplete:** could not read {escape(names)}. Criteria depending on them are listed as to verify."


def detail_markdown(report: Report, trial: TrialLike) -> str:
    verdict = report.verdict
    counts = _counts(report)
    headline = {
        Verdict.LIKELY_CANDIDATE: "possible candidate (every criterion the chart can settle is met)",
        Verdict.POSSIBLE_CANDIDATE: "possible candidate (some criteria need review)",
        Verdict.EXCLUDED: "not a candidate",
    }[verdict]
    parts = [
        f"**Prescreen for clinical trial {escape(trial_label(trial))}**, "
        f"as of {report.as_of.isoformat()}: **{headline}**. "
        "This is not an eligibility decision; the study team confirms eligibility.",
    ]
    if report.incomplete:
        parts.append(incomplete_text(report))
    if _unsettled(report):
        parts.append(
            "**The exclusion is not settled:** the criteria that rule the patient out depend on data that "
            "could not be read completely or on records that could not be used. Verify before ruling the "
            "patient out."
        )
    parts.append(
        f"Of {len(report.criteria)} criteria: {counts['met']} in the patient's favour (inclusions met, exclusions "
        f"absent), {counts['to verify']} to verify, {counts['not met']} against."
    )
    parts.append(criteria_table(report))
    if report.data_issues:
        parts.append(
            f"{len(report.data_issues)} record(s) could not be used (invalid or not this patient's); "
            "see the report in the card extension."
        )
    return "\n\n".join(parts)


def summary_text(report: Report, trial: TrialLike) -> str:
    """A PHI-free summary under 140 characters; "possible candidate", never "eligible"."""
    verdict = report.verdict
    # Criteria no data can settle (investigator judgment) are always to verify: not counted here.
    to_verify = sum(1 for r in report.criteria if r.status is Status.UNKNOWN and r.settleable)
    unsettled = _unsettled(report)
    if unsettled:
        lead, tail = f"Not a candidate on the data read — {INCOMPLETE}", ": verify"
    elif verdict is Verdict.EXCLUDED:
        lead, tail = "Not a candidate", " (prescreen)"
    elif verdict is Verdict.LIKELY_CANDIDATE:
        lead, tail = "Possible candidate", ": all checkable criteria met"
    else:
        lead = "Possible candidate"
        tail = f": {to_verify} criteria to verify" if to_verify != 1 else ": 1 criterion to verify"
    if unsettled or (report.incomplete and verdict is not Verdict.EXCLUDED):
        if not unsettled:
            lead = f"{lead} — {INCOMPLETE}"
        tail = tail.replace(": ", ", ", 1)
        options = [
            f"{lead}: {trial_label(trial)}{tail}",
            f"{lead}: trial {trial.id}{tail}",
            f"{lead}: trial {trial.id}",
        ]
    else:
        options = [
            f"{lead} for {trial_label(trial)}{tail}",
            f"{lead} for trial {trial.id}{tail}",
            f"{lead} for trial {trial.id}",
        ]
    for option in options:
        if len(option) <= SUMMARY_MAX:
            return option
    return options[-1][:SUMMARY_MAX]


def trial_label(trial: TrialLike) -> str:
    """The trial's title, with its id unless the title already names it."""
    return trial.title if trial.id in trial.title else f"{trial.id} ({trial.title})"


def _source(trial: TrialLike) -> Source:
    return Source(label=f"{trial.id} prescreen", url=trial.url, topic=TOPIC)


def _links(trial: TrialLike) -> list[Link]:
    return [Link(label=f"{trial.id} on ClinicalTrials.gov", url=trial.url, type="absolute")]


def _card(report: Report, trial: TrialLike, new_uuid: UuidFactory, **extra: Any) -> Card:
    """The fields every card of ours has: summary, detail, source, link and the full report."""
    return Card(
        uuid=new_uuid(),
        summary=summary_text(report, trial),
        detail=detail_markdown(report, trial),
        indicator="info",
        source=_source(trial),
        links=_links(trial),
        extension={REPORT_EXTENSION_KEY: report.to_json()},
        **extra,
    )


def candidate_card(report: Report, trial: TrialLike, *, new_uuid: UuidFactory = _new_uuid) -> Card:
    referral = Suggestion(
        label=f"Refer to the {trial.id} study team",
        uuid=new_uuid(),
        isRecommended=False,
        actions=[
            Action(
                type="create",
                description=f"Draft a referral (ServiceRequest) to the {trial.id} study team",
                resource=referral_service_request(report, trial),
            )
        ],
    )
    return _card(
        report,
        trial,
        new_uuid,
        suggestions=[referral],
        selectionBehavior="any",
        overrideReasons=list(OVERRIDE_REASONS),
    )


def excluded_card(report: Report, trial: TrialLike, *, new_uuid: UuidFactory = _new_uuid) -> Card:
    return _card(report, trial, new_uuid)


def render_cards(
    report: Report,
    trial: TrialLike,
    *,
    show_excluded: bool = False,
    new_uuid: UuidFactory = _new_uuid,
) -> list[Card]:
    """Cards for one report: one candidate card; for an excluded patient none, or a quiet one when
    `show_excluded` or when the exclusion is not settled (incomplete or unusable data)."""
    if report.verdict is Verdict.EXCLUDED:
        visible = show_excluded or _unsettled(report)
        return [excluded_card(report, trial, new_uuid=new_uuid)] if visible else []
    return [candidate_card(report, trial, new_uuid=new_uuid)]
