"""Render the engine's Report as CDS Hooks cards.

* ``possible-candidate`` / ``likely-candidate`` → one ``info`` card: summary (<= 139 characters)
  that says "possible candidate" and the count to verify (never "eligible", no PHI; "— data
  incomplete" when the report is incomplete), a ``detail`` a clinician reads in seconds (at most
  `DETAIL_MAX` characters: one verdict line, then at most five short bullets, most decisive first -
  what is against (excluded card only), what needs verifying, then the supporting facts the
  trial's card wording names (`cards.wording`, from ``cds/trials/<id>/card.py``: for NCT04582136 SLE
  since, disease activity, serology); criterion titles, never internal ids; codes as "SNOMED CT 55464009", never system
  URIs; all data made inert by `cards.markdown.escape`), a static ``source.topic`` per trial, links (the
  service's full report page when the service passes `report_link`, and the trial on
  ClinicalTrials.gov; ``autoLaunchable: false``), override reasons, one suggestion (refer to the
  study team: a draft ServiceRequest, see `cards.referral`) and the full report under
  ``extension[REPORT_EXTENSION_KEY]``.
* ``excluded`` → no card, unless ``show_excluded`` asks for a quiet "not a candidate" info card
  (same detail and report, no suggestion) - **or the exclusion is not settled**: when some data
  could not be read (``report.incomplete``) or some records were unusable (invalid FHIR, in
  ``report.data_issues``), the exclusion stands only if at least one failing criterion depends
  solely on resource types that were read completely (decided by the engine from typed facts:
  `Report.exclusion_settled`, never from wording). Otherwise the patient might be a candidate whose
  deciding record is exactly the one that was not read, so the excluded card is shown, its summary
  saying "not a candidate on the data read — data incomplete" and its detail naming what could not
  be read. A FHIR failure never looks like a
  silent "not a candidate".

``isRecommended`` is false: the prescreen cannot establish eligibility, and an EHR may pre-select
recommended suggestions; a referral should be the clinician's deliberate choice, made with the
patient.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cards.codes import OVERRIDE_REASONS, REPORT_EXTENSION_KEY, card_topic
from cards.markdown import escape, humanize_codes, plain
from cards.models import SUMMARY_MAX, Action, Card, Link, Source, Suggestion
from cards.referral import referral_service_request
from cards.trial import TrialLike
from cards.verdict import VERDICT_LEAD, against, to_verify, verdict_label, verdict_tail
from cards.wording import PLAIN_WORDING, CardWording, Highlight, SinceFact
from cds.engine.model import CriterionResult, Evidence, Flag, Report, Status, Verdict

UuidFactory = Callable[[], str]

INCOMPLETE = "data incomplete"
DETAIL_MAX = 1500
MAX_BULLETS = 5
REPORT_LINK_LABEL = "Full prescreen report (criteria and evidence)"
NOT_AUTOLAUNCHED: dict[str, Any] = {"autolaunchable": False, "autoLaunchable": False}


@dataclass(frozen=True, slots=True)
class ReportLink:
    """Where the service serves this report's page: an opaque, short-lived URL (no patient id)."""

    url: str
    type: Literal["absolute", "smart"] = "absolute"


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


def _unsettled(report: Report) -> bool:
    """An excluded patient whose exclusion may rest on data not read (`Report.exclusion_settled`)."""
    return report.verdict is Verdict.EXCLUDED and not report.exclusion_settled


def _new_uuid() -> str:
    return str(uuid.uuid4())


def incomplete_text(report: Report) -> str:
    names = ", ".join(f"{TYPE_LABELS.get(t, t)} ({t})" for t in report.incomplete)
    return f"**Data incomplete:** could not read {escape(names)}; criteria depending on them are to verify."


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _items_bullet(label: str, items: list[str], budget: int) -> str:
    """``**Label (n):** a; b; c`` within `budget` characters, ending "and N more" when cut."""
    head = f"- **{label} ({len(items)}):** "
    shown: list[str] = []
    for i, item in enumerate(items):
        rest = len(items) - i - 1
        tail = f"; and {rest} more in the full report" if rest else ""
        candidate = "; ".join([*shown, item])
        if len(head) + len(candidate) + len(tail) > budget and shown:
            more = len(items) - len(shown)
            return head + "; ".join(shown) + f"; and {more} more in the full report"
        shown.append(item)
    return head + "; ".join(shown)


