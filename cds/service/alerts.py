"""Alert fatigue: a dismissed card stays quiet, a referred patient is not nagged, an opt-out is honoured.

What decides whether the prescreen card is shown, in this order (each a documented choice):

0. **The trial's disease**: a chart with no applicability code on complete, valid Condition data
   is certainly excluded and gets no card (`Trial.certainly_excluded_without_evaluation`). When the
   prefetch holds all the data this is decided first, without reading the state below (the common
   call stores and reads nothing); otherwise right after the data is fetched. A referred patient's
   reminder (below) replaces a prescreen card, so such a chart gets no reminder either.

1. **Feedback state in the database** (shared by every replica; SQLAlchemy tables on the `Base` of
   `cds.service.feedback`):

   * ``overridden`` feedback on one of our cards **snoozes** the card for that patient and trial for
     ``CDS_ALERT_SNOOZE_DAYS`` days (30 by default), or for the period of the override reason given
     in ``CDS_ALERT_SNOOZE_DAYS_BY_REASON`` (e.g. "patient declined": 180 days). While snoozed the
     service returns no card and fetches nothing.
   * ``accepted`` feedback (the referral suggestion taken) marks the patient **referred** for
     ``CDS_ALERT_REFERRAL_QUIET_DAYS`` days: the prescreen card is **replaced by a quiet info card
     "Referred to the <trial id> study team on <date>"** (no detail, no suggestion), so nobody refers
     the patient twice.

   State is per patient **and trial** (one row per trial's service): feedback sent to a service
   applies only to cards that service issued, so dismissing one trial's card leaves the others.

   Feedback names a card uuid only. To tie it to a patient without storing PHI, every card we issue
   is recorded (card uuid -> *patient key*, trial id, expiry); the patient key is an HMAC-SHA256 of
   ``fhirServer|patientId`` with a secret (``CDS_ALERT_KEY_SECRET``, or a random key the service
   creates once in the database), so neither the tables nor the logs hold a patient id.

2. **The chart** (read with the hook's prefetch, or from ``fhirServer``; the queries below join the
   discovery prefetch templates):

   * an active research **opt-out Consent** (``scope`` research, ``provision.type`` deny, not
     expired) -> no card;
   * a **ResearchSubject** for the study (any status: the study team already knows the patient) ->
     no card;
   * a referral **ServiceRequest** to the study team (our referral code for this trial or naming no
     trial, or naming the trial; not revoked or entered in error) -> no card.

   If these resources cannot be read the card is shown as usual (the gate is logged as unread): the
   card is advice to the clinician, never a contact with the patient.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, DateTime, Integer, String, Text, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cards.codes import REFERRAL_SYSTEM
from cds.fhirjson import has_coding, refers_to_patient, span
from cds.service.feedback import Base, FeedbackItem
from cds.service.prefetch import PATIENT_TOKEN, PrefetchQuery

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
REFERRAL_CODE = "refer-to-study-team"
GATE_TYPES = frozenset({"Consent", "ResearchSubject", "ServiceRequest"})

#: Prefetch templates / FHIR fallback queries of the gate (advertised in discovery with the engine's).
GATE_QUERIES: tuple[PrefetchQuery, ...] = (
    PrefetchQuery("consents", "Consent", (("patient", PATIENT_TOKEN),)),
    PrefetchQuery("researchSubjects", "ResearchSubject", (("patient", PATIENT_TOKEN),)),
    PrefetchQuery(
        "referrals", "ServiceRequest", (("patient", PATIENT_TOKEN), ("code", f"{REFERRAL_SYSTEM}|{REFERRAL_CODE}"))
    ),
)


class CardIssueRow(Base):
    """One card we returned: its uuid tied to a patient key (no PHI) until `expires_at`."""

    __tablename__ = "cds_card_issue"

    card_uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(64), index=True)
    trial_id: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AlertStateRow(Base):
    """What clinicians said about the card for one patient and trial."""

    __tablename__ = "cds_alert_state"

    patient_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    snooze_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)
    referred_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReportPageRow(Base):
    """A report page (rendered HTML) served at ``/report/<token>`` until `expires_at`; only the token's
    SHA-256 is stored, so the table does not hold working links."""

    __tablename__ = "cds_report_page"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    trial_id: Mapped[str] = mapped_column(String(64))
    html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class StateKeyRow(Base):
    """The HMAC key of patient keys when no secret is configured (created once, shared by replicas)."""

    __tablename__ = "cds_state_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128))


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    snooze_days: int = 30
    snooze_days_by_reason: Mapping[str, int] | None = None
    referral_quiet_days: int = 365
    card_issue_days: int = 90
    report_link_seconds: int = 3600

    def snooze_for(self, reasons: Iterable[str]) -> timedelta:
        """The longest period among the reasons given (the default when none is configured)."""
        by_reason = self.snooze_days_by_reason or {}
        days = [by_reason[r] for r in reasons if r in by_reason]
        return timedelta(days=max(days) if days else self.snooze_days)


@dataclass(frozen=True, slots=True)
class AlertStatus:
    snoozed_until: datetime | None = None
    referred_on: date | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AlertStore:
    """Card issuance, snooze/referral state and report pages. Synchronous: call from a thread pool."""

    #: Expired report pages are deleted at most once per this many seconds per process.
    PURGE_EVERY = timedelta(seconds=60)

    def __init__(self, engine: Engine, policy: AlertPolicy, secret: str | None = None) -> None:
        self.engine = engine
        self.policy = policy
        self._secret = secret.encode() if secret else None
        self._next_purge: datetime | None = None

    def create_tables(self) -> None:
        Base.metadata.create_all(self.engine)

    def _stored_key(self) -> bytes:
        try:
            with Session(self.engine) as session, session.begin():
                if session.get(StateKeyRow, 1) is None:
                    session.add(StateKeyRow(id=1, key=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another replica or thread inserted it first: read theirs
        with Session(self.engine) as session:
            stored = session.get(StateKeyRow, 1)
            assert stored is not None
            return stored.key.encode()

    def patient_key(self, fhir_server: str | None, patient_id: str) -> str:
        """HMAC-SHA256 of ``fhirServer|patientId`` (no PHI stored or logged)."""
        if self._secret is None:
            self._secret = self._stored_key()
        message = f"{(fhir_server or '').rstrip('/')}|{patient_id}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ state

    def status(self, patient_key: str, trial_id: str, now: datetime) -> AlertStatus:
        with Session(self.engine) as session:
            row = session.get(AlertStateRow, (patient_key, trial_id))
            if row is None:
                return AlertStatus()
            snoozed = _aware(row.snoozed_until) if row.snoozed_until is not None else None
            referred = row.referred_on
        if snoozed is not None and snoozed <= now:
            snoozed = None
        if referred is not None and referred + timedelta(days=self.policy.referral_quiet_days) < now.date():
            referred = None
        return AlertStatus(snoozed_until=snoozed, referred_on=referred)

    def record_issued(self, card_uuids: Sequence[str], patient_key: str, trial_id: str, now: datetime) -> None:
        self.issue(card_uuids, patient_key, trial_id, now)

    def issue(
        self,
        card_uuids: Sequence[str],
        patient_key: str | None,
        trial_id: str,
        now: datetime,
        page: tuple[str, str] | None = None,
    ) -> None:
        """What one answer stores, in one transaction: the cards issued (uuid -> patient key, when
        the key is known) and its report page (``(html, token)``), if any."""
        expires = now + timedelta(days=self.policy.card_issue_days)
        with self.engine.begin() as connection:
            if page is not None:
                html, token = page
                self._purge_pages(connection, now)
                row = {
                    "token_hash": token_hash(token),
                    "trial_id": trial_id,
                    "html": html,
                    "created_at": now,
                    "expires_at": now + timedelta(seconds=self.policy.report_link_seconds),
                }
                connection.execute(self._upsert(ReportPageRow, "token_hash", [row]))
            if patient_key is not None and card_uuids:
                rows = [
                    {
                        "card_uuid": card_uuid,
                        "patient_key": patient_key,
                        "trial_id": trial_id,
                        "issued_at": now,
                        "expires_at": expires,
                    }
                    for card_uuid in card_uuids
                ]
                connection.execute(self._upsert(CardIssueRow, "card_uuid", rows))

    def _upsert(self, table: type[Base], key: str, rows: list[dict[str, Any]]) -> Any:
        """``INSERT ... ON CONFLICT (key) DO UPDATE`` (one statement, no ORM unit of work)."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            pg = postgresql.insert(table).values(rows)
            return pg.on_conflict_do_update(index_elements=[key], set_={c: pg.excluded[c] for c in rows[0] if c != key})
        if dialect == "sqlite":
            lite = sqlite.insert(table).values(rows)
            return lite.on_conflict_do_update(
                index_elements=[key], set_={c: lite.excluded[c] for c in rows[0] if c != key}
            )
        return insert(table).values(rows)

    def _purge_pages(self, connection: Connection, now: datetime) -> None:
        if self._next_purge is not None and now < self._next_purge:
            return
        self._next_purge = now + self.PURGE_EVERY
        connection.execute(delete(ReportPageRow).where(ReportPageRow.expires_at <= now))

    def apply_feedback(self, items: Sequence[FeedbackItem], now: datetime, trial_id: str | None = None) -> int:
        """Snooze or mark referred from feedback on cards we issued (for `trial_id` only, when given: the
        trial of the service the feedback was sent to); returns how many items applied."""
        applied = 0
        with Session(self.engine) as session, session.begin():
            session.execute(delete(CardIssueRow).where(CardIssueRow.expires_at <= now))
            for item in items:
                if item.outcome not in ("overridden", "accepted"):
                    continue
                issue = session.get(CardIssueRow, item.card)
                if issue is None or _aware(issue.expires_at) <= now:
                    continue
                if trial_id is not None and issue.trial_id != trial_id:
                    continue  # another service's card
                key = (issue.patient_key, issue.trial_id)
                row = session.get(AlertStateRow, key)
                if row is None:
                    row = AlertStateRow(patient_key=key[0], trial_id=key[1], updated_at=now)
                    session.add(row)
                if item.outcome == "overridden":
                    codes = [str(r["reason"]["code"]) for r in item.override_reasons if "reason" in r]
                    row.snoozed_until = now + self.policy.snooze_for(codes)
                    row.snooze_reason = codes[0][:100] if codes else None
                else:
                    row.referred_on = _feedback_date(item.outcome_timestamp) or now.date()
                row.updated_at = now
                applied += 1
        return applied

    # ------------------------------------------------------------------ report pages

    def save_report(self, html: str, trial_id: str, now: datetime, token: str | None = None) -> str:
        """Store a report page under `token` (random by default); returns the token of its URL."""
        token = token or secrets.token_urlsafe(24)
        self.issue((), None, trial_id, now, page=(html, token))
        return token

    def load_report(self, token: str, now: datetime) -> str | None:
        with Session(self.engine) as session:
            row = session.scalar(select(ReportPageRow).where(ReportPageRow.token_hash == token_hash(token)))
            if row is None or _aware(row.expires_at) <= now:
                return None
            return row.html

    def purge(self, now: datetime) -> None:
        """Forget expired card issuances and report pages."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(CardIssueRow).where(CardIssueRow.expires_at <= now))
            session.execute(delete(ReportPageRow).where(ReportPageRow.expires_at <= now))


def _feedback_date(timestamp: str | None) -> date | None:
    if not timestamp:
        return None
    when = span(timestamp)
    return when.earliest if when is not None and when.exact else None


# ---------------------------------------------------------------------- the chart


def _texts(value: Any) -> Iterable[str]:
    """Every string inside a JSON value (for "does it name the trial"), code system URIs left out
    (ours, ``https://nct04582136-cds.example.org/...``, name the project, not a trial)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if key != "system":
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _names_trial(value: Any, trial_id: str) -> bool:
    needle = trial_id.lower()
    return any(needle in text.lower() for text in _texts(value))


_TRIAL_ID = re.compile(r"\bNCT\d{8}\b", re.IGNORECASE)


def _names_any_trial(value: Any) -> bool:
    return any(_TRIAL_ID.search(text) for text in _texts(value))


def _period_over(period: Any, today: date) -> bool:
    end = span(period.get("end")) if isinstance(period, Mapping) else None
    return end is not None and end.latest < today


def research_opt_out(consent: Mapping[str, Any], patient_id: str, today: date) -> bool:
    """An active Consent with scope ``research`` whose base provision denies (and has not expired)."""
    if consent.get("status") != "active" or not refers_to_patient(consent.get("patient"), patient_id):
        return False
    if not has_coding(consent.get("scope"), {(CONSENT_SCOPE, "research")}):
        return False
    provision = consent.get("provision")
    if not isinstance(provision, Mapping) or provision.get("type") != "deny":
        return False
    return not _period_over(provision.get("period"), today)


def research_subject(resource: Mapping[str, Any], patient_id: str, trial_id: str) -> bool:
    return refers_to_patient(resource.get("individual"), patient_id) and _names_trial(resource.get("study"), trial_id)


def study_referral(resource: Mapping[str, Any], patient_id: str, trial_id: str) -> bool:
    if resource.get("status") in ("revoked", "entered-in-error"):
        return False
    if not refers_to_patient(resource.get("subject"), patient_id):
        return False
    ours = has_coding(resource.get("code"), {(REFERRAL_SYSTEM, REFERRAL_CODE)})
    if _names_trial(resource.get("code"), trial_id):
        return True
    # Our referral names its trial (code, reason, performer, note): another trial's is not this one's.
    return ours and (_names_trial(resource, trial_id) or not _names_any_trial(resource))


def chart_suppression(
    resources: Iterable[Mapping[str, Any]], *, patient_id: str, trial_id: str, today: date
) -> str | None:
    """Why the chart says no card (a fixed code for the logs: no content), or None."""
    for resource in resources:
        rtype = resource.get("resourceType")
        if rtype == "Consent" and research_opt_out(resource, patient_id, today):
            return "research-opt-out"
        if rtype == "ResearchSubject" and research_subject(resource, patient_id, trial_id):
            return "research-subject"
        if rtype == "ServiceRequest" and study_referral(resource, patient_id, trial_id):
            return "referral-exists"
    return None
