"""What a running service holds: settings, the database, the FHIR gateway, the feedback store, the
engine and the per-process concurrency limits."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from cards.trial import TrialLike
from cds.config import Settings
from cds.engine.model import Report
from cds.fhir.gateway import FhirGateway
from cds.fhir.urls import UrlAllowList
from cds.service.alerts import GATE_QUERIES, AlertPolicy, AlertStore
from cds.service.auth import JwtAuthenticator
from cds.service.feedback import FeedbackStore
from cds.service.limits import EngineRunner, Slots
from cds.service.prefetch import PrefetchQuery, queries_for
from cds.store.database import Database

SERVICE_ID = "nct04582136-prescreen"
HOOK = "patient-view"


class ServiceTrial(TrialLike, Protocol):
    @property
    def resource_types(self) -> Sequence[str]: ...

    @property
    def observation_codes(self) -> Sequence[tuple[str, str]]: ...

    @property
    def observation_categories(self) -> Sequence[tuple[str, str]]: ...

    @property
    def observation_history_codes(self) -> Sequence[tuple[str, str]]: ...

    def observation_cutoff(self, as_of: date) -> date: ...

    def certainly_excluded_without_evaluation(
        self,
        resources: Iterable[Mapping[str, Any]],
        *,
        patient_id: str,
        searched: Collection[str],
        incomplete: Collection[str] = (),
    ) -> bool: ...


class Evaluator(Protocol):
    def __call__(
        self,
        resources: list[dict[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: frozenset[str],
        incomplete: tuple[str, ...],
    ) -> Report: ...


def default_evaluator() -> Evaluator:
    """`cds.engine.evaluate`, adapted to the service's call."""
    from cds.engine import evaluate

    def run(
        resources: list[dict[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: frozenset[str],
        incomplete: tuple[str, ...],
    ) -> Report:
        return evaluate(resources, patient_id=patient_id, as_of=as_of, searched=set(searched), incomplete=incomplete)

    return run


def default_trial() -> ServiceTrial:
    from cds.trials.nct04582136 import TRIAL

    trial: ServiceTrial = TRIAL
    return trial


def random_uuid() -> str:
    return str(uuid.uuid4())


def new_report_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class ServiceState:
    settings: Settings
    database: Database
    gateway: FhirGateway
    store: FeedbackStore
    trial: ServiceTrial
    evaluator: Evaluator
    large_bodies: Slots
    engine: EngineRunner
    new_uuid: Callable[[], str] = random_uuid
    authenticator: JwtAuthenticator | None = None  # None: authentication off (demo, tests)
    queries: tuple[PrefetchQuery, ...] = field(default=())
    fhir_allowed: UrlAllowList = field(init=False)
    # Alert fatigue (snooze, referral, opt-out) and report pages; on the feedback store's database.
    alerts: AlertStore = field(init=False)
    gate_queries: tuple[PrefetchQuery, ...] = GATE_QUERIES
    new_token: Callable[[], str] = new_report_token  # the opaque token of a report page URL

    def __post_init__(self) -> None:
        if not self.queries:
            self.queries = queries_for(self.trial)  # what the criteria declare they read
        self.fhir_allowed = UrlAllowList(self.settings.fhir_allowed_servers)
        self.alerts = alert_store(self.settings, self.store)


def alert_store(settings: Settings, store: FeedbackStore) -> AlertStore:
    policy = AlertPolicy(
        snooze_days=settings.alert_snooze_days,
        snooze_days_by_reason=dict(settings.alert_snooze_days_by_reason),
        referral_quiet_days=settings.alert_referral_quiet_days,
        card_issue_days=settings.alert_card_issue_days,
        report_link_seconds=settings.report_link_seconds,
    )
    secret = settings.alert_key_secret.get_secret_value() if settings.alert_key_secret else None
    return AlertStore(store.engine, policy, secret)