def _criterion_item(result: CriterionResult, reason_limit: int = 90) -> str:
    name = escape(result.title or result.id)
    reason = escape(_clip(plain(humanize_codes(result.reason)), reason_limit))
    return f"{name} ({reason})" if reason else name


def _evidence_fact(ev: Evidence) -> str:
    text = plain(ev.description)
    if ev.value is not None and ev.value not in text:
        text += f" {ev.value} {ev.unit or ''}".rstrip()
    text = humanize_codes(text)
    if ev.date and ev.date not in text:
        text += f" ({ev.date})"
    return escape(_clip(text, 120))


def wording_of(trial: TrialLike) -> CardWording:
    """The card wording of a registered trial (`cds.trials.card_wording`); plain for any other."""
    from cds.trials import UnknownTrial, card_wording

    try:
        return card_wording(trial.id)
    except UnknownTrial:
        return PLAIN_WORDING


def _since_fact(report: Report, spec: SinceFact) -> str | None:
    dates: list[str] = []
    try:
        if report.by_id(spec.requires).status is not Status.MET:
            return None
    except KeyError:
        return None
    for cid in spec.dates_from:
        try:
            result = report.by_id(cid)
        except KeyError:
            continue
        if result.status is not Status.MET:
            continue
        dates.extend(ev.date for ev in result.evidence if ev.date)
        if dates:
            break
    if not dates:
        return None
    return f"- **{escape(spec.label)}** coded since {escape(min(dates))}"


def _highlight(report: Report, highlight: Highlight) -> str | None:
    try:
        result = report.by_id(highlight.criterion)
    except KeyError:
        return None
    facts = [_evidence_fact(ev) for ev in result.evidence if ev.value is not None or ev.original is not None]
    if result.status is not Status.MET or not facts:
        return None
    return f"- **{escape(highlight.label)}:** " + "; ".join(facts[:2])


def detail_bullets(report: Report, wording: CardWording = PLAIN_WORDING) -> list[str]:
    """At most five bullets, most decisive first: what is against (when shown), what needs verifying,
    then the supporting facts of the trial's card wording."""
    bullets: list[str] = []
    fails = against(report)
    if fails:
        bullets.append(_items_bullet("Against", [_criterion_item(r) for r in fails], 420))
    unknown = to_verify(report)
    if unknown:
        bullets.append(_items_bullet("To verify", [_criterion_item(r, 70) for r in unknown], 520))
    facts = [_since_fact(report, wording.since)] if wording.since is not None else []
    facts += [_highlight(report, h) for h in wording.highlights]
    for fact in facts:
        if fact is not None:
            bullets.append(fact)
    return bullets[:MAX_BULLETS]


def detail_markdown(report: Report, trial: TrialLike, wording: CardWording | None = None) -> str:
    """The card body: one verdict line, then at most five short bullets (see the module doc)."""
    lead = (
        f"**{VERDICT_LEAD[report.verdict]} on the data read — {INCOMPLETE}:** the exclusion is not settled; "
        "verify before ruling the patient out."
        if _unsettled(report)
        else f"**{verdict_label(report)}.**"
    )
    line = (
        f"{lead} Prescreen for {escape(trial.id)} as of {report.as_of.isoformat()}; "
        "not an eligibility decision, the study team confirms."
    )
    if report.incomplete:
        line += " " + incomplete_text(report)
    if report.data_issues:
        line += f" {len(report.data_issues)} record(s) could not be used."
    bullets = detail_bullets(report, wording_of(trial) if wording is None else wording)
    while True:
        detail = "\n\n".join(p for p in (line, "\n".join(bullets)) if p)
        if len(detail) <= DETAIL_MAX or len(bullets) <= 1:
            break
        bullets.pop()  # supporting facts go first: they are the least decisive
    if len(detail) > DETAIL_MAX:  # cut at a space: never inside an escape sequence
        detail = detail[: detail.rfind(" ", 0, DETAIL_MAX - 1)].rstrip("\\") + "…"
    return detail


def summary_text(report: Report, trial: TrialLike) -> str:
    """A PHI-free summary under 140 characters with the verdict; "possible candidate", never "eligible"."""
    verdict = report.verdict
    unsettled = _unsettled(report)
    lead = VERDICT_LEAD[verdict]
    if unsettled:
        lead, tail = f"{lead} on the data read — {INCOMPLETE}", ": verify"
    elif verdict is Verdict.EXCLUDED:
        tail = " (prescreen)"
    else:
        tail = f": {verdict_tail(report)}"
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
    return Source(label=f"{trial.id} prescreen", url=trial.url, topic=card_topic(trial.id))


def _links(trial: TrialLike, report_link: ReportLink | None) -> list[Link]:
    links = []
    if report_link is not None:
        links.append(Link(label=REPORT_LINK_LABEL, url=report_link.url, type=report_link.type, **NOT_AUTOLAUNCHED))
    links.append(Link(label=f"{trial.id} on ClinicalTrials.gov", url=trial.url, type="absolute", **NOT_AUTOLAUNCHED))
    return links


def _card(
    report: Report,
    trial: TrialLike,
    new_uuid: UuidFactory,
    report_link: ReportLink | None,
    wording: CardWording | None,
    **extra: Any,
) -> Card:
    """The fields every card of ours has: summary, detail, source, links and the full report."""
    return Card(
        uuid=new_uuid(),
        summary=summary_text(report, trial),
        detail=detail_markdown(report, trial, wording),
        indicator="info",
        source=_source(trial),
        links=_links(trial, report_link),
        extension={REPORT_EXTENSION_KEY: report.to_json()},
        **extra,
    )


def candidate_card(
    report: Report,
    trial: TrialLike,
    *,
    new_uuid: UuidFactory = _new_uuid,
    report_link: ReportLink | None = None,
    wording: CardWording | None = None,
) -> Card:
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
        report_link,
        wording,
        suggestions=[referral],
        selectionBehavior="any",
        overrideReasons=list(OVERRIDE_REASONS),
    )


def excluded_card(
    report: Report,
    trial: TrialLike,
    *,
    new_uuid: UuidFactory = _new_uuid,
    report_link: ReportLink | None = None,
    wording: CardWording | None = None,
) -> Card:
    return _card(report, trial, new_uuid, report_link, wording)


def shows_card(report: Report, *, show_excluded: bool = False) -> bool:
    """Whether `render_cards` returns a card for this report."""
    return report.verdict is not Verdict.EXCLUDED or show_excluded or _unsettled(report)


def no_card_reason(report: Report) -> str:
    """Why an excluded patient gets no card: the deciding criteria (for the demo and logs; no values)."""
    names = ", ".join(r.title or r.id for r in against(report))
    return f"not a candidate: {names}" if names else "not a candidate"


def render_cards(
    report: Report,
    trial: TrialLike,
    *,
    show_excluded: bool = False,
    new_uuid: UuidFactory = _new_uuid,
    report_link: ReportLink | None = None,
    wording: CardWording | None = None,
) -> list[Card]:
    """Cards for one report: one candidate card; for an excluded patient none, or a quiet one when
    `show_excluded` or when the exclusion is not settled (incomplete or unusable data). `wording`:
    the trial's card wording (default: the registry's for `trial`, `wording_of`)."""
    if not shows_card(report, show_excluded=show_excluded):
        return []
    if report.verdict is Verdict.EXCLUDED:
        return [excluded_card(report, trial, new_uuid=new_uuid, report_link=report_link, wording=wording)]
    return [candidate_card(report, trial, new_uuid=new_uuid, report_link=report_link, wording=wording)]


def referred_card(trial: TrialLike, referred_on: str, *, new_uuid: UuidFactory = _new_uuid) -> Card:
    """The quiet card shown instead of the prescreen once a referral was accepted from a card."""
    return Card(
        uuid=new_uuid(),
        summary=f"Referred to the {trial.id} study team on {referred_on}",
        indicator="info",
        source=_source(trial),
        links=_links(trial, None),
    )
